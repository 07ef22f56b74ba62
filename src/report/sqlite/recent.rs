//! `RecentTraffic`: the last few weeks of a site's events and visits in
//! memory, for filtered reports.
//!
//! A filter can combine any two dimensions ("pages of visits from Google"),
//! which pre-aggregated rows cannot answer, and scanning SQLite rows with a
//! join costs about half a microsecond per event: seconds for a month of a
//! busy site. Here the same rows live as compact records (strings replaced by
//! ids into a per-site dictionary), so a month of a million-pageview site
//! scans in milliseconds. Reports over older ranges read SQLite
//! ([`super::raw`]); both give the same answers, and the property tests
//! hold both to one reference.
//!
//! Memory is spent only on sites whose filtered reports are used: the first
//! filtered report of a site starts loading it in the background (that report
//! and those until the load ends read SQLite), and a site unused for a day is
//! dropped. While loaded, a site is kept current by the follower that also
//! feeds the rollups: visit snapshots and committed events arrive once a
//! second. Events that arrive while a site loads wait and are added after,
//! except those the load already read (matched by event id). Another process
//! writing events (`tally demo`) bumps a counter in `meta`; the follower
//! notices and reloads the loaded sites the same way.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::filter::{glob, value_matches};
use super::rollups::{FedBatch, FedEvent, RollupFeed};
use crate::report::model::{
    BreakdownRow, Dimension, Filter, FilterField, TimeRange, Totals, count_leading,
};
use crate::report::model::{NOT_AN_ACTION, VisitColumn};
use crate::store::sites::GoalKind;
use crate::store::{Store, StoreError, VisitRecord};
use crate::sync::ReadWrite;

/// Dictionary id of a missing value.
const NONE: u32 = 0;

/// Sites loaded at once (each reads its whole window on a thread of its own).
const LOADS_AT_ONCE: usize = 2;

/// A site unused this long is dropped from memory.
const IDLE_SECS: i64 = 24 * 3600;

/// Hashing for integer keys that are ids or hashes already: one multiply
/// instead of SipHash, which dominated the scans.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

type IdBuild = BuildHasherDefault<IdHasher>;
type IdSet<T> = HashSet<T, IdBuild>;
type IdMap<K, V> = HashMap<K, V, IdBuild>;

/// Strings seen in a site's recent traffic, each stored once.
struct Dictionary {
    strings: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
}

impl Dictionary {
    fn new() -> Dictionary {
        Dictionary {
            strings: vec!["".into()],
            ids: HashMap::new(),
        }
    }

    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn opt(&mut self, s: Option<&str>) -> u32 {
        s.map_or(NONE, |s| self.id(s))
    }

    fn get(&self, id: u32) -> Option<&str> {
        (id != NONE).then(|| &*self.strings[id as usize])
    }

    fn len(&self) -> usize {
        self.strings.len()
    }
}

/// One event as reports see it. Fields are 32-bit where they can be: a month
/// of a busy site is a million of these. Times are Unix seconds (u32 lasts
/// until 2106).
#[derive(Clone, Copy)]
struct Event {
    ts: u32,
    /// The visit's attribute set (fixed when a visit starts): visit filters
    /// are answered per set, without reading the visit.
    attributes: u32,
    /// Index into the site's visits.
    visit: u32,
    /// The visit's visitor, as a dense per-site number (see `visitor_numbers`).
    visitor: u32,
    name: u32,
    path: u32,
    /// 1 + index into the site's property lists, or 0 without properties.
    props: u32,
    pageview: bool,
    first_view: bool,
}

/// Events column by column. A filtered report passes a share of the events
/// in its range (a quarter, say): gathering those from whole 32-byte
/// records would fetch most of the memory anyway, while the two or three
/// narrow columns a report reads stream through.
#[derive(Default)]
struct Columns {
    ts: Vec<u32>,
    attributes: Vec<u32>,
    visit: Vec<u32>,
    visitor: Vec<u32>,
    name: Vec<u32>,
    path: Vec<u32>,
    props: Vec<u32>,
    /// `PAGEVIEW` and `FIRST_VIEW` bits.
    flags: Vec<u8>,
}

const PAGEVIEW: u8 = 1;
const FIRST_VIEW: u8 = 2;

impl Columns {
    fn len(&self) -> usize {
        self.ts.len()
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Event {
        let flags = self.flags[i];
        Event {
            ts: self.ts[i],
            attributes: self.attributes[i],
            visit: self.visit[i],
            visitor: self.visitor[i],
            name: self.name[i],
            path: self.path[i],
            props: self.props[i],
            pageview: flags & PAGEVIEW != 0,
            first_view: flags & FIRST_VIEW != 0,
        }
    }

    fn insert(&mut self, at: usize, e: Event) {
        self.ts.insert(at, e.ts);
        self.attributes.insert(at, e.attributes);
        self.visit.insert(at, e.visit);
        self.visitor.insert(at, e.visitor);
        self.name.insert(at, e.name);
        self.path.insert(at, e.path);
        self.props.insert(at, e.props);
        let flags = (u8::from(e.pageview) * PAGEVIEW) | (u8::from(e.first_view) * FIRST_VIEW);
        self.flags.insert(at, flags);
    }

    /// Indexes of the events in `[start, end)` among `within`, whose times
    /// are in order.
    fn range(
        &self,
        within: std::ops::Range<usize>,
        start: i64,
        end: i64,
    ) -> std::ops::Range<usize> {
        let ts = &self.ts[within.clone()];
        let a = ts.partition_point(|&t| i64::from(t) < start);
        let b = ts.partition_point(|&t| i64::from(t) < end).max(a);
        within.start + a..within.start + b
    }
}

/// The events of one attribute set, `start..end` in [`EventLog::sorted`].
struct Run {
    set: u32,
    start: u32,
    end: u32,
}

/// A site's events, kept like a table clustered on (attribute set, time):
/// a filter on visit attributes is answered once per run of one set and
/// skips the runs it rejects whole, then reads the events it keeps in
/// order, time-bounded by a binary search per run. Events arriving since
/// the last compaction wait in a small time-ordered tail, read event by
/// event.
#[derive(Default)]
struct EventLog {
    sorted: Columns,
    runs: Vec<Run>,
    tail: Columns,
}

impl EventLog {
    fn len(&self) -> usize {
        self.sorted.len() + self.tail.len()
    }

