//! Breakdowns and property keys: the raw tables' `breakdown` and
//! `prop_keys`. Values are ranked in one pass by an exact upper bound on
//! their visitors (their pageviews, events or visits); visitors are then
//! counted only for the values that can be shown
//! ([`crate::report::model::count_leading`], as every read model ranks).

use std::collections::HashMap;

use super::ColumnError;
use super::bitmap::{Bitmap, Distinct};
use super::dictionary::{ATTRIBUTES, NONE};
use super::scan::{KeyMemo, Scan, visit_rows};
use super::segment::{EventCols, ORPHAN, Segment, VisitCols};
use super::site::SiteView;
use crate::report::model::{BreakdownRow, Dimension, Filter, TimeRange, count_leading};

/// What a pass does with the rows the walk hands it, by value.
trait Sink {
    /// Events `a..b` of one group, all of value `value`.
    fn events(&mut self, value: u32, ev: &EventCols<'_>, pageview: bool, a: usize, b: usize);
    /// Visits `a..b` of one run, all of value `value` (under event filters,
    /// only the members of `had` among their numbers from `base`).
    fn run(
        &mut self,
        value: u32,
        v: &VisitCols<'_>,
        a: usize,
        b: usize,
        base: u32,
        had: Option<&Bitmap>,
    );
    /// Visit `i`, of value `value`.
    fn visit(&mut self, value: u32, v: &VisitCols<'_>, i: usize);
    /// Whether a value is wanted at all (runs of others are skipped).
    fn wants(&self, value: u32) -> bool;
}

/// The things a walk needs besides its sink.
struct Walk<'a> {
    scan: &'a Scan<'a>,
    segs: &'a [std::sync::Arc<Segment>],
    range: TimeRange,
    dimension: &'a Dimension,
    had: Option<&'a Bitmap>,
    key: Option<&'a KeyMemo<'a>>,
}

/// The id of column `c` (2..) in attribute set `set`.
#[inline(always)]
fn set_value(sets: &[u32], set: u32, c: usize) -> Option<u32> {
    sets.get(set as usize * ATTRIBUTES + c - 2).copied()
}

impl Walk<'_> {
    fn walk(&self, sink: &mut impl Sink) -> Result<(), ColumnError> {
        let view = self.scan.view();
        let bad = &self.scan.bad;
        match self.dimension {
            Dimension::Page | Dimension::EventName => {
                let pages = matches!(self.dimension, Dimension::Page);
                for seg in self.segs {
                    self.scan.each_group(seg, self.range, |ev, g, a, b| {
                        let pageview = g[1] == view.pageview;
                        if pageview == pages {
                            sink.events(if pages { g[2] } else { g[1] }, ev, pageview, a, b);
                        }
                    })?;
                }
            }
            Dimension::Prop(_) => {
                let Some(key) = self.key else { return Ok(()) };
                for seg in self.segs {
                    self.scan.each_group(seg, self.range, |ev, g, a, b| {
                        let pageview = g[1] == view.pageview;
                        ev.each_props(a, b, |i, pairs| {
                            if let Some(value) = key.value(view, pairs, bad) {
                                sink.events(value, ev, pageview, i, i + 1);
                            }
                        });
                    })?;
                }
            }
            Dimension::Visit(column) => {
                let c = column.index();
                let sets = view.sets.table();
                for seg in self.segs {
                    if c >= 2 && !self.scan.has_page_filters() {
                        // The value is the run's: hand over whole runs.
                        let v = seg.visits()?;
                        for run in v.runs {
                            if !self.scan.set_ok(run[0]) {
                                continue;
                            }
                            let Some(value) = set_value(sets, run[0], c) else {
                                bad.set(true);
                                continue;
                            };
                            if sink.wants(value) {
                                let (a, b) = visit_rows(seg, &v, run, self.range);
                                sink.run(value, &v, a, b, seg.visit_base, self.had);
                            }
                        }
                        self.scan.check()?;
                    } else {
                        let keep = |set: u32| {
                            c < 2 || set_value(sets, set, c).is_some_and(|value| sink.wants(value))
                        };
                        let mut rows: Vec<(u32, usize)> = Vec::new();
                        let mut visits: Option<VisitCols<'_>> = None;
                        self.scan
                            .each_visit(seg, self.range, self.had, keep, |v, i, set| {
                                let value = match c {
                                    0 => v.entry[i],
                                    1 => v.exit[i],
                                    _ => set_value(sets, set, c).unwrap_or(NONE),
                                };
                                rows.push((value, i));
                            })?;
                        if !rows.is_empty() {
                            let v = visits.insert(seg.visits()?);
                            for (value, i) in rows {
                                sink.visit(value, v, i);
                            }
                        }
                    }
                }
            }
        }
        self.scan.check()
    }
}

