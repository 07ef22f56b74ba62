//! One site's column files, opened: the per-site dictionary and attribute
//! sets, the site file (the commit point: counts and the list of days),
//! and the per-day segments, mapped on first use and kept open.
//!
//! ```text
//! SITE/site.tcf      u64 [visitors, visits, dictionary len, sets len, id of "pageview"]; u32 days; u32 visit base per day
//! SITE/dict.tcf      u32 offsets (n + 1); string bytes. Id 0 is the missing value.
//! SITE/sets.tcf      u32 × 15 per attribute set (VisitColumn::ALL[2..] as dictionary ids)
//! SITE/DAY.seg       one UTC day (DAY = days since 1970-01-01); see [`Segment`]
//! ```
//! The dictionary and set files only grow; the site file says how much of
//! them is committed, so a day's seal appends to both and then rewrites the
//! site file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::{Container, Error, KIND_DICT, KIND_SEGMENT, KIND_SETS, KIND_SITE, Result};

/// Dictionary id of a missing value.
pub const NONE: u32 = 0;
/// Attribute-set id of events whose visit row is missing (the raw tables'
/// join drops them under any visit filter).
pub const NO_VISIT: u32 = u32::MAX;
/// Attributes of a set: [`crate::model::VisitColumn::ALL`] after entry and exit page.
pub const ATTRIBUTES: usize = 15;

/// Sections of a segment.
pub mod sec {
    pub const META: usize = 0;
    pub const E_TS: usize = 1;
    pub const E_VISIT: usize = 2;
    pub const E_VISITOR: usize = 3;
    pub const E_PROPS: usize = 4;
    pub const E_FIRST_VIEW: usize = 5;
    pub const E_GROUPS: usize = 6;
    pub const V_VISITOR: usize = 7;
    pub const V_STARTED: usize = 8;
    pub const V_DURATION: usize = 9;
    pub const V_PAGEVIEWS: usize = 10;
    pub const V_EVENTS: usize = 11;
    pub const V_BOUNCE: usize = 12;
    pub const V_ENTRY: usize = 13;
    pub const V_EXIT: usize = 14;
    pub const V_RUNS: usize = 15;
    pub const COUNT: usize = 16;
}

pub struct Dict {
    c: Container,
    len: usize,
}