    /// Adds an event to the tail, in time order.
    fn insert(&mut self, e: Event) {
        let at = match self.tail.ts.last() {
            Some(&last) if last > e.ts => self.tail.ts.partition_point(|&t| t <= e.ts),
            _ => self.tail.len(),
        };
        self.tail.insert(at, e);
    }

    /// Calls `f` with the columns and index of every event in `[start, end)`
    /// whose attribute set `keep_set` accepts. `f` reads only the columns it
    /// needs.
    #[inline]
    fn for_each(
        &self,
        start: i64,
        end: i64,
        mut keep_set: impl FnMut(u32) -> bool,
        mut f: impl FnMut(&Columns, usize),
    ) {
        for run in &self.runs {
            if keep_set(run.set) {
                let within = run.start as usize..run.end as usize;
                for i in self.sorted.range(within, start, end) {
                    f(&self.sorted, i);
                }
            }
        }
        for i in self.tail.range(0..self.tail.len(), start, end) {
            if keep_set(self.tail.attributes[i]) {
                f(&self.tail, i);
            }
        }
    }

    /// Every event, in no particular order.
    fn all(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.sorted.len())
            .map(|i| self.sorted.get(i))
            .chain((0..self.tail.len()).map(|i| self.tail.get(i)))
    }

    /// Rebuilds the log from `events`, clustered on (attribute set, time).
    fn from_events(mut events: Vec<Event>) -> EventLog {
        events.sort_unstable_by_key(|e| (e.attributes, e.ts, e.visit));
        let mut sorted = Columns::default();
        let mut runs: Vec<Run> = Vec::new();
        for e in events {
            let i = sorted.len() as u32;
            match runs.last_mut() {
                Some(run) if run.set == e.attributes => run.end = i + 1,
                _ => runs.push(Run {
                    set: e.attributes,
                    start: i,
                    end: i + 1,
                }),
            }
            sorted.insert(sorted.len(), e);
        }
        EventLog {
            sorted,
            runs,
            tail: Columns::default(),
        }
    }

    /// Folds the tail into the clustered part.
    fn compact(&mut self) {
        if self.tail.len() > 0 {
            *self = EventLog::from_events(self.all().collect());
        }
    }

    /// Compacts once the tail is large enough to slow scans down: a few
    /// times a day for a busy site, and never costs more than the events
    /// added since the last time, in the long run.
    fn compact_if_large(&mut self) {
        if self.tail.len() > (self.sorted.len() / 8).max(1 << 16) {
            self.compact();
        }
    }
}

struct Visit {
    id: i64,
    /// Dense per-site number of the visitor id.
    visitor: u32,
    started_at: u32,
    last_seen_at: u32,
    pageviews: u32,
    events: u32,
    bounce: bool,
    /// Dictionary ids of the entry and exit pages.
    pages: [u32; 2],
    /// Index into the site's attribute sets: visits share them (source,
    /// location, browser, device…), so each set is stored once.
    attributes: u32,
}

/// The [`VisitColumn::ALL`] after the entry and exit pages.
const ATTRIBUTES: usize = VisitColumn::ALL.len() - 2;

fn seconds(ts: i64) -> u32 {
    ts.clamp(0, i64::from(u32::MAX)) as u32
}

impl Visit {
    fn duration(&self) -> i64 {
        i64::from(self.last_seen_at) - i64::from(self.started_at)
    }
}

/// One site's recent traffic.
struct SiteTraffic {
    dict: Dictionary,
    events: EventLog,
    visits: Vec<Visit>,
    visit_index: IdMap<i64, u32>,
    /// Visitor ids numbered densely, so a report counts distinct visitors in
    /// a bitmap or a sorted list of small integers rather than a hash set.
    visitor_numbers: IdMap<i64, u32>,
    /// (key, value) dictionary ids.
    props: Vec<Box<[(u32, u32)]>>,
    /// Distinct attribute sets of visits, as dictionary ids.
    attribute_sets: Vec<[u32; ATTRIBUTES]>,
    attribute_index: HashMap<[u32; ATTRIBUTES], u32>,
    /// When a report last used it.
    used: AtomicI64,
}

impl SiteTraffic {
    fn new(now: i64) -> SiteTraffic {
        SiteTraffic {
            dict: Dictionary::new(),
            events: EventLog::default(),
            visits: Vec::new(),
            visit_index: IdMap::default(),
            visitor_numbers: IdMap::default(),
            props: Vec::new(),
            attribute_sets: Vec::new(),
            attribute_index: HashMap::new(),
            used: AtomicI64::new(now),
        }
    }

