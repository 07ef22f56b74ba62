//! [`Sealer`]: keeps the column store ([`crate::report::columns`]) complete
//! and current with the raw tables, in the server's background.
//!
//! **When a day is sealed.** A UTC day's events are final once it is over
//! (live events are stamped as they arrive, and a journal's replay at start
//! comes before anything is sealed), but the visits that started in it
//! change until they end. So day D is sealed [`SEAL_AFTER`] (an hour) after
//! it ends (the visit rows of its last second are written by then). If some
//! of its visits were still open then, D is *provisional* and is sealed once
//! more, as soon as they have all ended, or at the latest [`FINAL_AFTER`]
//! after D ended, which is also when D + 1 is first due: before D + 1 is
//! sealed, D is sealed again while it is still the newest day (the store
//! lets the newest day be replaced freely). So only the newest day is ever
//! provisional, and each day is sealed once or twice. A visit still open a
//! day after its day ended keeps the numbers it had then. Which site's
//! newest day is provisional is kept on disk (`provisional.rs`), so a
//! restart, however late, still gives it its last seal.
//!
//! **Which days.** Every UTC day with raw events that is complete and within
//! raw retention, in increasing order per site, one day per step: at start,
//! all those not sealed yet (the initial build, in the background), then
//! each day as it becomes due. One step at a time across the server, on a
//! blocking thread, reading through a pooled reader (never the writer),
//! each followed by a pause as long as the step took.
//!
//! **Consistency: what holds.** The store lags the raw tables: a site's
//! sealed days are a run of its complete raw days from retention's cutoff
//! (or its first) up to its newest sealed one (stopped before a day over
//! the memory budget), each a copy of the raw rows at its last seal. A
//! change to the raw tables is caught, and the site's store deleted to be
//! sealed again (or dropped), at the sealer's next look (each minute when
//! idle, after each round, at once on a removal or retention pass) or, for
//! late events and removals, before its next step: events in a day before
//! the newest sealed that had none (one seek per day); events this
//! server's writer committed in a sealed day ([`LateEvents`], kept on disk
//! until acted on, lost only to a crash between the commit and the note);
//! another process's events (`meta.external_writes`, bumped by `tally demo`
//! before its first write and after its last, recorded in `follows`);
//! another database (`meta.database_id`, beside it); a damaged file or an
//! append refused as out of order. `tally import` and `tally restore`
//! delete the site's or the whole store ([`forget_site`], [`forget_all`])
//! under its lock before they change the database; retention drops days
//! in its own pass ([`Sealer::drop_before`]); removed sites go at the next
//! step ([`Sealer::site_removed`]) or look. Not caught: rows changed by
//! hand or by another program, and a visit's changes after its day's last
//! seal; delete the store's directory after those. Nothing is sealed while
//! the writer is stopped (its journal may hold events of the day), nor
//! before the events acknowledged so far are committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use thiserror::Error;

use super::columns_source::read_day;
use super::rollups::VISIT_SETTLED_AFTER;
use crate::report::columns::{ColumnError, ColumnStore};
use crate::store::{EventWriter, Store, StoreError, sites};
use crate::sync::Lock;

