//! `RecentTraffic`: the last few weeks of events and visits in memory, for
//! filtered reports.
//!
//! A filter can combine any two dimensions ("pages of visits from Google"),
//! which pre-aggregated rows cannot answer, and scanning SQLite rows with a
//! join costs about half a microsecond per event: seconds for a month of a
//! busy site. Here the same rows live as compact records (strings replaced by
//! ids into one dictionary), so a month of a million-pageview site scans in
//! milliseconds. Reports over older ranges read SQLite ([`super::stats`]);
//! both give the same answers, and the property tests hold both to one
//! reference.
//!
//! Kept current by the follower that also feeds the rollups: visit snapshots
//! and committed events arrive once a second, so this trails the database by
//! about a second, as the rollups do. Another process writing events (`tally
//! demo`) bumps a counter in `meta`; the follower sees it and reloads.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use rusqlite::{Connection, OptionalExtension, params};

use super::rollups::FedEvent;
use super::sites::GoalKind;
use super::stats::VISIT_COLUMNS;
use super::stats::{BreakdownRow, Dimension, Filter, FilterField, FilterOp, TimeRange, Totals};
use super::{StoreError, VisitRecord};

/// Dictionary id of a missing value.
const NONE: u32 = 0;

/// Strings seen in recent traffic, each stored once.
#[derive(Default)]
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
}

struct Event {
    ts: i64,
    /// Index into the site's visits.
    visit: u32,
    name: u32,
    path: u32,
    /// 1 + index into the site's property lists, or 0 without properties.
    props: u32,
    pageview: bool,
    first_view: bool,
}

struct Visit {
    id: i64,
    visitor: i64,
    started_at: i64,
    last_seen_at: i64,
    pageviews: i64,
    events: i64,
    bounce: bool,
    /// Dictionary ids of the [`VISIT_COLUMNS`], in that order.
    columns: [u32; VISIT_COLUMNS.len()],
}

#[derive(Default)]
struct SiteTraffic {
    /// Ordered by time.
    events: Vec<Event>,
    visits: Vec<Visit>,
    visit_index: HashMap<i64, u32>,
    /// (key, value) dictionary ids.
    props: Vec<Box<[(u32, u32)]>>,
}

struct Inner {
    dict: Dictionary,
    sites: HashMap<i64, SiteTraffic>,
    /// Events before this are not held.
    since: i64,
    /// After a reload: ids of the events it read, since the feed may hand
    /// them over again; kept for the next two batches.
    reloaded: Option<(HashSet<i64>, u8)>,
}

pub struct RecentTraffic {
    days: i64,
    inner: RwLock<Inner>,
}

fn visit_from(v: &VisitRecord, dict: &mut Dictionary) -> Visit {
    let mut columns = [NONE; VISIT_COLUMNS.len()];
    for (slot, column) in columns.iter_mut().zip(VISIT_COLUMNS) {
        *slot = dict.opt(super::rollups::visit_value(v, column));
    }
    Visit {
        id: v.id,
        visitor: v.visitor_id,
        started_at: v.started_at,
        last_seen_at: v.last_seen_at,
        pageviews: v.pageviews,
        events: v.events,
        bounce: v.is_bounce,
        columns,
    }
}

impl SiteTraffic {
    fn upsert_visit(&mut self, v: &VisitRecord, dict: &mut Dictionary) -> u32 {
        let visit = visit_from(v, dict);
        match self.visit_index.get(&v.id) {
            Some(&i) => {
                self.visits[i as usize] = visit;
                i
            }
            None => {
                let i = self.visits.len() as u32;
                self.visits.push(visit);
                self.visit_index.insert(v.id, i);
                i
            }
        }
    }

    fn add_event(&mut self, e: Event) {
        // Events arrive about in time order; keep them sorted.
        let at = self.events.partition_point(|x| x.ts <= e.ts);
        self.events.insert(at, e);
    }