    fn upsert_visit(&mut self, v: &VisitRecord) {
        let mut set = [NONE; ATTRIBUTES];
        for (slot, column) in set.iter_mut().zip(&VisitColumn::ALL[2..]) {
            *slot = self.dict.opt(column.of(v));
        }
        let attributes = match self.attribute_index.get(&set) {
            Some(&i) => i,
            None => {
                let i = self.attribute_sets.len() as u32;
                self.attribute_sets.push(set);
                self.attribute_index.insert(set, i);
                i
            }
        };
        let pages = [
            self.dict.opt(v.entry_page.as_deref()),
            self.dict.opt(v.exit_page.as_deref()),
        ];
        let next = self.visitor_numbers.len() as u32;
        let visitor = *self.visitor_numbers.entry(v.visitor_id).or_insert(next);
        let visit = Visit {
            id: v.id,
            visitor,
            started_at: seconds(v.started_at),
            last_seen_at: seconds(v.last_seen_at),
            pageviews: v.pageviews.clamp(0, i64::from(u32::MAX)) as u32,
            events: v.events.clamp(0, i64::from(u32::MAX)) as u32,
            bounce: v.is_bounce,
            pages,
            attributes,
        };
        match self.visit_index.get(&v.id) {
            Some(&i) => self.visits[i as usize] = visit,
            None => {
                self.visit_index.insert(v.id, self.visits.len() as u32);
                self.visits.push(visit);
            }
        }
    }

    /// Adds an event of a known visit (others started before the window);
    /// false if the visit is not known.
    fn add_event(
        &mut self,
        ts: i64,
        visit_id: i64,
        name: &str,
        path: &str,
        props: Option<&str>,
        first_view: bool,
    ) -> bool {
        let Some(&visit) = self.visit_index.get(&visit_id) else {
            return false;
        };
        let event = Event {
            ts: seconds(ts),
            visit,
            visitor: self.visits[visit as usize].visitor,
            attributes: self.visits[visit as usize].attributes,
            name: self.dict.id(name),
            path: self.dict.id(path),
            props: self.props_of(props),
            pageview: name == "pageview",
            first_view,
        };
        self.events.insert(event);
        true
    }

    fn props_of(&mut self, json: Option<&str>) -> u32 {
        let Some(map) = json.and_then(|p| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p).ok()
        }) else {
            return 0;
        };
        let pairs: Box<[(u32, u32)]> = map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (self.dict.id(k), self.dict.id(v))))
            .collect();
        if pairs.is_empty() {
            return 0;
        }
        self.props.push(pairs);
        self.props.len() as u32
    }

    fn apply_fed(&mut self, e: &FedEvent) {
        let _ = self.add_event(
            e.ts,
            e.visit_id,
            e.name.as_deref().unwrap_or("pageview"),
            &e.path,
            e.props.as_deref(),
            e.first_view,
        );
    }

    /// The dictionary id of the visit's value of the `index`-th of the
    /// [`VisitColumn::ALL`].
    fn column(&self, v: &Visit, index: usize) -> u32 {
        match index {
            0 | 1 => v.pages[index],
            _ => self.attribute_sets[v.attributes as usize][index - 2],
        }
    }

    /// Drops events before `since` and visits no longer needed.
    fn trim(&mut self, since: i64) {
        let mut events: Vec<Event> = self
            .events
            .all()
            .filter(|e| i64::from(e.ts) >= since)
            .collect();
        let mut keep = vec![false; self.visits.len()];
        for e in &events {
            keep[e.visit as usize] = true;
        }
        for (i, v) in self.visits.iter().enumerate() {
            keep[i] |= i64::from(v.last_seen_at) >= since;
        }
        let mut remap = vec![u32::MAX; self.visits.len()];
        let mut visits = Vec::new();
        for (i, v) in std::mem::take(&mut self.visits).into_iter().enumerate() {
            if keep[i] {
                remap[i] = visits.len() as u32;
                visits.push(v);
            }
        }
        // Renumber visitors and attribute sets too, so they stay as many as
        // the visits held need.
        let mut numbers: IdMap<u32, u32> = IdMap::default();
        let mut sets: IdMap<u32, u32> = IdMap::default();
        let mut attribute_sets = Vec::new();
        for v in &mut visits {
            let next = numbers.len() as u32;
            v.visitor = *numbers.entry(v.visitor).or_insert(next);
            let old = v.attributes;
            v.attributes = *sets.entry(old).or_insert_with(|| {
                attribute_sets.push(self.attribute_sets[old as usize]);
                attribute_sets.len() as u32 - 1
            });
        }
        self.attribute_index = attribute_sets
            .iter()
            .enumerate()
            .map(|(i, set)| (*set, i as u32))
            .collect();
        self.attribute_sets = attribute_sets;
        self.visitor_numbers = self
            .visitor_numbers
            .iter()
            .filter_map(|(id, n)| numbers.get(n).map(|m| (*id, *m)))
            .collect();
        for e in &mut events {
            e.visit = remap[e.visit as usize];
            e.visitor = visits[e.visit as usize].visitor;
            e.attributes = visits[e.visit as usize].attributes;
        }
        self.compact_strings(&mut visits, &mut events);
        self.events = EventLog::from_events(events);
        self.visit_index = visits
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id, i as u32))
            .collect();
        self.visits = visits;
    }
}

