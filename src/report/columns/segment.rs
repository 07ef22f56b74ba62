//! One UTC day of a site, as the scan reads it: the events whose time falls
//! in the day and the visits that started in it, column by column, sorted
//! so that filters are judged per run of rows rather than per row.
//!
//! Events are sorted on (attribute set of their visit, name, path, time)
//! and cut into groups `[set, name, path, end]`: the rows from the previous
//! group's end to `end` share that set, name and path, which are therefore
//! not stored per row, and a group's rows are in time order, so a range
//! that cuts the day (a timezone's day) is found by binary search. Visits
//! are sorted on (attribute set, start) in runs `[set, start, end)`, and
//! numbered in row order from the segment's visit base, so the visits of a
//! run are a range of numbers.
//!
//! Properties are sparse: `[row, first pair]` for the rows that have any,
//! into `[key, value]` pairs of dictionary ids.

use std::path::Path;

use super::ColumnError;
use super::container::{Container, Kind, Section, write};

/// Sections of a segment, in file order.
pub(super) mod sec {
    pub const META: usize = 0;
    pub const E_TS: usize = 1;
    pub const E_VISIT: usize = 2;
    pub const E_VISITOR: usize = 3;
    pub const E_PROPS: usize = 4;
    pub const E_PAIRS: usize = 5;
    pub const E_FIRST_VIEW: usize = 6;
    pub const E_GROUPS: usize = 7;
    pub const V_VISITOR: usize = 8;
    pub const V_STARTED: usize = 9;
    pub const V_DURATION: usize = 10;
    pub const V_PAGEVIEWS: usize = 11;
    pub const V_EVENTS: usize = 12;
    pub const V_BOUNCE: usize = 13;
    pub const V_ENTRY: usize = 14;
    pub const V_EXIT: usize = 15;
    pub const V_RUNS: usize = 16;
    pub const COUNT: usize = 17;
}

/// An event's visit number when its visit row was not there when the day
/// was sealed: the bit marks the number as one of the site's orphan
/// numbers (one per such visit id), apart from visit rows' numbers. The
/// raw tables drop such events under a visit filter (an inner join) but
/// count their visit ids in a property's visits.
pub(super) const ORPHAN: u32 = 1 << 31;

pub(super) struct Segment {
    c: Container,
    pub(super) day: i64,
    pub(super) visit_base: u32,
    pub(super) n_events: usize,
    pub(super) n_visits: usize,
    /// The sections that bound every other read (groups, property rows,
    /// runs), copied to the heap when checked: should the file change
    /// under the map after all, the columns read wrong values, never out
    /// of bounds.
    groups: Vec<[u32; 4]>,
    props: Vec<[u32; 2]>,
    runs: Vec<[u32; 3]>,
}

pub(super) struct EventCols<'a> {
    pub(super) ts: &'a [u32],
    /// Visit number (with [`ORPHAN`]: an orphan number).
    pub(super) visit: &'a [u32],
    /// The site's dense visitor number.
    pub(super) visitor: &'a [u32],
    props: &'a [[u32; 2]],
    pairs: &'a [[u32; 2]],
    /// 1 for the visit's first view of the page (first event of the name).
    pub(super) first_view: &'a [u8],
    /// `[set, name, path, end]`.
    pub(super) groups: &'a [[u32; 4]],
}

impl EventCols<'_> {
    /// The `[key, value]` pairs of row `i` (none for most rows).
    #[inline]
    pub(super) fn props(&self, i: usize) -> &[[u32; 2]] {
        let Ok(k) = self.props.binary_search_by_key(&(i as u32), |p| p[0]) else {
            return &[];
        };
        let start = self.props[k][1] as usize;
        let end = self
            .props
            .get(k + 1)
            .map_or(self.pairs.len(), |p| p[1] as usize);
        self.pairs.get(start..end).unwrap_or(&[])
    }

    /// Calls `f(row, pairs)` for the rows of `a..b` that have properties.
    #[inline]
    pub(super) fn each_props(&self, a: usize, b: usize, mut f: impl FnMut(usize, &[[u32; 2]])) {
        let lo = self.props.partition_point(|p| (p[0] as usize) < a);
        let hi = self.props.partition_point(|p| (p[0] as usize) < b);
        for k in lo..hi.max(lo) {
            let start = self.props[k][1] as usize;
            let end = self
                .props
                .get(k + 1)
                .map_or(self.pairs.len(), |p| p[1] as usize);
            f(
                self.props[k][0] as usize,
                self.pairs.get(start..end).unwrap_or(&[]),
            );
        }
    }
}

pub(super) struct VisitCols<'a> {
    pub(super) visitor: &'a [u32],
    pub(super) started: &'a [u32],
    pub(super) duration: &'a [u32],
    pub(super) pageviews: &'a [u32],
    pub(super) events: &'a [u32],
    pub(super) bounce: &'a [u8],
    pub(super) entry: &'a [u32],
    pub(super) exit: &'a [u32],
    /// `[set, start, end)`.
    pub(super) runs: &'a [[u32; 3]],
}

/// The columns of a segment to write, built by [`super::seal`].
#[derive(Default)]
pub(super) struct SegmentColumns {
    pub(super) ts: Vec<u32>,
    pub(super) visit: Vec<u32>,
    pub(super) visitor: Vec<u32>,
    pub(super) props: Vec<u32>,
    pub(super) pairs: Vec<u32>,
    pub(super) first_view: Vec<u8>,
    pub(super) groups: Vec<u32>,
    pub(super) v_visitor: Vec<u32>,
    pub(super) v_started: Vec<u32>,
    pub(super) v_duration: Vec<u32>,
    pub(super) v_pageviews: Vec<u32>,
    pub(super) v_events: Vec<u32>,
    pub(super) v_bounce: Vec<u8>,
    pub(super) v_entry: Vec<u32>,
    pub(super) v_exit: Vec<u32>,
    pub(super) runs: Vec<u32>,
}

