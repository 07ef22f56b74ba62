//! Ingest: from a validated payload and the request's facts (IP, User-Agent)
//! to stored events.
//!
//! The steps, in order: privacy signals, bot filter, site lookup, enrichment
//! (user agent, location, attribution), visitor id, visit, then the
//! [`EventWriter`] (through the event journal, in the server). The IP
//! address and User-Agent are used here and dropped: only derived values
//! reach the store.

pub mod enrich;
mod error;
pub mod live;
pub mod payload;
pub mod session;
pub mod sites;
pub mod visitor;

use std::net::IpAddr;
use std::sync::Arc;

pub use error::{IngestError, StartError};
pub use payload::{EventKind, EventPayload, MAX_DOMAINS};

use crate::metrics::{Counter, CounterSet};
use crate::store::{
    self, CommitFollower, Db, EventJournal, EventWriter, NewEvent, Store, VisitDims, VisitRecord,
    WriteError, WriterHandle,
};
use enrich::bots::BotReason;
use enrich::{GeoLookup, UaParser, referrer};
use live::{LiveCounters, LiveEvent};
use session::{SessionTracker, Step};
use sites::SiteDirectory;
use visitor::VisitorHasher;

/// Visit snapshots are written every second; after a crash the visits of the
/// last two minutes of events are rebuilt, a wide margin over that.
const REBUILD_WINDOW: i64 = 120;

/// Visits that started longer ago than this are not resumed after a restart.
const RESTORE_STARTED_WITHIN: i64 = 24 * 3600;

/// How an [`Ingestor`] runs.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Submissions that may wait for the writer.
    pub queue_capacity: usize,
    /// Drop events of requests carrying `Sec-GPC: 1` or `DNT: 1`.
    pub respect_opt_out: bool,
    /// Rebuild visits (and let the follower catch up) after an unclean stop
    /// and keep the clean-stop and rollup marks: true for the server, false
    /// for a second process beside it (`tally demo`), since those belong to
    /// the server.
    pub recover_visits: bool,
    /// Acknowledge events once they are in the event journal (the server,
    /// which holds the data directory) rather than once committed.
    pub journal: bool,
}

/// Facts about the request that are not in the payload. Never stored.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    pub ip: IpAddr,
    pub user_agent: &'a str,
    /// `Sec-GPC: 1` or `DNT: 1` was sent.
    pub opted_out: bool,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// Acknowledged but not stored, with the reason.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Bot(BotReason),
    OptOut,
    /// An engagement report for a visit that already ended.
    NoVisit,
    /// The site excludes the client's address or the page's path.
    Excluded,
}

impl DropReason {
    /// Its name in metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Bot(bot) => bot.label(),
            DropReason::OptOut => "opt_out",
            DropReason::NoVisit => "no_visit",
            DropReason::Excluded => "excluded",
        }
    }

    pub fn is_bot(label: &str) -> bool {
        !matches!(label, "opt_out" | "no_visit" | "excluded")
    }
}

/// Every [`DropReason::label`].
pub const DROP_REASONS: &[&str] = &[
    "empty_user_agent",
    "not_a_browser",
    "crawler",
    "headless",
    "monitor",
    "preview",
    "opt_out",
    "no_visit",
    "excluded",
];

/// Why a request to the tracking endpoint was refused, as the HTTP layer
/// names it (it alone sees refusals that happen before a payload exists).
pub const REJECT_REASONS: &[&str] = &[
    "invalid",
    "unsupported_media_type",
    "too_large",
    "body_timeout",
    "unknown_site",
    "overloaded",
    "storage",
];

/// Counters of what happened to incoming events.
#[derive(Debug)]
pub struct IngestStats {
    pub accepted: Counter,
    /// By [`REJECT_REASONS`].
    pub rejected: CounterSet,
    /// Acknowledged and not stored, by [`DROP_REASONS`].
    pub dropped: CounterSet,
}