impl Dict {
    fn open(path: &Path, len: usize, verify: bool) -> Result<Dict> {
        let c = Container::open(path, KIND_DICT, verify)?;
        let offsets = c.u32s(0)?;
        let bytes = c.bytes(1)?;
        if offsets.len() < len + 1 {
            return Err(c.corrupt(format!("{} offsets for {len} strings", offsets.len())));
        }
        for w in offsets[..=len].windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if a > b || b > bytes.len() || std::str::from_utf8(&bytes[a..b]).is_err() {
                return Err(c.corrupt("bad string offsets or UTF-8"));
            }
        }
        Ok(Dict { c, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The string of `id`; `None` for the missing value or an id out of
    /// range (checked at open: offsets and UTF-8 of every committed string).
    pub fn get(&self, id: u32) -> Option<&str> {
        if id == NONE || id as usize >= self.len {
            return None;
        }
        let offsets = self.c.u32s(0).ok()?;
        let bytes = self.c.bytes(1).ok()?;
        let (a, b) = (
            offsets[id as usize] as usize,
            offsets[id as usize + 1] as usize,
        );
        std::str::from_utf8(bytes.get(a..b)?).ok()
    }
}

pub struct Sets {
    c: Container,
    len: usize,
}

impl Sets {
    fn open(path: &Path, len: usize, verify: bool) -> Result<Sets> {
        let c = Container::open(path, KIND_SETS, verify)?;
        if c.u32s(0)?.len() < len * ATTRIBUTES {
            return Err(c.corrupt("fewer attribute sets than the site file says"));
        }
        Ok(Sets { c, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every set's ids, [`ATTRIBUTES`] per set: index once per query, not
    /// per row.
    pub fn table(&self) -> &[u32] {
        self.c
            .u32s(0)
            .ok()
            .and_then(|t| t.get(..self.len * ATTRIBUTES))
            .unwrap_or(&[])
    }

    /// The dictionary ids of set `set`.
    pub fn get(&self, set: u32) -> Option<&[u32]> {
        let i = set as usize;
        if i >= self.len {
            return None;
        }
        self.c
            .u32s(0)
            .ok()?
            .get(i * ATTRIBUTES..(i + 1) * ATTRIBUTES)
    }
}

/// One UTC day: its events (by `ts` in the day) sorted on (attribute set,
/// name, path, time), and the visits that started that day sorted on
/// (attribute set, start).
///
/// Events are grouped: a group is `[set, name, path, end)`, the rows from
/// the previous group's end to `end` sharing that set, name and path, which
/// are therefore not stored per row. A visit run is `[set, start, end)`.
pub struct Segment {
    c: Container,
    pub day: u32,
    pub visit_base: u32,
    pub n_events: usize,
    pub n_visits: usize,
}

pub struct EventCols<'a> {
    pub ts: &'a [u32],
    /// Site-wide visit number (`u32::MAX`: no visit row).
    pub visit: &'a [u32],
    /// Site-wide dense visitor number.
    pub visitor: &'a [u32],
    /// `[row, dictionary id of its properties' JSON text]` of the rows that
    /// have properties, by row: most events have none.
    pub props: &'a [[u32; 2]],
    /// 1 for the visit's first view of the page.
    pub first_view: &'a [u8],
    /// `[set, name, path, end]`.
    pub groups: &'a [[u32; 4]],
}

fn groups(c: &Container, i: usize, rows: usize, check: bool) -> Result<&[[u32; 4]]> {
    let groups: &[[u32; 4]] =
        bytemuck::try_cast_slice(c.u32s(i)?).map_err(|e| c.corrupt(format!("groups: {e:?}")))?;
    if !check {
        return Ok(groups);
    }
    let mut at = 0;
    for g in groups {
        if g[3] < at || g[3] as usize > rows {
            return Err(c.corrupt("groups do not tile the rows"));
        }
        at = g[3];
    }
    if at as usize != rows {
        return Err(c.corrupt("groups do not cover the rows"));
    }
    Ok(groups)
}

pub struct VisitCols<'a> {
    pub visitor: &'a [u32],
    pub started: &'a [u32],
    pub duration: &'a [u32],
    pub pageviews: &'a [u32],
    pub events: &'a [u32],
    pub bounce: &'a [u8],
    pub entry: &'a [u32],
    pub exit: &'a [u32],
    pub runs: &'a [[u32; 3]],
}

fn runs(c: &Container, i: usize, rows: usize, check: bool) -> Result<&[[u32; 3]]> {
    let runs: &[[u32; 3]] =
        bytemuck::try_cast_slice(c.u32s(i)?).map_err(|e| c.corrupt(format!("runs: {e:?}")))?;
    if !check {
        return Ok(runs);
    }
    let mut at = 0;
    for r in runs {
        if r[1] != at || r[2] < r[1] || r[2] as usize > rows {
            return Err(c.corrupt("runs do not tile the rows"));
        }
        at = r[2];
    }
    if at as usize != rows {
        return Err(c.corrupt("runs do not cover the rows"));
    }
    Ok(runs)
}

impl EventCols<'_> {
    /// The properties of row `i` ([`NONE`] without).
    #[inline]
    pub fn props(&self, i: usize) -> u32 {
        match self.props.binary_search_by_key(&(i as u32), |p| p[0]) {
            Ok(k) => self.props[k][1],
            Err(_) => NONE,
        }
    }
}

impl Segment {
    pub fn open(path: &Path, verify: bool) -> Result<Segment> {
        let c = Container::open(path, KIND_SEGMENT, verify)?;
        if c.sections() != sec::COUNT {
            return Err(c.corrupt(format!(
                "{} sections, expected {}",
                c.sections(),
                sec::COUNT
            )));
        }
        let meta = c.u64s(sec::META)?;
        let &[day, visit_base, n_events, n_visits] = meta else {
            return Err(c.corrupt("segment meta"));
        };
        let seg = Segment {
            day: u32::try_from(day).map_err(|_| c.corrupt("day"))?,
            visit_base: u32::try_from(visit_base).map_err(|_| c.corrupt("visit base"))?,
            n_events: n_events as usize,
            n_visits: n_visits as usize,
            c,
        };
        // Check every column's length, and that groups and runs tile the
        // rows, once: the map never changes, so later reads skip it.
        seg.event_cols(true)?;
        seg.visit_cols(true)?;
        Ok(seg)
    }

    pub fn start(&self) -> i64 {
        i64::from(self.day) * 86_400
    }

    pub fn end(&self) -> i64 {
        self.start() + 86_400
    }

    pub fn events(&self) -> Result<EventCols<'_>> {
        self.event_cols(false)
    }

    pub fn visits(&self) -> Result<VisitCols<'_>> {
        self.visit_cols(false)
    }

