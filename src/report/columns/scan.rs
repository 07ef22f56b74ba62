//! Filters compiled for a scan of one site's view, and the scan of a
//! segment's event groups and visit runs. Each filter's answer is
//! remembered per dictionary id, and the visit filters' per attribute set
//! (in a table, or a map when the site's are many next to the query),
//! so a filter is judged once per group or run, and per row only for
//! properties and entry or exit pages. Whether one value passes is
//! [`crate::report::matching`], the rules the raw tables' SQL follows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::ColumnError;
use super::bitmap::Bitmap;
use super::dictionary::{ATTRIBUTES, NONE};
use super::seal::NO_VISIT;
use super::segment::{EventCols, ORPHAN, Segment, VisitCols};
use super::site::SiteView;
use crate::report::matching::value_matches;
use crate::report::model::{Filter, FilterField, TimeRange};

/// Ids a table of answers covers at least; past this, and past the rows a
/// query reads, answers go in a map of the ids met: a site's dictionary
/// grows with everything ever sealed, a query's ids with its range.
const DENSE_IDS: usize = 1 << 16;

#[cfg(test)]
thread_local! {
    /// Maps whatever the sizes, so tests cover both kinds.
    pub(super) static SPARSE: Cell<bool> = const { Cell::new(false) };
}

/// Yes/no answers remembered per id (a dictionary id or a set): a table
/// over every id while that is small next to the query, else a map.
pub(super) enum Answers {
    Dense(Vec<Cell<u8>>),
    Sparse {
        len: usize,
        map: RefCell<HashMap<u32, bool>>,
    },
}

const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// Whether a table over `len` ids suits a query reading `rows` rows.
pub(super) fn dense(len: usize, rows: usize) -> bool {
    #[cfg(test)]
    if SPARSE.with(Cell::get) {
        return false;
    }
    len <= DENSE_IDS.max(rows)
}

impl Answers {
    pub(super) fn new(len: usize, rows: usize) -> Answers {
        if dense(len, rows) {
            Answers::Dense((0..len).map(|_| Cell::new(UNKNOWN)).collect())
        } else {
            Answers::Sparse {
                len,
                map: RefCell::new(HashMap::new()),
            }
        }
    }

    /// The answer for `id`, from `answer` the first time. An id past the
    /// table (only a damaged file holds one) sets `bad` and is a no.
    #[inline(always)]
    fn get(&self, id: u32, bad: &Cell<bool>, answer: impl FnOnce() -> bool) -> bool {
        match self {
            Answers::Dense(table) => {
                let Some(slot) = table.get(id as usize) else {
                    bad.set(true);
                    return false;
                };
                match slot.get() {
                    YES => true,
                    NO => false,
                    _ => {
                        let a = answer();
                        slot.set(if a { YES } else { NO });
                        a
                    }
                }
            }
            Answers::Sparse { len, map } => {
                if id as usize >= *len {
                    bad.set(true);
                    return false;
                }
                if let Some(&a) = map.borrow().get(&id) {
                    return a;
                }
                // Not borrowed while answering: a set's answer asks others.
                let a = answer();
                map.borrow_mut().insert(id, a);
                a
            }
        }
    }
}

/// One filter, its answer remembered per dictionary id.
struct Memo<'a> {
    filter: &'a Filter,
    answers: Answers,
}

/// Whether a dictionary id is a property key's, remembered per id.
pub(super) struct KeyMemo<'a> {
    key: Option<&'a str>,
    answers: Answers,
}

impl<'a> KeyMemo<'a> {
    /// A key the raw tables' JSON path cannot name
    /// ([`crate::report::matching::prop_key_named`]) is no event's there:
    /// here neither.
    pub(super) fn new(view: &SiteView, key: &'a str, rows: usize) -> KeyMemo<'a> {
        KeyMemo {
            key: crate::report::matching::prop_key_named(key).then_some(key),
            answers: Answers::new(view.dict.len(), rows),
        }
    }

    /// The value id of the key among `pairs`, if there.
    #[inline]
    pub(super) fn value(
        &self,
        view: &SiteView,
        pairs: &[[u32; 2]],
        bad: &Cell<bool>,
    ) -> Option<u32> {
        let key = self.key?;
        pairs
            .iter()
            .find(|p| {
                self.answers
                    .get(p[0], bad, || view.dict.get(p[0]) == Some(key))
            })
            .map(|p| p[1])
    }
}

/// Several filters on one event attribute, their joint answer remembered
/// per dictionary id.
struct Combined<'a> {
    filters: Vec<&'a Filter>,
    answers: Answers,
}