impl SiteTraffic {
    /// Keeps only the strings and property lists that `visits` and `events`
    /// (what stays in the window) use, renumbered: without this both grow
    /// with every new page or value seen since start, and so does what each
    /// report allocates per dictionary id.
    fn compact_strings(&mut self, visits: &mut [Visit], events: &mut [Event]) {
        let old = std::mem::replace(&mut self.dict, Dictionary::new());
        let mut ids = vec![NONE; old.len()];
        let mut keep = |dict: &mut Dictionary, id: u32| -> u32 {
            let Some(s) = old.get(id) else {
                return NONE;
            };
            let slot = &mut ids[id as usize];
            if *slot == NONE {
                *slot = dict.id(s);
            }
            *slot
        };
        for set in &mut self.attribute_sets {
            for id in set.iter_mut() {
                *id = keep(&mut self.dict, *id);
            }
        }
        self.attribute_index = self
            .attribute_sets
            .iter()
            .enumerate()
            .map(|(i, set)| (*set, i as u32))
            .collect();
        for v in visits {
            for id in &mut v.pages {
                *id = keep(&mut self.dict, *id);
            }
        }
        let old_props = std::mem::take(&mut self.props);
        for e in events {
            e.name = keep(&mut self.dict, e.name);
            e.path = keep(&mut self.dict, e.path);
            if e.props != 0 {
                // Each event with properties has a list of its own.
                let pairs: Box<[(u32, u32)]> = old_props[e.props as usize - 1]
                    .iter()
                    .map(|&(k, v)| (keep(&mut self.dict, k), keep(&mut self.dict, v)))
                    .collect();
                self.props.push(pairs);
                e.props = self.props.len() as u32;
            }
        }
    }
}

enum SiteState {
    /// Being read from the database; what arrives meanwhile waits here.
    /// `load` tells this load from an earlier one a reload replaced.
    Loading {
        load: u64,
        visits: Vec<VisitRecord>,
        events: Vec<FedEvent>,
    },
    Loaded(Box<SiteTraffic>),
}

pub struct RecentTraffic {
    days: i64,
    store: Store,
    /// Hands over the committed events of the sites held or loading.
    feed: Arc<RollupFeed>,
    sites: RwLock<HashMap<i64, SiteState>>,
    loads: AtomicU64,
}

impl RecentTraffic {
    /// Holds up to `days` days of traffic of sites whose filtered reports
    /// are used, read from `store` and kept current from `feed`.
    pub fn new(store: Store, days: i64, feed: Arc<RollupFeed>) -> Arc<RecentTraffic> {
        Arc::new(RecentTraffic {
            days,
            store,
            feed,
            sites: RwLock::new(HashMap::new()),
            loads: AtomicU64::new(0),
        })
    }

    fn since(&self, now: i64) -> i64 {
        now - self.days * 86_400
    }

    /// Whether filtered reports of `site_id` over `range` can be answered
    /// here now. A site not held yet starts loading, and the answer is no
    /// until it is loaded.
    pub fn ready(self: &Arc<Self>, site_id: i64, range: TimeRange, now: i64) -> bool {
        if range.start < self.since(now) {
            return false;
        }
        {
            let sites = self.sites.reading();
            match sites.get(&site_id) {
                Some(SiteState::Loaded(t)) => {
                    t.used.store(now, Ordering::Relaxed);
                    return true;
                }
                Some(SiteState::Loading { .. }) => return false,
                None => {}
            }
        }
        self.start_load(site_id, now);
        false
    }