/// The store's directory under the data directory.
pub const COLUMNS_DIR: &str = "columns";
/// The file in it naming the database the store follows: its
/// `meta.database_id` and `meta.external_writes`.
const FOLLOWS_FILE: &str = "follows";
const DAY: i64 = 86_400;
/// A day is first sealed this long after it ends.
pub const SEAL_AFTER: i64 = 3600;
/// A provisional day is sealed for the last time at most this long after
/// it ends: when the next day is first due.
pub const FINAL_AFTER: i64 = DAY + SEAL_AFTER;
/// How often the sealer looks when it has nothing to do (days become due
/// on the hour; removals and retention wake it at once).
const IDLE: Duration = Duration::from_secs(60);
/// The longest pause after a step.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// The first wait before the store is tried again after it failed (to
/// open, or a site's step); each failure in a row doubles it up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Why a step or a look failed.
#[derive(Debug, Error)]
pub enum SealError {
    #[error(transparent)]
    Column(#[from] ColumnError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sealing task: {0}")]
    Task(String),
    #[error("the column store is not open")]
    NotOpen,
    #[error("the server is stopping")]
    Stopping,
    /// The day holds more events than a seal may hold in memory.
    #[error("day {day} holds more than {max} events (seal_max_events_per_day)")]
    Oversized { day: i64, max: u64 },
}

impl From<rusqlite::Error> for SealError {
    fn from(e: rusqlite::Error) -> Self {
        SealError::Store(e.into())
    }
}

/// A site's plan, and how many days its store holds.
struct Looked {
    restart: bool,
    sealed: usize,
    plan: SitePlan,
}

/// The newest day of a site sealed while some of its visits were open.
#[derive(Debug, Clone)]
struct Provisional {
    day: i64,
    /// Those visits (at most the visits open at once: ingest holds as many).
    open: Vec<i64>,
}

#[derive(Default)]
struct Sites {
    /// Sites looked at whole since start (raw days from retention's cutoff,
    /// and whether the newest sealed day is provisional).
    known: HashSet<i64>,
    provisional: HashMap<i64, Provisional>,
    /// The provisional days as kept on disk (`sealer/provisional.rs`), for
    /// every site, looked at since start or not.
    marked: BTreeMap<i64, i64>,
    /// Sites whose build (at start, or after a restart) is under way, to
    /// log when it is done.
    building: HashMap<i64, Instant>,
    /// How many times each site's store was deleted to seal it again: a
    /// round's steps planned before a restart are dropped.
    restarts: HashMap<i64, u64>,
    /// Removed, their stores to delete.
    removed: Vec<i64>,
    /// Removed since start: no more steps for them.
    gone: HashSet<i64>,
    /// Sites stopped at a day over the memory budget (and that day): it
    /// and later days are not sealed. Counted again after a restart.
    oversized: HashMap<i64, i64>,
    /// Sites whose last step or look failed: not tried again before the
    /// instant, and the wait after the next failure.
    failing: HashMap<i64, (Instant, Duration)>,
    /// The database and `meta.external_writes` the store follows (read
    /// from its file).
    follows: Option<String>,
    /// Sites a report found damaged: sealed again from their first day.
    damaged: HashSet<i64>,
}

/// Seals days into the column store; see the module's header.
pub struct Sealer {
    store: Store,
    /// The server's writer: nothing is sealed while it is stopped, nor
    /// before the events it was handed are committed.
    writer: Option<EventWriter>,
    /// Events the writer committed in complete days, to act on at each look.
    late: Option<Arc<LateEvents>>,
    /// Opened by [`Sealer::run`], in the background: the store is derived
    /// and never keeps the server from starting.
    columns: OnceLock<Arc<ColumnStore>>,
    dir: PathBuf,
    raw_events_days: u32,
    /// The most events of one site's day a seal reads into memory.
    max_events_per_day: u64,
    sites: Mutex<Sites>,
    sealed_days: AtomicU64,
    pending_days: AtomicU64,
    looked: AtomicBool,
    /// Failures to open the store or to seal a day.
    errors: AtomicU64,
    /// Report parts the store answered, and those it failed to.
    answered: AtomicU64,
    answer_errors: AtomicU64,
    /// Set by [`Sealer::stop`]: no new step, and the read under way (its
    /// reader's interrupt handle in `reading`) is interrupted.
    stopping: AtomicBool,
    reading: Mutex<Option<rusqlite::InterruptHandle>>,
    wake: tokio::sync::Notify,
}

impl Sealer {
    /// The sealer of the store in `data_dir`, for raw events kept
    /// `raw_events_days`. Nothing is opened until [`Sealer::run`].
    pub fn new(store: Store, data_dir: &Path, raw_events_days: u32) -> Sealer {
        Sealer {
            store,
            writer: None,
            late: None,
            columns: OnceLock::new(),
            dir: data_dir.join(COLUMNS_DIR),
            raw_events_days,
            max_events_per_day: u64::MAX,
            sites: Mutex::new(Sites::default()),
            sealed_days: AtomicU64::new(0),
            pending_days: AtomicU64::new(0),
            looked: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answer_errors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            reading: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Seals nothing while `writer` is stopped (its journal may hold
    /// acknowledged events of a day, added at the next start), and only
    /// once the events it was handed are committed.
    pub fn with_writer(mut self, writer: EventWriter) -> Sealer {
        self.writer = Some(writer);
        self
    }

    /// Seals no day holding more than `max` events of a site (the memory a
    /// seal takes grows with them): the site stops sealing at such a day.
    pub fn with_max_events_per_day(mut self, max: u64) -> Sealer {
        self.max_events_per_day = max;
        self
    }

    /// Acts on the events `late` notes: one committed in a day already
    /// sealed has its site's store deleted and sealed again at the next
    /// look.
    pub fn with_late(mut self, late: Arc<LateEvents>) -> Sealer {
        self.late = Some(late);
        self
    }

    /// Whether a day may be sealed now: the writer runs, and every event
    /// acknowledged so far is committed.
    async fn writes_settled(&self) -> bool {
        let Some(writer) = &self.writer else {
            return true;
        };
        if !writer.is_running() {
            tracing::debug!("the writer is stopped: nothing is sealed until a restart");
            return false;
        }
        match writer.settled().await {
            Ok(()) => writer.is_running(),
            Err(e) => {
                tracing::debug!(error = %e, "events not committed: sealing later");
                false
            }
        }
    }

    /// Opens the store, deleting one that cannot be opened (derived data,
    /// sealed again from the raw tables) unless another process holds it.
    fn open_columns(&self) -> Result<(), SealError> {
        let columns = match ColumnStore::open(&self.dir) {
            Ok(columns) => columns,
            // Another process has it open: never delete it from under that.
            Err(e @ ColumnError::Busy { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "the column store cannot be opened: deleting it to seal every site again");
                follow::remove_whole(&self.dir)?;
                ColumnStore::open(&self.dir)?
            }
        };
        let follows = std::fs::read_to_string(self.dir.join(FOLLOWS_FILE))
            .ok()
            .map(|s| s.trim().to_string());
        let _ = self.columns.set(Arc::new(columns));
        let marked = self.read_marks();
        let mut sites = self.sites.locked();
        sites.follows = follows;
        sites.marked = marked;
        Ok(())
    }

    /// The store, once [`Sealer::run`] opened it.
    pub fn columns(&self) -> Result<&Arc<ColumnStore>, SealError> {
        self.columns.get().ok_or(SealError::NotOpen)
    }

    /// The server is stopping: no step starts any more, and the database
    /// read of the one under way is interrupted (it is not committed). An
    /// append already writing its files finishes: its size is bounded by
    /// `max_events_per_day`.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(reading) = self.reading.locked().take() {
            reading.interrupt();
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Failures to open the store or to seal a day since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Seals what is due, then looks again; when nothing is, waits for a
    /// removal, a retention pass or [`IDLE`] (the server's background task).
    pub async fn run(self: Arc<Self>) {
        let mut wait = FIRST_BACKOFF;
        while self.columns.get().is_none() {
            if self.stopping() {
                return;
            }
            let this = self.clone();
            let Err(e) = blocking(move || this.open_columns()).await else {
                break;
            };
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                error = %e,
                retry_in_seconds = wait.as_secs(),
                "the column store cannot be opened; the server runs without it and tries again"
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        while !self.stopping() {
            let worked = match self.round().await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::error!(error = %e, "sealing days into the column store failed");
                    false
                }
            };
            if !worked {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE) => {}
                }
            }
        }
    }