    fn event_cols(&self, check: bool) -> Result<EventCols<'_>> {
        let (c, n) = (&self.c, self.n_events);
        Ok(EventCols {
            ts: c.u32s_of(sec::E_TS, n)?,
            visit: c.u32s_of(sec::E_VISIT, n)?,
            visitor: c.u32s_of(sec::E_VISITOR, n)?,
            props: bytemuck::try_cast_slice(c.u32s(sec::E_PROPS)?)
                .map_err(|e| c.corrupt(format!("props: {e:?}")))?,
            first_view: c.u8s_of(sec::E_FIRST_VIEW, n)?,
            groups: groups(c, sec::E_GROUPS, n, check)?,
        })
    }

    fn visit_cols(&self, check: bool) -> Result<VisitCols<'_>> {
        let (c, n) = (&self.c, self.n_visits);
        Ok(VisitCols {
            visitor: c.u32s_of(sec::V_VISITOR, n)?,
            started: c.u32s_of(sec::V_STARTED, n)?,
            duration: c.u32s_of(sec::V_DURATION, n)?,
            pageviews: c.u32s_of(sec::V_PAGEVIEWS, n)?,
            events: c.u32s_of(sec::V_EVENTS, n)?,
            bounce: c.u8s_of(sec::V_BOUNCE, n)?,
            entry: c.u32s_of(sec::V_ENTRY, n)?,
            exit: c.u32s_of(sec::V_EXIT, n)?,
            runs: runs(c, sec::V_RUNS, n, check)?,
        })
    }

    pub fn corrupt(&self, m: impl Into<String>) -> Error {
        self.c.corrupt(m)
    }
}

/// Segments kept mapped at most; past it the cache is emptied (maps cost
/// address space and page-cache, not heap).
const MAX_OPEN: usize = 1024;

/// One site's column store.
pub struct Store {
    dir: PathBuf,
    pub dict: Dict,
    pub sets: Sets,
    pub n_visitors: usize,
    pub n_visits: usize,
    /// Dictionary id of the name `pageview` ([`NONE`] if never seen).
    pub pageview: u32,
    /// Days with a segment, ascending, and the first visit number of each.
    days: Vec<u32>,
    visit_bases: Vec<u32>,
    verify: bool,
    open: Mutex<HashMap<u32, Arc<Segment>>>,
    /// Derived sets shared by the calls of one dashboard view (see
    /// [`Store::derived`]), most recent last.
    derived: Mutex<Vec<(String, Arc<crate::query::Bitmap>)>>,
}

/// Derived sets kept at most (each a bit per visit: 620 KB at 5M visits).
const MAX_DERIVED: usize = 8;

