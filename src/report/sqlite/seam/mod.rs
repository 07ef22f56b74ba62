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
//!   events before the seam ([`AfterSeam::visitors_on_both_sides`]).
//! - Under an event filter a visit counts if it has a matching event up to
//!   a day past the range's end. A visit started before the seam whose
//!   matching events all came after it is counted by neither side: it is
//!   added ([`AfterSeam::visits_matched_after`]).
//!
//! Breakdowns apply both by value, and property keys the first by key.
//! All look only at the visits that crossed the seam, found from the
//! events after it ([`AfterSeam::reach`]): a visit of any length, whenever
//! it started, and none at all most of the time, when the seam is a quiet
//! midnight. A crossing visit's visitor id is its visitor's for every
//! visit begun on that visit's first UTC day, so visitors are looked for
//! from that day's start. The part after the seam and the crossing visits
//! are read from one [`AfterSeam`]: recent traffic in memory when it holds
//! them all, else the raw tables (a day or two of them).

pub mod crossing;

use std::collections::{HashMap, HashSet};

use crate::report::model::{
    BreakdownRow, Dimension, Filter, RowsToAdd, TimeRange, Totals, VisitColumn, has_event_filters,
};
use crate::store::StoreError;

/// One matching event's value of an event dimension, its visitor and its
/// visit (as the side that read it numbers them).
pub type ValuedEvent = (Option<String>, i64, Option<i64>);

/// Property keys, each with a visitor or a count of visitors.
pub type KeyVisitors = Vec<(String, i64)>;

/// A visit attribute's value and a visitor.
pub type ValueVisitor = (Option<String>, i64);

/// A crossing visit that matches only after the seam, with its value of a
/// visit attribute (in `row.value`) and its visitor.
pub struct AddedVisit {
    pub row: BreakdownRow,
    pub visitor_id: i64,
}

/// A range, its seam, and the earliest start of the visits that crossed
/// it (see [`AfterSeam::reach`]): what the corrections look at.
#[derive(Clone, Copy)]
pub struct Crossing {
    pub range: TimeRange,
    pub seam: i64,
    pub earliest: i64,
}

impl Crossing {
    /// The part of the range after the seam.
    pub fn after(&self) -> TimeRange {
        TimeRange {
            start: self.seam,
            end: self.range.end,
        }
    }

    /// Where visitors counted before the seam may be the crossing visits':
    /// an id is its visitor's for every visit begun on one UTC day, so from
    /// the start of the earliest crossing visit's day, or the range's.
    pub fn same_ids_from(&self) -> i64 {
        self.range
            .start
            .max(self.earliest.div_euclid(86_400) * 86_400)
    }

    /// The part before the seam where the crossing visits' visitors may
    /// have been counted: from [`Self::same_ids_from`].
    pub fn before(&self) -> TimeRange {
        TimeRange {
            start: self.same_ids_from(),
            end: self.seam,
        }
    }

    /// Where the crossing visits the range counts start: a visit counts
    /// in the range it started in.
    pub fn visits_from(&self) -> i64 {
        self.range.start.max(self.earliest)
    }

    /// The windows of a visit that matches only after the seam, as
    /// `(start, end, has a matching event)`: one after it (up to a day past
    /// the range's end, as visit metrics look), none from
    /// [`Self::visits_from`] to it.
    pub fn matched_only_after(&self) -> [(i64, i64, bool); 2] {
        [
            (self.seam, self.range.end + 86_400, true),
            (self.visits_from(), self.seam, false),
        ]
    }
}