    /// Marks `site_id` loading and reads it on a thread of its own, unless
    /// [`LOADS_AT_ONCE`] sites are loading already: then the site is left
    /// to its next filtered report, and reports read SQLite meanwhile.
    /// Anyone who may see a site can ask for its filtered reports (a public
    /// site, a share link), so many sites' reports at once must not become
    /// as many loads.
    fn start_load(self: &Arc<Self>, site_id: i64, now: i64) {
        let load = self.loads.fetch_add(1, Ordering::Relaxed);
        {
            let mut sites = self.sites.writing();
            if matches!(sites.get(&site_id), Some(SiteState::Loading { .. })) {
                return;
            }
            let loading = sites
                .values()
                .filter(|s| matches!(s, SiteState::Loading { .. }))
                .count();
            if loading >= LOADS_AT_ONCE {
                // A reloaded site was held: its events need not wait now.
                self.feed.keep_events_of(site_id, false);
                return;
            }
            sites.insert(
                site_id,
                SiteState::Loading {
                    load,
                    visits: Vec::new(),
                    events: Vec::new(),
                },
            );
        }
        // Before the load reads: an event committed after this is handed
        // over whole, one committed before is in what the load reads.
        self.feed.keep_events_of(site_id, true);
        let this = self.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let since = this.since(now);
            // A panic must not leave the site loading for ever (collecting
            // what arrives): it counts as a failed load.
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                this.store
                    .reader()
                    .and_then(|conn| load_site(&conn, site_id, since, now))
                    .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("the load panicked".to_string()));
            let mut sites = this.sites.writing();
            // Only the newest load of a site installs what it read.
            let mine = matches!(sites.get(&site_id), Some(SiteState::Loading { load: l, .. }) if *l == load);
            if !mine {
                return;
            }
            match loaded {
                Ok((mut traffic, read)) => {
                    if let Some(SiteState::Loading { visits, events, .. }) = sites.remove(&site_id)
                    {
                        for v in &visits {
                            traffic.upsert_visit(v);
                        }
                        for e in events.iter().filter(|e| !read.contains(&e.id)) {
                            traffic.apply_fed(e);
                        }
                    }
                    tracing::info!(
                        site_id,
                        events = traffic.events.len(),
                        visits = traffic.visits.len(),
                        ms = started.elapsed().as_millis() as u64,
                        "loaded recent traffic for filtered reports"
                    );
                    sites.insert(site_id, SiteState::Loaded(Box::new(traffic)));
                }
                Err(e) => {
                    sites.remove(&site_id);
                    this.feed.keep_events_of(site_id, false);
                    tracing::error!(site_id, error = %e, "loading recent traffic failed");
                }
            }
        });
    }

    /// Reloads every held site, after another process wrote events.
    pub fn reload(self: &Arc<Self>, now: i64) {
        let held: Vec<i64> = self.sites.reading().keys().copied().collect();
        for site_id in held {
            self.sites.writing().remove(&site_id);
            self.start_load(site_id, now);
        }
        tracing::info!("reloading recent traffic after writes by another process");
    }

    /// Applies visit snapshots, then the committed events of the same batch.
    pub fn apply(&self, visits: &[VisitRecord], events: &FedBatch) {
        if visits.is_empty() && events.is_empty() {
            return;
        }
        let mut sites = self.sites.writing();
        for v in visits {
            match sites.get_mut(&v.site_id) {
                Some(SiteState::Loaded(t)) => t.upsert_visit(v),
                Some(SiteState::Loading { visits, .. }) => visits.push(v.clone()),
                None => {}
            }
        }
        for e in events
            .iter()
            .filter(|e| e.name.as_deref() != Some(NOT_AN_ACTION))
        {
            match sites.get_mut(&e.site_id) {
                Some(SiteState::Loaded(t)) => t.apply_fed(e),
                Some(SiteState::Loading { events, .. }) => events.push(e.clone()),
                None => {}
            }
        }
        for state in sites.values_mut() {
            if let SiteState::Loaded(t) = state {
                t.events.compact_if_large();
            }
        }
    }

    /// Drops what has left the window and sites unused for a day (hourly).
    pub fn trim(&self, now: i64) {
        let since = self.since(now);
        let mut sites = self.sites.writing();
        sites.retain(|site_id, state| {
            let keep = match state {
                SiteState::Loaded(t) => now - t.used.load(Ordering::Relaxed) < IDLE_SECS,
                SiteState::Loading { .. } => true,
            };
            if !keep {
                self.feed.keep_events_of(*site_id, false);
            }
            keep
        });
        for state in sites.values_mut() {
            if let SiteState::Loaded(t) = state {
                t.trim(since);
            }
        }
    }

    /// Sites held, and sites being loaded.
    pub fn sites(&self) -> (usize, usize) {
        let sites = self.sites.reading();
        let loading = sites
            .values()
            .filter(|s| matches!(s, SiteState::Loading { .. }))
            .count();
        (sites.len() - loading, loading)
    }

    fn with_site<T>(&self, site_id: i64, f: impl FnOnce(&SiteTraffic) -> T) -> Option<T> {
        let sites = self.sites.reading();
        match sites.get(&site_id) {
            Some(SiteState::Loaded(t)) => Some(f(t)),
            _ => None,
        }
    }

    /// Totals of a site held here (check [`RecentTraffic::ready`] first).
    pub fn totals(&self, site_id: i64, range: TimeRange, filters: &[Filter]) -> Option<Totals> {
        self.with_site(site_id, |site| {
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
        })
    }

    /// Rows ordered by visitors (then value), `limit` after `offset`.
    pub fn breakdown(
        &self,
        site_id: i64,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        limit: i64,
        offset: i64,
    ) -> Option<Vec<BreakdownRow>> {
        self.with_site(site_id, |site| {
            breakdown(site, range, dimension, filters, limit, offset)
        })
    }

    /// Visitors who completed any of `goals` in `range`, and the completions.
    pub fn goals(
        &self,
        site_id: i64,
        range: TimeRange,
        goals: &[GoalKind],
        filters: &[Filter],
    ) -> Option<(i64, i64)> {
        self.with_site(site_id, |site| {
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
        })
    }
}

/// Breakdown rows in the making, one per value seen, found through a table
/// indexed by dictionary id rather than a hash per event. That table spans
/// the whole dictionary, so a small direct-mapped cache in front of it
/// answers the few values a breakdown sees over and over.
struct Rows {
    slot_of: Vec<u32>,
    cache: Box<[(u32, u32); 1024]>,
    values: Vec<u32>,
    rows: Vec<BreakdownRow>,
}

impl Rows {
    fn new(dict_len: usize) -> Rows {
        Rows {
            slot_of: vec![u32::MAX; dict_len],
            cache: Box::new([(u32::MAX, 0); 1024]),
            values: Vec::new(),
            rows: Vec::new(),
        }
    }

    #[inline]
    fn slot(&mut self, value: u32) -> u32 {
        let cached = &mut self.cache[value as usize % 1024];
        if cached.0 == value {
            return cached.1;
        }
        let slot = &mut self.slot_of[value as usize];
        if *slot == u32::MAX {
            *slot = self.rows.len() as u32;
            self.values.push(value);
            self.rows.push(BreakdownRow::default());
        }
        *cached = (value, *slot);
        *slot
    }
}

/// Bitmaps of this many bytes in all count the visitors of the values that
/// can be shown; past it, pairs are sorted instead.
const BITMAP_BUDGET: usize = 16 << 20;