impl Store {
    /// Opens a site's directory. `verify` checks each file's checksum when
    /// it is first mapped (reads it whole once).
    pub fn open(dir: &Path, verify: bool) -> Result<Store> {
        let site = Container::open(&dir.join("site.tcf"), KIND_SITE, true)?;
        let &[n_visitors, n_visits, n_dict, n_sets, pageview] = site.u64s(0)? else {
            return Err(site.corrupt("site counts"));
        };
        let days = site.u32s(1)?.to_vec();
        let visit_bases = site.u32s(2)?.to_vec();
        if visit_bases.len() != days.len() || days.windows(2).any(|w| w[0] >= w[1]) {
            return Err(site.corrupt("days"));
        }
        Ok(Store {
            dict: Dict::open(&dir.join("dict.tcf"), n_dict as usize, verify)?,
            sets: Sets::open(&dir.join("sets.tcf"), n_sets as usize, verify)?,
            dir: dir.to_path_buf(),
            n_visitors: n_visitors as usize,
            n_visits: n_visits as usize,
            pageview: u32::try_from(pageview).map_err(|_| site.corrupt("pageview id"))?,
            days,
            visit_bases,
            verify,
            open: Mutex::new(HashMap::new()),
            derived: Mutex::new(Vec::new()),
        })
    }

    pub fn segment_path(dir: &Path, day: u32) -> PathBuf {
        dir.join(format!("{day}.seg"))
    }

    fn segment(&self, day: u32) -> Result<Arc<Segment>> {
        // A poisoned lock only means another report panicked; the map is
        // still a valid cache.
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = open.get(&day) {
            return Ok(Arc::clone(s));
        }
        let seg = Segment::open(&Store::segment_path(&self.dir, day), self.verify)?;
        if seg.day != day {
            return Err(seg.corrupt(format!("holds day {}, expected {day}", seg.day)));
        }
        if seg.visit_base as usize + seg.n_visits > self.n_visits {
            return Err(seg.corrupt("visit numbers past the site's"));
        }
        if open.len() >= MAX_OPEN {
            open.clear();
        }
        let seg = Arc::new(seg);
        open.insert(day, Arc::clone(&seg));
        Ok(seg)
    }

    /// The segments of the days `[first, last]` that have one, in order.
    pub fn segments(&self, first: i64, last: i64) -> Result<Vec<Arc<Segment>>> {
        let a = self.days.partition_point(|&d| i64::from(d) < first);
        let b = self.days.partition_point(|&d| i64::from(d) <= last);
        self.days[a..b.max(a)]
            .iter()
            .map(|&d| self.segment(d))
            .collect()
    }

    /// The segments holding events in `[start, end)`.
    pub fn segments_for(&self, start: i64, end: i64) -> Result<Vec<Arc<Segment>>> {
        if end <= start {
            return Ok(Vec::new());
        }
        self.segments(start.div_euclid(86_400), (end - 1).div_euclid(86_400))
    }

    /// The segment holding visit number `n`.
    pub fn segment_of_visit(&self, n: u32) -> Result<Option<Arc<Segment>>> {
        let i = self.visit_bases.partition_point(|&b| b <= n);
        if i == 0 {
            return Ok(None);
        }
        self.segment(self.days[i - 1]).map(Some)
    }

    /// A derived set by key (say, the visits with an event matching a
    /// view's filters in its range), computed once and shared: sealed
    /// segments never change, so an entry stays true while the days it
    /// covers are the same. A dashboard view asks for the same one in its
    /// aggregate and each visit breakdown.
    pub fn derived(
        &self,
        key: &str,
        compute: impl FnOnce() -> Result<crate::query::Bitmap>,
    ) -> Result<Arc<crate::query::Bitmap>> {
        if let Some(b) = self.lookup(key) {
            return Ok(b);
        }
        let b = Arc::new(compute()?);
        self.remember(key, Arc::clone(&b));
        Ok(b)
    }

    pub fn lookup(&self, key: &str) -> Option<Arc<crate::query::Bitmap>> {
        let cache = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| Arc::clone(b))
    }

    pub fn remember(&self, key: &str, b: Arc<crate::query::Bitmap>) {
        let mut cache = self.derived.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| k != key);
        if cache.len() >= MAX_DERIVED {
            cache.remove(0);
        }
        cache.push((key.to_string(), b));
    }

    /// Forgets every derived set (the harness does before each measured
    /// view, so each view pays for its own).
    pub fn forget_derived(&self) {
        self.derived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn days(&self) -> &[u32] {
        &self.days
    }
}
