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
//!
//! How the pieces fit: this file holds the sites' states (loading, loaded,
//! dropped when idle) and the loads. A loaded site is a [`table`]
//! (`SiteTraffic`: dictionary, visits, attribute sets) whose events are an
//! [`event_log`] clustered on (attribute set, time). A report runs a
//! [`scan`] of the filters over it, which counts totals and goals itself
//! and feeds [`breakdown`] the rows that pass; whether a value passes a
//! filter is decided in [`super::filter`], beside the SQL that must agree.
//! [`ids`] holds the integer-keyed sets and maps they all count with.

mod breakdown;
mod event_log;
mod ids;
mod scan;
mod seam;
mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rusqlite::{Connection, OptionalExtension, params};

use super::rollups::{FedBatch, FedEvent, RollupFeed};
use super::seam::AfterSeam;
use crate::report::model::{BreakdownRow, Dimension, Filter, NOT_AN_ACTION, TimeRange, Totals};
use crate::store::sites::GoalKind;
use crate::store::{Store, StoreError, VisitRecord};
use crate::sync::ReadWrite;
use ids::IdSet;
use table::{EventRow, SiteTraffic};

/// Sites loaded at once (each reads its whole window on a thread of its own).
const LOADS_AT_ONCE: usize = 2;

/// A site unused this long is dropped from memory.
const IDLE_SECS: i64 = 24 * 3600;

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

    /// Drops a removed site.
    pub fn forget(&self, site_id: i64) {
        self.sites.writing().remove(&site_id);
        self.feed.keep_events_of(site_id, false);
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
        self.with_site(site_id, |site| scan::totals(site, range, filters))
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
            breakdown::breakdown(site, range, dimension, filters, limit, offset)
        })
    }

    /// `join` with the site held here as the side after a column store's
    /// seam (check [`RecentTraffic::ready`] first): it holds every event
    /// from its window's start at `now`.
    pub fn after_seam<T>(
        &self,
        site_id: i64,
        now: i64,
        join: impl FnOnce(&dyn AfterSeam) -> T,
    ) -> Option<T> {
        let since = self.since(now);
        self.with_site(site_id, |site| join(&seam::HeldSite { site, since }))
    }

    /// Visitors who completed any of `goals` in `range`, and the completions.
    pub fn goals(
        &self,
        site_id: i64,
        range: TimeRange,
        goals: &[GoalKind],
        filters: &[Filter],
    ) -> Option<(i64, i64)> {
        self.with_site(site_id, |site| scan::goals(site, range, goals, filters))
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
    // Visits of events in the window: nearly all started up to a day
    // before it; the rest (a page that reloads itself keeps one visit for
    // days) are read by id below.
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
    let mut missed: Vec<EventRow> = Vec::new();
    while let Some(r) = rows.next()? {
        let e = EventRow {
            ts: r.get(0)?,
            visit_id: r.get(1)?,
            name: r.get(2)?,
            path: r.get(3)?,
            props: r.get(4)?,
            first_view: r.get(5)?,
            id: r.get(6)?,
        };
        if e.add_to(&mut site) {
            read.insert(e.id);
        } else {
            missed.push(e);
        }
    }
    if !missed.is_empty() {
        let mut ids: Vec<i64> = missed.iter().map(|e| e.visit_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        for v in crate::store::sites::visits_where(
            conn,
            "site_id = ?1 AND id IN (SELECT value FROM json_each(?2))",
            params![site_id, ids],
        )? {
            site.upsert_visit(&v);
        }
        // An event whose visit row was not written yet waits for the
        // visit's snapshot, which the feed hands over (the event itself it
        // hands over only if committed after the load began): read either
        // way, so the feed's copy is not added too.
        for e in missed {
            let id = e.id;
            if e.add_to(&mut site) || site.wait_for_visit(e) {
                read.insert(id);
            }
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

    /// A store with one site, example.com (UTC), and its id.
    fn store_with_site() -> (tempfile::TempDir, Store, i64) {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let site = crate::store::sites::add_site(
            &store.write_connection().unwrap(),
            "example.com",
            "UTC",
            false,
        )
        .unwrap()
        .id;
        (data, store, site)
    }

    /// A visit that started days before the window (a page that reloads
    /// itself) has its events in the window held, as the raw tables count
    /// them.
    #[test]
    fn a_visit_started_long_before_the_window_has_its_recent_events_held() {
        let (_data, store, site) = store_with_site();
        let conn = store.write_connection().unwrap();
        let now = crate::store::now_unix();
        let started = now - 5 * 86_400;
        conn.execute(
            "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                entry_page, exit_page, pageviews, events, interactive, is_bounce)
             VALUES (7, ?1, 70, 1, ?2, ?3, '/', '/', 3, 3, 1, 0)",
            params![site, started, now - 60],
        )
        .unwrap();
        for (id, ts) in [(1, started), (2, now - 86_400), (3, now - 60)] {
            conn.execute(
                "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name, hostname, path)
                 VALUES (?1, ?2, ?3, 7, 70, 'pageview', 'example.com', '/')",
                params![site, ts, id],
            )
            .unwrap();
        }
        drop(conn);
        let (held, read) =
            load_site(&store.reader().unwrap(), site, now - 2 * 86_400, now).unwrap();
        assert_eq!(read.len(), 2);
        let range = TimeRange {
            start: now - 2 * 86_400,
            end: now,
        };
        let t = scan::totals(&held, range, &[]);
        assert_eq!((t.visitors, t.pageviews, t.visits), (1, 2, 0));
    }

    /// An event committed before a load began whose visit row the writer
    /// had not written yet: the feed never hands it over, so the load holds
    /// it until the visit's snapshot arrives, and counts it once.
    #[test]
    fn an_event_read_before_its_visit_row_counts_once_the_visit_arrives() {
        let (_data, store, site) = store_with_site();
        let conn = store.write_connection().unwrap();
        let now = crate::store::now_unix();
        conn.execute(
            "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name, hostname, path)
             VALUES (?1, ?2, 1, 9, 90, 'pageview', 'example.com', '/')",
            params![site, now - 60],
        )
        .unwrap();
        let (mut held, read) =
            load_site(&store.reader().unwrap(), site, now - 86_400, now).unwrap();
        // Read: a copy the feed hands over is not added again.
        assert!(read.contains(&1));
        let range = TimeRange {
            start: now - 86_400,
            end: now,
        };
        assert_eq!(scan::totals(&held, range, &[]).pageviews, 0);
        conn.execute(
            "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                entry_page, exit_page, pageviews, events, interactive, is_bounce)
             VALUES (9, ?1, 90, 1, ?2, ?2, '/', '/', 1, 1, 1, 1)",
            params![site, now - 60],
        )
        .unwrap();
        let visit = crate::store::sites::visits_where(&conn, "id = 9", []).unwrap();
        held.upsert_visit(&visit[0]);
        held.upsert_visit(&visit[0]);
        let t = scan::totals(&held, range, &[]);
        assert_eq!((t.visitors, t.pageviews, t.visits), (1, 1, 1));
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
}
