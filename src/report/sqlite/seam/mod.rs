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
//!   events before the seam ([`crossing::seam_visitors_on_both_sides`]).
//! - Under an event filter a visit counts if it has a matching event up to
//!   a day past the range's end. A visit started before the seam whose
//!   matching events all came after it is counted by neither side: it is
//!   added ([`crossing::seam_visits_matched_after`]).
//!
//! Both look only at the visits that crossed the seam, found from the
//! events after it ([`crossing::seam_reach`]): a visit of any length, whenever
//! it started, and none at all most of the time, when the seam is a quiet
//! midnight. A crossing visit's visitor id is its visitor's for every
//! visit begun on that visit's first UTC day, so visitors are looked for
//! from that day's start. The part
//! after the seam is read from the raw tables: a day or two, and recent
//! traffic may lack the rows of a visit that began before its window.

pub mod crossing;

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;

use crate::report::model::{BreakdownRow, Dimension, Filter, RowsToAdd, TimeRange, Totals};
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
    let Some(earliest) = crossing::seam_reach(conn, site_id, range, seam)? else {
        return Ok(t);
    };
    t.visitors -=
        crossing::seam_visitors_on_both_sides(conn, site_id, range, seam, earliest, filters)?;
    if visits {
        // Only visits that started in the range count.
        let from = range.start.max(earliest);
        let (visits, bounces, duration) =
            crossing::seam_visits_matched_after(conn, site_id, range, seam, from, filters)?;
        t.visits += visits;
        t.bounces += bounces;
        t.visit_duration_sum += duration;
    }
    Ok(t)
}

/// The rows to add to the store's breakdown of the part of `range` before
/// `seam`: `tail`, the rows of the part after it (every value), less what
/// both parts count, plus what neither does (as [`join_totals`], by
/// value):
/// - a page, an event name or a property value: a visitor with events of
///   it on both sides counts once; so does a visit, for a property;
/// - a visit attribute: a crossing visit that matches only after the seam
///   is added under its value, and its visitor if that value does not
///   count them already.
pub fn rows_to_add(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    dimension: &Dimension,
    filters: &[Filter],
    tail: Vec<BreakdownRow>,
) -> Result<RowsToAdd, StoreError> {
    let mut rows = RowsToAdd::default();
    tail.iter().for_each(|r| rows.add(r));
    let Some(earliest) = crossing::seam_reach(conn, site_id, range, seam)? else {
        return Ok(rows);
    };
    let less = |value: Option<String>, visitors: i64, visits: i64| BreakdownRow {
        value,
        visitors: -visitors,
        visits: -visits,
        ..BreakdownRow::default()
    };
    match dimension {
        Dimension::Visit(column) => {
            let (added, counted) = crossing::seam_visits_matched_after_by(
                conn, site_id, range, seam, earliest, *column, filters,
            )?;
            let mut counted: HashSet<(Option<String>, i64)> = counted.into_iter().collect();
            for mut v in added {
                // A visitor counts once per value, whichever visits.
                v.row.visitors = i64::from(counted.insert((v.row.value.clone(), v.visitor_id)));
                rows.add(&v.row);
            }
        }
        _ => {
            let (after, before) = crossing::seam_valued_events(
                conn, site_id, range, seam, earliest, dimension, filters,
            )?;
            let visitors: HashSet<(&Option<String>, i64)> =
                before.iter().map(|e| (&e.0, e.1)).collect();
            let visits: HashSet<(&Option<String>, Option<i64>)> =
                before.iter().map(|e| (&e.0, e.2)).collect();
            let mut seen = HashSet::new();
            for e in &after {
                if seen.insert((&e.0, e.1)) && visitors.contains(&(&e.0, e.1)) {
                    rows.add(&less(e.0.clone(), 1, 0));
                }
            }
            // Distinct visits count only for a property (a page's or an
            // event's visits are first views, which add up).
            if matches!(dimension, Dimension::Prop(_)) {
                let mut seen = HashSet::new();
                for e in &after {
                    if e.2.is_some() && seen.insert((&e.0, e.2)) && visits.contains(&(&e.0, e.2)) {
                        rows.add(&less(e.0.clone(), 0, 1));
                    }
                }
            }
        }
    }
    Ok(rows)
}

/// Property keys by visitors over `range`, from the store's part before
/// `seam` (`sealed`) and the part after it (`tail`), every key of each: a
/// visitor with a key on both sides counts once. Most visitors first, then
/// by key, at most `limit`.
pub fn join_prop_keys(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    filters: &[Filter],
    (sealed, tail): (crossing::KeyVisitors, crossing::KeyVisitors),
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let mut keys: HashMap<String, i64> = sealed.into_iter().collect();
    for (key, n) in tail {
        *keys.entry(key).or_default() += n;
    }
    if let Some(earliest) = crossing::seam_reach(conn, site_id, range, seam)? {
        let (after, before) =
            crossing::seam_key_visitors(conn, site_id, range, seam, earliest, filters)?;
        let before: HashSet<(String, i64)> = before.into_iter().collect();
        // Pairs are distinct on each side.
        for pair in after {
            if before.contains(&pair)
                && let Some(n) = keys.get_mut(&pair.0)
            {
                *n -= 1;
            }
        }
    }
    let mut keys: Vec<(String, i64)> = keys.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(keys
        .into_iter()
        .take(limit.max(0) as usize)
        .map(|(k, _)| k)
        .collect())
}

#[cfg(test)]
mod tests;
