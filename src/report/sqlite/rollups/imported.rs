//! Aggregates imported from another tool (Plausible's daily numbers per
//! dimension): stored in `imported_rollups` as [`ImportedRow`]s and added to
//! the site's day, week and month rows, at import ([`import_aggregates`])
//! and again at every rebuild. (Imported visits are raw events, after which
//! the site's rollups are rebuilt: `super::recover::import_visits`.)
//!
//! An import is written by the caller's connection, not the server's
//! writer: `tally import` holds the data directory's lock, so no server runs
//! beside.

use std::collections::HashMap;

use chrono_tz::Tz;
use rusqlite::{Connection, params};

use super::Dim;
use super::apply::apply_all;
use super::deltas::Deltas;
use crate::report::calendar;
use crate::store::StoreError;
use crate::store::transfer::ImportError;

/// Numbers of one local day and dimension value imported from another
/// tool's aggregates (Plausible's export). They exist only as rollups; the
/// `imported_rollups` table keeps them so a rebuild adds them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedRow {
    pub day: chrono::NaiveDate,
    pub dim: Dim,
    pub value: String,
    pub visitors: i64,
    pub visits: i64,
    pub pageviews: i64,
    pub events: i64,
    pub bounces: i64,
    pub duration: i64,
}

/// A made-up visitor id for the `i`-th visitor of an imported row: distinct
/// per day and value, so visitors over several days add up, as they do in
/// the tool the numbers came from (it cannot tell either).
fn imported_visitor(site_id: i64, r: &ImportedRow, i: i64) -> i64 {
    let mut h = blake3::Hasher::new();
    h.update(&site_id.to_le_bytes());
    h.update(r.day.to_string().as_bytes());
    h.update(&r.dim.code().to_le_bytes());
    h.update(r.value.as_bytes());
    h.update(&i.to_le_bytes());
    let hash = h.finalize();
    i64::from_le_bytes(std::array::from_fn(|i| hash.as_bytes()[i]))
}

/// Adds imported rows to the day, week and month rollups of `site_id`.
/// (Hours are left out: the imported numbers have none.)
pub fn fold_imported(
    conn: &Connection,
    site_id: i64,
    tz: Tz,
    rows: &[ImportedRow],
) -> Result<(), StoreError> {
    let mut deltas = Deltas::default();
    for r in rows {
        add_imported(&mut deltas, site_id, tz, r);
    }
    apply_all(conn, &deltas.into_rows())
}

/// Adds one imported row to `deltas`, on its local day in `tz`.
pub(super) fn add_imported(deltas: &mut Deltas, site_id: i64, tz: Tz, r: &ImportedRow) {
    let b = deltas.buckets_of(tz, site_id, calendar::midnight(tz, r.day));
    // A sketch is versioned by its row's counts; a row without any
    // keeps no visitors either.
    let counted = r.visits + r.pageviews + r.events > 0;
    let ids: Vec<i64> = if counted {
        (0..r.visitors.max(0))
            .map(|i| imported_visitor(site_id, r, i))
            .collect()
    } else {
        Vec::new()
    };
    let d = deltas.delta((site_id, r.dim, b.longer()), &r.value);
    d.visits += r.visits;
    d.pageviews += r.pageviews;
    d.events += r.events;
    d.bounces += r.bounces;
    d.duration += r.duration;
    d.visitors.extend_from_slice(&ids);
}

/// The imported rows of a site, as stored.
pub fn imported_rows(conn: &Connection, site_id: i64) -> Result<Vec<ImportedRow>, StoreError> {
    imported_rows_between(conn, site_id, ("", "9999-99-99"))
}

/// The imported rows of a site's days in `[from, to)` (`YYYY-MM-DD`).
pub(super) fn imported_rows_between(
    conn: &Connection,
    site_id: i64,
    (from, to): (&str, &str),
) -> Result<Vec<ImportedRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, dim, value, visitors, visits, pageviews, events, bounces, duration
         FROM imported_rollups WHERE site_id = ?1 AND day >= ?2 AND day < ?3",
    )?;
    let rows = stmt.query_map(params![site_id, from, to], |r| {
        let day: String = r.get(0)?;
        let code: i64 = r.get(1)?;
        let Some(dim) = Dim::from_code(code) else {
            return Ok(None);
        };
        Ok(Some(ImportedRow {
            day: day.parse().unwrap_or_default(),
            dim,
            value: r.get(2)?,
            visitors: r.get(3)?,
            visits: r.get(4)?,
            pageviews: r.get(5)?,
            events: r.get(6)?,
            bounces: r.get(7)?,
            duration: r.get(8)?,
        }))
    })?;
    let mut kept = Vec::new();
    for row in rows {
        match row? {
            Some(row) => kept.push(row),
            // Only another version or a hand edit writes a code no
            // dimension has: no report could read its rows, and failing
            // here would stop every rebuild of the site (and a start that
            // rebuilds), so it is left out, once said.
            None => tracing::warn!(
                site_id,
                "an imported row has an unknown dimension; left out"
            ),
        }
    }
    Ok(kept)
}

