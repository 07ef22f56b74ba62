//! Totals, series and breakdowns over the scan: Tally's `raw::totals`,
//! `series` and `raw::breakdown`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::scan::Scan;
use super::{Bitmap, THREADS, in_parts, set_threads};
use crate::format::{Error, Result};
use crate::model::{BreakdownRow, Dimension, Filter, TimeRange, Totals, count_leading};
use crate::store::{ATTRIBUTES, EventCols, NONE, Segment, Store, VisitCols};

/// Event metrics of part of a range.
struct EventPart {
    visitors: Bitmap,
    pageviews: i64,
    events: i64,
}

impl EventPart {
    fn new(store: &Store) -> EventPart {
        EventPart {
            visitors: Bitmap::new(store.n_visitors),
            pageviews: 0,
            events: 0,
        }
    }

    #[inline(always)]
    fn add(&mut self, store: &Store, ev: &EventCols<'_>, g: &[u32; 4], a: usize, b: usize) {
        for &v in &ev.visitor[a..b] {
            self.visitors.insert(v);
        }
        let n = (b - a) as i64;
        if g[1] == store.pageview {
            self.pageviews += n;
        } else {
            self.events += n;
        }
    }

    fn merge(mut parts: Vec<EventPart>) -> Option<EventPart> {
        let mut first = parts.pop()?;
        for p in parts {
            first.visitors.or(&p.visitors);
            first.pageviews += p.pageviews;
            first.events += p.events;
        }
        Some(first)
    }
}

/// Visit metrics of visits started in `range` in `segs`: (visits, bounces,
/// duration sum).
fn visit_part(
    scan: &Scan<'_>,
    segs: &[Arc<Segment>],
    range: TimeRange,
    had: Option<&Bitmap>,
) -> Result<[i64; 3]> {
    let mut t = [0i64; 3];
    if had.is_none() && !scan.has_page_filters() {
        // Whole runs: sums over column slices.
        for seg in segs {
            let v = seg.visits()?;
            let whole = seg.start() >= range.start && seg.end() <= range.end;
            for run in v.runs {
                if scan.set_ok(run[0]) {
                    let (a, b) = scan.visit_rows(&v, run, whole, range);
                    t[0] += (b - a) as i64;
                    t[1] += v.bounce[a..b].iter().map(|&x| i64::from(x)).sum::<i64>();
                    t[2] += v.duration[a..b].iter().map(|&x| i64::from(x)).sum::<i64>();
                }
            }
            scan.check()?;
        }
        return Ok(t);
    }
    for seg in segs {
        scan.each_visit(
            seg,
            range,
            had,
            |_| true,
            |v, i, _| {
                t[0] += 1;
                t[1] += i64::from(v.bounce[i]);
                t[2] += i64::from(v.duration[i]);
            },
        )?;
    }
    Ok(t)
}

fn add_visits(t: &mut Totals, parts: Vec<[i64; 3]>) {
    for p in parts {
        t.visits += p[0];
        t.bounces += p[1];
        t.visit_duration_sum += p[2];
    }
}

/// Event and visit metrics of `range`, without event filters or with the
/// visits that had a matching event known.
fn totals_known(
    store: &Store,
    filters: &[Filter],
    range: TimeRange,
    had: Option<&Bitmap>,
    visits: bool,
) -> Result<Totals> {
    let segs = store.segments_for(range.start, range.end)?;
    let parts = in_parts(store, filters, &segs, |scan, segs| {
        let mut e = EventPart::new(store);
        for seg in segs {
            scan.each_group(seg, range, |ev, g, a, b| e.add(store, ev, g, a, b))?;
        }
        let v = if visits {
            visit_part(scan, segs, range, had)?
        } else {
            [0; 3]
        };
        Ok((e, v))
    })?;
    let (events, visits): (Vec<EventPart>, Vec<[i64; 3]>) = parts.into_iter().unzip();
    let mut t = Totals::default();
    if let Some(e) = EventPart::merge(events) {
        t.visitors = e.visitors.count()?;
        t.pageviews = e.pageviews;
        t.events = e.events;
    }
    add_visits(&mut t, visits);
    Ok(t)
}