    fn props_of(&mut self, json: Option<&str>, dict: &mut Dictionary) -> u32 {
        let Some(map) = json.and_then(|p| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p).ok()
        }) else {
            return 0;
        };
        let pairs: Box<[(u32, u32)]> = map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (dict.id(k), dict.id(v))))
            .collect();
        if pairs.is_empty() {
            return 0;
        }
        self.props.push(pairs);
        self.props.len() as u32
    }

    /// Events in `[start, end)`.
    fn events_in(&self, start: i64, end: i64) -> &[Event] {
        let a = self.events.partition_point(|e| e.ts < start);
        let b = self.events.partition_point(|e| e.ts < end);
        &self.events[a..b]
    }
}

impl RecentTraffic {
    /// Loads the last `days` days of events (and their visits) from `conn`.
    pub fn load(conn: &Connection, now: i64, days: i64) -> Result<RecentTraffic, StoreError> {
        let since = now - days * 86_400;
        let inner = load_inner(conn, since, None)?;
        Ok(RecentTraffic {
            days,
            inner: RwLock::new(inner),
        })
    }

    /// Reloads everything, after another process wrote events. Call it
    /// between two batches of the feed: the events it reads that the feed
    /// hands over next are recognised by id and not added twice.
    pub fn reload(&self, conn: &Connection, now: i64) -> Result<(), StoreError> {
        let mut ids = HashSet::new();
        let mut inner = load_inner(conn, now - self.days * 86_400, Some(&mut ids))?;
        inner.reloaded = Some((ids, 2));
        *self.inner.write().expect("recent traffic") = inner;
        Ok(())
    }

    /// Whether reports over `range` can be answered here.
    pub fn covers(&self, range: TimeRange) -> bool {
        range.start >= self.inner.read().expect("recent traffic").since
    }

    /// Applies visit snapshots (new visits and changed totals).
    pub fn apply_visits(&self, visits: &[VisitRecord]) {
        if visits.is_empty() {
            return;
        }
        let mut guard = self.inner.write().expect("recent traffic");
        let Inner { dict, sites, .. } = &mut *guard;
        for v in visits {
            sites.entry(v.site_id).or_default().upsert_visit(v, dict);
        }
    }

    /// Applies committed events. Their visits' snapshots came first; an
    /// event whose visit is unknown (it started before the window) is not
    /// held, and neither is anything older than the window.
    pub fn apply_events(&self, events: &[FedEvent]) {
        if events.is_empty() {
            return;
        }
        let mut guard = self.inner.write().expect("recent traffic");
        let Inner {
            dict,
            sites,
            since,
            reloaded,
        } = &mut *guard;
        let read = reloaded.as_ref().map(|(ids, _)| ids);
        for e in events {
            if e.ts < *since
                || e.name.as_deref() == Some(NOT_AN_ACTION)
                || read.is_some_and(|ids| ids.contains(&e.id))
            {
                continue;
            }
            let site = sites.entry(e.site_id).or_default();
            let Some(&visit) = site.visit_index.get(&e.visit_id) else {
                continue;
            };
            let name = dict.id(e.name.as_deref().unwrap_or("pageview"));
            let path = dict.id(&e.path);
            let props = site.props_of(e.props.as_deref(), dict);
            site.add_event(Event {
                ts: e.ts,
                visit,
                name,
                path,
                props,
                pageview: e.name.is_none(),
                first_view: e.first_view,
            });
        }
        if let Some((_, left)) = reloaded {
            *left -= 1;
            if *left == 0 {
                *reloaded = None;
            }
        }
    }

    /// Drops what has left the window (daily is enough).
    pub fn trim(&self, now: i64) {
        let mut guard = self.inner.write().expect("recent traffic");
        let since = now - self.days * 86_400;
        guard.since = since;
        for site in guard.sites.values_mut() {
            let cut = site.events.partition_point(|e| e.ts < since);
            site.events.drain(..cut);
            // Visits: keep those still referenced or started in the window.
            let mut keep = vec![false; site.visits.len()];
            for e in &site.events {
                keep[e.visit as usize] = true;
            }
            for (i, v) in site.visits.iter().enumerate() {
                keep[i] |= v.last_seen_at >= since;
            }
            let mut remap = vec![u32::MAX; site.visits.len()];
            let mut visits = Vec::new();
            for (i, v) in std::mem::take(&mut site.visits).into_iter().enumerate() {
                if keep[i] {
                    remap[i] = visits.len() as u32;
                    visits.push(v);
                }
            }
            for e in &mut site.events {
                e.visit = remap[e.visit as usize];
            }
            site.visit_index = visits
                .iter()
                .enumerate()
                .map(|(i, v)| (v.id, i as u32))
                .collect();
            site.visits = visits;
        }
    }

