//! Filtered reports over a range that crosses the seam: the end of the
//! newest day the column store holds. The part before it is the store's,
//! the part after it recent traffic's or the raw tables'; this joins them
//! as one range over the raw tables would count.
//!
//! Events fall on one side each, and visits are counted on the side they
//! started on, so most counts add up. Two do not:
//! - Visitors with a matching event on both sides count once. Visitor ids
//!   change with the daily salt, so only a visit that crossed the seam
//!   carries an id over it: those few ids are looked up among the matching
//!   events before the seam ([`raw::seam_visitors_on_both_sides`]).
//! - Under an event filter a visit counts if it has a matching event up to
//!   a day past the range's end. A visit started before the seam whose
//!   matching events all came after it is counted by neither side: it is
//!   added ([`raw::seam_visits_matched_after`]).
//!
//! Both look only at the visits that crossed the seam, found from the
//! events after it ([`raw::seam_reach`]): a visit of any length, whenever
//! it started, and none at all most of the time, when the seam is a quiet
//! midnight. A crossing visit's visitor id is its visitor's for every
//! visit begun on that visit's first UTC day, so visitors are looked for
//! from that day's start. The part
//! after the seam is read from the raw tables: a day or two, and recent
//! traffic may lack the rows of a visit that began before its window.

use rusqlite::Connection;

use super::raw;
use crate::report::model::{Filter, TimeRange, Totals};
use crate::store::StoreError;

/// `range` cut at `seam`: the part before it and the part after.
pub fn split(range: TimeRange, seam: i64) -> (TimeRange, TimeRange) {
    (
        TimeRange {
            start: range.start,
            end: seam,
        },
        TimeRange {
            start: seam,
            end: range.end,
        },
    )
}

/// The totals of `range` from those of its parts before (`sealed`) and
/// after (`tail`) `seam`; visit metrics only when `visits` asks (a goal's
/// conversions need none).
#[allow(clippy::too_many_arguments)]
pub fn join_totals(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    filters: &[Filter],
    sealed: Totals,
    tail: Totals,
    visits: bool,
) -> Result<Totals, StoreError> {
    let mut t = Totals {
        visitors: sealed.visitors + tail.visitors,
        pageviews: sealed.pageviews + tail.pageviews,
        events: sealed.events + tail.events,
        visits: sealed.visits + tail.visits,
        bounces: sealed.bounces + tail.bounces,
        visit_duration_sum: sealed.visit_duration_sum + tail.visit_duration_sum,
    };
    let Some(earliest) = raw::seam_reach(conn, site_id, range, seam)? else {
        return Ok(t);
    };
    t.visitors -= raw::seam_visitors_on_both_sides(conn, site_id, range, seam, earliest, filters)?;
    if visits {
        // Only visits that started in the range count.
        let from = range.start.max(earliest);
        let (visits, bounces, duration) =
            raw::seam_visits_matched_after(conn, site_id, range, seam, from, filters)?;
        t.visits += visits;
        t.bounces += bounces;
        t.visit_duration_sum += duration;
    }
    Ok(t)
}
