//! What [`super::Sealer`] reads of the database besides a day's rows: the
//! days with raw events, the visits that may be open, and the database's
//! id.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DAY, SEAL_AFTER};
use crate::report::sqlite::rollups::VISIT_SETTLED_AFTER;
use crate::store::StoreError;

/// The UTC days with raw events of a site from `from` on, ascending: one
/// seek per day on the events' key.
pub(super) fn raw_days(conn: &Connection, site_id: i64, from: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts FROM events WHERE site_id = ?1 AND ts >= ?2 ORDER BY ts LIMIT 1",
    )?;
    let mut days = Vec::new();
    let mut at = from.saturating_mul(DAY);
    while let Some(ts) = stmt
        .query_row(params![site_id, at], |r| r.get::<_, i64>(0))
        .optional()?
    {
        let day = ts.div_euclid(DAY);
        days.push(day);
        at = (day + 1) * DAY;
    }
    Ok(days)
}

/// Whether a site's `day` holds more than `max` events (counted on the
/// events' key, at most `max + 1` of them).
pub(super) fn events_over(
    conn: &Connection,
    site_id: i64,
    day: i64,
    max: u64,
) -> Result<bool, StoreError> {
    let limit = i64::try_from(max).unwrap_or(i64::MAX - 1) + 1;
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT 1 FROM events
         WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 LIMIT ?4)",
        params![site_id, day * DAY, (day + 1) * DAY, limit],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).is_ok_and(|n| n > max))
}

/// After a start, the visits of a site's newest sealed `day`, marked
/// provisional, that may have been open when it was sealed (at the
/// earliest, [`SEAL_AFTER`] past its end).
pub(super) fn possibly_open(
    conn: &Connection,
    site_id: i64,
    day: i64,
) -> Result<Vec<i64>, StoreError> {
    let end = (day + 1) * DAY;
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM visits WHERE site_id = ?1 AND started_at >= ?2 AND started_at < ?3
         AND last_seen_at >= ?4",
    )?;
    let ids = stmt.query_map(
        params![
            site_id,
            day * DAY,
            end,
            end + SEAL_AFTER - VISIT_SETTLED_AFTER
        ],
        |r| r.get(0),
    )?;
    Ok(ids.collect::<Result<_, _>>()?)
}

/// Whether every one of `visits` has ended by `now` (or is gone).
pub(super) fn all_ended(conn: &Connection, visits: &[i64], now: i64) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT last_seen_at FROM visits WHERE id = ?1")?;
    for id in visits {
        let last: Option<i64> = stmt.query_row([id], |r| r.get(0)).optional()?;
        if last.is_some_and(|t| t >= now - VISIT_SETTLED_AFTER) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Gives the database its random `meta.database_id` if it has none yet
/// (`serve`, before the sealer looks): the store follows one database only.
pub fn ensure_database_id(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))))",
        [],
    )?;
    Ok(())
}

/// The database's `meta.database_id` (empty before a server gave it one).
pub(super) fn database_id(conn: &Connection) -> Result<String, StoreError> {
    Ok(conn
        .query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = 'database_id'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_default())
}