/// Pass 1: each value's upper bound on its visitors, by dictionary id: in
/// a table over the dictionary, or a map of the values met when the
/// dictionary is large next to the query (see [`super::scan::dense`]).
enum Bounds {
    Dense(Vec<i64>),
    Sparse(HashMap<u32, i64>, usize),
}

impl Bounds {
    fn new(len: usize, rows: usize) -> Bounds {
        if super::scan::dense(len, rows) {
            Bounds::Dense(vec![0; len])
        } else {
            Bounds::Sparse(HashMap::new(), len)
        }
    }

    fn add(&mut self, value: u32, n: i64) {
        match self {
            Bounds::Dense(t) => {
                if let Some(b) = t.get_mut(value as usize) {
                    *b += n;
                }
            }
            Bounds::Sparse(m, len) => {
                if (value as usize) < *len {
                    *m.entry(value).or_insert(0) += n;
                }
            }
        }
    }

    /// The values with a bound, largest first (ties by id), and their bounds.
    fn ranked(self) -> (Vec<u32>, Vec<i64>) {
        let mut all: Vec<(u32, i64)> = match self {
            Bounds::Dense(t) => (0..t.len() as u32).zip(t).collect(),
            Bounds::Sparse(m, _) => m.into_iter().collect(),
        };
        all.retain(|&(_, b)| b > 0);
        all.sort_unstable_by_key(|&(id, b)| (std::cmp::Reverse(b), id));
        all.into_iter().unzip()
    }
}

impl Sink for Bounds {
    fn events(&mut self, value: u32, _: &EventCols<'_>, _: bool, a: usize, b: usize) {
        self.add(value, (b - a) as i64);
    }
    fn run(
        &mut self,
        value: u32,
        _: &VisitCols<'_>,
        a: usize,
        b: usize,
        base: u32,
        had: Option<&Bitmap>,
    ) {
        let n = had.map_or(b - a, |h| h.count_range(base + a as u32, base + b as u32));
        self.add(value, n as i64);
    }
    fn visit(&mut self, value: u32, _: &VisitCols<'_>, _: usize) {
        self.add(value, 1);
    }
    fn wants(&self, _: u32) -> bool {
        true
    }
}

/// Pass 2: the rows of the candidate values.
struct Counts {
    slot_of: HashMap<u32, usize>,
    rows: Vec<BreakdownRow>,
    visitors: Vec<Distinct>,
    /// A property's distinct visits (orphan numbers after visit numbers).
    visits: Option<Vec<Distinct>>,
    visits_universe: usize,
}

impl Counts {
    fn take(&mut self, k: usize, v: &VisitCols<'_>, i: usize) {
        self.visitors[k].insert(v.visitor[i]);
        let r = &mut self.rows[k];
        r.visits += 1;
        r.pageviews += i64::from(v.pageviews[i]);
        r.events += i64::from(v.events[i]);
        r.bounces += i64::from(v.bounce[i]);
        r.visit_duration_sum += i64::from(v.duration[i]);
    }
}