    /// One look at every site and the steps it found. True if any ran.
    async fn round(self: &Arc<Self>) -> Result<bool, SealError> {
        if !self.writes_settled().await {
            return Ok(false);
        }
        let this = self.clone();
        let plans = blocking(move || this.look(crate::store::now_unix())).await?;
        let mut worked = false;
        for (site_id, plan) in plans {
            let mut finished = true;
            if plan.restart {
                let this = self.clone();
                let restarted = blocking(move || {
                    this.restart(site_id, "a day before the newest sealed changed")
                })
                .await;
                if let Err(e) = restarted {
                    self.failed(site_id, &e);
                    continue;
                }
            }
            let generation = self.sites.locked().restarts.get(&site_id).copied();
            for step in plan.steps {
                if self.sites.locked().gone.contains(&site_id) {
                    finished = false;
                    break;
                }
                if self.stopping() || !self.writes_settled().await {
                    return Ok(worked);
                }
                let started = Instant::now();
                let this = self.clone();
                let done = blocking(move || {
                    this.apply_removals()?;
                    // Late events are acted on before every step, not only
                    // at the next look, which may be a long build away.
                    this.act_on_late()?;
                    if this.sites.locked().restarts.get(&site_id).copied() != generation {
                        // Restarted since the plan: the next look plans it.
                        return Ok(false);
                    }
                    this.step(site_id, step, crate::store::now_unix())?;
                    Ok(true)
                })
                .await;
                worked = true;
                match done {
                    Ok(false) => {
                        finished = false;
                        break;
                    }
                    Err(SealError::Stopping) => return Ok(worked),
                    Ok(true) => {
                        if let Step::Seal(_) = step {
                            self.sealed_days.fetch_add(1, Ordering::Relaxed);
                            let _ = self.pending_days.fetch_update(
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                                |n| n.checked_sub(1),
                            );
                        }
                    }
                    Err(SealError::Column(
                        e @ (ColumnError::Damaged { .. }
                        | ColumnError::Order { .. }
                        | ColumnError::Rows { .. }),
                    )) => {
                        let this = self.clone();
                        let why = e.to_string();
                        if let Err(e) = blocking(move || this.restart(site_id, &why)).await {
                            self.failed(site_id, &e);
                        }
                        finished = false;
                        break;
                    }
                    Err(SealError::Oversized { day, max }) => {
                        self.oversized(site_id, day, max);
                        finished = false;
                        break;
                    }
                    Err(e) => {
                        self.failed(site_id, &e);
                        finished = false;
                        break;
                    }
                }
                // The rest is for ingest and reports: sealing takes at most
                // half of one core.
                tokio::time::sleep(started.elapsed().min(MAX_PAUSE)).await;
            }
            if !finished {
                continue;
            }
            self.sites.locked().failing.remove(&site_id);
            let built = self.sites.locked().building.remove(&site_id);
            let oversized = self.sites.locked().oversized.contains_key(&site_id);
            if let Some(since) = built
                && !oversized
            {
                let days = self
                    .columns()
                    .ok()
                    .and_then(|c| c.sealed_days(site_id).ok())
                    .map_or(0, |d| d.len());
                tracing::info!(
                    site_id,
                    days,
                    seconds = since.elapsed().as_secs(),
                    "column store built for the site: every complete day sealed"
                );
            }
        }
        Ok(worked)
    }

