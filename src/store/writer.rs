//! The single writer: one thread owns the read-write connection and commits
//! events in groups.
//!
//! A handler submits its events and waits; the writer takes everything queued
//! (up to `MAX_BATCH` events), writes it in one transaction, commits, and only
//! then answers each submitter. So an acknowledged event is on disk, and one
//! commit is shared by every request that arrived while the previous commit ran.
//! The queue is bounded: when it is full, `submit` fails at once instead of
//! letting memory grow.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, Transaction};
use thiserror::Error;
use tokio::sync::oneshot;

use super::rollups::RollupFeed;
use super::{NewEvent, StoreError, VisitDims};
use crate::metrics::{Histogram, SIZE_BOUNDS};

const MAX_BATCH: usize = 4096;

#[derive(Debug, Error, Clone)]
pub enum WriteError {
    #[error("the write queue is full")]
    QueueFull,
    #[error("the writer has stopped")]
    Closed,
    #[error("write failed: {0}")]
    Failed(String),
}

type Job = Box<dyn Fn(&Transaction) -> Result<(), StoreError> + Send>;

enum Op {
    /// Sent by [`WriterHandle::shutdown`]: commit what is queued, then exit.
    Stop,
    Events(Vec<NewEvent>, oneshot::Sender<Result<(), WriteError>>),
    Job(Job, oneshot::Sender<Result<(), WriteError>>),
}

/// Counters describing the writer, for health and metrics.
#[derive(Debug)]
pub struct WriterStats {
    pub queue_depth: AtomicUsize,
    pub commits: AtomicU64,
    pub events_written: AtomicU64,
    pub last_batch_events: AtomicU64,
    pub last_commit_micros: AtomicU64,
    /// Events per group commit.
    pub batch_events: Histogram,
    /// Seconds per group commit, retries included.
    pub commit_seconds: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            queue_depth: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
            events_written: AtomicU64::new(0),
            last_batch_events: AtomicU64::new(0),
            last_commit_micros: AtomicU64::new(0),
            batch_events: Histogram::new(SIZE_BOUNDS),
            commit_seconds: Histogram::latency(),
        }
    }
}

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub struct EventWriter {
    tx: SyncSender<Op>,
    capacity: usize,
    stats: Arc<WriterStats>,
}

/// Owns the writer thread; [`WriterHandle::shutdown`] drains and joins it.
pub struct WriterHandle {
    tx: SyncSender<Op>,
    thread: Option<JoinHandle<()>>,
}

impl EventWriter {
    /// Starts the writer thread on `conn` with room for `capacity` queued
    /// submissions. Committed events go on to `feed`.
    pub fn start(
        conn: Connection,
        capacity: usize,
        feed: Arc<RollupFeed>,
    ) -> (EventWriter, WriterHandle) {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel(capacity);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("tally-writer".into())
            .spawn(move || run(conn, rx, &thread_stats, &feed))
            .expect("spawning the writer thread");
        (
            EventWriter {
                tx: tx.clone(),
                capacity,
                stats,
            },
            WriterHandle {
                tx,
                thread: Some(thread),
            },
        )
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Whether the queue is full, so a submission now would be refused.
    pub fn is_full(&self) -> bool {
        self.stats.queue_depth.load(Ordering::Relaxed) >= self.capacity
    }

    /// Writes `events` and resolves once they are committed.
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<(), WriteError> {
        let (ack, done) = oneshot::channel();
        self.enqueue(Op::Events(events, ack))?;
        done.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Runs `job` inside a writer transaction and resolves once it is committed.
    pub async fn run<F>(&self, job: F) -> Result<(), WriteError>
    where
        F: Fn(&Transaction) -> Result<(), StoreError> + Send + 'static,
    {
        let (ack, done) = oneshot::channel();
        self.enqueue(Op::Job(Box::new(job), ack))?;
        done.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Like [`EventWriter::run`], resolving with what `job` returned (in the
    /// run that was committed, when a failed group made it run again).
    pub async fn run_for<T, F>(&self, job: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<T>>> = Arc::default();
        let out = slot.clone();
        self.run(move |tx| {
            let value = job(tx)?;
            *out.lock().expect("job result") = Some(value);
            Ok(())
        })
        .await?;
        let value = slot.lock().expect("job result").take();
        value.ok_or(WriteError::Closed)
    }

    fn enqueue(&self, op: Op) -> Result<(), WriteError> {
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(op) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => WriteError::QueueFull,
                    TrySendError::Disconnected(_) => WriteError::Closed,
                })
            }
        }
    }
}