/// Distinct second halves of the `pairs` whose first half (a slot) is one of
/// `slots`, per slot of `slots`.
fn count_distinct(pairs: &[(u32, u32)], slots: &[u32], universe: usize) -> Vec<i64> {
    let dense: Vec<usize> = {
        let most = slots.iter().max().map_or(0, |&m| m as usize + 1);
        let mut d = vec![usize::MAX; most];
        for (i, &s) in slots.iter().enumerate() {
            d[s as usize] = i;
        }
        d
    };
    let which = |slot: u32| dense.get(slot as usize).copied().unwrap_or(usize::MAX);
    if slots.len() * universe.div_ceil(8) <= BITMAP_BUDGET {
        let mut sets: Vec<Bitmap> = slots.iter().map(|_| Bitmap::new(universe)).collect();
        for &(slot, n) in pairs {
            let i = which(slot);
            if i != usize::MAX {
                sets[i].insert(n);
            }
        }
        return sets.iter().map(Bitmap::count).collect();
    }
    let mut chosen: Vec<u64> = pairs
        .iter()
        .filter(|(slot, _)| which(*slot) != usize::MAX)
        .map(|&(slot, n)| (u64::from(slot) << 32) | u64::from(n))
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    let mut out = vec![0; slots.len()];
    for p in chosen {
        out[which((p >> 32) as u32)] += 1;
    }
    out
}

fn breakdown(
    site: &SiteTraffic,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    limit: i64,
    offset: i64,
) -> Vec<BreakdownRow> {
    let q = Scan::new(site, filters);
    let mut rows = Rows::new(site.dict.len());
    // (slot, visitor) of everything counted, and for properties (slot,
    // visit): distinct ones are counted only for values that can be shown.
    let mut visitor_pairs: Vec<(u32, u32)> = Vec::new();
    let mut visit_pairs: Vec<(u32, u32)> = Vec::new();
    match dimension {
        Dimension::Page | Dimension::EventName => {
            let pages = matches!(dimension, Dimension::Page);
            q.each_event(range, |c, i| {
                let flags = c.flags[i];
                if (flags & PAGEVIEW != 0) != pages {
                    return;
                }
                let slot = rows.slot(if pages { c.path[i] } else { c.name[i] });
                visitor_pairs.push((slot, c.visitor[i]));
                let r = &mut rows.rows[slot as usize];
                r.visits += i64::from(flags & FIRST_VIEW != 0);
                if pages {
                    r.pageviews += 1;
                } else {
                    r.events += 1;
                }
            });
        }
        Dimension::Prop(key) => {
            let Some(key) = prop_key(&site.dict, key) else {
                return Vec::new();
            };
            q.each_event(range, |c, i| {
                let e = c.get(i);
                let Some(value) = prop_value(site, &e, key) else {
                    return;
                };
                let slot = rows.slot(value);
                visitor_pairs.push((slot, e.visitor));
                visit_pairs.push((slot, e.visit));
                let r = &mut rows.rows[slot as usize];
                if e.pageview {
                    r.pageviews += 1;
                } else {
                    r.events += 1;
                }
            });
        }
        Dimension::Visit(column) => {
            let c = column.index();
            for v in q.visits(range) {
                let slot = rows.slot(site.column(v, c));
                visitor_pairs.push((slot, v.visitor));
                let r = &mut rows.rows[slot as usize];
                r.visits += 1;
                r.pageviews += i64::from(v.pageviews);
                r.events += i64::from(v.events);
                r.bounces += i64::from(v.bounce);
                r.visit_duration_sum += v.duration();
            }
        }
    }
    // A value's visitors never exceed this: rank by it, count visitors down
    // the ranking, and stop once no value left can overtake the last shown.
    let bound = |r: &BreakdownRow| match dimension {
        Dimension::Visit(_) => r.visits,
        Dimension::Page => r.pageviews,
        Dimension::EventName => r.events,
        Dimension::Prop(_) => r.pageviews + r.events,
    };
    let mut ranked: Vec<u32> = (0..rows.rows.len() as u32).collect();
    ranked.sort_by_key(|&s| std::cmp::Reverse(bound(&rows.rows[s as usize])));
    let bounds: Vec<i64> = ranked
        .iter()
        .map(|&s| bound(&rows.rows[s as usize]))
        .collect();
    let need = (offset + limit).max(0) as usize;
    let universe = site.visitor_numbers.len();
    let visitors = count_leading(&bounds, need, |ranks| {
        Ok::<_, std::convert::Infallible>(count_distinct(&visitor_pairs, &ranked[ranks], universe))
    })
    .unwrap_or_else(|never| match never {});
    let take = visitors.len();
    for (&slot, n) in ranked.iter().zip(visitors) {
        rows.rows[slot as usize].visitors = n;
    }
    let mut candidates: Vec<u32> = ranked[..take].to_vec();
    let name = |slot: u32| site.dict.get(rows.values[slot as usize]);
    candidates.sort_by(|&a, &b| {
        rows.rows[b as usize]
            .visitors
            .cmp(&rows.rows[a as usize].visitors)
            .then_with(|| name(a).cmp(&name(b)))
    });
    let shown: Vec<u32> = candidates
        .into_iter()
        .skip(offset.max(0) as usize)
        .take(limit.max(0) as usize)
        .collect();
    if matches!(dimension, Dimension::Prop(_)) {
        let visits = count_distinct(&visit_pairs, &shown, site.visits.len());
        for (&slot, n) in shown.iter().zip(visits) {
            rows.rows[slot as usize].visits = n;
        }
    }
    shown
        .iter()
        .map(|&slot| {
            let mut r = std::mem::take(&mut rows.rows[slot as usize]);
            r.value = name(slot).map(str::to_string);
            r
        })
        .collect()
}