    /// Every site's plan as of `now`, and the counts health shows.
    fn look(&self, now: i64) -> Result<Vec<(i64, SitePlan)>, SealError> {
        self.apply_removals()?;
        let conn = self.store.reader()?;
        self.follow_database(&conn)?;
        let ids = sites::site_ids(&conn)?;
        let existing: HashSet<i64> = ids.iter().copied().collect();
        for id in self.site_dirs()? {
            if !existing.contains(&id) {
                self.columns()?.remove_site(id)?;
                self.mark_provisional(id, None)?;
            }
        }
        self.act_on_late()?;
        let from = (now - i64::from(self.raw_events_days) * DAY).div_euclid(DAY);
        let (mut sealed_total, mut pending_total) = (0, 0);
        let mut plans = Vec::new();
        for id in ids {
            let waiting = self
                .sites
                .locked()
                .failing
                .get(&id)
                .is_some_and(|(until, _)| Instant::now() < *until);
            let looked = if waiting {
                None
            } else {
                self.look_at(&conn, id, from, now)
                    .inspect_err(|e| self.failed(id, e))
                    .ok()
            };
            let Some(plan) = looked else {
                // Failing or waiting: its days count all the same.
                let (sealed, pending) = self.count_days(&conn, id, from, now);
                sealed_total += sealed as u64;
                pending_total += pending as u64;
                continue;
            };
            sealed_total += if plan.restart { 0 } else { plan.sealed as u64 };
            pending_total += plan.plan.pending as u64;
            if !plan.plan.steps.is_empty() || plan.plan.restart {
                plans.push((id, plan.plan));
            }
        }
        self.sealed_days.store(sealed_total, Ordering::Relaxed);
        self.pending_days.store(pending_total, Ordering::Relaxed);
        self.looked.store(true, Ordering::Relaxed);
        Ok(plans)
    }

    /// A site failed: logged, counted, and left alone for a while (doubling
    /// up to [`MAX_BACKOFF`]) while the other sites go on.
    fn failed(&self, site_id: i64, e: &SealError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut sites = self.sites.locked();
        let wait = sites
            .failing
            .get(&site_id)
            .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
        sites.failing.insert(site_id, (Instant::now() + wait, wait));
        tracing::error!(
            site_id,
            error = %e,
            retry_in_seconds = wait.as_secs(),
            "sealing a site's days into the column store failed; going on with the other sites"
        );
    }