/// Tally's `raw::totals`.
pub fn totals(store: &Store, range: TimeRange, filters: &[Filter]) -> Result<Totals> {
    let probe = Scan::new(store, filters);
    if !probe.has_event_filters() {
        return totals_known(store, filters, range, None, true);
    }
    let key = probe.had_key(range);
    if let Some(had) = store.lookup(&key) {
        return totals_known(store, filters, range, Some(&had), true);
    }
    // With event filters, one scan gives both the event metrics and the
    // visits with a matching event (in the range and a day past it);
    // segments cut by the range (a timezone's day) are read twice instead.
    let past = TimeRange {
        start: range.start,
        end: range.end + 86_400,
    };
    let segs = store.segments_for(past.start, past.end)?;
    let parts = in_parts(store, filters, &segs, |scan, segs| {
        let mut e = EventPart::new(store);
        let mut had = Bitmap::new(store.n_visits);
        for seg in segs {
            let inside = seg.start() >= range.start && seg.end() <= range.end;
            let outside = seg.start() >= range.end || seg.end() <= range.start;
            if !inside && !outside {
                scan.each_group(seg, range, |ev, g, a, b| e.add(store, ev, g, a, b))?;
            }
            scan.each_group(seg, past, |ev, g, a, b| {
                for &v in &ev.visit[a..b] {
                    if v != u32::MAX {
                        had.insert(v);
                    }
                }
                if inside {
                    e.add(store, ev, g, a, b);
                }
            })?;
        }
        Ok((e, had))
    })?;
    let (events, hads): (Vec<EventPart>, Vec<Bitmap>) = parts.into_iter().unzip();
    let had = Bitmap::union(hads, store.n_visits)?;
    let mut t = Totals::default();
    if let Some(e) = EventPart::merge(events) {
        t.visitors = e.visitors.count()?;
        t.pageviews = e.pageviews;
        t.events = e.events;
    }
    let vsegs = store.segments_for(range.start, range.end)?;
    let visits = in_parts(store, filters, &vsegs, |scan, segs| {
        visit_part(scan, segs, range, Some(&had))
    })?;
    add_visits(&mut t, visits);
    store.remember(&key, Arc::new(had));
    Ok(t)
}

/// Totals per bucket (Tally's `series`: one `totals` per bucket); visit
/// metrics only if `visits` (a timeseries of `visitors,pageviews` needs
/// none). Buckets of one segment or less are shared out between threads.
pub fn series(
    store: &Store,
    buckets: &[TimeRange],
    filters: &[Filter],
    visits: bool,
) -> Result<Vec<Totals>> {
    let small = buckets.iter().all(|b| b.end - b.start <= 86_400);
    if !small || THREADS.load(Ordering::Relaxed) == 1 || buckets.len() < 2 {
        let one = |b: &TimeRange| -> Result<Totals> {
            let had = match visits && Scan::new(store, filters).has_event_filters() {
                true => Some(Scan::new(store, filters).had_event(*b)?),
                false => None,
            };
            totals_known(store, filters, *b, had.as_deref(), visits)
        };
        return buckets.iter().map(one).collect();
    }
    let half = buckets.len() / 2;
    let threads = THREADS.load(Ordering::Relaxed);
    set_threads(1);
    let out = std::thread::scope(|s| {
        let later = s.spawn(|| series(store, &buckets[half..], filters, visits));
        let mut first = series(store, &buckets[..half], filters, visits);
        match later.join() {
            Ok(Ok(l)) => {
                if let Ok(f) = &mut first {
                    f.extend(l);
                }
            }
            Ok(Err(e)) => first = Err(e),
            Err(p) => std::panic::resume_unwind(p),
        }
        first
    });
    set_threads(threads);
    out
}

