//! Totals and series: the raw tables' `totals` for each bucket of a
//! series, in one scan of the days the buckets cover (each row is put in
//! its bucket by time, since rows are in time order within a group or run).
//!
//! - Event metrics count the action events in a bucket passing every
//!   filter, visit filters judged on the event's visit.
//! - Visit metrics count the visits that started in a bucket passing the
//!   visit filters and, with event filters, having a matching event from
//!   the bucket's start to a day past its end.

use std::sync::Arc;

use super::ColumnError;
use super::bitmap::{Bitmap, Distinct};
use super::scan::{Scan, visit_rows};
use super::segment::{EventCols, ORPHAN, Segment};
use super::site::SiteView;
use crate::report::model::{Filter, TimeRange, Totals};

const DAY: i64 = 86_400;

/// The index of the bucket holding `t`, or of the first after it
/// (`buckets.len()`: none), and whether `t` is in it.
#[inline]
fn bucket_at(buckets: &[TimeRange], t: i64) -> (usize, bool) {
    let k = buckets.partition_point(|b| b.end <= t);
    (k, k < buckets.len() && buckets[k].start <= t)
}

/// Where the rows of `start..end` (a segment's day) fall when that is one
/// place: `Some(Some(k))` all in bucket `k`, `Some(None)` in none; `None`
/// when the day is cut by a bucket's edge (its rows are split one by one).
fn day_in(buckets: &[TimeRange], start: i64, end: i64) -> Option<Option<usize>> {
    let (k, inside) = bucket_at(buckets, start);
    if inside {
        return (buckets[k].end >= end).then_some(Some(k));
    }
    (k == buckets.len() || buckets[k].start >= end).then_some(None)
}

/// Splits rows `a..b`, ascending in `times`, by bucket: calls `f(k, i, j)`
/// for the rows `i..j` in bucket `k` (`None` for rows in no bucket).
#[inline]
fn by_bucket(
    buckets: &[TimeRange],
    times: &[u32],
    a: usize,
    b: usize,
    mut f: impl FnMut(Option<usize>, usize, usize),
) {
    let mut i = a;
    while i < b {
        let t = i64::from(times[i]);
        let (k, inside) = bucket_at(buckets, t);
        let until = match (k < buckets.len(), inside) {
            (false, _) => i64::MAX,
            (true, true) => buckets[k].end,
            (true, false) => buckets[k].start,
        };
        let j = i + times[i..b].partition_point(|&x| i64::from(x) < until);
        let j = j.max(i + 1);
        f(inside.then_some(k), i, j);
        i = j;
    }
}

/// Which bucket each visit started in, for the visits of the last few
/// segments asked about (an event's visit started on its day or just
/// before), so "had a matching event" is judged in the visit's own bucket.
struct VisitBuckets<'a> {
    view: &'a SiteView,
    buckets: &'a [TimeRange],
    recent: Vec<(u32, Vec<u32>)>,
}

impl VisitBuckets<'_> {
    fn bucket(&mut self, n: u32) -> Result<Option<usize>, ColumnError> {
        let hit = |(base, rows): &(u32, Vec<u32>)| {
            n.checked_sub(*base)
                .and_then(|i| rows.get(i as usize))
                .copied()
        };
        let found = match self.recent.iter().find_map(hit) {
            Some(k) => k,
            None => {
                let Some(seg) = self.view.segment_of_visit(n)? else {
                    return Ok(None);
                };
                // A segment's visits started on its day: the one or two
                // buckets over that day are searched, not all of them.
                let (lo, hi) = (seg.start(), seg.end());
                let first = self.buckets.partition_point(|b| b.end <= lo);
                let last = self.buckets.partition_point(|b| b.start < hi).max(first);
                let near = &self.buckets[first..last];
                let rows: Vec<u32> = seg
                    .visits()?
                    .started
                    .iter()
                    .map(|&t| {
                        let t = i64::from(t);
                        let found = if lo <= t && t < hi {
                            let (k, inside) = bucket_at(near, t);
                            (first + k, inside)
                        } else {
                            bucket_at(self.buckets, t)
                        };
                        match found {
                            (k, true) => k as u32,
                            _ => u32::MAX,
                        }
                    })
                    .collect();
                let k = rows.get((n - seg.visit_base) as usize).copied();
                if self.recent.len() >= 4 {
                    self.recent.remove(0);
                }
                self.recent.push((seg.visit_base, rows));
                k.unwrap_or(u32::MAX)
            }
        };
        Ok((found != u32::MAX).then_some(found as usize))
    }
}