    /// One site's plan as of `now`.
    fn look_at(
        &self,
        conn: &Connection,
        id: i64,
        from: i64,
        now: i64,
    ) -> Result<Looked, SealError> {
        let damaged = self.sites.locked().damaged.remove(&id);
        if damaged {
            self.restart(id, "a report found a file damaged")?;
        }
        let sealed = match self.columns()?.sealed_days(id) {
            Ok(days) => days,
            Err(e @ ColumnError::Damaged { .. }) => {
                self.restart(id, &e.to_string())?;
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let first_look = !self.sites.locked().known.contains(&id);
        let newest = sealed.last().copied();
        self.tell_late(id, newest);
        let raw = if first_look {
            raw_days(conn, id, from)?
        } else {
            raw_days(conn, id, newest.map_or(from, |n| from.max(n + 1)))?
        };
        if first_look {
            // The newest day is provisional if it was marked so, however
            // long ago: its last seal is then due at once.
            let marked = self.sites.locked().marked.get(&id).copied();
            match newest.filter(|n| marked == Some(*n)) {
                Some(n) => {
                    let open = possibly_open(conn, id, n)?;
                    let p = Provisional { day: n, open };
                    self.sites.locked().provisional.insert(id, p);
                }
                None => {
                    self.sites.locked().provisional.remove(&id);
                    self.mark_provisional(id, None)?;
                }
            }
        }
        let provisional = self.sites.locked().provisional.get(&id).cloned();
        let provisional = match provisional {
            Some(p) => Some((p.day, all_ended(conn, &p.open, now)?)),
            None => None,
        };
        let mut plan = plan(&sealed, &raw, from, provisional, now);
        let mut sites = self.sites.locked();
        if let Some(&stop) = sites.oversized.get(&id) {
            if stop < from {
                // Retention dropped it: the days after it are a run again.
                sites.oversized.remove(&id);
            } else {
                plan.steps
                    .retain(|s| matches!(s, Step::Seal(d) | Step::Reseal(d) if *d < stop));
            }
        }
        sites.known.insert(id);
        if (first_look || plan.restart) && plan.pending > 0 {
            sites.building.entry(id).or_insert_with(Instant::now);
        }
        Ok(Looked {
            restart: plan.restart,
            sealed: sealed.len(),
            plan,
        })
    }

    /// Seals one day of a site from the raw tables.
    fn step(&self, site_id: i64, step: Step, now: i64) -> Result<(), SealError> {
        let provisional = self.sites.locked().provisional.get(&site_id).cloned();
        if let (Step::Seal(day), Some(p)) = (step, provisional)
            && p.day < day
        {
            // Its last seal, while it is still the newest day.
            self.seal(site_id, p.day, now, true)?;
        }
        match step {
            Step::Reseal(day) => self.seal(site_id, day, now, true),
            Step::Seal(day) => self.seal(site_id, day, now, false),
        }
    }

    fn seal(&self, site_id: i64, day: i64, now: i64, last: bool) -> Result<(), SealError> {
        let rows = {
            let conn = self.store.reader()?;
            *self.reading.locked() = Some(conn.get_interrupt_handle());
            let read = (|| {
                if self.stopping() {
                    return Err(SealError::Stopping);
                }
                // One read transaction: events and visits of the same instant.
                let tx = conn.unchecked_transaction()?;
                // Counted first, on the key: a day is read whole into memory.
                let max = self.max_events_per_day;
                if events_over(&tx, site_id, day, max)? {
                    return Err(SealError::Oversized { day, max });
                }
                Ok(read_day(&tx, site_id, day)?)
            })();
            *self.reading.locked() = None;
            if self.stopping() {
                // Interrupted by the stop, or stopping since: not committed.
                return Err(SealError::Stopping);
            }
            read?
        };
        let open: Vec<i64> = rows
            .visits
            .iter()
            .filter(|v| v.last_seen_at >= now - VISIT_SETTLED_AFTER)
            .map(|v| v.id)
            .collect();
        let events = rows.events.len();
        let provisional = stays_provisional(day, now, !open.is_empty(), last);
        // Marked before the commit, unmarked after: a stop between costs a
        // seal more, never the last one.
        if provisional {
            self.mark_provisional(site_id, Some(day))?;
        }
        self.columns()?.append_day(site_id, day, rows)?;
        self.tell_late(site_id, Some(day));
        if !provisional {
            self.mark_provisional(site_id, None)?;
        }
        tracing::debug!(
            site_id,
            day,
            events,
            provisional,
            "sealed a day into the column store"
        );
        let mut sites = self.sites.locked();
        if provisional {
            sites.provisional.insert(site_id, Provisional { day, open });
        } else {
            sites.provisional.remove(&site_id);
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SealError> + Send + 'static,
) -> Result<T, SealError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SealError::Task(e.to_string()))?
}

mod counts;
mod follow;
mod late;
mod plan;
mod provisional;
mod reads;
mod serving;

pub use follow::{forget_all, forget_site};
pub use late::{LateEvents, NoteLate};
use plan::date;
pub use plan::{SitePlan, Step, complete, plan, stays_provisional};
pub use reads::ensure_database_id;
use reads::{all_ended, events_over, possibly_open, raw_days};
pub use serving::SealedSite;

#[cfg(test)]
mod tests;
