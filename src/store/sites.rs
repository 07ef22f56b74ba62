//! Sites, API keys and visitor-id salts: the small tables the CLI and the
//! server both manage.

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, VisitDims, VisitRecord, now_unix};

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub id: i64,
    pub domain: String,
    pub timezone: String,
    pub public: bool,
    pub created_at: i64,
}

pub(super) fn site_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Site> {
    Ok(Site {
        id: r.get(0)?,
        domain: r.get(1)?,
        timezone: r.get(2)?,
        public: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// A site's domain as stored: lower case, without `www.`; `None` for
/// anything that is not a bare host name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().to_ascii_lowercase();
    let d = d.strip_prefix("www.").unwrap_or(&d).to_string();
    let valid = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    valid.then_some(d)
}

/// A new site's domain: as [`normalize_domain`], and with a dot. A single
/// name could be taken for one of the dashboard's own pages (`/users`,
/// `/login`), which are matched before `/{domain}`.
pub fn new_domain(domain: &str) -> Option<String> {
    normalize_domain(domain).filter(|d| d.contains('.'))
}

pub fn add_site(
    conn: &Connection,
    domain: &str,
    timezone: &str,
    public: bool,
) -> Result<Site, StoreError> {
    let created_at = now_unix();
    // Ids are never reused: memory (recent traffic, caches) may still hold
    // a removed site's data under its id.
    let inserted = conn.execute(
        "INSERT INTO sites (id, domain, timezone, public, created_at)
         VALUES (1 + max(coalesce((SELECT max(id) FROM sites), 0),
                         coalesce((SELECT CAST(value AS INTEGER) FROM meta
                                    WHERE key = 'last_removed_site_id'), 0)),
                 ?1, ?2, ?3, ?4)
         ON CONFLICT (domain) DO NOTHING",
        params![domain, timezone, public, created_at],
    )?;
    if inserted == 0 {
        return Err(StoreError::SiteExists(domain.to_string()));
    }
    Ok(Site {
        id: conn.last_insert_rowid(),
        domain: domain.to_string(),
        timezone: timezone.to_string(),
        public,
        created_at,
    })
}

pub fn set_timezone(conn: &Connection, site_id: i64, timezone: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sites SET timezone = ?2 WHERE id = ?1",
        params![site_id, timezone],
    )?;
    Ok(())
}

/// A site's excluded addresses and paths, one per line, as stored.
pub fn exclusions(conn: &Connection, site_id: i64) -> Result<(String, String), StoreError> {
    Ok(conn
        .prepare_cached("SELECT excluded_ips, excluded_paths FROM sites WHERE id = ?1")?
        .query_row([site_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default())
}

pub fn set_exclusions(
    conn: &Connection,
    site_id: i64,
    ips: &str,
    paths: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sites SET excluded_ips = ?2, excluded_paths = ?3 WHERE id = ?1",
        params![site_id, ips, paths],
    )?;
    Ok(())
}

pub fn set_public(conn: &Connection, site_id: i64, public: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE sites SET public = ?2 WHERE id = ?1",
        params![site_id, public],
    )?;
    Ok(())
}

/// Every site's id.
pub fn site_ids(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM sites")?;
    let ids = stmt.query_map([], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

pub fn list_sites(conn: &Connection) -> Result<Vec<Site>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, domain, timezone, public, created_at FROM sites ORDER BY domain",
    )?;
    let rows = stmt.query_map([], site_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn find_site(conn: &Connection, domain: &str) -> Result<Option<Site>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, domain, timezone, public, created_at FROM sites WHERE domain = ?1",
        )?
        .query_row([domain], site_from_row)
        .optional()?)
}

/// Removes a site with all its data, inside the caller's transaction.
pub fn remove_site(conn: &Connection, domain: &str) -> Result<(), StoreError> {
    let Some(site) = find_site(conn, domain)? else {
        return Err(StoreError::NoSuchSite(domain.to_string()));
    };
    for table in [
        "events",
        "visits",
        "rollups",
        "rollup_sketches",
        "summaries",
    ] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE site_id = ?1"),
            [site.id],
        )?;
    }
    conn.execute("DELETE FROM sites WHERE id = ?1", [site.id])?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('last_removed_site_id', ?1)
         ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
        [site.id],
    )?;
    Ok(())
}

/// What completes a goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoalKind {
    /// A custom event with this name.
    Event(String),
    /// A pageview of this path; `*` matches any run of characters.
    Page(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub id: i64,
    pub kind: GoalKind,
}

impl Goal {
    /// The name reports use: the event name, or "Visit /path".
    pub fn display_name(&self) -> String {
        match &self.kind {
            GoalKind::Event(name) => name.clone(),
            GoalKind::Page(path) => format!("Visit {path}"),
        }
    }
}