/// Stores aggregates imported from another tool for `site_id` and adds them
/// to its rollups, in one transaction. Rows of the same day and value are
/// summed. Refused when the site already has events or imported numbers on
/// any of those days.
pub fn import_aggregates(
    conn: &mut Connection,
    site_id: i64,
    rows: Vec<ImportedRow>,
) -> Result<u64, ImportError> {
    let mut merged: HashMap<(chrono::NaiveDate, Dim, String), ImportedRow> = HashMap::new();
    for r in rows {
        match merged.entry((r.day, r.dim, r.value.clone())) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(r);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let m = slot.get_mut();
                m.visitors += r.visitors;
                m.visits += r.visits;
                m.pageviews += r.pageviews;
                m.events += r.events;
                m.bounces += r.bounces;
                m.duration += r.duration;
            }
        }
    }
    let rows: Vec<ImportedRow> = merged.into_values().collect();
    let (Some(first), Some(last)) = (
        rows.iter().map(|r| r.day).min(),
        rows.iter().map(|r| r.day).max(),
    ) else {
        return Ok(0);
    };
    let tx = conn.transaction()?;
    let rebuilding = tx
        .prepare("SELECT 1 FROM rollup_rebuilds WHERE site_id = ?1")?
        .exists([site_id])?;
    if rebuilding {
        return Err(ImportError::Rebuilding);
    }
    let tz: String = tx.query_row("SELECT timezone FROM sites WHERE id = ?1", [site_id], |r| {
        r.get(0)
    })?;
    let tz = calendar::zone(&tz);
    let from = calendar::midnight(tz, first);
    let to = calendar::midnight(tz, last + chrono::Duration::days(1));
    let existing: i64 = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM events WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3)
              + (SELECT COUNT(*) FROM imported_rollups WHERE site_id = ?1 AND day BETWEEN ?4 AND ?5)",
        params![site_id, from, to, first.to_string(), last.to_string()],
        |r| r.get(0),
    )?;
    if existing > 0 {
        return Err(ImportError::Overlap(existing));
    }
    for r in &rows {
        tx.prepare_cached(
            "INSERT INTO imported_rollups (site_id, day, dim, value, visitors, visits, pageviews,
                events, bounces, duration) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            site_id,
            r.day.to_string(),
            r.dim.code(),
            r.value,
            r.visitors,
            r.visits,
            r.pageviews,
            r.events,
            r.bounces,
            r.duration
        ])?;
    }
    fold_imported(&tx, site_id, tz, &rows)?;
    tx.commit()?;
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_row_of_an_unknown_dimension_is_left_out_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        let site = crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        for (dim, value) in [(Dim::Page.code(), "/a"), (99, "?")] {
            conn.execute(
                "INSERT INTO imported_rollups (site_id, day, dim, value, visitors, visits,
                    pageviews, events, bounces, duration)
                 VALUES (?1, '2024-01-01', ?2, ?3, 1, 1, 1, 0, 0, 0)",
                params![site.id, dim, value],
            )
            .unwrap();
        }
        let rows = imported_rows(&conn, site.id).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].dim, rows[0].value.as_str()), (Dim::Page, "/a"));
        // A full rebuild of the site goes through as well.
        super::super::rebuild(&conn, site.id, 1_704_153_600).unwrap();
    }

    /// A rebuild under way would fold imported rows again when it reaches
    /// them: an import then is refused and writes nothing.
    #[test]
    fn aggregates_are_not_imported_while_the_site_is_rebuilding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1).unwrap();
        let mut conn = store.write_connection().unwrap();
        let site = crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let row = ImportedRow {
            day: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            dim: Dim::Totals,
            value: String::new(),
            visitors: 10,
            visits: 10,
            pageviews: 100,
            events: 0,
            bounces: 5,
            duration: 60,
        };
        conn.execute(
            "INSERT INTO rollup_rebuilds (site_id, old_timezone, cutoff, changed_at)
             VALUES (?1, 'UTC', 1, 1)",
            [site.id],
        )
        .unwrap();
        let err = import_aggregates(&mut conn, site.id, vec![row.clone()]).unwrap_err();
        assert!(matches!(err, ImportError::Rebuilding), "{err}");
        let stored: i64 = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM imported_rollups) + (SELECT COUNT(*) FROM rollups)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0);
        // Once the rebuild is done, the same import goes through.
        conn.execute("DELETE FROM rollup_rebuilds", []).unwrap();
        assert_eq!(import_aggregates(&mut conn, site.id, vec![row]).unwrap(), 1);
    }
}
