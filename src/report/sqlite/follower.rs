//! [`Follower`]: keeps the read model current with the database.
//!
//! The writer hands every commit to the [`RollupFeed`] (through the store's
//! [`CommitFollower`] trait, so the writer does not know the read model).
//! Each second the server's [`Follower::pass`] commits what the feed folded
//! into the rollups and hands the same events, with the visit snapshots of
//! that second, to recent traffic; [`Follower::roll_ended_visits`] adds
//! visits that can no longer change; [`Follower::run_rebuilds`] rebuilds a
//! site's rollups in bounded steps after its timezone changed, or after an
//! upgrade whose migration asked for it (started at start, in
//! `CommitFollower::catch_up`). The server
//! owns the follower and runs these; ingest knows nothing of it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::Connection;

use super::recent::{self, RecentTraffic};
use super::rollups::timezone;
use super::rollups::{self, RollupFeed};
use super::sealer::Sealer;
use crate::report::{ColumnDays, Upkeep};
use crate::store::{
    self, CommitFollower, EventWriter, NewEvent, Store, StoreError, VisitRecord, WriteError,
};
use futures_util::future::BoxFuture;

impl CommitFollower for RollupFeed {
    fn catch_up(
        &self,
        conn: &Connection,
        now: i64,
        owner: bool,
        unclean: bool,
    ) -> Result<usize, StoreError> {
        // Only the server runs rebuilds: it starts the one a migration
        // asked for, to run in the background (a full rebuild here would
        // keep it from listening for minutes on a large database).
        let sites = timezone::start_asked(conn, now, owner)?;
        if sites > 0 {
            tracing::info!(
                sites,
                "an upgrade asked to rebuild the rollups: rebuilding in the background"
            );
        }
        // The events past the mark (committed, not yet folded when the
        // process stopped) are folded now: a second or so of traffic, and
        // what the journal replayed (see `rollups::recover`).
        let folded = if owner && unclean {
            rollups::recover(conn)?
        } else {
            0
        };
        if owner {
            rollups::ensure_mark(conn)?;
        }
        self.set_zones(rollups::zones(conn)?);
        self.resume_rebuilds(timezone::in_progress(conn)?);
        Ok(folded)
    }

    fn committed(&self, conn: &Connection, events: Vec<NewEvent>, through: i64) {
        // Before this commit's events: a timezone change committed with
        // them decides which of them the feed folds.
        self.commit_staged();
        if !events.is_empty() {
            self.push(conn, events, through);
        }
    }

    fn rolled_back(&self) {
        self.drop_staged();
    }
}

/// The loop that keeps rollups and recent traffic current.
pub struct Follower {
    writer: EventWriter,
    store: Store,
    feed: Arc<RollupFeed>,
    /// Keep the crash-recovery mark: only the process that owns the data
    /// directory does.
    owner: bool,
    recent: Option<Arc<RecentTraffic>>,
    /// Wakes [`Follower::run_rebuilds`] when a rebuild starts.
    rebuilds: tokio::sync::Notify,
    /// The other-writer counter last seen, and the hour of the last trim.
    external_writes: AtomicI64,
    trimmed_hour: AtomicI64,
    /// Seals days into the column store (the server's; commands have none).
    sealer: Option<Arc<Sealer>>,
}

impl Follower {
    /// Follows `feed`, the follower the `writer` was started with. Holds
    /// `recent_days` of recent traffic in memory (none for `None` or 0).
    pub fn new(
        store: Store,
        writer: EventWriter,
        feed: Arc<RollupFeed>,
        owner: bool,
        recent_days: Option<u32>,
        now: i64,
    ) -> Result<Follower, StoreError> {
        let recent = recent_days
            .filter(|d| *d > 0)
            .map(|days| RecentTraffic::new(store.clone(), i64::from(days), feed.clone()));
        let external_writes = AtomicI64::new(recent::external_writes(&*store.reader()?)?);
        Ok(Follower {
            writer,
            store,
            feed,
            owner,
            recent,
            rebuilds: tokio::sync::Notify::new(),
            external_writes,
            trimmed_hour: AtomicI64::new(now / 3600),
            sealer: None,
        })
    }

    /// Has `sealer` keep the column store: it is told of removed sites, and
    /// health sees its progress. The server runs its loop.
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Follower {
        self.sealer = Some(sealer);
        self
    }

    /// One pass (every second, and once more at shutdown, so a clean stop
    /// leaves nothing to recover): folds the events committed since the last
    /// pass into the rollups and recent traffic. `snapshots` writes the
    /// visits that changed and yields them; it runs after the feed is taken.
    pub async fn pass(&self, snapshots: impl Future<Output = Vec<VisitRecord>>) {
        // Journaled events are committed first, so they are in this pass.
        if let Err(e) = self.writer.settled().await {
            tracing::error!(error = %e, "committing journaled events failed");
        }
        if let Err(e) = self.upkeep_recent(store::now_unix()) {
            tracing::error!(error = %e, "keeping recent traffic failed");
        }
        // Events first: a visit is marked changed before its event is
        // committed, so every visit of these events is in this batch of
        // snapshots or an earlier one.
        let fed = self.feed.take();
        let dirty = snapshots.await;
        // After the snapshots are written: a site that starts loading now
        // either reads them from the database or gets them here.
        if let Some(recent) = &self.recent {
            recent.apply(&dirty, &fed.events);
        }
        // A timezone change reaches the feed as it commits
        // ([`Follower::change_timezone`]), not here.
        if let Err(e) = rollups::flush_events(&self.writer, &self.feed, fed, self.owner).await {
            tracing::error!(error = %e, "adding events to the rollups failed");
        }
    }