pub fn add_goal(conn: &Connection, site_id: i64, kind: &GoalKind) -> Result<bool, StoreError> {
    let (event, page) = match kind {
        GoalKind::Event(e) => (Some(e.as_str()), None),
        GoalKind::Page(p) => (None, Some(p.as_str())),
    };
    let inserted = conn.execute(
        "INSERT INTO goals (site_id, event_name, page_path, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![site_id, event, page, now_unix()],
    )?;
    Ok(inserted > 0)
}

pub fn list_goals(conn: &Connection, site_id: i64) -> Result<Vec<Goal>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_name, page_path FROM goals WHERE site_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([site_id], |r| {
        let (id, event, page): (i64, Option<String>, Option<String>) =
            (r.get(0)?, r.get(1)?, r.get(2)?);
        Ok(Goal {
            id,
            kind: match (event, page) {
                (Some(e), _) => GoalKind::Event(e),
                (None, p) => GoalKind::Page(p.unwrap_or_default()),
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn remove_goal(conn: &Connection, site_id: i64, goal_id: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM goals WHERE site_id = ?1 AND id = ?2",
        params![site_id, goal_id],
    )?;
    Ok(())
}

/// Every API key: id, name and the prefix kept in clear.
pub fn list_api_keys(conn: &Connection) -> Result<Vec<(i64, String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, name, prefix FROM api_keys ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn remove_api_key(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM api_keys WHERE id = ?1", [id])?;
    Ok(())
}

/// Stores an API key's hash under `name`.
pub fn add_api_key(
    conn: &Connection,
    name: &str,
    prefix: &str,
    key_hash: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, prefix, key_hash, now_unix()],
    )?;
    Ok(())
}

/// Whether a key with this hash exists.
pub fn api_key_exists(conn: &Connection, key_hash: &[u8]) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM api_keys WHERE key_hash = ?1")?
        .exists([key_hash])?)
}

/// Salts of the given UTC days that exist, as (day, salt).
pub fn load_salts(conn: &Connection, days: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT day, salt FROM salts WHERE day = ?1")?;
    let mut out = Vec::new();
    for day in days {
        if let Some(row) = stmt
            .query_row([day], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
        {
            out.push(row);
        }
    }
    Ok(out)
}

/// Stores the salt of `day` unless one exists, and returns the stored one
/// (so two racing processes agree), deleting salts older than `keep_from`.
pub fn put_salt(
    conn: &Connection,
    day: i64,
    salt: &[u8],
    keep_from: i64,
) -> Result<Vec<u8>, StoreError> {
    conn.execute(
        "INSERT INTO salts (day, salt) VALUES (?1, ?2) ON CONFLICT (day) DO NOTHING",
        params![day, salt],
    )?;
    let deleted = conn.execute("DELETE FROM salts WHERE day < ?1", [keep_from])?;
    if deleted > 0 {
        tracing::info!(deleted, "deleted expired visitor-id salts");
    }
    Ok(conn.query_row("SELECT salt FROM salts WHERE day = ?1", [day], |r| r.get(0))?)
}

/// The largest visit id in use (0 without visits).
pub fn max_visit_id(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM visits", [], |r| r.get(0))?)
}

/// Visits started at or after `started_since` with an event at or after
/// `since`: the sessions still open.
pub fn open_visits(
    conn: &Connection,
    started_since: i64,
    since: i64,
) -> Result<Vec<VisitRecord>, StoreError> {
    visits_where(
        conn,
        "site_id IN (SELECT id FROM sites) AND started_at >= ?1 AND last_seen_at >= ?2",
        [started_since, since],
    )
}

/// Visit rows matching `condition` (SQL over `visits`, with `args`).
pub fn visits_where(
    conn: &Connection,
    condition: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<VisitRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, site_id, visitor_id, seq, started_at, last_seen_at, entry_page, exit_page,
            pageviews, events, interactive, is_bounce, referrer, source, utm_medium, utm_source,
            utm_campaign, utm_term, utm_content, country, region, city, browser,
            browser_version, os, os_version, device
         FROM visits WHERE {condition}"
    ))?;
    let rows = stmt.query_map(args, |r| {
        Ok(VisitRecord {
            id: r.get(0)?,
            site_id: r.get(1)?,
            visitor_id: r.get(2)?,
            seq: r.get(3)?,
            started_at: r.get(4)?,
            last_seen_at: r.get(5)?,
            entry_page: r.get(6)?,
            exit_page: r.get(7)?,
            pageviews: r.get(8)?,
            events: r.get(9)?,
            interactive: r.get(10)?,
            is_bounce: r.get(11)?,
            dims: std::sync::Arc::new(VisitDims::from_row(r, 12)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