/// Filters applied to one view, compiled for the scan.
pub(super) struct Scan<'a> {
    view: &'a SiteView,
    set_filters: Vec<(usize, Memo<'a>)>,
    set_memo: Answers,
    /// Entry (0) and exit (1) page filters: judged per visit.
    page_filters: Vec<(usize, Memo<'a>)>,
    /// Property filters: judged per row.
    props: Vec<(Memo<'a>, KeyMemo<'a>)>,
    /// Whether a name, and a path, passes every filter on it: a group is
    /// judged with one lookup each, the answer for all those filters.
    names: Option<Combined<'a>>,
    paths: Option<Combined<'a>>,
    visit_memo: RefCell<HashMap<u32, bool>>,
    pub(super) bad: Cell<bool>,
}

impl<'a> Scan<'a> {
    /// `rows`: about how many rows the query reads (see [`dense`]).
    pub(super) fn new(view: &'a SiteView, filters: &'a [Filter], rows: usize) -> Scan<'a> {
        let memo = |f: &'a Filter| Memo {
            filter: f,
            answers: Answers::new(view.dict.len(), rows),
        };
        let mut s = Scan {
            view,
            set_filters: Vec::new(),
            set_memo: Answers::Dense(Vec::new()),
            page_filters: Vec::new(),
            props: Vec::new(),
            names: None,
            paths: None,
            visit_memo: RefCell::new(HashMap::new()),
            bad: Cell::new(false),
        };
        for f in filters {
            match &f.field {
                FilterField::Visit(c) if c.index() < 2 => s.page_filters.push((c.index(), memo(f))),
                FilterField::Visit(c) => s.set_filters.push((c.index() - 2, memo(f))),
                // Judged per group, all of one attribute at once (below).
                FilterField::Page | FilterField::EventName => {}
                FilterField::Prop(key) => {
                    s.props.push((memo(f), KeyMemo::new(view, key, rows)));
                }
            }
        }
        if !s.set_filters.is_empty() {
            s.set_memo = Answers::new(view.sets.len(), rows);
        }
        let combined = |on: fn(&FilterField) -> bool| {
            let filters: Vec<&Filter> = filters.iter().filter(|f| on(&f.field)).collect();
            (!filters.is_empty()).then(|| Combined {
                filters,
                answers: Answers::new(view.dict.len(), rows),
            })
        };
        s.names = combined(|f| matches!(f, FilterField::EventName));
        s.paths = combined(|f| matches!(f, FilterField::Page));
        s
    }

    pub(super) fn view(&self) -> &'a SiteView {
        self.view
    }

    pub(super) fn has_page_filters(&self) -> bool {
        !self.page_filters.is_empty()
    }

    pub(super) fn has_event_filters(&self) -> bool {
        !self.props.is_empty() || self.names.is_some() || self.paths.is_some()
    }

    /// An error if the scan met an id past its table (a damaged file).
    pub(super) fn check(&self) -> Result<(), ColumnError> {
        if self.bad.get() {
            return Err(ColumnError::Damaged {
                path: "segment".into(),
                what: "an id past its table".into(),
            });
        }
        Ok(())
    }

    #[inline(always)]
    fn matches(&self, m: &Memo<'_>, id: u32) -> bool {
        m.answers.get(id, &self.bad, || {
            value_matches(m.filter, self.view.dict.get(id))
        })
    }

    /// Whether visits of attribute set `set` pass the visit filters.
    #[inline(always)]
    pub(super) fn set_ok(&self, set: u32) -> bool {
        if self.set_filters.is_empty() {
            return set != NO_VISIT || self.page_filters.is_empty();
        }
        if set == NO_VISIT {
            return false;
        }
        self.set_memo.get(set, &self.bad, || {
            let table = self.view.sets.table();
            let at = set as usize * ATTRIBUTES;
            match table.get(at..at + ATTRIBUTES) {
                Some(values) => self
                    .set_filters
                    .iter()
                    .all(|(col, m)| self.matches(m, values[*col])),
                None => {
                    self.bad.set(true);
                    false
                }
            }
        })
    }

    #[inline]
    pub(super) fn pages_ok(&self, entry: u32, exit: u32) -> bool {
        self.page_filters
            .iter()
            .all(|(col, m)| self.matches(m, if *col == 0 { entry } else { exit }))
    }

    /// Entry and exit page filters for the visit of an event (its row may
    /// be in another segment).
    fn visit_pages_ok(&self, n: u32) -> bool {
        if n & ORPHAN != 0 {
            return false;
        }
        if let Some(&ok) = self.visit_memo.borrow().get(&n) {
            return ok;
        }
        let ok = match self.view.segment_of_visit(n) {
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
            Ok(None) => false,
            Err(_) => {
                self.bad.set(true);
                false
            }
        };
        self.visit_memo.borrow_mut().insert(n, ok);
        ok
    }

    /// Whether a group's name and path pass the filters on them.
    #[inline(always)]
    fn group_ok(&self, g: &[u32; 4]) -> bool {
        self.passes(&self.names, g[1]) && self.passes(&self.paths, g[2])
    }

    #[inline(always)]
    fn passes(&self, c: &Option<Combined<'_>>, id: u32) -> bool {
        let Some(c) = c else { return true };
        c.answers.get(id, &self.bad, || {
            let value = self.view.dict.get(id);
            c.filters.iter().all(|f| value_matches(f, value))
        })
    }

    /// Whether row `i` passes the filters judged per row: properties, and
    /// entry or exit pages of its visit.
    fn row_ok(&self, ev: &EventCols<'_>, i: usize) -> bool {
        self.props.iter().all(|(m, key)| {
            let value = key.value(self.view, ev.props(i), &self.bad);
            self.matches(m, value.unwrap_or(NONE))
        }) && (self.page_filters.is_empty() || self.visit_pages_ok(ev.visit[i]))
    }

    /// Calls `f(columns, group, a, b)` for the rows `a..b` of each group of
    /// `seg` in `range` passing every filter: a group's set, name and path
    /// are judged once; rows are bounded by time only in a segment the
    /// range does not cover whole. With filters on properties or entry and
    /// exit pages, `f` gets one row at a time.
    #[inline]
    pub(super) fn each_group(
        &self,
        seg: &Segment,
        range: TimeRange,
        mut f: impl FnMut(&EventCols<'_>, &[u32; 4], usize, usize),
    ) -> Result<(), ColumnError> {
        if seg.end() <= range.start || seg.start() >= range.end {
            return Ok(());
        }
        let ev = seg.events()?;
        let whole = seg.start() >= range.start && seg.end() <= range.end;
        let per_row = !self.page_filters.is_empty() || !self.props.is_empty();
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

    /// Visit numbers with an event matching the event filters in
    /// `[range.start, range.end + 1 day)`: the raw tables' "had a matching
    /// event" (a visit may run past the end of the range; a day covers any
    /// visit). Visits failing the visit filters are left out here too.
    pub(super) fn had_event(&self, range: TimeRange) -> Result<Bitmap, ColumnError> {
        let past = TimeRange {
            start: range.start,
            end: range.end + 86_400,
        };
        let mut had = Bitmap::new(self.view.visits);
        for seg in self.view.segments_for(past.start, past.end)? {
            self.each_group(&seg, past, |ev, _, a, b| {
                for &v in &ev.visit[a..b] {
                    if v & ORPHAN == 0 {
                        had.insert(v);
                    }
                }
            })?;
        }
        had.count()?;
        Ok(had)
    }

    /// Calls `f(columns, row, set)` for every visit of `seg` started in
    /// `range` passing the filters (`had`: the visits with a matching
    /// event), skipping runs whose set `keep_set` refuses.
    #[inline]
    pub(super) fn each_visit(
        &self,
        seg: &Segment,
        range: TimeRange,
        had: Option<&Bitmap>,
        keep_set: impl Fn(u32) -> bool,
        mut f: impl FnMut(&VisitCols<'_>, usize, u32),
    ) -> Result<(), ColumnError> {
        let v = seg.visits()?;
        let base = seg.visit_base;
        for run in v.runs {
            if !self.set_ok(run[0]) || !keep_set(run[0]) {
                continue;
            }
            let (a, b) = visit_rows(seg, &v, run, range);
            match had {
                // Visits are numbered in row order: walk the members of the
                // run's numbers rather than test every row.
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
                        if had.is_some_and(|h| !h.contains(base + i as u32)) {
                            continue;
                        }
                        f(&v, i, run[0]);
                    }
                }
            }
        }
        self.check()
    }
}

/// The rows of `run` whose visits started in `range`.
#[inline]
pub(super) fn visit_rows(
    seg: &Segment,
    v: &VisitCols<'_>,
    run: &[u32; 3],
    range: TimeRange,
) -> (usize, usize) {
    let (a, b) = (run[1] as usize, run[2] as usize);
    if seg.start() >= range.start && seg.end() <= range.end {
        return (a, b);
    }
    let s = &v.started[a..b];
    let lo = s.partition_point(|&t| i64::from(t) < range.start);
    let hi = s.partition_point(|&t| i64::from(t) < range.end).max(lo);
    (a + lo, a + hi)
}
