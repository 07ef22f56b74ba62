//! Past traffic imported from another tool, as the read model takes it:
//! visits (written to the raw tables by the store, then the site's rollups
//! rebuilt from them), and aggregates (Plausible's daily numbers per
//! dimension: stored in `imported_rollups` and added to the site's day,
//! week and month rows).
//!
//! Written by the caller's connection, not the server's writer: `tally
//! import` holds the data directory's lock, so no server runs beside.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::rollups::{self, ImportedRow};
use crate::report::calendar;
use crate::store::transfer::{self, ImportError, ImportVisit, Imported};

/// Writes past `visits` of `site_id` with their events (see
/// [`transfer::import_visits`]), then rebuilds the site's rollups.
pub fn import_visits(
    conn: &mut Connection,
    site_id: i64,
    visits: Vec<ImportVisit>,
    now: i64,
) -> Result<Imported, ImportError> {
    let imported = transfer::import_visits(conn, site_id, visits)?;
    rollups::rebuild(conn, site_id, now)?;
    Ok(imported)
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
    let mut merged: HashMap<(chrono::NaiveDate, i64, String), ImportedRow> = HashMap::new();
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
            r.dim,
            r.value,
            r.visitors,
            r.visits,
            r.pageviews,
            r.events,
            r.bounces,
            r.duration
        ])?;
    }
    rollups::fold_imported(&tx, site_id, tz, &rows)?;
    tx.commit()?;
    Ok(rows.len() as u64)
}