impl IngestStats {
    /// Events dropped as bots, every bot reason together.
    pub fn dropped_bots(&self) -> u64 {
        self.dropped
            .iter()
            .filter(|(reason, _)| DropReason::is_bot(reason))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Default for IngestStats {
    fn default() -> Self {
        IngestStats {
            accepted: Counter::default(),
            rejected: CounterSet::new(REJECT_REASONS),
            dropped: CounterSet::new(DROP_REASONS),
        }
    }
}

pub struct Ingestor {
    writer: EventWriter,
    ua: UaParser,
    geo: GeoLookup,
    hasher: VisitorHasher,
    sessions: SessionTracker,
    live: LiveCounters,
    sites: SiteDirectory,
    respect_opt_out: bool,
    stats: IngestStats,
}

impl Ingestor {
    /// Loads salts and open visits with `conn`, lets `follower` catch up
    /// with the database, then hands `conn` to a new writer that tells
    /// `follower` of each commit.
    pub fn start(
        store: Store,
        mut conn: Db,
        geo: GeoLookup,
        options: IngestOptions,
        now: i64,
        follower: Arc<dyn CommitFollower>,
    ) -> Result<(Ingestor, WriterHandle), StartError> {
        let IngestOptions {
            queue_capacity,
            respect_opt_out,
            recover_visits,
            journal,
        } = options;
        // First: the events the journal holds are acknowledged, and
        // everything below reads them from the database.
        let journal = if journal {
            let dir = store.data_dir().join(store::JOURNAL_DIR);
            let (journal, added) = EventJournal::open(&dir, &mut conn)?;
            if added > 0 {
                tracing::info!(
                    events = added,
                    "added journaled events after an unclean stop"
                );
            }
            Some(Arc::new(journal))
        } else {
            None
        };
        let hasher = VisitorHasher::load(&conn, now)?;
        let unclean = recover_visits && !store::visits::take_clean_stop(&conn)?;
        let rebuilt = if unclean {
            store::visits::rebuild_recent(&conn, REBUILD_WINDOW)?
        } else {
            0
        };
        let folded = follower.catch_up(&conn, now, recover_visits, unclean)?;
        if unclean {
            tracing::info!(
                visits = rebuilt,
                events = folded,
                "rebuilt recent visits and rollups from events after an unclean stop"
            );
        }
        let sessions = SessionTracker::new(store::sites::max_visit_id(&conn)?, now);
        let open = store::sites::open_visits(
            &conn,
            now - RESTORE_STARTED_WITHIN,
            now - session::VISIT_TIMEOUT_SECS,
        )?;
        let live = LiveCounters::default();
        live.restore(&open, now);
        sessions.restore(open);
        tracing::info!(open_visits = sessions.len(), "restored open visits");
        let (writer, handle) = EventWriter::start(conn, queue_capacity, follower, journal)
            .map_err(StartError::Writer)?;
        let ingestor = Ingestor {
            writer,
            ua: UaParser::new(),
            geo,
            hasher,
            sessions,
            live,
            sites: SiteDirectory::new(store),
            respect_opt_out,
            stats: IngestStats::default(),
        };
        Ok((ingestor, handle))
    }

    /// Writes the snapshots of visits changed since the last call and
    /// returns them (every second, within the read model's pass, and once
    /// more at shutdown).
    pub async fn write_visit_snapshots(&self) -> Vec<VisitRecord> {
        let dirty = self.sessions.take_dirty();
        if let Err(e) = store::visits::write_snapshots(&self.writer, &dirty).await {
            tracing::error!(error = %e, visits = dirty.len(), "writing visit snapshots failed");
        }
        dirty
    }

    /// Periodic upkeep: forget ended visits, rotate the salt at midnight UTC
    /// even when no event arrives.
    pub async fn maintain(&self, now: i64) {
        let ended = self.sessions.evict_ended(now);
        if ended > 0 {
            tracing::debug!(ended, "forgot ended visits");
        }
        self.live.sweep(now);
        if let Err(e) = self.hasher.ensure_current(&self.writer, now).await {
            tracing::error!(error = %e, "rotating the visitor-id salt failed");
        }
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    pub fn writer(&self) -> &EventWriter {
        &self.writer
    }

    /// Who is on each site right now.
    pub fn live(&self) -> &LiveCounters {
        &self.live
    }

    pub fn sessions(&self) -> &SessionTracker {
        &self.sessions
    }

    /// Counts a refused request (any 4xx/5xx of the tracking endpoint) under
    /// one of [`REJECT_REASONS`].
    pub fn count_rejected(&self, reason: &str) {
        self.stats.rejected.inc(reason);
    }

    /// Stores `payload` for each of its sites; resolves once durable
    /// (journaled, or committed without a journal).
    pub async fn ingest(
        &self,
        payload: EventPayload,
        meta: RequestMeta<'_>,
    ) -> Result<Outcome, IngestError> {
        let result = self.ingest_inner(payload, meta).await;
        match &result {
            Ok(Outcome::Stored) => self.stats.accepted.inc(),
            Ok(Outcome::Dropped(reason)) => self.stats.dropped.inc(reason.label()),
            // Refusals are counted by the caller, which also sees those
            // refused before a payload existed.
            Err(_) => {}
        }
        result
    }

    async fn ingest_inner(
        &self,
        payload: EventPayload,
        meta: RequestMeta<'_>,
    ) -> Result<Outcome, IngestError> {
        if self.respect_opt_out && meta.opted_out {
            return Ok(Outcome::Dropped(DropReason::OptOut));
        }
        let ua = self.ua.parse(meta.user_agent);
        if let Some(reason) = ua.bot {
            tracing::debug!(reason = reason.label(), "dropped bot event");
            return Ok(Outcome::Dropped(DropReason::Bot(reason)));
        }
        let path = payload.path();
        let mut sites = Vec::with_capacity(payload.domains.len());
        let mut excluded = false;
        for domain in &payload.domains {
            match self.sites.find(domain) {
                Ok(Some(site))
                    if site.exclusions.excludes_ip(meta.ip)
                        || site.exclusions.excludes_path(&path) =>
                {
                    excluded = true;
                }
                Ok(Some(site)) => sites.push(site),
                Ok(None) => return Err(IngestError::UnknownSite(domain.clone())),
                Err(e) => return Err(IngestError::Storage(e.to_string())),
            }
        }
        if sites.is_empty() && excluded {
            return Ok(Outcome::Dropped(DropReason::Excluded));
        }
        if !self.writer.is_running() {
            return Err(IngestError::Unavailable);
        }
        if self.writer.is_full() {
            return Err(IngestError::Overloaded);
        }

        let hostname = payload.hostname();
        let step = match payload.kind {
            EventKind::Pageview => Step::Pageview { path: &path },
            EventKind::Custom => Step::Custom {
                name: &payload.name,
                interactive: payload.interactive,
            },
            EventKind::Engagement { .. } => Step::Engagement,
        };
        let dims = || {
            let geo = self.geo.lookup(meta.ip);
            let a = referrer::attribute(&payload.url, payload.referrer.as_ref());
            VisitDims {
                referrer: a.referrer,
                source: a.source,
                utm_medium: a.utm_medium,
                utm_source: a.utm_source,
                utm_campaign: a.utm_campaign,
                utm_term: a.utm_term,
                utm_content: a.utm_content,
                country: geo.country,
                region: geo.region,
                city: geo.city,
                browser: Some(ua.browser.clone()),
                browser_version: ua.browser_version.clone(),
                os: Some(ua.os.clone()),
                os_version: ua.os_version.clone(),
                device: Some(ua.device.label(payload.screen_width).to_string()),
            }
        };
        let props = (!payload.props.is_empty()).then(|| {
            let map: serde_json::Map<String, serde_json::Value> = payload
                .props
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::Value::Object(map).to_string()
        });
        let (scroll_depth, engaged_ms) = match payload.kind {
            EventKind::Engagement {
                scroll_depth,
                engaged_ms,
            } => (Some(scroll_depth), Some(engaged_ms)),
            _ => (None, None),
        };

        // Visitor ids first: finding them may wait for the writer (a new
        // day's salt), which must not happen with visits locked.
        let mut ids = [(0, 0, None); MAX_DOMAINS];
        if sites.len() > MAX_DOMAINS {
            return Err(IngestError::invalid("domain", "lists too many sites"));
        }
        for (site, slot) in sites.iter().zip(ids.iter_mut()) {
            let v = self
                .hasher
                .ids(
                    &self.writer,
                    &site.domain,
                    meta.ip,
                    meta.user_agent,
                    meta.now,
                )
                .await
                .map_err(|e| IngestError::Storage(e.to_string()))?;
            *slot = (site.id, v.current, v.previous);
        }
        let ids = &ids[..sites.len()];
        // The event's visits change only once it is queued (and so stored,
        // with the journal): one refused leaves them as they were. They
        // stay locked from plan to apply, so concurrent events of a visit
        // plan in the order they are queued. Nothing here waits.
        let (queued, plans) = {
            let mut visits = self.sessions.lock_for(ids, meta.now);
            let mut events = Vec::with_capacity(sites.len());
            let mut plans = Vec::with_capacity(sites.len());
            for (site, &(_, current, previous)) in sites.iter().zip(ids) {
                let Some(plan) = visits.plan(site.id, current, previous, meta.now, step, dims)
                else {
                    continue;
                };
                let tracked = &plan.tracked;
                events.push(NewEvent {
                    id: 0,
                    site_id: site.id,
                    visitor_id: tracked.visitor_id,
                    ts: meta.now,
                    name: payload.name.clone(),
                    hostname: hostname.clone(),
                    path: path.clone(),
                    props: props.clone(),
                    revenue_amount: payload.revenue.as_ref().map(|r| r.amount.clone()),
                    revenue_currency: payload.revenue.as_ref().map(|r| r.currency.clone()),
                    scroll_depth,
                    engaged_ms,
                    interactive: payload.interactive,
                    visit_id: tracked.visit_id,
                    first_of_visit: tracked.is_new.then(|| tracked.dims.clone()),
                    first_view: tracked.first_view,
                });
                plans.push((site.id, plan));
            }
            if events.is_empty() {
                return Ok(Outcome::Dropped(DropReason::NoVisit));
            }
            let queued = self.writer.queue(events).map_err(refused)?;
            for (_, plan) in &mut plans {
                visits.apply(plan, step);
            }
            (queued, plans)
        };
        queued.stored().await.map_err(refused)?;
        // Only committed events reach the live view.
        let pageview = matches!(payload.kind, EventKind::Pageview);
        for (site_id, plan) in &plans {
            self.live.record(LiveEvent {
                site_id: *site_id,
                visitor_id: plan.tracked.visitor_id,
                ts: meta.now,
                page: pageview.then_some(path.as_str()),
                pageview,
                dims: &plan.tracked.dims,
            });
        }
        Ok(Outcome::Stored)
    }
}

/// Why the writer did not take an event, as ingest answers it: a full queue
/// and a stopped writer are both worth retrying later (503).
fn refused(e: WriteError) -> IngestError {
    match e {
        WriteError::QueueFull => IngestError::Overloaded,
        WriteError::Closed => IngestError::Unavailable,
        other => IngestError::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    fn pageview(path: &str) -> EventPayload {
        let body = format!(r#"{{"n":"pageview","u":"https://example.com{path}"}}"#);
        payload::parse_body(body.as_bytes()).unwrap()
    }

    fn from(ip: &str, now: i64) -> RequestMeta<'static> {
        RequestMeta {
            ip: ip.parse().unwrap(),
            user_agent: CHROME,
            opted_out: false,
            now,
        }
    }

    /// A journaled ingestor with room for `queue_capacity` submissions,
    /// on a new store with example.com, as a server starts it (nothing
    /// follows its writer here).
    struct Started {
        _data: tempfile::TempDir,
        store: Store,
        site: store::sites::Site,
        ingestor: Ingestor,
        writer: WriterHandle,
        now: i64,
    }

    fn started(queue_capacity: usize) -> Started {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        let site = store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let now = store::now_unix();
        let options = IngestOptions {
            queue_capacity,
            respect_opt_out: false,
            recover_visits: true,
            journal: true,
        };
        let (ingestor, writer) = Ingestor::start(
            store.clone(),
            conn,
            GeoLookup::disabled(),
            options,
            now,
            Arc::new(store::NoFollower),
        )
        .unwrap();
        Started {
            _data: data,
            store,
            site,
            ingestor,
            writer,
            now,
        }
    }

    #[tokio::test]
    async fn a_refused_event_leaves_its_visit_as_it_was() {
        let Started {
            _data,
            store,
            site,
            ingestor,
            writer,
            now,
        } = started(1);
        let stored = ingestor
            .ingest(pageview("/a"), from("192.0.2.1", now))
            .await;
        assert_eq!(stored.unwrap(), Outcome::Stored);
        // The writer stops, and the queue looks empty, as it did to events
        // that then found it full: they pass the early check, their visits
        // are looked up, and the writer refuses them.
        writer.shutdown();
        let depth = &ingestor.writer().stats().queue_depth;
        depth.store(0, std::sync::atomic::Ordering::Relaxed);
        ingestor.writer().pretend_running();
        for path in ["/b", "/c"] {
            let refused = ingestor
                .ingest(pageview(path), from("192.0.2.1", now + 1))
                .await;
            // Refused by the queue itself (closed), not by the early checks.
            assert!(
                matches!(refused, Err(IngestError::Unavailable)),
                "{refused:?}"
            );
        }
        let refused = ingestor
            .ingest(pageview("/x"), from("192.0.2.2", now + 1))
            .await;
        assert!(refused.is_err());

        let (visitor, events): (i64, i64) = store
            .reader()
            .unwrap()
            .query_row("SELECT visitor_id, count(*) FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let visit = ingestor.sessions().snapshot(site.id, visitor).unwrap();
        assert_eq!(visit.pageviews, events);
        assert_eq!((visit.pageviews, visit.seq), (1, 1));
        assert_eq!(visit.exit_page.as_deref(), Some("/a"));
        assert_eq!(visit.last_seen_at, now);
        assert_eq!(
            ingestor.sessions().len(),
            1,
            "a refused first event starts no visit"
        );
    }

    #[tokio::test]
    async fn events_are_refused_once_the_writer_has_stopped() {
        let Started {
            _data,
            ingestor,
            writer: handle,
            now,
            ..
        } = started(64);
        let meta = RequestMeta {
            ip: "192.0.2.1".parse().unwrap(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            opted_out: false,
            now,
        };
        let body = br#"{"n":"pageview","u":"https://example.com/","d":"example.com"}"#;
        let pageview = || payload::parse_body(body).unwrap();
        assert_eq!(
            ingestor.ingest(pageview(), meta).await.unwrap(),
            Outcome::Stored
        );

        ingestor.writer().crash().unwrap();
        for _ in 0..100 {
            if !ingestor.writer().is_running() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let refused = ingestor.ingest(pageview(), meta).await;
        assert!(
            matches!(refused, Err(IngestError::Unavailable)),
            "{refused:?}"
        );
        assert!(!handle.shutdown());
    }
}