impl WriterHandle {
    /// Commits every submission queued so far, then stops the thread and
    /// waits for it. Later submissions fail with [`WriteError::Closed`].
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Op::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut conn: Connection, rx: Receiver<Op>, stats: &WriterStats, feed: &RollupFeed) {
    let mut batch: Vec<Op> = Vec::new();
    let mut ids = EventIds::new();
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { break };
        let mut n_events = 0;
        match first {
            Op::Stop => stopping = true,
            op => {
                n_events += op_len(&op);
                batch.push(op);
            }
        }
        // Everything already queued joins this group: under load, requests
        // that arrived during the previous commit share the next one. No
        // deliberate wait: in a measured trade-off, a 1 ms window cut commits
        // eightfold but lowered throughput, since every request waited it out.
        // On stop, keep taking until the queue is empty.
        while n_events < MAX_BATCH || stopping {
            match rx.try_recv() {
                Ok(Op::Stop) => stopping = true,
                Ok(op) => {
                    n_events += op_len(&op);
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        stats.queue_depth.fetch_sub(batch.len(), Ordering::Relaxed);
        let started = Instant::now();
        let result = commit(&mut conn, &mut ids, &mut batch);
        let through = ids.last();
        stats.commits.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        stats
            .last_commit_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        stats.commit_seconds.observe_duration(took);
        // Jobs count towards the batch limit but are not events.
        let events_in_batch: u64 = batch.iter().map(events_of).sum();
        if events_in_batch > 0 {
            stats.batch_events.observe(events_in_batch as f64);
        }
        stats
            .last_batch_events
            .store(events_in_batch, Ordering::Relaxed);
        match result {
            Ok(()) => {
                stats
                    .events_written
                    .fetch_add(events_in_batch, Ordering::Relaxed);
                // Handed on before the answer, so a caller that has its answer
                // can count on the events being on their way to the rollups.
                for op in batch.drain(..) {
                    let (events, ack) = split(op);
                    feed.push(events, through);
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                // One bad submission must not fail its neighbours: retry each alone.
                tracing::warn!(error = %e, ops = batch.len(), "group commit failed; retrying one by one");
                for op in batch.drain(..) {
                    let n = events_of(&op);
                    let mut single = vec![op];
                    let r = commit(&mut conn, &mut ids, &mut single);
                    let (events, ack) = split(single.pop().expect("one op"));
                    if r.is_ok() {
                        stats.events_written.fetch_add(n, Ordering::Relaxed);
                        feed.push(events, ids.last());
                    } else if let Err(e) = &r {
                        tracing::error!(error = %e, "write failed");
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(r.map_err(|e| WriteError::Failed(e.to_string())));
                    }
                }
            }
        }
    }
    tracing::info!("writer drained and stopped");
}

fn op_len(op: &Op) -> usize {
    match op {
        Op::Events(ev, _) => ev.len(),
        Op::Job(..) | Op::Stop => 1,
    }
}

fn events_of(op: &Op) -> u64 {
    match op {
        Op::Events(ev, _) => ev.len() as u64,
        Op::Job(..) | Op::Stop => 0,
    }
}

type Ack = oneshot::Sender<Result<(), WriteError>>;

/// An op's events (for the rollup feed) and its acknowledgement.
fn split(op: Op) -> (Vec<NewEvent>, Option<Ack>) {
    match op {
        Op::Events(events, ack) => (events, Some(ack)),
        Op::Job(_, ack) => (Vec::new(), Some(ack)),
        Op::Stop => (Vec::new(), None),
    }
}

/// Writes every op in one transaction. Jobs are `Fn`, not `FnOnce`: when a
/// group fails it is rolled back and each op, jobs included, runs again alone.
fn commit(conn: &mut Connection, ids: &mut EventIds, batch: &mut [Op]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for op in batch.iter_mut() {
        match op {
            Op::Events(events, _) => {
                for ev in events.iter_mut() {
                    insert_event(&tx, ids, ev)?;
                }
            }
            Op::Job(job, _) => job(&tx)?,
            Op::Stop => {}
        }
    }
    tx.commit()?;
    Ok(())
}

/// Event ids: increasing within this process and seeded from the clock in
/// microseconds, so they keep increasing across restarts. Together with the
/// site and second they form the key.
struct EventIds {
    next: i64,
}

impl EventIds {
    fn new() -> EventIds {
        EventIds { next: 0 }
    }

    fn take(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.next = self.next.max(now) + 1;
        self.next
    }

    /// The last id handed out.
    fn last(&self) -> i64 {
        self.next
    }
}

fn insert_event(tx: &Transaction, ids: &mut EventIds, ev: &mut NewEvent) -> Result<(), StoreError> {
    ev.id = ids.take();
    insert_event_row(tx, ev)
}

/// Inserts `ev` with the id it carries.
pub(super) fn insert_event_row(tx: &Transaction, ev: &NewEvent) -> Result<(), StoreError> {
    let none = VisitDims::default();
    let d = ev.first_of_visit.as_deref().unwrap_or(&none);
    tx.prepare_cached(
        "INSERT INTO events (site_id, visit_id, visitor_id, ts, name, hostname, path, props,
            revenue_amount, revenue_currency, scroll_depth, engaged_ms, interactive,
            first_of_visit, first_view, id, referrer, source, utm_medium, utm_source, utm_campaign,
            utm_term, utm_content, country, region, city, browser, browser_version, os,
            os_version, device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
            ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
    )?
    .execute(rusqlite::params_from_iter(
        [
            &ev.site_id as &dyn rusqlite::ToSql,
            &ev.visit_id,
            &ev.visitor_id,
            &ev.ts,
            &ev.name,
            &ev.hostname,
            &ev.path,
            &ev.props,
            &ev.revenue_amount,
            &ev.revenue_currency,
            &ev.scroll_depth,
            &ev.engaged_ms,
            &ev.interactive,
            &ev.first_of_visit.is_some(),
            &ev.first_view,
            &ev.id,
        ]
        .into_iter()
        .chain(d.params()),
    ))?;
    Ok(())
}
