//! One site's UTC day read from the raw tables as [`DayRows`], what the
//! column store ([`crate::report::columns`]) seals: the SQL stays here, with
//! the other SQL of the read model, so the column store knows no engine.
//!
//! Called by [`super::sealer`], a day at a time.

use rusqlite::{Connection, params};

use crate::report::columns::{DayEvent, DayRows, DayVisit};
use crate::report::model::{NOT_AN_ACTION, VisitColumn};
use crate::store::StoreError;
use crate::store::sites::visits_where;

const DAY: i64 = 86_400;

/// The action events of `site_id` whose time is in `day` (days since
/// 1970-01-01, UTC), and the visits that started in it, as stored now.
pub fn read_day(conn: &Connection, site_id: i64, day: i64) -> Result<DayRows, StoreError> {
    let (start, end) = (day * DAY, day * DAY + DAY);
    let mut stmt = conn.prepare_cached(
        "SELECT ts, id, visit_id, visitor_id, name, path, props, first_view FROM events
         WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND name <> ?4 ORDER BY ts, id",
    )?;
    let events = stmt
        .query_map(params![site_id, start, end, NOT_AN_ACTION], |r| {
            Ok(DayEvent {
                ts: r.get(0)?,
                id: r.get(1)?,
                visit_id: r.get(2)?,
                visitor_id: r.get(3)?,
                name: r.get(4)?,
                path: r.get(5)?,
                props: r.get(6)?,
                first_view: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let visits = visits_where(
        conn,
        "site_id = ?1 AND started_at >= ?2 AND started_at < ?3",
        params![site_id, start, end],
    )?
    .into_iter()
    .map(|v| DayVisit {
        id: v.id,
        visitor_id: v.visitor_id,
        started_at: v.started_at,
        last_seen_at: v.last_seen_at,
        pageviews: v.pageviews,
        events: v.events,
        is_bounce: v.is_bounce,
        values: std::array::from_fn(|i| VisitColumn::ALL[i].of(&v).map(str::to_string)),
    })
    .collect();
    Ok(DayRows { events, visits })
}

#[cfg(test)]
mod tests;
