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
//! Both look back [`raw::SEAM_REACH`] before the seam: a visit that started
//! earlier and is still going at the seam is not met in practice (a visit
//! ends after 30 minutes without an event).

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
/// after (`tail`) `seam`.
pub fn join_totals(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    filters: &[Filter],
    sealed: Totals,
    tail: Totals,
) -> Result<Totals, StoreError> {
    let both = raw::seam_visitors_on_both_sides(conn, site_id, range, seam, filters)?;
    let (visits, bounces, duration) =
        raw::seam_visits_matched_after(conn, site_id, range, seam, filters)?;
    Ok(Totals {
        visitors: sealed.visitors + tail.visitors - both,
        pageviews: sealed.pageviews + tail.pageviews,
        events: sealed.events + tail.events,
        visits: sealed.visits + tail.visits + visits,
        bounces: sealed.bounces + tail.bounces + bounces,
        visit_duration_sum: sealed.visit_duration_sum + tail.visit_duration_sum + duration,
    })
}