impl SegmentColumns {
    pub(super) fn write(&self, path: &Path, day: i64, visit_base: u32) -> Result<u64, ColumnError> {
        let meta = [
            day as u64,
            u64::from(visit_base),
            self.ts.len() as u64,
            self.v_started.len() as u64,
        ];
        write(
            path,
            Kind::Segment,
            &[
                Section::U64(&meta),
                Section::U32(&self.ts),
                Section::U32(&self.visit),
                Section::U32(&self.visitor),
                Section::U32(&self.props),
                Section::U32(&self.pairs),
                Section::U8(&self.first_view),
                Section::U32(&self.groups),
                Section::U32(&self.v_visitor),
                Section::U32(&self.v_started),
                Section::U32(&self.v_duration),
                Section::U32(&self.v_pageviews),
                Section::U32(&self.v_events),
                Section::U8(&self.v_bounce),
                Section::U32(&self.v_entry),
                Section::U32(&self.v_exit),
                Section::U32(&self.runs),
            ],
        )
    }
}

impl Segment {
    /// Opens a segment and checks, once, every column's length and that
    /// groups, runs and property rows tile their rows: those are read from
    /// the heap afterwards and every column's length from the header, so
    /// the scan's reads cannot go out of bounds.
    pub(super) fn open(path: &Path) -> Result<Segment, ColumnError> {
        let c = Container::open(path, Kind::Segment)?;
        if c.sections() != sec::COUNT {
            return Err(c.damaged(format!(
                "{} sections, expected {}",
                c.sections(),
                sec::COUNT
            )));
        }
        let &[day, visit_base, n_events, n_visits] = c.cast::<u64>(sec::META)? else {
            return Err(c.damaged("segment header"));
        };
        let bad = |what: &str| c.damaged(what.to_string());
        let groups = c.cast::<[u32; 4]>(sec::E_GROUPS)?.to_vec();
        let props = c.cast::<[u32; 2]>(sec::E_PROPS)?.to_vec();
        let runs = c.cast::<[u32; 3]>(sec::V_RUNS)?.to_vec();
        let seg = Segment {
            day: i64::try_from(day).map_err(|_| bad("day"))?,
            visit_base: u32::try_from(visit_base).map_err(|_| bad("visit base"))?,
            n_events: usize::try_from(n_events).map_err(|_| bad("events"))?,
            n_visits: usize::try_from(n_visits).map_err(|_| bad("visits"))?,
            c,
            groups,
            props,
            runs,
        };
        // Checked on the heap copies, which the reads use.
        let ev = seg.events()?;
        let mut at = 0;
        for g in ev.groups {
            if g[3] < at || g[3] as usize > seg.n_events {
                return Err(seg.damaged("event groups do not tile the rows"));
            }
            at = g[3];
        }
        if at as usize != seg.n_events {
            return Err(seg.damaged("event groups do not cover the rows"));
        }
        let mut last: Option<[u32; 2]> = None;
        for p in ev.props {
            let ordered = last.is_none_or(|l| l[0] < p[0] && l[1] <= p[1]);
            if !ordered || p[0] as usize >= seg.n_events || p[1] as usize > ev.pairs.len() {
                return Err(seg.damaged("property rows"));
            }
            last = Some(*p);
        }
        let v = seg.visits()?;
        let mut at = 0;
        for r in v.runs {
            if r[1] != at || r[2] < r[1] || r[2] as usize > seg.n_visits {
                return Err(seg.damaged("visit runs do not tile the rows"));
            }
            at = r[2];
        }
        if at as usize != seg.n_visits {
            return Err(seg.damaged("visit runs do not cover the rows"));
        }
        Ok(seg)
    }

    pub(super) fn start(&self) -> i64 {
        self.day * 86_400
    }

    pub(super) fn end(&self) -> i64 {
        self.start() + 86_400
    }

    pub(super) fn events(&self) -> Result<EventCols<'_>, ColumnError> {
        let (c, n) = (&self.c, self.n_events);
        Ok(EventCols {
            ts: c.cast_exact(sec::E_TS, n)?,
            visit: c.cast_exact(sec::E_VISIT, n)?,
            visitor: c.cast_exact(sec::E_VISITOR, n)?,
            props: &self.props,
            pairs: c.cast(sec::E_PAIRS)?,
            first_view: c.cast_exact(sec::E_FIRST_VIEW, n)?,
            groups: &self.groups,
        })
    }

    pub(super) fn visits(&self) -> Result<VisitCols<'_>, ColumnError> {
        let (c, n) = (&self.c, self.n_visits);
        Ok(VisitCols {
            visitor: c.cast_exact(sec::V_VISITOR, n)?,
            started: c.cast_exact(sec::V_STARTED, n)?,
            duration: c.cast_exact(sec::V_DURATION, n)?,
            pageviews: c.cast_exact(sec::V_PAGEVIEWS, n)?,
            events: c.cast_exact(sec::V_EVENTS, n)?,
            bounce: c.cast_exact(sec::V_BOUNCE, n)?,
            entry: c.cast_exact(sec::V_ENTRY, n)?,
            exit: c.cast_exact(sec::V_EXIT, n)?,
            runs: &self.runs,
        })
    }

    pub(super) fn damaged(&self, what: impl Into<String>) -> ColumnError {
        self.c.damaged(what)
    }
}