/// A bucket's event metrics while its days are scanned.
struct Open {
    visitors: Option<Distinct>,
    pageviews: i64,
    events: i64,
}

fn add_events(view: &SiteView, o: &mut Open, ev: &EventCols<'_>, g: &[u32; 4], i: usize, j: usize) {
    let visitors = o
        .visitors
        .get_or_insert_with(|| Distinct::new(view.visitors));
    visitors.insert_all(&ev.visitor[i..j]);
    if g[1] == view.pageview {
        o.pageviews += (j - i) as i64;
    } else {
        o.events += (j - i) as i64;
    }
}

/// Totals of each bucket. Buckets out of order or overlapping are answered
/// one at a time.
pub(super) fn series(
    view: &Arc<SiteView>,
    buckets: &[TimeRange],
    filters: &[Filter],
) -> Result<Vec<Totals>, ColumnError> {
    let ordered = buckets
        .windows(2)
        .all(|w| w[0].end <= w[1].start && w[0].start < w[0].end);
    if !ordered {
        let mut out = Vec::with_capacity(buckets.len());
        for b in buckets {
            if b.start >= b.end {
                out.push(Totals::default());
            } else {
                out.extend(series(view, std::slice::from_ref(b), filters)?);
            }
        }
        return Ok(out);
    }
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return Ok(Vec::new());
    };
    let span = TimeRange {
        start: first.start,
        end: last.end,
    };
    let scan = Scan::new(view, filters, view.rows(span.start, span.end + DAY));
    let event_filters = scan.has_event_filters();
    // With event filters, the scan reaches a day past the last bucket to
    // find the visits with a matching event.
    let window = TimeRange {
        start: span.start,
        end: span.end + if event_filters { DAY } else { 0 },
    };
    let mut totals = vec![Totals::default(); buckets.len()];
    let mut open: Vec<Open> = (0..buckets.len())
        .map(|_| Open {
            visitors: None,
            pageviews: 0,
            events: 0,
        })
        .collect();
    let mut had = event_filters.then(|| Bitmap::new(view.visits));
    let mut visit_buckets = VisitBuckets {
        view,
        buckets,
        recent: Vec::new(),
    };
    let mut closed = 0;
    let segs = view.segments_for(window.start, window.end)?;
    for seg in &segs {
        let mut failed: Option<ColumnError> = None;
        // A day inside one bucket (every day of a UTC site's daily series)
        // needs no search per group.
        let day = day_in(buckets, seg.start(), seg.end());
        // The visits that started on this day: when it is in one bucket,
        // theirs, and its events are within a day of their start.
        let own = seg.visit_base..seg.visit_base + seg.n_visits as u32;
        let own_bucket = day.is_some();
        scan.each_group(seg, window, |ev, g, a, b| {
            let mut mark = |i: usize, j: usize| {
                let Some(had) = had.as_mut() else { return };
                for r in i..j {
                    let v = ev.visit[r];
                    if v & ORPHAN != 0 {
                        continue;
                    }
                    if buckets.len() == 1 || (own_bucket && own.contains(&v)) {
                        had.insert(v);
                        continue;
                    }
                    // In the visit's own bucket, or within a day after it.
                    let t = i64::from(ev.ts[r]);
                    match visit_buckets.bucket(v) {
                        Ok(Some(k)) if t >= buckets[k].start && t < buckets[k].end + DAY => {
                            had.insert(v);
                        }
                        Ok(_) => {}
                        Err(e) => failed = Some(e),
                    }
                }
            };
            let mut add = |k: Option<usize>, i, j| {
                if let Some(k) = k {
                    add_events(view, &mut open[k], ev, g, i, j);
                }
                mark(i, j);
            };
            match day {
                Some(k) => add(k, a, b),
                None => by_bucket(buckets, ev.ts, a, b, add),
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        // Buckets ending by this day's end have all their events.
        while closed < buckets.len() && buckets[closed].end <= seg.end() {
            close(&mut open[closed], &mut totals[closed])?;
            closed += 1;
        }
    }
    for k in closed..buckets.len() {
        close(&mut open[k], &mut totals[k])?;
    }
    if let Some(h) = &had {
        h.count()?;
    }
    for seg in view.segments_for(span.start, span.end)? {
        visits(&scan, &seg, buckets, span, had.as_ref(), &mut totals)?;
    }
    Ok(totals)
}

fn close(o: &mut Open, t: &mut Totals) -> Result<(), ColumnError> {
    if let Some(mut v) = o.visitors.take() {
        t.visitors = v.count()?;
    }
    t.pageviews = o.pageviews;
    t.events = o.events;
    Ok(())
}

/// Adds the visit metrics of the visits of `seg` that started in a bucket.
fn visits(
    scan: &Scan<'_>,
    seg: &Segment,
    buckets: &[TimeRange],
    span: TimeRange,
    had: Option<&Bitmap>,
    totals: &mut [Totals],
) -> Result<(), ColumnError> {
    let v = seg.visits()?;
    let base = seg.visit_base;
    let pages = scan.has_page_filters();
    let per_row = had.is_some() || pages;
    for run in v.runs {
        if !scan.set_ok(run[0]) {
            continue;
        }
        let (a, b) = visit_rows(seg, &v, run, span);
        by_bucket(buckets, v.started, a, b, |k, i, j| {
            let Some(k) = k else { return };
            let t = &mut totals[k];
            if !per_row {
                t.visits += (j - i) as i64;
                t.bounces += v.bounce[i..j].iter().map(|&x| i64::from(x)).sum::<i64>();
                t.visit_duration_sum += v.duration[i..j].iter().map(|&x| i64::from(x)).sum::<i64>();
                return;
            }
            let mut add = |r: usize| {
                if !pages || scan.pages_ok(v.entry[r], v.exit[r]) {
                    t.visits += 1;
                    t.bounces += i64::from(v.bounce[r]);
                    t.visit_duration_sum += i64::from(v.duration[r]);
                }
            };
            match had {
                // Only the visits with a matching event, a word at a time:
                // under a page filter most visits have none.
                Some(h) => h.for_each_in(base + i as u32, base + j as u32, |n| {
                    add((n - base) as usize)
                }),
                None => (i..j).for_each(add),
            }
        });
    }
    scan.check()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: i64, end: i64) -> TimeRange {
        TimeRange { start, end }
    }

    /// A day is one place only when no bucket edge cuts it.
    #[test]
    fn a_day_is_in_one_bucket_only_when_no_edge_cuts_it() {
        let days = [r(0, 100), r(100, 200), r(250, 300)];
        assert_eq!(day_in(&days, 0, 100), Some(Some(0)));
        assert_eq!(day_in(&days, 100, 200), Some(Some(1)));
        assert_eq!(day_in(&days, 120, 180), Some(Some(1)));
        // Cut by an edge, or partly in a gap.
        assert_eq!(day_in(&days, 50, 150), None);
        assert_eq!(day_in(&days, 180, 260), None);
        assert_eq!(day_in(&days, 220, 260), None);
        // In a gap, before the first bucket, after the last.
        assert_eq!(day_in(&days, 200, 250), Some(None));
        assert_eq!(day_in(&days, -100, 0), Some(None));
        assert_eq!(day_in(&days, 300, 400), Some(None));
        assert_eq!(day_in(&[], 0, 100), Some(None));
        // Hours of a day: each cuts it.
        let hours = [r(0, 50), r(50, 100)];
        assert_eq!(day_in(&hours, 0, 100), None);
    }
}