/// What a join reads of the part after the seam and of the visits that
/// crossed it: the raw tables ([`crossing::RawTables`]) or recent traffic
/// in memory. Both count by the raw tables' rules; a side's visitor and
/// visit numbers are its own, compared only with each other.
pub trait AfterSeam {
    /// Whether it holds every event from `start` on.
    fn holds(&self, start: i64) -> bool;
    /// Totals over `range`, as `raw::totals`.
    fn totals(&self, range: TimeRange, filters: &[Filter]) -> Result<Totals, StoreError>;
    /// Up to `limit` rows of `dimension` over `range`, as `raw::breakdown`.
    fn rows(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        limit: i64,
    ) -> Result<Vec<BreakdownRow>, StoreError>;
    /// Up to `limit` property keys with their visitors, as
    /// `raw::prop_key_visitors`.
    fn key_counts(
        &self,
        range: TimeRange,
        filters: &[Filter],
        limit: i64,
    ) -> Result<KeyVisitors, StoreError>;
    /// The earliest start of the visits that started before `seam` and
    /// have an event after it (up to a day past the range's end), whenever
    /// they started; `None` when no visit crosses.
    fn reach(&self, range: TimeRange, seam: i64) -> Result<Option<i64>, StoreError>;
    /// Visitors with a matching event on both sides: the visitors of the
    /// crossing visits' matching events after the seam, among those of the
    /// matching events before it from [`Crossing::same_ids_from`].
    fn visitors_on_both_sides(&self, c: &Crossing, filters: &[Filter]) -> Result<i64, StoreError>;
    /// Under event filters, the visits started from
    /// [`Crossing::visits_from`] to the seam that pass the visit filters
    /// and match only after it: (visits, bounces, duration).
    fn visits_matched_after(
        &self,
        c: &Crossing,
        filters: &[Filter],
    ) -> Result<(i64, i64, i64), StoreError>;
    /// For an event dimension: the crossing visits' matching events after
    /// the seam, and the matching events before it (from
    /// [`Crossing::same_ids_from`]) of the same visitors.
    fn valued_events(
        &self,
        c: &Crossing,
        dimension: &Dimension,
        filters: &[Filter],
    ) -> Result<(Vec<ValuedEvent>, Vec<ValuedEvent>), StoreError>;
    /// For a visit attribute under event filters: the visits of
    /// [`Self::visits_matched_after`] one by one; and (value, visitor) of
    /// the visits of the same visitors that the part before the seam counts
    /// (started from [`Crossing::same_ids_from`], with a matching event
    /// before the seam).
    fn visits_matched_after_by(
        &self,
        c: &Crossing,
        column: VisitColumn,
        filters: &[Filter],
    ) -> Result<(Vec<AddedVisit>, Vec<ValueVisitor>), StoreError>;
    /// For property keys: distinct (key, visitor) of the crossing visits'
    /// matching events after the seam, and of the matching events before
    /// it (from [`Crossing::same_ids_from`]) of the same visitors.
    fn key_visitors(
        &self,
        c: &Crossing,
        filters: &[Filter],
    ) -> Result<(KeyVisitors, KeyVisitors), StoreError>;
}

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

/// What a join at the seam gives.
#[derive(Debug, PartialEq)]
pub enum Joined<T> {
    Answer(T),
    /// The side does not hold what the join reads: the raw tables may.
    NotHeld,
    /// The part after the seam has too many values to hold, on any side:
    /// the raw tables answer the whole range.
    TooMany,
}

impl<T> Joined<T> {
    /// The answer, if any.
    pub fn answer(self) -> Option<T> {
        match self {
            Joined::Answer(t) => Some(t),
            Joined::NotHeld | Joined::TooMany => None,
        }
    }
}

/// `side` does not hold what a join reads.
struct NotHeld;

/// The visits that crossed the seam, as `side` sees them (`None` when none
/// did).
fn crossing(
    side: &dyn AfterSeam,
    range: TimeRange,
    seam: i64,
) -> Result<Result<Option<Crossing>, NotHeld>, StoreError> {
    if !side.holds(seam) {
        return Ok(Err(NotHeld));
    }
    let Some(earliest) = side.reach(range, seam)? else {
        return Ok(Ok(None));
    };
    let c = Crossing {
        range,
        seam,
        earliest,
    };
    Ok(if side.holds(c.same_ids_from()) {
        Ok(Some(c))
    } else {
        Err(NotHeld)
    })
}

