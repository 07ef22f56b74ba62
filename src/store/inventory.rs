//! What the database holds, read without changing it, for `tally check`:
//! schema version, integrity, every table's columns, counts, the oldest
//! rows and the salts kept.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::StoreError;

#[derive(Debug, Clone)]
pub struct Inventory {
    pub schema_version: i64,
    /// `ok`, or the first problem SQLite's quick check found.
    pub integrity: String,
    /// (domain, public)
    pub sites: Vec<(String, bool)>,
    pub events: i64,
    pub visits: i64,
    /// Events and visits of removed sites not deleted yet (the server
    /// deletes them in batches after a removal).
    pub removed_rows: i64,
    /// Unix seconds of the oldest event and visit start.
    pub oldest_event: Option<i64>,
    pub oldest_visit: Option<i64>,
    /// Start of the oldest aggregated bucket.
    pub oldest_rollup: Option<i64>,
    /// UTC days whose visitor-id salt is stored.
    pub salt_days: Vec<i64>,
    /// Every (table, column) of the schema.
    pub columns: Vec<(String, String)>,
    pub users: i64,
    pub share_links: i64,
    /// The database file and its write-ahead log.
    pub bytes: u64,
}

/// Reads the inventory of the database at `path`; `None` when there is no
/// database yet (the server creates it at first start).
pub fn read(path: &Path) -> Result<Option<Inventory>, StoreError> {
    if !path.is_file() {
        return Ok(None);
    }
    let open = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open)?;
    let one = |sql: &str| -> Result<Option<i64>, StoreError> {
        Ok(conn
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .optional()?
            .flatten())
    };
    let integrity: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    let mut sites = Vec::new();
    let mut stmt = conn.prepare("SELECT domain, public FROM sites ORDER BY domain")?;
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        sites.push(row?);
    }
    let mut salt_days = Vec::new();
    let mut stmt = conn.prepare("SELECT day FROM salts ORDER BY day")?;
    for day in stmt.query_map([], |r| r.get(0))? {
        salt_days.push(day?);
    }
    let mut columns = Vec::new();
    let mut tables = conn.prepare(
        "SELECT m.name, c.name FROM sqlite_schema AS m, pragma_table_info(m.name) AS c
         WHERE m.type = 'table' ORDER BY m.name, c.cid",
    )?;
    for col in tables.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        columns.push(col?);
    }
    Ok(Some(Inventory {
        schema_version: one("PRAGMA user_version")?.unwrap_or(0),
        integrity,
        sites,
        events: one("SELECT COUNT(*) FROM events")?.unwrap_or(0),
        visits: one("SELECT COUNT(*) FROM visits")?.unwrap_or(0),
        removed_rows: if one("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'removed_sites'")?
            == Some(1)
        {
            one(
                "SELECT (SELECT COUNT(*) FROM events WHERE site_id IN (SELECT site_id FROM removed_sites))
                      + (SELECT COUNT(*) FROM visits WHERE site_id IN (SELECT site_id FROM removed_sites))",
            )?
            .unwrap_or(0)
        } else {
            0
        },
        // Per site, so the (site_id, ts) key answers without a scan.
        oldest_event: one(
            "SELECT MIN((SELECT MIN(ts) FROM events WHERE site_id = s.id)) FROM sites AS s",
        )?,
        oldest_visit: one(
            "SELECT MIN((SELECT MIN(started_at) FROM visits WHERE site_id = s.id)) FROM sites AS s",
        )?,
        oldest_rollup: one("SELECT MIN(bucket) FROM rollups")?,
        salt_days,
        columns,
        users: one("SELECT COUNT(*) FROM users")?.unwrap_or(0),
        share_links: one("SELECT COUNT(*) FROM share_links")?.unwrap_or(0),
        bytes: super::file_bytes(path),
    }))
}
