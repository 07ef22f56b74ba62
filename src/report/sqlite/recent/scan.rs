//! The filter scan over one site's [`SiteTraffic`]: each filter compiled
//! with its answers remembered per dictionary id (per attribute set for visit
//! attributes, per visit for entry and exit pages), the events and visits
//! that pass, and the totals and goal conversions counted over them.
//!
//! Whether one value passes one filter is decided in
//! [`crate::report::matching`], by the rules the raw tables' SQL follows;
//! this file only decides what each filter is asked about.

use std::cell::Cell;

use super::event_log::{Columns, PAGEVIEW};
use super::ids::{Bitmap, IdMap, IdSet};
use super::table::{NONE, SiteTraffic, Visit, prop_key, prop_value};
use crate::report::matching::{glob, value_matches};
use crate::report::model::{Filter, FilterField, TimeRange, Totals};
use crate::store::sites::GoalKind;

/// Answers not known yet, false, true.
const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// One filter, its answer remembered per dictionary id.
struct Compiled<'a> {
    filter: &'a Filter,
    /// For a property filter, the key's id (`None`: no event has the key).
    prop_key: Option<u32>,
    memo: Vec<Cell<u8>>,
}

/// What an event filter looks at in the event itself.
#[derive(Clone, Copy)]
enum EventAttr {
    Path,
    Name,
    Prop,
}

/// Filters applied to one site's traffic, with the rules of
/// [`crate::report::sqlite::filter`] (three-valued: a missing value matches
/// `!=`, and `==` only when the none label is among the values).
pub(super) struct Scan<'a> {
    site: &'a SiteTraffic,
    event_filters: Vec<(EventAttr, Compiled<'a>)>,
    /// Filters on a visit attribute, answered once per attribute set.
    set_filters: Vec<(usize, Compiled<'a>)>,
    set_memo: Vec<Cell<u8>>,
    /// Filters on the entry or exit page, answered once per visit.
    page_filters: Vec<(usize, Compiled<'a>)>,
    visit_memo: Vec<Cell<u8>>,
}

/// `n` answers not known yet.
fn unknown_answers(n: usize) -> Vec<Cell<u8>> {
    (0..n).map(|_| Cell::new(UNKNOWN)).collect()
}

/// Remembers a yes/no answer in `slot`.
fn remembered(slot: &Cell<u8>, answer: impl FnOnce() -> bool) -> bool {
    match slot.get() {
        YES => true,
        NO => false,
        _ => {
            let answer = answer();
            slot.set(if answer { YES } else { NO });
            answer
        }
    }
}

impl<'a> Scan<'a> {
    pub(super) fn new(site: &'a SiteTraffic, filters: &'a [Filter]) -> Scan<'a> {
        let compiled = |f: &'a Filter| Compiled {
            filter: f,
            prop_key: match &f.field {
                FilterField::Prop(k) => prop_key(&site.dict, k),
                _ => None,
            },
            memo: unknown_answers(site.dict.len()),
        };
        let mut event_filters = Vec::new();
        let mut set_filters = Vec::new();
        let mut page_filters = Vec::new();
        for f in filters {
            match &f.field {
                FilterField::Visit(column) => match column.index() {
                    c @ (0 | 1) => page_filters.push((c, compiled(f))),
                    c => set_filters.push((c, compiled(f))),
                },
                FilterField::Page => event_filters.push((EventAttr::Path, compiled(f))),
                FilterField::EventName => event_filters.push((EventAttr::Name, compiled(f))),
                FilterField::Prop(_) => event_filters.push((EventAttr::Prop, compiled(f))),
            }
        }
        // Memos only for the kinds of filter present.
        let memo = |n: usize, used: bool| if used { unknown_answers(n) } else { Vec::new() };
        Scan {
            site,
            event_filters,
            set_memo: memo(site.attribute_sets.len(), !set_filters.is_empty()),
            set_filters,
            visit_memo: memo(site.visits.len(), !page_filters.is_empty()),
            page_filters,
        }
    }

    /// Whether visits with attribute set `set` pass the filters on visit
    /// attributes.
    #[inline]
    fn set_matches(&self, set: u32) -> bool {
        self.set_filters.is_empty()
            || remembered(&self.set_memo[set as usize], || {
                let values = &self.site.attribute_sets[set as usize];
                self.set_filters
                    .iter()
                    .all(|(col, c)| self.matches(c, values[*col - 2]))
            })
    }

    /// Whether a visit with attribute set `set`, at `index`, passes the
    /// visit filters.
    fn visit_at_matches(&self, set: u32, index: u32) -> bool {
        self.set_matches(set) && self.pages_match(index)
    }

    /// Whether the visit at `index` passes the filters on entry and exit
    /// pages.
    #[inline]
    fn pages_match(&self, index: u32) -> bool {
        self.page_filters.is_empty()
            || remembered(&self.visit_memo[index as usize], || {
                let v = &self.site.visits[index as usize];
                self.page_filters
                    .iter()
                    .all(|(col, c)| self.matches(c, self.site.column(v, *col)))
            })
    }

    fn matches(&self, c: &Compiled<'_>, id: u32) -> bool {
        remembered(&c.memo[id as usize], || {
            value_matches(c.filter, self.site.dict.get(id))
        })
    }

    /// Whether the event at `i` passes the event filters, reading only
    /// the columns they look at.
    #[inline]
    fn event_matches(&self, cols: &Columns, i: usize) -> bool {
        self.event_filters.iter().all(|(attr, c)| {
            let id = match attr {
                EventAttr::Path => cols.path[i],
                EventAttr::Name => cols.name[i],
                EventAttr::Prop => c
                    .prop_key
                    .and_then(|k| prop_value(self.site, cols.props[i], k))
                    .unwrap_or(NONE),
            };
            self.matches(c, id)
        })
    }

    /// Calls `f` with the columns and index of each action event in `range`
    /// matching every filter.
    #[inline]
    pub(super) fn each_event(&self, range: TimeRange, mut f: impl FnMut(&Columns, usize)) {
        let plain = self.page_filters.is_empty() && self.event_filters.is_empty();
        self.site.events.for_each(
            range.start,
            range.end,
            |set| self.set_matches(set),
            |c, i| {
                if plain || (self.pages_match(c.visit[i]) && self.event_matches(c, i)) {
                    f(c, i);
                }
            },
        );
    }

    /// Visits started in `range` matching the visit filters and, with event
    /// filters, having a matching event up to a day past the range.
    pub(super) fn visits(&'a self, range: TimeRange) -> impl Iterator<Item = &'a Visit> + 'a {
        let had_event: Option<IdSet<u32>> = (!self.event_filters.is_empty()).then(|| {
            let mut visits = IdSet::default();
            self.site.events.for_each(
                range.start,
                range.end + 86_400,
                |_| true,
                |c, i| {
                    if self.event_matches(c, i) {
                        visits.insert(c.visit[i]);
                    }
                },
            );
            visits
        });
        self.site
            .visits
            .iter()
            .enumerate()
            .filter(move |(i, v)| {
                i64::from(v.started_at) >= range.start
                    && i64::from(v.started_at) < range.end
                    && self.visit_at_matches(v.attributes, *i as u32)
                    && had_event.as_ref().is_none_or(|s| s.contains(&(*i as u32)))
            })
            .map(|(_, v)| v)
    }
}