/// The totals of `range` from the store's part before `seam` (`sealed`)
/// and `side`'s after it; visit metrics only when `visits` asks (a goal's
/// conversions need none).
pub fn join_totals(
    side: &dyn AfterSeam,
    range: TimeRange,
    seam: i64,
    filters: &[Filter],
    sealed: Totals,
    visits: bool,
) -> Result<Joined<Totals>, StoreError> {
    let Ok(crossed) = crossing(side, range, seam)? else {
        return Ok(Joined::NotHeld);
    };
    let (_, after) = split(range, seam);
    let tail = side.totals(after, filters)?;
    let mut t = Totals {
        visitors: sealed.visitors + tail.visitors,
        pageviews: sealed.pageviews + tail.pageviews,
        events: sealed.events + tail.events,
        visits: sealed.visits + tail.visits,
        bounces: sealed.bounces + tail.bounces,
        visit_duration_sum: sealed.visit_duration_sum + tail.visit_duration_sum,
    };
    let Some(c) = crossed else {
        return Ok(Joined::Answer(t));
    };
    t.visitors -= side.visitors_on_both_sides(&c, filters)?;
    if visits && has_event_filters(filters) {
        let (visits, bounces, duration) = side.visits_matched_after(&c, filters)?;
        t.visits += visits;
        t.bounces += bounces;
        t.visit_duration_sum += duration;
    }
    Ok(Joined::Answer(t))
}

/// The rows to add to the store's breakdown of the part of `range` before
/// `seam`: the rows of the part after it (every value, fewer than `max`),
/// less what both parts count, plus what neither does (as
/// [`join_totals`], by value):
/// - a page, an event name or a property value: a visitor with events of
///   it on both sides counts once; so does a visit, for a property;
/// - a visit attribute: a crossing visit that matches only after the seam
///   is added under its value, and its visitor if that value does not
///   count them already.
///
/// [`Joined::TooMany`] when the part after the seam has `max` values or
/// more.
pub fn rows_to_add(
    side: &dyn AfterSeam,
    range: TimeRange,
    seam: i64,
    dimension: &Dimension,
    filters: &[Filter],
    max: i64,
) -> Result<Joined<RowsToAdd>, StoreError> {
    let Ok(crossed) = crossing(side, range, seam)? else {
        return Ok(Joined::NotHeld);
    };
    let (_, after) = split(range, seam);
    let tail = side.rows(after, dimension, filters, max)?;
    if tail.len() as i64 >= max {
        return Ok(Joined::TooMany);
    }
    let mut rows = RowsToAdd::default();
    tail.iter().for_each(|r| rows.add(r));
    let Some(c) = crossed else {
        return Ok(Joined::Answer(rows));
    };
    let less = |value: Option<String>, visitors: i64, visits: i64| BreakdownRow {
        value,
        visitors: -visitors,
        visits: -visits,
        ..BreakdownRow::default()
    };
    match dimension {
        Dimension::Visit(column) => {
            if !has_event_filters(filters) {
                return Ok(Joined::Answer(rows));
            }
            let (added, counted) = side.visits_matched_after_by(&c, *column, filters)?;
            let mut counted: HashSet<ValueVisitor> = counted.into_iter().collect();
            for mut v in added {
                // A visitor counts once per value, whichever visits.
                v.row.visitors = i64::from(counted.insert((v.row.value.clone(), v.visitor_id)));
                rows.add(&v.row);
            }
        }
        _ => {
            let (after, before) = side.valued_events(&c, dimension, filters)?;
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
    Ok(Joined::Answer(rows))
}

/// Property keys by visitors over `range`, from the store's part before
/// `seam` (`sealed`, every key) and `side`'s after it (every key, fewer
/// than `max`): a visitor with a key on both sides counts once. Most
/// visitors first, then by key, at most `limit`. [`Joined::TooMany`] as
/// [`rows_to_add`].
pub fn join_prop_keys(
    side: &dyn AfterSeam,
    range: TimeRange,
    seam: i64,
    filters: &[Filter],
    sealed: KeyVisitors,
    (limit, max): (i64, i64),
) -> Result<Joined<Vec<String>>, StoreError> {
    let Ok(crossed) = crossing(side, range, seam)? else {
        return Ok(Joined::NotHeld);
    };
    let (_, after) = split(range, seam);
    let tail = side.key_counts(after, filters, max)?;
    if tail.len() as i64 >= max {
        return Ok(Joined::TooMany);
    }
    let mut keys: HashMap<String, i64> = sealed.into_iter().collect();
    for (key, n) in tail {
        *keys.entry(key).or_default() += n;
    }
    if let Some(c) = crossed {
        let (after, before) = side.key_visitors(&c, filters)?;
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
    Ok(Joined::Answer(
        keys.into_iter()
            .take(limit.max(0) as usize)
            .map(|(k, _)| k)
            .collect(),
    ))
}

#[cfg(test)]
pub mod tests;
