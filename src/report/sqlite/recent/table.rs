//! [`SiteTraffic`], one site's recent traffic as a table in memory: strings
//! stored once in a [`Dictionary`], visits with their attribute sets shared,
//! events in an [`EventLog`], and the upkeep that keeps them current
//! (visit snapshots, committed events) and within the window (`trim`).

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;

use super::event_log::{Event, EventLog};
use super::ids::IdMap;
use crate::report::model::VisitColumn;
use crate::report::sqlite::rollups::FedEvent;
use crate::store::VisitRecord;

/// Dictionary id of a missing value.
pub(super) const NONE: u32 = 0;

/// Strings seen in a site's recent traffic, each stored once.
pub(super) struct Dictionary {
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

    pub(super) fn get(&self, id: u32) -> Option<&str> {
        (id != NONE).then(|| &*self.strings[id as usize])
    }

    pub(super) fn len(&self) -> usize {
        self.strings.len()
    }
}

pub(super) struct Visit {
    id: i64,
    /// Dense per-site number of the visitor id.
    pub(super) visitor: u32,
    pub(super) started_at: u32,
    last_seen_at: u32,
    pub(super) pageviews: u32,
    pub(super) events: u32,
    pub(super) bounce: bool,
    /// Dictionary ids of the entry and exit pages.
    pages: [u32; 2],
    /// Index into the site's attribute sets: visits share them (source,
    /// location, browser, device…), so each set is stored once.
    pub(super) attributes: u32,
}

/// The [`VisitColumn::ALL`] after the entry and exit pages.
pub(super) const ATTRIBUTES: usize = VisitColumn::ALL.len() - 2;

fn seconds(ts: i64) -> u32 {
    ts.clamp(0, i64::from(u32::MAX)) as u32
}

impl Visit {
    pub(super) fn duration(&self) -> i64 {
        i64::from(self.last_seen_at) - i64::from(self.started_at)
    }
}

/// One site's recent traffic.
pub(super) struct SiteTraffic {
    pub(super) dict: Dictionary,
    pub(super) events: EventLog,
    pub(super) visits: Vec<Visit>,
    visit_index: IdMap<i64, u32>,
    /// Visitor ids numbered densely, so a report counts distinct visitors in
    /// a bitmap or a sorted list of small integers rather than a hash set.
    pub(super) visitor_numbers: IdMap<i64, u32>,
    /// (key, value) dictionary ids.
    pub(super) props: Vec<Box<[(u32, u32)]>>,
    /// Distinct attribute sets of visits, as dictionary ids.
    pub(super) attribute_sets: Vec<[u32; ATTRIBUTES]>,
    attribute_index: HashMap<[u32; ATTRIBUTES], u32>,
    /// When a report last used it.
    pub(super) used: AtomicI64,
    /// Events a load read before their visit's row was written, by visit
    /// id: added when the visit's snapshot arrives (the feed hands over
    /// only what was committed after the load began). At most
    /// [`WAITING_MAX`] (the rows of a second or two at most).
    waiting: IdMap<i64, Vec<EventRow>>,
    waiting_len: usize,
}

/// Events held for a visit row not written yet; past it they are dropped.
const WAITING_MAX: usize = 10_000;

/// An event row as a load reads it.
pub(super) struct EventRow {
    pub(super) ts: i64,
    pub(super) visit_id: i64,
    pub(super) name: String,
    pub(super) path: String,
    pub(super) props: Option<String>,
    pub(super) first_view: bool,
    pub(super) id: i64,
}

impl EventRow {
    /// Adds it to `site`: false when its visit is not held.
    pub(super) fn add_to(&self, site: &mut SiteTraffic) -> bool {
        site.add_event(
            self.ts,
            self.visit_id,
            &self.name,
            &self.path,
            self.props.as_deref(),
            self.first_view,
        )
    }
}

impl SiteTraffic {
    pub(super) fn new(now: i64) -> SiteTraffic {
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
            waiting: IdMap::default(),
            waiting_len: 0,
        }
    }

    /// Holds `e`, whose visit is not known yet, until the visit's snapshot
    /// arrives; false (not held) past [`WAITING_MAX`].
    pub(super) fn wait_for_visit(&mut self, e: EventRow) -> bool {
        if self.waiting_len >= WAITING_MAX {
            return false;
        }
        self.waiting_len += 1;
        self.waiting.entry(e.visit_id).or_default().push(e);
        true
    }

    pub(super) fn upsert_visit(&mut self, v: &VisitRecord) {
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
        if let Some(events) = self.waiting.remove(&v.id) {
            self.waiting_len -= events.len();
            for e in events {
                e.add_to(self);
            }
        }
    }

    /// Adds an event of a known visit (others started before the window);
    /// false if the visit is not known.
    pub(super) fn add_event(
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
            started: self.visits[visit as usize].started_at,
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

    pub(super) fn apply_fed(&mut self, e: &FedEvent) {
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
    pub(super) fn column(&self, v: &Visit, index: usize) -> u32 {
        match index {
            0 | 1 => v.pages[index],
            _ => self.attribute_sets[v.attributes as usize][index - 2],
        }
    }

    /// Drops events before `since` and visits no longer needed.
    pub(super) fn trim(&mut self, since: i64) {
        self.waiting.retain(|_, events| {
            events.retain(|e| e.ts >= since);
            !events.is_empty()
        });
        self.waiting_len = self.waiting.values().map(Vec::len).sum();
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
            e.started = visits[e.visit as usize].started_at;
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

/// A property key's id. A key with `"` cannot be named in the JSON path the
/// SQL uses, so there it matches nothing; here too.
pub(super) fn prop_key(dict: &Dictionary, key: &str) -> Option<u32> {
    if !crate::report::matching::prop_key_named(key) {
        return None;
    }
    dict.ids.get(key).copied()
}

/// The value id of property `key` in an event's properties (`props`: 1 +
/// index into the site's property lists, 0 for none).
pub(super) fn prop_value(site: &SiteTraffic, props: u32, key: u32) -> Option<u32> {
    if props == 0 {
        return None;
    }
    site.props[props as usize - 1]
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Dimension, TimeRange};
    use crate::report::sqlite::recent::breakdown::breakdown;
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