    /// Adds visits that ended before `now` to the rollups (every second),
    /// `per_commit` visits per writer transaction.
    pub async fn roll_ended_visits(&self, now: i64, per_commit: usize) {
        let ended_before = now - rollups::VISIT_SETTLED_AFTER;
        match rollups::roll_ended_visits(&self.writer, ended_before, per_commit).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(visits = n, "added ended visits to the rollups"),
            Err(e) => tracing::error!(error = %e, "adding ended visits to the rollups failed"),
        }
    }

    /// Recent traffic held for filtered reports, if any.
    pub fn recent(&self) -> Option<Arc<RecentTraffic>> {
        self.recent.clone()
    }

    /// Keeps recent traffic to its window (hourly) and reloads it when
    /// another process wrote events.
    fn upkeep_recent(&self, now: i64) -> Result<(), StoreError> {
        let Some(recent) = &self.recent else {
            return Ok(());
        };
        let seen = recent::external_writes(&*self.store.reader()?)?;
        if self.external_writes.swap(seen, Ordering::Relaxed) != seen {
            recent.reload(now);
        }
        if self.trimmed_hour.swap(now / 3600, Ordering::Relaxed) != now / 3600 {
            recent.trim(now);
        }
        Ok(())
    }

    /// Sets a site's timezone and starts rebuilding its rollups in it (see
    /// [`timezone`]); raw events are kept `raw_events_days`. Returns false
    /// when the timezone was already that one.
    pub async fn change_timezone(
        &self,
        site_id: i64,
        timezone: String,
        raw_events_days: u32,
    ) -> Result<bool, WriteError> {
        let (writer, feed) = (self.writer.clone(), self.feed.clone());
        let now = store::now_unix();
        let changed = self
            .writer
            .run_for(move |tx| {
                let change = timezone::Change {
                    site_id,
                    timezone,
                    now,
                    raw_from: now - i64::from(raw_events_days) * 86_400,
                    // Taken in the job: every event queued before it is in
                    // the database by now, or comes right after.
                    cutoff: writer.last_event_id(),
                };
                timezone::change_timezone(tx, &feed, &change)
            })
            .await?;
        if changed {
            tracing::info!(site_id, "timezone changed; rebuilding the site's rollups");
            self.rebuilds.notify_one();
        }
        Ok(changed)
    }

    /// Runs the rollup rebuilds in progress, step after step, and waits for
    /// the next when there are none (the server's background task).
    pub async fn run_rebuilds(&self) {
        loop {
            if self.feed.rebuilding().is_empty() {
                self.rebuilds.notified().await;
                continue;
            }
            let feed = self.feed.clone();
            let started = std::time::Instant::now();
            match self
                .writer
                .run_for(move |tx| timezone::step(tx, &feed))
                .await
            {
                // Then a pause as long as the step: the writer is the
                // rebuild's at most half the time, the rest is for commits,
                // ended visits and the reports waiting on a writer job.
                Ok(true) => {
                    let took = started.elapsed().min(std::time::Duration::from_secs(1));
                    tokio::time::sleep(took).await;
                }
                Ok(false) => {
                    // The database has none left (a site was removed).
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "rebuilding rollups failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Sites whose rollups are being rebuilt: their reports may be
    /// incomplete meanwhile.
    pub fn rebuilding_sites(&self) -> Vec<i64> {
        self.feed.rebuilding()
    }

    /// Acknowledged events not yet in the rollups (at least 1 while some
    /// are only journaled).
    pub fn pending(&self) -> u64 {
        self.feed.pending() + u64::from(self.writer.uncommitted())
    }
}

impl Upkeep for Follower {
    fn change_timezone(
        &self,
        site_id: i64,
        timezone: String,
        raw_events_days: u32,
    ) -> BoxFuture<'_, Result<bool, WriteError>> {
        Box::pin(Follower::change_timezone(
            self,
            site_id,
            timezone,
            raw_events_days,
        ))
    }

    fn rebuilding_sites(&self) -> Vec<i64> {
        Follower::rebuilding_sites(self)
    }

    fn site_removed(&self, site_id: i64) {
        self.feed.forget_site(site_id);
        if let Some(sealer) = &self.sealer {
            sealer.site_removed(site_id);
        }
        if let Some(recent) = &self.recent {
            recent.forget(site_id);
        }
    }

    fn pending(&self) -> u64 {
        Follower::pending(self)
    }

    fn recent_sites(&self) -> (usize, usize) {
        self.recent.as_ref().map_or((0, 0), |r| r.sites())
    }

    fn column_days(&self) -> Option<ColumnDays> {
        self.sealer.as_ref().and_then(|s| s.progress())
    }

    fn column_seal_errors(&self) -> u64 {
        self.sealer.as_ref().map_or(0, |s| s.errors())
    }

    fn column_answers(&self) -> (u64, u64) {
        self.sealer.as_ref().map_or((0, 0), |s| s.answers())
    }
}
