//! Filters compiled for a scan of one store: each filter's answer
//! remembered per dictionary id, visit filters per attribute set; and the
//! scan of a segment's event groups and visit runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use super::Bitmap;
use crate::format::{Error, Result};
use crate::model::{Filter, FilterField, TimeRange, value_matches};
use crate::store::{EventCols, NO_VISIT, Segment, Store, VisitCols};

const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// One filter, its answer remembered per dictionary id.
struct Memo<'a> {
    filter: &'a Filter,
    answers: Vec<Cell<u8>>,
}

#[derive(Clone, Copy)]
enum EventAttr {
    Path,
    Name,
    Prop,
}

/// Filters applied to one store, compiled for the scan.
pub struct Scan<'a> {
    store: &'a Store,
    filters: &'a [Filter],
    set_filters: Vec<(usize, Memo<'a>)>,
    set_memo: Vec<Cell<u8>>,
    /// Entry (0) and exit (1) page filters: judged per visit.
    page_filters: Vec<(usize, Memo<'a>)>,
    event_filters: Vec<(EventAttr, Memo<'a>)>,
    /// Per visit number, for page filters on events (rare; a map).
    visit_memo: RefCell<HashMap<u32, bool>>,
    bad: Cell<bool>,
}

fn unknown(n: usize) -> Vec<Cell<u8>> {
    (0..n).map(|_| Cell::new(UNKNOWN)).collect()
}

impl<'a> Scan<'a> {
    pub fn new(store: &'a Store, filters: &'a [Filter]) -> Scan<'a> {
        let memo = |f: &'a Filter| Memo {
            filter: f,
            answers: unknown(store.dict.len()),
        };
        let mut s = Scan {
            store,
            filters,
            set_filters: Vec::new(),
            set_memo: Vec::new(),
            page_filters: Vec::new(),
            event_filters: Vec::new(),
            visit_memo: RefCell::new(HashMap::new()),
            bad: Cell::new(false),
        };
        for f in filters {
            match &f.field {
                FilterField::Visit(c) if c.index() < 2 => s.page_filters.push((c.index(), memo(f))),
                FilterField::Visit(c) => s.set_filters.push((c.index() - 2, memo(f))),
                FilterField::Page => s.event_filters.push((EventAttr::Path, memo(f))),
                FilterField::EventName => s.event_filters.push((EventAttr::Name, memo(f))),
                FilterField::Prop(_) => s.event_filters.push((EventAttr::Prop, memo(f))),
            }
        }
        if !s.set_filters.is_empty() {
            s.set_memo = unknown(store.sets.len());
        }
        s
    }

    /// Whether a filter looks at the entry or exit page (judged per visit).
    pub fn has_page_filters(&self) -> bool {
        !self.page_filters.is_empty()
    }

    pub fn has_event_filters(&self) -> bool {
        !self.event_filters.is_empty()
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.bad.get() {
            return Err(Error::Corrupt(
                "segment".into(),
                "an id past its table".into(),
            ));
        }
        Ok(())
    }

    /// Whether dictionary id `id` passes `m`.
    #[inline(always)]
    fn matches(&self, m: &Memo<'_>, id: u32) -> bool {
        match m.answers.get(id as usize).map(Cell::get) {
            Some(YES) => true,
            Some(NO) => false,
            _ => self.judge(m, id),
        }
    }

    /// The first time an id is asked about: judge it and remember.
    #[cold]
    #[inline(never)]
    fn judge(&self, m: &Memo<'_>, id: u32) -> bool {
        let Some(slot) = m.answers.get(id as usize) else {
            self.bad.set(true);
            return false;
        };
        let value = self.store.dict.get(id);
        let answer = match &m.filter.field {
            FilterField::Prop(key) => {
                let v = value.and_then(|json| prop_of(json, key));
                value_matches(m.filter, v.as_deref())
            }
            _ => value_matches(m.filter, value),
        };
        slot.set(if answer { YES } else { NO });
        answer
    }

    /// Whether visits of attribute set `set` pass the visit filters.
    #[inline(always)]
    pub fn set_ok(&self, set: u32) -> bool {
        if self.set_filters.is_empty() {
            return set != NO_VISIT || self.page_filters.is_empty();
        }
        match self.set_memo.get(set as usize).map(Cell::get) {
            Some(YES) => true,
            Some(NO) => false,
            _ => self.judge_set(set),
        }
    }

    #[cold]
    #[inline(never)]
    fn judge_set(&self, set: u32) -> bool {
        if set == NO_VISIT {
            return false;
        }
        let Some(slot) = self.set_memo.get(set as usize) else {
            self.bad.set(true);
            return false;
        };
        let answer = match self.store.sets.get(set) {
            Some(values) => self
                .set_filters
                .iter()
                .all(|(col, m)| self.matches(m, values[*col])),
            None => {
                self.bad.set(true);
                false
            }
        };
        slot.set(if answer { YES } else { NO });
        answer
    }

    #[inline]
    fn pages_ok(&self, entry: u32, exit: u32) -> bool {
        self.page_filters
            .iter()
            .all(|(col, m)| self.matches(m, if *col == 0 { entry } else { exit }))
    }

    /// Entry/exit page filters for the visit of an event (in any segment).
    fn visit_pages_ok(&self, n: u32) -> bool {
        if let Some(&ok) = self.visit_memo.borrow().get(&n) {
            return ok;
        }
        let ok = match self.store.segment_of_visit(n) {
            Ok(Some(seg)) => match seg.visits() {
                Ok(v) => {
                    let i = (n - seg.visit_base) as usize;
                    match (v.entry.get(i), v.exit.get(i)) {
                        (Some(&a), Some(&b)) => self.pages_ok(a, b),
                        _ => false,
                    }
                }
                Err(_) => {
                    self.bad.set(true);
                    false
                }
            },
            _ => false,
        };
        self.visit_memo.borrow_mut().insert(n, ok);
        ok
    }

    /// Whether a group's name and path pass the filters on them.
    #[inline(always)]
    fn group_ok(&self, g: &[u32; 4]) -> bool {
        self.event_filters.iter().all(|(attr, m)| match attr {
            EventAttr::Path => self.matches(m, g[2]),
            EventAttr::Name => self.matches(m, g[1]),
            EventAttr::Prop => true,
        })
    }

    /// Whether row `i` passes the filters judged per row: properties, and
    /// entry or exit pages of its visit.
    fn row_ok(&self, ev: &EventCols<'_>, i: usize) -> bool {
        self.event_filters.iter().all(|(attr, m)| match attr {
            EventAttr::Prop => self.matches(m, ev.props(i)),
            _ => true,
        }) && (self.page_filters.is_empty() || self.visit_pages_ok(ev.visit[i]))
    }

    /// Calls `f(columns, group, a, b)` for the rows `a..b` of each group of
    /// `seg` in `range` passing every filter: a group's set, name and path
    /// are judged once (remembered per set and dictionary id); rows are
    /// bounded by time only in a segment the range does not cover whole.
    /// Filters on properties or entry/exit pages are judged per row, and
    /// then `f` gets one row at a time.
    #[inline]
    pub fn each_group(
        &self,
        seg: &Segment,
        range: TimeRange,
        mut f: impl FnMut(&EventCols<'_>, &[u32; 4], usize, usize),
    ) -> Result<()> {
        if seg.end() <= range.start || seg.start() >= range.end {
            return Ok(());
        }
        let ev = seg.events()?;
        let whole = seg.start() >= range.start && seg.end() <= range.end;
        let per_row = !self.page_filters.is_empty()
            || self
                .event_filters
                .iter()
                .any(|(a, _)| matches!(a, EventAttr::Prop));
        let mut start = 0;
        for g in ev.groups {
            let (mut a, mut b) = (start, g[3] as usize);
            start = b;
            if !self.set_ok(g[0]) || !self.group_ok(g) {
                continue;
            }
            if !whole {
                let ts = &ev.ts[a..b];
                let lo = ts.partition_point(|&t| i64::from(t) < range.start);
                let hi = ts.partition_point(|&t| i64::from(t) < range.end).max(lo);
                (a, b) = (a + lo, a + hi);
            }
            if per_row {
                for i in a..b {
                    if self.row_ok(&ev, i) {
                        f(&ev, g, i, i + 1);
                    }
                }
            } else if a < b {
                f(&ev, g, a, b);
            }
        }
        self.check()
    }

    /// Visit numbers with a matching event in `[start, end + 1 day)` (the
    /// event filters only; visits failing the visit filters are dropped
    /// later anyway, so their runs are skipped here too).
    /// The key of [`Scan::had_event`]'s answer among a store's derived sets.
    pub(super) fn had_key(&self, range: TimeRange) -> String {
        format!("had {} {} {:?}", range.start, range.end, self.filters)
    }

    /// [`Scan::had_event_uncached`], shared through the store's derived sets.
    pub fn had_event(&self, range: TimeRange) -> Result<Arc<Bitmap>> {
        self.store
            .derived(&self.had_key(range), || self.had_event_uncached(range))
    }

    pub fn had_event_uncached(&self, range: TimeRange) -> Result<Bitmap> {
        let range = TimeRange {
            start: range.start,
            end: range.end + 86_400,
        };
        let mut visits = Bitmap::new(self.store.n_visits);
        for seg in self.store.segments_for(range.start, range.end)? {
            self.each_group(&seg, range, |ev, _, a, b| {
                for &v in &ev.visit[a..b] {
                    if v != u32::MAX {
                        visits.insert(v);
                    }
                }
            })?;
        }
        visits.count()?;
        Ok(visits)
    }

    /// Calls `f(columns, row, set)` for every visit of `seg` started in
    /// `range` passing the filters (`had`: visits with a matching event).
    #[inline]
    pub fn each_visit(
        &self,
        seg: &Segment,
        range: TimeRange,
        had: Option<&Bitmap>,
        keep_set: impl Fn(u32) -> bool,
        mut f: impl FnMut(&VisitCols<'_>, usize, u32),
    ) -> Result<()> {
        let v = seg.visits()?;
        let whole = seg.start() >= range.start && seg.end() <= range.end;
        for run in v.runs {
            if !self.set_ok(run[0]) || !keep_set(run[0]) {
                continue;
            }
            let (a, b) = self.visit_rows(&v, run, whole, range);
            let base = seg.visit_base;
            match had {
                // Visits are numbered in row order: walk the members of
                // the run's numbers rather than test every row.
                Some(h) if self.page_filters.is_empty() => {
                    h.for_each_in(base + a as u32, base + b as u32, |n| {
                        f(&v, (n - base) as usize, run[0]);
                    });
                }
                _ => {
                    for i in a..b {
                        if !self.page_filters.is_empty() && !self.pages_ok(v.entry[i], v.exit[i]) {
                            continue;
                        }
                        if had.is_some_and(|h| !h.contains(base.wrapping_add(i as u32))) {
                            continue;
                        }
                        f(&v, i, run[0]);
                    }
                }
            }
        }
        self.check()
    }

    /// The rows of `run` whose visits started in `range`.
    #[inline]
    pub(super) fn visit_rows(
        &self,
        v: &VisitCols<'_>,
        run: &[u32; 3],
        whole: bool,
        range: TimeRange,
    ) -> (usize, usize) {
        let (a, b) = (run[1] as usize, run[2] as usize);
        if whole {
            return (a, b);
        }
        let s = &v.started[a..b];
        let lo = s.partition_point(|&t| i64::from(t) < range.start);
        let hi = s.partition_point(|&t| i64::from(t) < range.end).max(lo);
        (a + lo, a + hi)
    }
}

/// A property's string value in an event's properties JSON.
fn prop_of(json: &str, key: &str) -> Option<String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).ok()?;
    map.get(key)?.as_str().map(str::to_string)
}