/// Tally's `raw::breakdown` (without `event:props:*`): values ranked by an
/// upper bound in one pass, then distinct visitors counted in a second pass
/// only for the values that can be shown (`count_leading`).
///
/// `sums`: also count the rows' visits, pageviews, events, bounces and
/// durations (reads five more columns); without it only `visitors` (and the
/// ranking bound) is filled, which is all a `metrics=visitors` call needs.
pub fn breakdown(
    store: &Store,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    limit: i64,
    offset: i64,
    sums: bool,
) -> Result<Vec<BreakdownRow>> {
    if matches!(dimension, Dimension::Prop(_)) {
        return Err(Error::Corrupt(
            "query".into(),
            "event:props breakdowns are not in this prototype".into(),
        ));
    }
    let probe = Scan::new(store, filters);
    let segs = store.segments_for(range.start, range.end)?;
    let dict_len = store.dict.len();
    let had = match (dimension, probe.has_event_filters()) {
        (Dimension::Visit(_), true) => Some(probe.had_event(range)?),
        _ => None,
    };
    let had = had.as_deref();
    // Pass 1: an upper bound of each value's visitors (its pageviews,
    // events or visits), by dictionary id.
    let parts = in_parts(store, filters, &segs, |scan, segs| {
        let mut bound = vec![0i64; dict_len];
        let bad = Cell::new(false);
        let mut bump = |id: u32, n: i64| match bound.get_mut(id as usize) {
            Some(b) => *b += n,
            None => bad.set(true),
        };
        match dimension {
            Dimension::Page | Dimension::EventName => {
                let pages = matches!(dimension, Dimension::Page);
                for seg in segs {
                    scan.each_group(seg, range, |_, g, a, b| {
                        if (g[1] == store.pageview) == pages {
                            bump(if pages { g[2] } else { g[1] }, (b - a) as i64);
                        }
                    })?;
                }
            }
            Dimension::Visit(column) => {
                let c = column.index();
                let sets = store.sets.table();
                for seg in segs {
                    if c >= 2 && !scan.has_page_filters() {
                        // The value is the run's: count its rows (those with
                        // a matching event, under event filters) at once.
                        let v = seg.visits()?;
                        let whole = seg.start() >= range.start && seg.end() <= range.end;
                        for run in v.runs {
                            if !scan.set_ok(run[0]) {
                                continue;
                            }
                            let (a, b) = scan.visit_rows(&v, run, whole, range);
                            let (lo, hi) = (seg.visit_base + a as u32, seg.visit_base + b as u32);
                            let n = had.map_or(b - a, |h| h.count_range(lo, hi));
                            bump(set_value(sets, run[0], c, &bad), n as i64);
                        }
                        scan.check()?;
                    } else {
                        scan.each_visit(
                            seg,
                            range,
                            had,
                            |_| true,
                            |v, i, set| {
                                bump(visit_value(sets, v, i, set, c, &bad), 1);
                            },
                        )?;
                    }
                }
            }
            Dimension::Prop(_) => {}
        }
        if bad.get() {
            return Err(Error::Corrupt(
                "segment".into(),
                "an id past its table".into(),
            ));
        }
        Ok(bound)
    })?;
    let mut parts = parts.into_iter();
    let mut bound = parts.next().unwrap_or_else(|| vec![0; dict_len]);
    for p in parts {
        for (b, n) in bound.iter_mut().zip(p) {
            *b += n;
        }
    }
    let mut ranked: Vec<u32> = (0..dict_len as u32)
        .filter(|&id| bound[id as usize] > 0)
        .collect();
    ranked.sort_by_key(|&id| std::cmp::Reverse(bound[id as usize]));
    let bounds: Vec<i64> = ranked.iter().map(|&id| bound[id as usize]).collect();
    let need = (offset + limit).max(0) as usize;
    // Pass 2 (per widening): visitors and the other sums of the candidates.
    let mut rows: HashMap<u32, BreakdownRow> = HashMap::new();
    let visitors = count_leading(&bounds, need, |ranks| {
        let ids = &ranked[ranks];
        let counted = count_values(store, filters, &segs, range, dimension, had, ids, sums)?;
        let mut out = Vec::with_capacity(ids.len());
        for (&id, row) in ids.iter().zip(counted) {
            out.push(row.visitors);
            rows.insert(id, row);
        }
        Ok::<_, Error>(out)
    })?;
    let mut shown: Vec<u32> = ranked[..visitors.len()].to_vec();
    let name = |id: u32| store.dict.get(id);
    let visitors_of = |id: u32| rows.get(&id).map_or(0, |r| r.visitors);
    shown.sort_by(|&a, &b| {
        visitors_of(b)
            .cmp(&visitors_of(a))
            .then_with(|| name(a).cmp(&name(b)))
    });
    Ok(shown
        .into_iter()
        .skip(offset.max(0) as usize)
        .take(limit.max(0) as usize)
        .map(|id| {
            let mut r = rows.remove(&id).unwrap_or_default();
            r.value = name(id).map(str::to_string);
            r
        })
        .collect())
}

/// The dictionary id of a visit's value in column `c` (0, 1: entry and
/// exit page; others from its attribute set).
#[inline(always)]
fn visit_value(
    sets: &[u32],
    v: &VisitCols<'_>,
    i: usize,
    set: u32,
    c: usize,
    bad: &Cell<bool>,
) -> u32 {
    match c {
        0 => v.entry[i],
        1 => v.exit[i],
        _ => set_value(sets, set, c, bad),
    }
}

/// The dictionary id of column `c` (2..) in attribute set `set`.
#[inline(always)]
fn set_value(sets: &[u32], set: u32, c: usize, bad: &Cell<bool>) -> u32 {
    match sets.get(set as usize * ATTRIBUTES + c - 2) {
        Some(&id) => id,
        None => {
            bad.set(true);
            NONE
        }
    }
}