    pub fn totals(&self, site_id: i64, range: TimeRange, filters: &[Filter]) -> Totals {
        let guard = self.inner.read().expect("recent traffic");
        let Some(site) = guard.sites.get(&site_id) else {
            return Totals::default();
        };
        let q = Scan::new(&guard.dict, site, filters);
        let mut visitors = HashSet::new();
        let mut t = Totals::default();
        for e in q.events(range) {
            visitors.insert(site.visits[e.visit as usize].visitor);
            if e.pageview {
                t.pageviews += 1;
            } else {
                t.events += 1;
            }
        }
        t.visitors = visitors.len() as i64;
        for v in q.visits(range) {
            t.visits += 1;
            t.bounces += i64::from(v.bounce);
            t.visit_duration_sum += v.last_seen_at - v.started_at;
        }
        t
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
    ) -> Vec<BreakdownRow> {
        let guard = self.inner.read().expect("recent traffic");
        let Some(site) = guard.sites.get(&site_id) else {
            return Vec::new();
        };
        let dict = &guard.dict;
        let q = Scan::new(dict, site, filters);
        // value id → (row, visitors, visits)
        type Row = (BreakdownRow, HashSet<i64>, HashSet<u32>);
        let mut rows: HashMap<u32, Row> = HashMap::new();
        fn row(rows: &mut HashMap<u32, Row>, id: u32) -> &mut Row {
            rows.entry(id).or_default()
        }
        match dimension {
            Dimension::Page | Dimension::EventName => {
                let pages = matches!(dimension, Dimension::Page);
                for e in q.events(range).filter(|e| e.pageview == pages) {
                    let (r, visitors, _) = row(&mut rows, if pages { e.path } else { e.name });
                    visitors.insert(site.visits[e.visit as usize].visitor);
                    r.visits += i64::from(e.first_view);
                    if pages {
                        r.pageviews += 1;
                    } else {
                        r.events += 1;
                    }
                }
            }
            Dimension::Prop(key) => {
                let Some(key) = prop_key(dict, key) else {
                    return Vec::new();
                };
                for e in q.events(range) {
                    let Some(value) = prop_value(site, e, key) else {
                        continue;
                    };
                    let (r, visitors, visits) = row(&mut rows, value);
                    visitors.insert(site.visits[e.visit as usize].visitor);
                    visits.insert(e.visit);
                    if e.pageview {
                        r.pageviews += 1;
                    } else {
                        r.events += 1;
                    }
                }
            }
            Dimension::Visit(column) => {
                let c = column_index(column);
                for v in q.visits(range) {
                    let (r, visitors, _) = row(&mut rows, v.columns[c]);
                    visitors.insert(v.visitor);
                    r.visits += 1;
                    r.pageviews += v.pageviews;
                    r.events += v.events;
                    r.bounces += i64::from(v.bounce);
                    r.visit_duration_sum += v.last_seen_at - v.started_at;
                }
            }
        }
        let prop = matches!(dimension, Dimension::Prop(_));
        let mut out: Vec<BreakdownRow> = rows
            .into_iter()
            .map(|(id, (mut r, visitors, visits))| {
                r.value = dict.get(id).map(str::to_string);
                r.visitors = visitors.len() as i64;
                if prop {
                    r.visits = visits.len() as i64;
                }
                r
            })
            .collect();
        out.sort_by(|a, b| {
            b.visitors
                .cmp(&a.visitors)
                .then_with(|| a.value.cmp(&b.value))
        });
        out.into_iter()
            .skip(offset.max(0) as usize)
            .take(limit.max(0) as usize)
            .collect()
    }