/// Totals of `site` over `range` under `filters`.
pub(super) fn totals(site: &SiteTraffic, range: TimeRange, filters: &[Filter]) -> Totals {
    let q = Scan::new(site, filters);
    let mut visitors = Bitmap::new(site.visitor_numbers.len());
    let mut t = Totals::default();
    q.each_event(range, |c, i| {
        visitors.insert(c.visitor[i]);
        if c.flags[i] & PAGEVIEW != 0 {
            t.pageviews += 1;
        } else {
            t.events += 1;
        }
    });
    t.visitors = visitors.count();
    for v in q.visits(range) {
        t.visits += 1;
        t.bounces += i64::from(v.bounce);
        t.visit_duration_sum += v.duration();
    }
    t
}

/// Visitors of `site` who completed any of `goals` in `range` under
/// `filters`, and the completions.
pub(super) fn goals(
    site: &SiteTraffic,
    range: TimeRange,
    goals: &[GoalKind],
    filters: &[Filter],
) -> (i64, i64) {
    let q = Scan::new(site, filters);
    let mut visitors = Bitmap::new(site.visitor_numbers.len());
    let mut count = 0;
    let mut memo: IdMap<(u32, u32), bool> = IdMap::default();
    q.each_event(range, |c, i| {
        let e = c.get(i);
        let done = *memo.entry((e.name, e.path)).or_insert_with(|| {
            let name = site.dict.get(e.name).unwrap_or("");
            let path = site.dict.get(e.path).unwrap_or("");
            goals.iter().any(|g| match g {
                GoalKind::Event(goal) => name == goal,
                GoalKind::Page(goal) => e.pageview && glob(goal, path),
            })
        });
        if done {
            count += 1;
            visitors.insert(e.visitor);
        }
    });
    (visitors.count(), count)
}