/// The rows (visitors, and sums if asked) of the values `ids`.
#[allow(clippy::too_many_arguments)]
fn count_values(
    store: &Store,
    filters: &[Filter],
    segs: &[Arc<Segment>],
    range: TimeRange,
    dimension: &Dimension,
    had: Option<&Bitmap>,
    ids: &[u32],
    sums: bool,
) -> Result<Vec<BreakdownRow>> {
    // Slot of each candidate by dictionary id (ids were checked in pass 1).
    let mut slot_by_id = vec![u32::MAX; store.dict.len()];
    for (k, &id) in ids.iter().enumerate() {
        if let Some(s) = slot_by_id.get_mut(id as usize) {
            *s = k as u32;
        }
    }
    let slot = |id: u32| slot_by_id.get(id as usize).copied().unwrap_or(u32::MAX);
    let parts = in_parts(store, filters, segs, |scan, segs| {
        let mut seen: Vec<Bitmap> = ids.iter().map(|_| Bitmap::new(store.n_visitors)).collect();
        let mut rows: Vec<BreakdownRow> = vec![BreakdownRow::default(); ids.len()];
        let bad = Cell::new(false);
        match dimension {
            Dimension::Page | Dimension::EventName => {
                let pages = matches!(dimension, Dimension::Page);
                for seg in segs {
                    scan.each_group(seg, range, |ev, g, a, b| {
                        if (g[1] == store.pageview) != pages {
                            return;
                        }
                        let k = slot(if pages { g[2] } else { g[1] });
                        if k == u32::MAX {
                            return;
                        }
                        let seen = &mut seen[k as usize];
                        for &v in &ev.visitor[a..b] {
                            seen.insert(v);
                        }
                        let r = &mut rows[k as usize];
                        if sums {
                            r.visits += ev.first_view[a..b]
                                .iter()
                                .map(|&f| i64::from(f))
                                .sum::<i64>();
                        }
                        if pages {
                            r.pageviews += (b - a) as i64;
                        } else {
                            r.events += (b - a) as i64;
                        }
                    })?;
                }
            }
            Dimension::Visit(column) if column.index() >= 2 && !scan.has_page_filters() => {
                // The value is the run's: find its slot once per run, then
                // take its visits (those with a matching event, if asked).
                let c = column.index();
                let sets = store.sets.table();
                for seg in segs {
                    let v = seg.visits()?;
                    let whole = seg.start() >= range.start && seg.end() <= range.end;
                    let base = seg.visit_base;
                    for run in v.runs {
                        if !scan.set_ok(run[0]) {
                            continue;
                        }
                        let k = slot(set_value(sets, run[0], c, &bad));
                        if k == u32::MAX {
                            continue;
                        }
                        let (a, b) = scan.visit_rows(&v, run, whole, range);
                        let (seen, r) = (&mut seen[k as usize], &mut rows[k as usize]);
                        let mut take = |i: usize| {
                            seen.insert(v.visitor[i]);
                            r.visits += 1;
                            if sums {
                                r.pageviews += i64::from(v.pageviews[i]);
                                r.events += i64::from(v.events[i]);
                                r.bounces += i64::from(v.bounce[i]);
                                r.visit_duration_sum += i64::from(v.duration[i]);
                            }
                        };
                        match had {
                            Some(h) => h.for_each_in(base + a as u32, base + b as u32, |n| {
                                take((n - base) as usize)
                            }),
                            None => (a..b).for_each(take),
                        }
                    }
                    scan.check()?;
                }
            }
            Dimension::Visit(column) => {
                let c = column.index();
                let sets = store.sets.table();
                // A run whose set's value is not a candidate is skipped whole.
                let keep_set = |set: u32| c < 2 || slot(set_value(sets, set, c, &bad)) != u32::MAX;
                for seg in segs {
                    scan.each_visit(seg, range, had, keep_set, |v, i, set| {
                        let k = slot(visit_value(sets, v, i, set, c, &bad));
                        if k == u32::MAX {
                            return;
                        }
                        seen[k as usize].insert(v.visitor[i]);
                        let r = &mut rows[k as usize];
                        r.visits += 1;
                        if !sums {
                            return;
                        }
                        r.pageviews += i64::from(v.pageviews[i]);
                        r.events += i64::from(v.events[i]);
                        r.bounces += i64::from(v.bounce[i]);
                        r.visit_duration_sum += i64::from(v.duration[i]);
                    })?;
                }
            }
            Dimension::Prop(_) => {}
        }
        if bad.get() {
            return Err(Error::Corrupt(
                "segment".into(),
                "an id past its table".into(),
            ));
        }
        Ok((seen, rows))
    })?;
    let mut parts = parts.into_iter();
    let Some((mut seen, mut rows)) = parts.next() else {
        return Ok(vec![BreakdownRow::default(); ids.len()]);
    };
    for (s2, r2) in parts {
        for (a, b) in seen.iter_mut().zip(&s2) {
            a.or(b);
        }
        for (a, b) in rows.iter_mut().zip(r2) {
            a.visits += b.visits;
            a.pageviews += b.pageviews;
            a.events += b.events;
            a.bounces += b.bounces;
            a.visit_duration_sum += b.visit_duration_sum;
        }
    }
    for (r, s) in rows.iter_mut().zip(&seen) {
        r.visitors = s.count()?;
    }
    Ok(rows)
}