    /// Visitors who completed any of `goals` in `range`, and the completions.
    pub fn goals(
        &self,
        site_id: i64,
        range: TimeRange,
        goals: &[GoalKind],
        filters: &[Filter],
    ) -> (i64, i64) {
        let guard = self.inner.read().expect("recent traffic");
        let Some(site) = guard.sites.get(&site_id) else {
            return (0, 0);
        };
        let dict = &guard.dict;
        let q = Scan::new(dict, site, filters);
        let mut visitors = HashSet::new();
        let mut count = 0;
        let mut memo: HashMap<(u32, u32), bool> = HashMap::new();
        for e in q.events(range) {
            let done = *memo.entry((e.name, e.path)).or_insert_with(|| {
                let (name, path) = (
                    dict.get(e.name).unwrap_or(""),
                    dict.get(e.path).unwrap_or(""),
                );
                goals.iter().any(|g| match g {
                    GoalKind::Event(goal) => name == goal,
                    GoalKind::Page(goal) => e.pageview && glob(goal, path),
                })
            });
            if done {
                count += 1;
                visitors.insert(site.visits[e.visit as usize].visitor);
            }
        }
        (visitors.len() as i64, count)
    }
}

const NOT_AN_ACTION: &str = "engagement";

/// A property key's id. A key with `"` cannot be named in the JSON path the
/// SQL uses, so there it matches nothing; here too.
fn prop_key(dict: &Dictionary, key: &str) -> Option<u32> {
    if key.contains('"') {
        return None;
    }
    dict.ids.get(key).copied()
}

fn column_index(column: &str) -> usize {
    VISIT_COLUMNS
        .iter()
        .position(|c| *c == column)
        .expect("a visit column")
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

/// One filter, its answers remembered per dictionary id.
struct Compiled<'a> {
    filter: &'a Filter,
    /// For a property filter, the key's id (`None`: no event has the key).
    prop_key: Option<u32>,
    memo: std::cell::RefCell<HashMap<u32, bool>>,
}

/// Filters applied to one site's traffic, with the semantics of the SQL in
/// [`super::stats`] (three-valued: a missing value matches `!=`, and `==`
/// only when the none label is among the values).
struct Scan<'a> {
    dict: &'a Dictionary,
    site: &'a SiteTraffic,
    event_filters: Vec<Compiled<'a>>,
    visit_filters: Vec<(usize, Compiled<'a>)>,
}

impl<'a> Scan<'a> {
    fn new(dict: &'a Dictionary, site: &'a SiteTraffic, filters: &'a [Filter]) -> Scan<'a> {
        let compiled = |f: &'a Filter| Compiled {
            filter: f,
            prop_key: match &f.field {
                FilterField::Prop(k) => prop_key(dict, k),
                _ => None,
            },
            memo: Default::default(),
        };
        let mut event_filters = Vec::new();
        let mut visit_filters = Vec::new();
        for f in filters {
            match &f.field {
                FilterField::Visit(column) => {
                    visit_filters.push((column_index(column), compiled(f)))
                }
                _ => event_filters.push(compiled(f)),
            }
        }
        Scan {
            dict,
            site,
            event_filters,
            visit_filters,
        }
    }

    fn matches(&self, c: &Compiled<'_>, id: u32) -> bool {
        if let Some(&known) = c.memo.borrow().get(&id) {
            return known;
        }
        let answer = value_matches(c.filter, self.dict.get(id));
        c.memo.borrow_mut().insert(id, answer);
        answer
    }

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

    fn visit_matches(&self, v: &Visit) -> bool {
        self.visit_filters
            .iter()
            .all(|(col, c)| self.matches(c, v.columns[*col]))
    }

    /// Action events in `range` matching every filter.
    fn events(&'a self, range: TimeRange) -> impl Iterator<Item = &'a Event> + 'a {
        self.site
            .events_in(range.start, range.end)
            .iter()
            .filter(move |e| {
                self.event_matches(e) && self.visit_matches(&self.site.visits[e.visit as usize])
            })
    }