impl Sink for Counts {
    fn events(&mut self, value: u32, ev: &EventCols<'_>, pageview: bool, a: usize, b: usize) {
        let Some(&k) = self.slot_of.get(&value) else {
            return;
        };
        for &v in &ev.visitor[a..b] {
            self.visitors[k].insert(v);
        }
        let r = &mut self.rows[k];
        if pageview {
            r.pageviews += (b - a) as i64;
        } else {
            r.events += (b - a) as i64;
        }
        match &mut self.visits {
            // A property's visits: distinct visit ids, orphans' included.
            Some(visits) => {
                let known = self.visits_universe as u32;
                for &n in &ev.visit[a..b] {
                    let n = if n & ORPHAN != 0 {
                        known.saturating_add(n & !ORPHAN)
                    } else {
                        n
                    };
                    visits[k].insert(n);
                }
            }
            None => {
                r.visits += ev.first_view[a..b]
                    .iter()
                    .map(|&f| i64::from(f))
                    .sum::<i64>()
            }
        }
    }
    fn run(
        &mut self,
        value: u32,
        v: &VisitCols<'_>,
        a: usize,
        b: usize,
        base: u32,
        had: Option<&Bitmap>,
    ) {
        let Some(&k) = self.slot_of.get(&value) else {
            return;
        };
        match had {
            Some(h) => h.for_each_in(base + a as u32, base + b as u32, |n| {
                self.take(k, v, (n - base) as usize);
            }),
            None => (a..b).for_each(|i| self.take(k, v, i)),
        }
    }
    fn visit(&mut self, value: u32, v: &VisitCols<'_>, i: usize) {
        if let Some(&k) = self.slot_of.get(&value) {
            self.take(k, v, i);
        }
    }
    fn wants(&self, value: u32) -> bool {
        self.slot_of.contains_key(&value)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn breakdown(
    view: &SiteView,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    need_visits: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<BreakdownRow>, ColumnError> {
    let rows = view.rows(range.start, range.end);
    let scan = Scan::new(view, filters, rows);
    let segs = view.segments_for(range.start, range.end)?;
    let had = match (dimension, scan.has_event_filters()) {
        (Dimension::Visit(_), true) => Some(scan.had_event(range)?),
        _ => None,
    };
    let key = match dimension {
        Dimension::Prop(key) => Some(KeyMemo::new(view, key, rows)),
        _ => None,
    };
    let walk = Walk {
        scan: &scan,
        segs: &segs,
        range,
        dimension,
        had: had.as_ref(),
        key: key.as_ref(),
    };
    let mut bounds = Bounds::new(view.dict.len(), rows);
    walk.walk(&mut bounds)?;
    let (ranked, bounds) = bounds.ranked();
    let need = (offset.max(0) + limit.max(0)) as usize;
    let prop_visits = need_visits && matches!(dimension, Dimension::Prop(_));
    let mut rows: HashMap<u32, BreakdownRow> = HashMap::new();
    let visitors = count_leading(&bounds, need, |ranks| {
        let ids = &ranked[ranks];
        let mut counts = Counts {
            slot_of: ids.iter().enumerate().map(|(k, &id)| (id, k)).collect(),
            rows: vec![BreakdownRow::default(); ids.len()],
            visitors: ids.iter().map(|_| Distinct::new(view.visitors)).collect(),
            visits: prop_visits.then(|| {
                ids.iter()
                    .map(|_| Distinct::new(view.visits + view.orphans))
                    .collect()
            }),
            visits_universe: view.visits,
        };
        walk.walk(&mut counts)?;
        let mut out = Vec::with_capacity(ids.len());
        for (k, &id) in ids.iter().enumerate() {
            let mut row = std::mem::take(&mut counts.rows[k]);
            row.visitors = counts.visitors[k].count()?;
            if let Some(visits) = &mut counts.visits {
                row.visits = visits[k].count()?;
            }
            out.push(row.visitors);
            rows.insert(id, row);
        }
        Ok::<_, ColumnError>(out)
    })?;
    let mut shown: Vec<u32> = ranked[..visitors.len()].to_vec();
    let name = |id: u32| view.dict.get(id);
    let visitors_of = |id: u32| rows.get(&id).map_or(0, |r| r.visitors);
    // Most visitors first, then by value, the missing value first (SQL
    // sorts NULL first, and text byte by byte).
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

/// Property keys of the matching events in `range`, most visitors first,
/// then by key.
pub(super) fn prop_keys(
    view: &SiteView,
    range: TimeRange,
    filters: &[Filter],
    limit: i64,
) -> Result<Vec<String>, ColumnError> {
    let scan = Scan::new(view, filters, view.rows(range.start, range.end));
    let mut keys: HashMap<u32, Distinct> = HashMap::new();
    for seg in view.segments_for(range.start, range.end)? {
        scan.each_group(&seg, range, |ev, _, a, b| {
            ev.each_props(a, b, |i, pairs| {
                for p in pairs {
                    keys.entry(p[0])
                        .or_insert_with(|| Distinct::new(view.visitors))
                        .insert(ev.visitor[i]);
                }
            });
        })?;
    }
    let mut counted: Vec<(i64, &str)> = Vec::with_capacity(keys.len());
    for (id, mut visitors) in keys {
        let key = view.dict.get(id).ok_or_else(|| ColumnError::Damaged {
            path: "segment".into(),
            what: "a property key past the dictionary".into(),
        })?;
        counted.push((visitors.count()?, key));
    }
    counted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    Ok(counted
        .into_iter()
        .take(limit.max(0) as usize)
        .map(|(_, k)| k.to_string())
        .collect())
}