/// A set of small integers.
struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    fn new(size: usize) -> Bitmap {
        Bitmap {
            words: vec![0; size.div_ceil(64)],
        }
    }

    fn insert(&mut self, n: u32) {
        let (word, bit) = (n as usize / 64, n % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn count(&self) -> i64 {
        self.words.iter().map(|w| i64::from(w.count_ones())).sum()
    }
}

/// A property key's id. A key with `"` cannot be named in the JSON path the
/// SQL uses, so there it matches nothing; here too.
fn prop_key(dict: &Dictionary, key: &str) -> Option<u32> {
    if key.contains('"') {
        return None;
    }
    dict.ids.get(key).copied()
}

fn prop_value(site: &SiteTraffic, e: &Event, key: u32) -> Option<u32> {
    if e.props == 0 {
        return None;
    }
    site.props[e.props as usize - 1]
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

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

/// Filters applied to one site's traffic, with the rules of [`super::filter`]
/// (three-valued: a missing value matches `!=`, and `==` only when the none
/// label is among the values).
struct Scan<'a> {
    site: &'a SiteTraffic,
    event_filters: Vec<Compiled<'a>>,
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
    fn new(site: &'a SiteTraffic, filters: &'a [Filter]) -> Scan<'a> {
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
                _ => event_filters.push(compiled(f)),
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

    #[inline]
    fn event_matches(&self, e: &Event) -> bool {
        self.event_filters.iter().all(|c| {
            let id = match &c.filter.field {
                FilterField::Page => e.path,
                FilterField::EventName => e.name,
                FilterField::Prop(_) => c
                    .prop_key
                    .and_then(|k| prop_value(self.site, e, k))
                    .unwrap_or(NONE),
                FilterField::Visit(_) => unreachable!("visit filters are apart"),
            };
            self.matches(c, id)
        })
    }

    /// Calls `f` with the columns and index of each action event in `range`
    /// matching every filter.
    #[inline]
    fn each_event(&self, range: TimeRange, mut f: impl FnMut(&Columns, usize)) {
        let plain = self.page_filters.is_empty() && self.event_filters.is_empty();
        self.site.events.for_each(
            range.start,
            range.end,
            |set| self.set_matches(set),
            |c, i| {
                if plain || {
                    let e = c.get(i);
                    self.pages_match(e.visit) && self.event_matches(&e)
                } {
                    f(c, i);
                }
            },
        );
    }

    /// Visits started in `range` matching the visit filters and, with event
    /// filters, having a matching event up to a day past the range.
    fn visits(&'a self, range: TimeRange) -> impl Iterator<Item = &'a Visit> + 'a {
        let had_event: Option<IdSet<u32>> = (!self.event_filters.is_empty()).then(|| {
            let mut visits = IdSet::default();
            self.site.events.for_each(
                range.start,
                range.end + 86_400,
                |_| true,
                |c, i| {
                    if self.event_matches(&c.get(i)) {
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

/// Reads one site's events since `since` and their visits, in one snapshot;
/// returns them with the ids of the events read.
fn load_site(
    conn: &Connection,
    site_id: i64,
    since: i64,
    now: i64,
) -> Result<(SiteTraffic, IdSet<i64>), StoreError> {
    let snapshot = conn.unchecked_transaction()?;
    let conn: &Connection = &snapshot;
    let mut site = SiteTraffic::new(now);
    // Visits of events in the window: those started up to a day before it
    // cover every visit (no visit spans a day of continuous activity).
    for v in crate::store::sites::visits_where(
        conn,
        "site_id = ?1 AND started_at >= ?2 ORDER BY started_at",
        params![site_id, since - 86_400],
    )? {
        site.upsert_visit(&v);
    }
    let mut read = IdSet::default();
    let mut stmt = conn.prepare(
        "SELECT ts, visit_id, name, path, props, first_view, id FROM events
         WHERE site_id = ?1 AND ts >= ?2 AND name <> ?3 ORDER BY ts, id",
    )?;
    let mut rows = stmt.query(params![site_id, since, NOT_AN_ACTION])?;
    while let Some(r) = rows.next()? {
        let (name, path, props): (String, String, Option<String>) =
            (r.get(2)?, r.get(3)?, r.get(4)?);
        let added = site.add_event(
            r.get(0)?,
            r.get(1)?,
            &name,
            &path,
            props.as_deref(),
            r.get(5)?,
        );
        // Only events held count as read: one whose visit row was not written
        // yet is added when the feed hands it over.
        if added {
            read.insert(r.get(6)?);
        }
    }
    site.events.compact();
    Ok((site, read))
}

/// Tells a running server that events were written beside it.
pub fn mark_external_writes(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('external_writes', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

/// The counter [`mark_external_writes`] bumps.
pub fn external_writes(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'external_writes'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::VisitDims;

    fn visit(id: i64, visitor: i64, at: i64, source: &str) -> VisitRecord {
        VisitRecord {
            id,
            site_id: 1,
            visitor_id: visitor,
            seq: 1,
            started_at: at,
            last_seen_at: at + 60,
            entry_page: Some("/".into()),
            exit_page: Some("/b".into()),
            pageviews: 2,
            events: 0,
            interactive: 0,
            is_bounce: false,
            dims: std::sync::Arc::new(VisitDims {
                source: Some(source.into()),
                ..VisitDims::default()
            }),
        }
    }

    #[test]
    fn trimming_keeps_the_window_intact() {
        let mut site = SiteTraffic::new(0);
        // Day 0: two visits from Google, one of them again on day 2; day 2:
        // one from Bing.
        let day = 86_400;
        for (id, visitor, at, source) in [
            (1, 10, 100, "Google"),
            (2, 11, 200, "Google"),
            (3, 10, 2 * day, "Google"),
            (4, 12, 2 * day + 50, "Bing"),
        ] {
            site.upsert_visit(&visit(id, visitor, at, source));
            for (dt, path) in [(0, "/"), (60, "/b")] {
                assert!(site.add_event(at + dt, id, "pageview", path, None, true));
            }
        }
        let recent = TimeRange {
            start: 2 * day,
            end: 3 * day,
        };
        let by_source = |site: &SiteTraffic| {
            breakdown(
                site,
                recent,
                &Dimension::Visit(VisitColumn::Source),
                &[],
                10,
                0,
            )
            .into_iter()
            .map(|r| (r.value, r.visitors, r.visits, r.pageviews))
            .collect::<Vec<_>>()
        };
        let pages = |site: &SiteTraffic| breakdown(site, recent, &Dimension::Page, &[], 10, 0);
        let (before, pages_before) = (by_source(&site), pages(&site));
        site.trim(day);
        assert_eq!(by_source(&site), before);
        assert_eq!(pages(&site), pages_before);
        assert_eq!(site.events.len(), 4, "day 0's events are gone");
        assert_eq!(site.visits.len(), 2);
        assert_eq!(site.attribute_sets.len(), 2);
        assert_eq!(site.visitor_numbers.len(), 2);
        // Still kept current after trimming.
        site.upsert_visit(&visit(5, 11, 2 * day + 100, "Google"));
        assert!(site.add_event(2 * day + 100, 5, "pageview", "/", None, true));
        let after = by_source(&site);
        assert_eq!(after[0], (Some("Google".into()), 2, 2, 4));
    }

    /// Filtered reports of many sites at once (a stranger's, on public
    /// sites) load at most LOADS_AT_ONCE of them at a time.
    #[test]
    fn at_most_two_sites_load_at_once() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        let ids: Vec<i64> = (0..4)
            .map(|i| {
                crate::store::sites::add_site(&conn, &format!("s{i}.example"), "UTC", true)
                    .unwrap()
                    .id
            })
            .collect();
        let recent = RecentTraffic::new(store.clone(), 30, Arc::new(RollupFeed::default()));
        let now = crate::store::now_unix();
        let range = TimeRange {
            start: now - 86_400,
            end: now,
        };
        let wait_for = |loaded: usize, loading: usize| {
            for _ in 0..500 {
                if recent.sites() == (loaded, loading) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("held {:?}, not ({loaded}, {loading})", recent.sites());
        };

        // The only read connection is taken: every load waits for it.
        let reader = store.reader().unwrap();
        for id in &ids {
            assert!(!recent.ready(*id, range, now));
        }
        assert_eq!(recent.sites(), (0, LOADS_AT_ONCE));
        drop(reader);
        wait_for(LOADS_AT_ONCE, 0);
        // The sites refused meanwhile load at their next report.
        for id in &ids {
            recent.ready(*id, range, now);
        }
        wait_for(ids.len(), 0);
        assert!(ids.iter().all(|id| recent.ready(*id, range, now)));
    }

    #[test]
    fn trimming_keeps_the_dictionaries_to_the_window() {
        // Every day brings pages, property values and sources never seen
        // before; the window is two days and is trimmed daily, as the
        // server does hourly.
        let day = 86_400;
        let mut site = SiteTraffic::new(0);
        let mut sizes = Vec::new();
        for d in 0..60i64 {
            for i in 0..20i64 {
                let id = d * 100 + i;
                let at = d * day + i * 60;
                site.upsert_visit(&visit(id, id, at, &format!("source-{id}")));
                let page = format!("/day-{d}/page-{i}");
                let props = format!(r#"{{"key-{id}":"value-{id}"}}"#);
                assert!(site.add_event(at, id, "pageview", &page, Some(&props), true));
                assert!(site.add_event(at + 30, id, "Signup", &page, Some(&props), true));
            }
            site.trim((d - 1) * day);
            sizes.push((site.dict.len(), site.dict.ids.len(), site.props.len()));
        }
        // Two days of 20 visits: at most 40 of each kind of value, so the
        // dictionary holds at most a few hundred strings whatever the uptime.
        let (dict, ids, props) = *sizes.last().unwrap();
        assert!(
            dict <= 250 && ids < dict,
            "dictionary of {dict} strings: {sizes:?}"
        );
        assert!(props <= 80, "{props} property lists: {sizes:?}");
        assert_eq!(sizes[59], sizes[30], "flat once the window is full");
        // The window's numbers survive the compaction.
        let range = TimeRange {
            start: 59 * day,
            end: 60 * day,
        };
        let pages = breakdown(&site, range, &Dimension::Page, &[], 100, 0);
        assert_eq!(pages.len(), 20);
        assert!(
            pages
                .iter()
                .all(|r| r.value.as_deref().unwrap().starts_with("/day-59/"))
        );
        let by_prop = breakdown(
            &site,
            range,
            &Dimension::Prop("key-5905".into()),
            &[],
            10,
            0,
        );
        assert_eq!(by_prop.len(), 1);
        assert_eq!(by_prop[0].value.as_deref(), Some("value-5905"));
        assert_eq!(by_prop[0].events, 1);
        let by_source = breakdown(
            &site,
            range,
            &Dimension::Visit(VisitColumn::Source),
            &[],
            100,
            0,
        );
        assert_eq!(by_source.len(), 20);
        assert!(
            by_source
                .iter()
                .any(|r| r.value.as_deref() == Some("source-5919"))
        );
    }
}