    /// Visits started in `range` matching the visit filters and, with event
    /// filters, having a matching event up to a day past the range.
    fn visits(&'a self, range: TimeRange) -> impl Iterator<Item = &'a Visit> + 'a {
        let had_event: Option<HashSet<u32>> = (!self.event_filters.is_empty()).then(|| {
            self.site
                .events_in(range.start, range.end + 86_400)
                .iter()
                .filter(|e| self.event_matches(e))
                .map(|e| e.visit)
                .collect()
        });
        self.site
            .visits
            .iter()
            .enumerate()
            .filter(move |(i, v)| {
                v.started_at >= range.start
                    && v.started_at < range.end
                    && self.visit_matches(v)
                    && had_event.as_ref().is_none_or(|s| s.contains(&(*i as u32)))
            })
            .map(|(_, v)| v)
    }
}

/// Whether a value (or its absence) passes `f`, as the SQL does.
fn value_matches(f: &Filter, value: Option<&str>) -> bool {
    let any = match value {
        None => {
            let has_none = f.values.iter().any(Option::is_none);
            return match f.op {
                FilterOp::IsNot => !has_none,
                _ => has_none,
            };
        }
        Some(value) => f.values.iter().any(|want| match want {
            None => false,
            Some(w) => match f.op {
                FilterOp::Contains => value.to_ascii_lowercase().contains(&w.to_ascii_lowercase()),
                _ if f.field == FilterField::Page && w.contains('*') => {
                    glob(&w.replace("**", "*"), value)
                }
                _ => value == w,
            },
        }),
    };
    if f.op == FilterOp::IsNot { !any } else { any }
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Reads events since `since` and their visits; with `ids`, collects the
/// ids of the events read.
fn load_inner(
    conn: &Connection,
    since: i64,
    mut ids: Option<&mut HashSet<i64>>,
) -> Result<Inner, StoreError> {
    let mut inner = Inner {
        dict: Dictionary::new(),
        sites: HashMap::new(),
        since,
        reloaded: None,
    };
    // One snapshot for visits and events.
    let snapshot = conn.unchecked_transaction()?;
    let conn: &Connection = &snapshot;
    // Visits of events in the window: those started up to a day before it
    // cover every visit (no visit spans a day of continuous activity).
    for v in super::sites::visits_where(
        conn,
        "site_id IN (SELECT id FROM sites) AND started_at >= ?1 ORDER BY started_at",
        [since - 86_400],
    )? {
        let Inner { dict, sites, .. } = &mut inner;
        sites.entry(v.site_id).or_default().upsert_visit(&v, dict);
    }
    let mut stmt = conn.prepare(
        "SELECT site_id, ts, visit_id, name, path, props, first_view, id FROM events
         WHERE site_id IN (SELECT id FROM sites) AND ts >= ?1 AND name <> ?2
         ORDER BY site_id, ts, id",
    )?;
    let mut rows = stmt.query(params![since, NOT_AN_ACTION])?;
    while let Some(r) = rows.next()? {
        let (name, path, props): (String, String, Option<String>) =
            (r.get(3)?, r.get(4)?, r.get(5)?);
        if let Some(ids) = ids.as_deref_mut() {
            ids.insert(r.get(7)?);
        }
        let Inner { dict, sites, .. } = &mut inner;
        let site = sites.entry(r.get(0)?).or_default();
        let Some(&visit) = site.visit_index.get(&r.get::<_, i64>(2)?) else {
            continue;
        };
        let pageview = name == "pageview";
        let (name, path) = (dict.id(&name), dict.id(&path));
        let props = site.props_of(props.as_deref(), dict);
        site.events.push(Event {
            ts: r.get(1)?,
            visit,
            name,
            path,
            props,
            pageview,
            first_view: r.get(6)?,
        });
    }
    Ok(inner)
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

    #[test]
    fn glob_has_one_wildcard() {
        assert!(glob("/blog/*", "/blog/a/b"));
        assert!(glob("/blog*", "/blog"));
        assert!(glob("*/new", "/a/new"));
        assert!(glob("/a*b*c", "/axbyc"));
        assert!(!glob("/a*b*c", "/axcyb"));
        assert!(!glob("/a?", "/ab"));
        assert!(glob("/a?", "/a?"));
        assert!(!glob("/ab*ba", "/aba"));
    }
}
