//! Breakdowns and property keys: the raw tables' `breakdown` and
//! `prop_keys`. Values are ranked in one pass by an exact upper bound on
//! their visitors (their pageviews, events or visits); visitors are then
//! counted only for the values that can be shown
//! ([`crate::report::model::count_leading`], as every read model ranks).

use std::collections::{HashMap, HashSet};

use super::ColumnError;
use super::bitmap::{Bitmap, Distinct};
use super::dictionary::{ATTRIBUTES, NONE};
use super::scan::{KeyMemo, Scan, visit_rows};
use super::segment::{EventCols, ORPHAN, Segment, VisitCols};
use super::site::SiteView;
use crate::report::model::{BreakdownRow, Dimension, Filter, RowsToAdd, TimeRange, count_leading};

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
        self.visitors[k].insert_all(&ev.visitor[a..b]);
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

/// A value to rank: one of the store's (by dictionary id), or one that
/// only the rows to add have (by its place among them).
#[derive(Clone, Copy)]
enum Candidate {
    Stored(u32),
    Added(usize),
}

/// Rows `offset..offset + limit` of `dimension` over `range`, with `extra`'s
/// rows added to those of the same value (a value only `extra` has is a row
/// too) before they are ranked.
#[allow(clippy::too_many_arguments)]
pub(super) fn breakdown(
    view: &SiteView,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    need_visits: bool,
    limit: i64,
    offset: i64,
    extra: &RowsToAdd,
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
    let name = |id: u32| view.dict.get(id);
    // `Candidate::Added` numbers index this list.
    let added: Vec<&BreakdownRow> = extra.rows().collect();
    let (ranked, bounds) = ranked_with(bounds, extra, &added, name);
    let need = (offset.max(0) + limit.max(0)) as usize;
    let prop_visits = need_visits && matches!(dimension, Dimension::Prop(_));
    let mut rows: HashMap<u32, BreakdownRow> = HashMap::new();
    let extra_of = |c: Candidate| match c {
        Candidate::Stored(id) => extra.get(name(id)),
        Candidate::Added(k) => added.get(k).copied(),
    };
    let visitors = count_leading(&bounds, need, |ranks| {
        let ids: Vec<u32> = ranked[ranks.clone()]
            .iter()
            .filter_map(|c| match c {
                Candidate::Stored(id) => Some(*id),
                Candidate::Added(_) => None,
            })
            .collect();
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
        if !ids.is_empty() {
            walk.walk(&mut counts)?;
        }
        for (k, &id) in ids.iter().enumerate() {
            let mut row = std::mem::take(&mut counts.rows[k]);
            row.visitors = counts.visitors[k].count()?;
            if let Some(visits) = &mut counts.visits {
                row.visits = visits[k].count()?;
            }
            rows.insert(id, row);
        }
        Ok::<_, ColumnError>(
            ranked[ranks]
                .iter()
                .map(|&c| {
                    let stored = match c {
                        Candidate::Stored(id) => rows.get(&id).map_or(0, |r| r.visitors),
                        Candidate::Added(_) => 0,
                    };
                    stored + extra_of(c).map_or(0, |r| r.visitors)
                })
                .collect(),
        )
    })?;
    let value_of = |c: Candidate| match c {
        Candidate::Stored(id) => name(id),
        Candidate::Added(k) => added.get(k).and_then(|r| r.value.as_deref()),
    };
    let mut shown: Vec<(Candidate, i64)> = ranked.iter().copied().zip(visitors).collect();
    // Most visitors first, then by value, the missing value first (SQL
    // sorts NULL first, and text byte by byte).
    shown.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| value_of(a.0).cmp(&value_of(b.0)))
    });
    Ok(shown
        .into_iter()
        .skip(offset.max(0) as usize)
        .take(limit.max(0) as usize)
        .map(|(c, _)| {
            let mut r = match c {
                Candidate::Stored(id) => rows.remove(&id).unwrap_or_default(),
                Candidate::Added(_) => BreakdownRow::default(),
            };
            if let Some(e) = extra_of(c) {
                r.add(e);
            }
            r.value = value_of(c).map(str::to_string);
            r
        })
        .collect())
}

/// The store's values ranked by their bounds, with `extra`'s visitors
/// added to those of the same value, and `extra`'s other values after
/// them; largest first.
fn ranked_with<'a>(
    bounds: Bounds,
    extra: &RowsToAdd,
    added: &[&BreakdownRow],
    name: impl Fn(u32) -> Option<&'a str>,
) -> (Vec<Candidate>, Vec<i64>) {
    let (ids, bounds) = bounds.ranked();
    let mut all: Vec<(Candidate, i64)> =
        ids.into_iter().map(Candidate::Stored).zip(bounds).collect();
    if extra.is_empty() {
        return all.into_iter().unzip();
    }
    let mut stored: HashSet<Option<&str>> = HashSet::new();
    for (c, b) in &mut all {
        if let Candidate::Stored(id) = *c
            && let Some(e) = extra.get(name(id))
        {
            *b += e.visitors;
            stored.insert(name(id));
        }
    }
    for (k, e) in added.iter().enumerate() {
        if !stored.contains(&e.value.as_deref()) {
            all.push((Candidate::Added(k), e.visitors));
        }
    }
    // Stable: ties keep the store's order.
    all.sort_by_key(|&(_, b)| std::cmp::Reverse(b));
    all.into_iter().unzip()
}

/// Property keys of the matching events in `range` and their visitors,
/// most visitors first, then by key.
pub(super) fn prop_keys(
    view: &SiteView,
    range: TimeRange,
    filters: &[Filter],
) -> Result<Vec<(String, i64)>, ColumnError> {
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
    let mut counted: Vec<(String, i64)> = Vec::with_capacity(keys.len());
    for (id, mut visitors) in keys {
        let key = view.dict.get(id).ok_or_else(|| ColumnError::Damaged {
            path: "segment".into(),
            what: "a property key past the dictionary".into(),
        })?;
        counted.push((key.to_string(), visitors.count()?));
    }
    counted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(counted)
}
