//! The single writer: one thread owns the read-write connection and adds
//! events and jobs to the database in transactions.
//!
//! The server's events come through the [`EventJournal`]: a request appends
//! its events there and is answered, and the writer adds everything queued
//! in one transaction at most every [`COMMIT_GAP`]. When the writer is idle
//! (no load), the request waits for that commit instead, which then happens
//! at once: every reader sees an answered event. Jobs (and events submitted without a
//! journal, as `tally demo` does) wait for the commit that includes them.
//! After each commit the events go on to the [`CommitFollower`] (the read
//! model's feed, in the server) and fully committed journal segments are
//! deleted.
//!
//! The queue is bounded: when it is full, a submission fails at once instead
//! of letting memory grow. The writer sleeps while idle; under load it wakes
//! on its own every few milliseconds, so a request costs no wake-up call.
//!
//! A job that panics is rolled back to its savepoint and fails alone, like a
//! job that returns an error; the writer goes on. A panic anywhere else (in
//! adding or committing events, or handing them on) stops the writer rather
//! than retrying what may panic again: it reports itself stopped
//! ([`EventWriter::is_running`]), submissions fail with
//! [`WriteError::Closed`], and the journal keeps every acknowledged event
//! for the next start to add.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::error::WriteError;
use super::events::insert_events;
use super::follower::CommitFollower;
use super::journal::{EventIds, EventJournal};
use super::{NewEvent, StoreError};
use crate::metrics::{Counter, Histogram, SIZE_BOUNDS};
use crate::supervise::panic_message;

/// Ops taken from the queue before the writer looks at the clock again.
const MAX_BATCH: usize = 4096;

/// Under load, the time between commits. A commit costs file locks and a
/// write of every page it touched, whatever its size; at 40,000 events a
/// second this gathers a few hundred events per commit (BENCHMARKS.md).
pub const COMMIT_GAP: Duration = Duration::from_millis(10);

type Job = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;
type Ack = oneshot::Sender<Result<(), WriteError>>;

enum Op {
    /// Sent by [`WriterHandle::shutdown`]: commit what is queued, then exit.
    Stop,
    /// Events already in the journal. Under load nobody waits for them; a
    /// submitter that found the writer idle waits for the commit (`Ack`).
    Journaled(Vec<NewEvent>, Option<Ack>),
    /// Events without a journal: acknowledged after their commit.
    Events(Vec<NewEvent>, Ack),
    Job(Job, Ack),
    /// A bug in the event-commit path, for tests of what follows one.
    #[cfg(test)]
    Crash,
}

/// Counters describing the writer, for health and metrics.
#[derive(Debug)]
pub struct WriterStats {
    pub queue_depth: AtomicUsize,
    pub commits: AtomicU64,
    pub events_written: AtomicU64,
    pub last_batch_events: AtomicU64,
    pub last_commit_micros: AtomicU64,
    /// Events per commit.
    pub batch_events: Histogram,
    /// Seconds of work per commit (adding, committing), not of waiting.
    pub commit_seconds: Histogram,
    /// Jobs that panicked (each rolled back alone).
    pub job_panics: Counter,
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
            job_panics: Counter::default(),
        }
    }
}

/// What submitters and the writer thread share.
struct Shared {
    stats: WriterStats,
    /// Set while the writer sleeps with nothing to do: the next submission
    /// wakes it.
    idle: AtomicBool,
    /// The newest journaled id whose event is committed.
    committed: AtomicI64,
    /// Set when the thread has ended, after a stop or a panic.
    stopped: AtomicBool,
    /// Set when it ended with a panic.
    panicked: AtomicBool,
}

/// Events taken by [`EventWriter::queue`]; [`Queued::stored`] resolves as
/// [`EventWriter::submit`] does.
#[must_use = "events without a journal are stored only once committed"]
pub enum Queued {
    /// In the journal, so stored whatever the commit's outcome (a failed
    /// commit is retried from the journal); found idle, the writer answers
    /// once it has committed them.
    Journaled(Option<oneshot::Receiver<Result<(), WriteError>>>),
    /// Waiting for the commit that stores them.
    Committing(oneshot::Receiver<Result<(), WriteError>>),
}

impl Queued {
    pub async fn stored(self) -> Result<(), WriteError> {
        match self {
            Queued::Journaled(done) => {
                if let Some(done) = done {
                    let _ = done.await;
                }
                Ok(())
            }
            Queued::Committing(done) => done.await.unwrap_or(Err(WriteError::Closed)),
        }
    }
}

/// Handle to the writer thread. Cloning shares the same thread.
#[derive(Clone)]
pub struct EventWriter {
    tx: SyncSender<Op>,
    capacity: usize,
    shared: Arc<Shared>,
    thread: Thread,
    journal: Option<Arc<EventJournal>>,
}

/// Owns the writer thread; [`WriterHandle::shutdown`] drains and joins it.
pub struct WriterHandle {
    writer: EventWriter,
    thread: Option<JoinHandle<()>>,
}

impl EventWriter {
    /// Starts the writer thread on `conn` with room for `capacity` queued
    /// submissions. With a `journal`, [`EventWriter::submit`] answers once
    /// the events are journaled; without, once they are committed.
    /// Each transaction is told to `follower`.
    pub fn start(
        conn: Connection,
        capacity: usize,
        follower: Arc<dyn CommitFollower>,
        journal: Option<Arc<EventJournal>>,
    ) -> std::io::Result<(EventWriter, WriterHandle)> {
        let capacity = capacity.max(1);
        let (tx, rx) = sync_channel(capacity);
        let shared = Arc::new(Shared {
            stats: WriterStats::default(),
            idle: AtomicBool::new(false),
            committed: AtomicI64::new(0),
            stopped: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread_journal = journal.clone();
        let thread = std::thread::Builder::new()
            .name("tally-writer".into())
            .spawn(move || {
                let shared = &*thread_shared;
                // Jobs' panics are caught one by one (`apply`); one that
                // gets here came from the event-commit path. The open
                // transaction is rolled back as the writer unwinds, and the
                // queue closes with it.
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    Writer {
                        conn,
                        rx,
                        shared,
                        follower: &*follower,
                        journal: thread_journal.as_deref(),
                        ids: EventIds::new(),
                        last_commit: None,
                        slept: Duration::ZERO,
                    }
                    .run()
                }));
                if let Err(panic) = outcome {
                    shared.panicked.store(true, Ordering::SeqCst);
                    tracing::error!(
                        panic = panic_message(&*panic),
                        "the writer stopped after a panic: events are refused until a \
                         restart, which adds the acknowledged ones from the journal"
                    );
                }
                shared.stopped.store(true, Ordering::SeqCst);
            })?;
        let writer = EventWriter {
            tx,
            capacity,
            shared,
            thread: thread.thread().clone(),
            journal,
        };
        Ok((
            writer.clone(),
            WriterHandle {
                writer,
                thread: Some(thread),
            },
        ))
    }

    pub fn stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    /// Whether the writer thread still takes submissions: false once it
    /// has stopped, at shutdown or after a panic it could not contain.
    pub fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Makes a stopped writer look running, as it did to events that checked
    /// just before it stopped.
    #[cfg(test)]
    pub(crate) fn pretend_running(&self) {
        self.shared.stopped.store(false, Ordering::SeqCst);
    }

    /// Queues a panic in the event-commit path.
    #[cfg(test)]
    pub(crate) fn crash(&self) -> Result<(), WriteError> {
        self.enqueue(Op::Crash)
    }

    /// Whether the queue is full, so a submission now would be refused.
    pub fn is_full(&self) -> bool {
        self.shared.stats.queue_depth.load(Ordering::Relaxed) >= self.capacity
    }

    /// Stores `events`: resolves once they are journaled (or, without a
    /// journal, committed). Either way they survive a killed process.
    pub async fn submit(&self, events: Vec<NewEvent>) -> Result<(), WriteError> {
        self.queue(events)?.stored().await
    }

    /// The first half of [`EventWriter::submit`], at once and without
    /// waiting: journals and queues `events`, or refuses them (queue full,
    /// writer stopped). With a journal, queued events are stored.
    pub fn queue(&self, events: Vec<NewEvent>) -> Result<Queued, WriteError> {
        match &self.journal {
            Some(journal) => {
                // Quiet: committing at once costs nothing, and then every
                // reader, other processes included, sees the event as soon
                // as it is answered. Under load the writer is never idle.
                let (ack, done) = if self.shared.idle.load(Ordering::SeqCst) {
                    let (ack, done) = oneshot::channel();
                    (Some(ack), Some(done))
                } else {
                    (None, None)
                };
                journal.append(events, |events| self.enqueue(Op::Journaled(events, ack)))?;
                Ok(Queued::Journaled(done))
            }
            None => {
                let (ack, done) = oneshot::channel();
                self.enqueue(Op::Events(events, ack))?;
                Ok(Queued::Committing(done))
            }
        }
    }

    /// An id at least that of every event submitted so far, and below
    /// those of every event submitted later: ids are microseconds of the
    /// clock, or one more than the last when several come in the same one.
    pub fn last_event_id(&self) -> i64 {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let journal = self.journal.as_ref().map_or(0, |j| j.last_id());
        clock.max(journal)
    }

    /// Journaled events not committed yet.
    pub fn uncommitted(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|j| j.appended_through() > self.shared.committed.load(Ordering::Acquire))
    }

    /// Resolves once every event acknowledged so far is committed, so a
    /// read that follows sees it.
    pub async fn settled(&self) -> Result<(), WriteError> {
        if self.uncommitted() {
            self.run(|_| Ok(())).await?;
        }
        Ok(())
    }

    /// Runs `job` inside a writer transaction and resolves once it is
    /// committed. A job that fails is rolled back alone.
    pub async fn run<F>(&self, job: F) -> Result<(), WriteError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        let (ack, done) = oneshot::channel();
        self.enqueue(Op::Job(Box::new(job), ack))?;
        done.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Like [`EventWriter::run`], resolving with what `job` returned.
    pub async fn run_for<T, F>(&self, job: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<T>>> = Arc::default();
        let out = slot.clone();
        self.run(move |tx| {
            let value = job(tx)?;
            *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
            Ok(())
        })
        .await?;
        let value = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        value.ok_or(WriteError::Closed)
    }

    fn enqueue(&self, op: Op) -> Result<(), WriteError> {
        let stats = &self.shared.stats;
        // Journaled events wake the writer only when it is idle: under load
        // it comes back on its own within COMMIT_GAP, so a request costs
        // no wake-up call. Anything someone waits for wakes it at once.
        let urgent = !matches!(op, Op::Journaled(_, None));
        stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(op) {
            Ok(()) => {
                // Pairs with the writer's store before its last look at the
                // queue: either it sees this op or this sees it idle.
                if urgent || self.shared.idle.load(Ordering::SeqCst) {
                    self.thread.unpark();
                }
                Ok(())
            }
            Err(e) => {
                stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
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
    /// Returns false when the writer had stopped after a panic, so events
    /// acknowledged since may be only in the journal.
    pub fn shutdown(mut self) -> bool {
        let _ = self.writer.tx.send(Op::Stop);
        self.writer.thread.unpark();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        !self.writer.shared.panicked.load(Ordering::SeqCst)
    }
}

/// The writer thread's state.
struct Writer<'a> {
    conn: Connection,
    rx: Receiver<Op>,
    shared: &'a Shared,
    follower: &'a dyn CommitFollower,
    journal: Option<&'a EventJournal>,
    /// Ids of events submitted without a journal.
    ids: EventIds,
    last_commit: Option<Instant>,
    /// Time the open transaction spent waiting for more.
    slept: Duration,
}

/// What the open transaction holds, answered or handed on at its commit.
#[derive(Default)]
struct Pending {
    events: Vec<NewEvent>,
    /// Acknowledgements, with the result of each one's own part.
    acks: Vec<(Ack, Result<(), WriteError>)>,
}

impl Writer<'_> {
    fn run(mut self) {
        // Journaled events of a commit that failed, to add again.
        let mut retry: Vec<NewEvent> = Vec::new();
        let mut stopping = false;
        while !stopping {
            let first = self.next_op(retry.is_empty());
            let started = Instant::now();
            let mut pending = Pending::default();
            self.slept = Duration::ZERO;
            let result = self.transaction(first, &mut retry, &mut pending, &mut stopping);
            // Busy time: the sleeps between takes are not the commit's cost.
            let took = started.elapsed().saturating_sub(self.slept);
            let stats = &self.shared.stats;
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats
                .last_commit_micros
                .store(took.as_micros() as u64, Ordering::Relaxed);
            stats.commit_seconds.observe_duration(took);
            let n = pending.events.len() as u64;
            stats.last_batch_events.store(n, Ordering::Relaxed);
            if n > 0 {
                stats.batch_events.observe(n as f64);
            }
            self.last_commit = Some(Instant::now());
            match result {
                Ok(()) => self.committed(pending),
                Err(e) => {
                    // Changes jobs of the failed transaction staged.
                    self.follower.rolled_back();
                    tracing::error!(error = %e, events = n, "commit failed; retrying");
                    let error = WriteError::Failed(e.to_string());
                    for (ack, _) in pending.acks {
                        let _ = ack.send(Err(error.clone()));
                    }
                    // Acknowledged through the journal: they must land.
                    if self.journal.is_some() {
                        retry.append(&mut pending.events);
                    }
                    if !stopping {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        if let Some(journal) = self.journal {
            if retry.is_empty() {
                journal.close();
            } else {
                tracing::error!(
                    events = retry.len(),
                    "stopped with events only in the journal; they are added at the next start"
                );
            }
        }
        tracing::info!("writer drained and stopped");
    }

    /// The next op, sleeping until one comes; `None` at once when
    /// `may_sleep` is false and nothing is queued (a failed commit's events
    /// are waiting to be retried).
    fn next_op(&mut self, may_sleep: bool) -> Option<Op> {
        loop {
            if let Some(op) = take(&self.rx, self.shared) {
                return Some(op);
            }
            if !may_sleep {
                return None;
            }
            self.shared.idle.store(true, Ordering::SeqCst);
            let op = take(&self.rx, self.shared);
            if op.is_none() {
                std::thread::park();
            }
            self.shared.idle.store(false, Ordering::SeqCst);
            if op.is_some() {
                return op;
            }
        }
    }

    /// One transaction: `first`, the retried events, and what is queued
    /// once it is due. Events nobody waits for wait until [`COMMIT_GAP`] has
    /// passed since the last commit; the sleep is outside the transaction,
    /// so the write lock is held only while working (other processes, such
    /// as `tally site add`, write between commits).
    fn transaction(
        &mut self,
        first: Option<Op>,
        retry: &mut Vec<NewEvent>,
        pending: &mut Pending,
        stopping: &mut bool,
    ) -> Result<(), StoreError> {
        let waited_for = !matches!(first, None | Some(Op::Journaled(_, None)));
        let since = self.last_commit.map(|t| t.elapsed()).unwrap_or(COMMIT_GAP);
        let backlog = self.shared.stats.queue_depth.load(Ordering::Relaxed) >= MAX_BATCH;
        if !waited_for && !backlog && since < COMMIT_GAP {
            // Submissions that someone waits for cut this short (`wake`).
            let before = Instant::now();
            std::thread::park_timeout(COMMIT_GAP - since);
            self.slept += before.elapsed();
        }
        let tx = match self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                // `first` was taken from the queue: a stop must still stop,
                // and journaled events must still land (with the retry).
                match first {
                    Some(Op::Stop) => *stopping = true,
                    Some(Op::Journaled(events, ack)) => {
                        pending.events.extend(events);
                        pending.acks.extend(ack.map(|a| (a, Ok(()))));
                    }
                    // Answered with the error, as every op of a failed
                    // transaction is.
                    Some(Op::Events(_, ack) | Op::Job(_, ack)) => pending.acks.push((ack, Ok(()))),
                    #[cfg(test)]
                    Some(Op::Crash) => panic!("a crash in the event-commit path"),
                    None => {}
                }
                return Err(e.into());
            }
        };
        // Into `pending` first: if this fails too, they are retried again.
        pending.events.append(retry);
        insert_events(&tx, &pending.events, true)?;
        let mut op = first;
        let mut taken = 0;
        while let Some(o) = op.take() {
            taken += 1;
            Self::apply(&mut self.ids, &tx, o, pending, stopping, self.shared)?;
            // On stop, everything queued before it joins this commit.
            if taken < MAX_BATCH || *stopping {
                op = take(&self.rx, self.shared);
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds one op to the open transaction. A failing job is rolled back
    /// alone and answered with its error; an error of the transaction
    /// itself ends it (journaled events are kept in `pending` to retry).
    fn apply(
        ids: &mut EventIds,
        tx: &Transaction,
        op: Op,
        pending: &mut Pending,
        stopping: &mut bool,
        shared: &Shared,
    ) -> Result<(), StoreError> {
        match op {
            Op::Stop => *stopping = true,
            Op::Journaled(events, ack) => {
                let from = pending.events.len();
                pending.events.extend(events);
                insert_events(tx, &pending.events[from..], false)?;
                if let Some(ack) = ack {
                    pending.acks.push((ack, Ok(())));
                }
            }
            Op::Events(mut events, ack) => {
                for ev in &mut events {
                    ev.id = ids.take();
                }
                insert_events(tx, &events, false)?;
                pending.events.append(&mut events);
                pending.acks.push((ack, Ok(())));
            }
            Op::Job(job, ack) => {
                tx.execute_batch("SAVEPOINT job")?;
                // A bug in one job must not stop every write: its changes
                // are rolled back and its submitter told, as for an error.
                // The job owns nothing the writer reads after it.
                let result = match std::panic::catch_unwind(AssertUnwindSafe(|| job(tx))) {
                    Ok(result) => result.map_err(|e| WriteError::Failed(e.to_string())),
                    Err(panic) => {
                        shared.stats.job_panics.inc();
                        tracing::error!(
                            panic = panic_message(&*panic),
                            "a writer job panicked; rolled back"
                        );
                        Err(WriteError::Failed("the job panicked".into()))
                    }
                };
                if result.is_ok() {
                    tx.execute_batch("RELEASE job")?;
                } else {
                    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
                }
                pending.acks.push((ack, result));
            }
            #[cfg(test)]
            Op::Crash => panic!("a crash in the event-commit path"),
        }
        Ok(())
    }

    /// After a commit: events on to the follower, answers out, journal
    /// segments released.
    fn committed(&self, pending: Pending) {
        let n = pending.events.len() as u64;
        self.shared
            .stats
            .events_written
            .fetch_add(n, Ordering::Relaxed);
        let through = pending.events.iter().map(|e| e.id).max().unwrap_or(0);
        // Handed on before the answers, so a caller that has its answer
        // can count on the events being on their way to the rollups.
        self.follower.committed(&self.conn, pending.events, through);
        for (ack, result) in pending.acks {
            let _ = ack.send(result);
        }
        if let Some(journal) = self.journal
            && through > 0
        {
            self.shared.committed.fetch_max(through, Ordering::AcqRel);
            journal.release(through);
        }
    }
}

/// The next queued op, if any. It leaves the queue's depth as it leaves the
/// queue, even if the writer then waits out the commit gap with it.
fn take(rx: &Receiver<Op>, shared: &Shared) -> Option<Op> {
    let op = rx.try_recv().ok()?;
    shared.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
    Some(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn event() -> NewEvent {
        NewEvent::test_pageview("/")
    }

    /// A writer on a fresh database with example.com, with its journal.
    fn started(data: &tempfile::TempDir) -> (Store, EventWriter, WriterHandle) {
        let store = Store::open(data.path(), 1).unwrap();
        let mut conn = store.write_connection().unwrap();
        crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        conn.busy_timeout(Duration::from_millis(20)).unwrap();
        let (journal, _) =
            EventJournal::open(&data.path().join(super::super::JOURNAL_DIR), &mut conn).unwrap();
        let (writer, handle) = EventWriter::start(
            conn,
            64,
            Arc::new(crate::store::NoFollower),
            Some(Arc::new(journal)),
        )
        .unwrap();
        (store, writer, handle)
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store
            .reader()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_job_is_rolled_back_alone_and_the_writer_goes_on() {
        let data = tempfile::tempdir().unwrap();
        let (store, writer, handle) = started(&data);
        writer.submit(vec![event()]).await.unwrap();

        let result = writer
            .run(|tx| {
                crate::store::sites::add_site(tx, "half-done.example", "UTC", false)?;
                panic!("a bug in a job");
            })
            .await;
        assert!(matches!(result, Err(WriteError::Failed(_))), "{result:?}");
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sites WHERE domain = 'half-done.example'"
            ),
            0,
            "the panicking job's changes are rolled back"
        );

        // The writer lives on: later events and jobs are committed.
        writer.submit(vec![event()]).await.unwrap();
        writer.settled().await.unwrap();
        writer
            .run(|tx| crate::store::sites::add_site(tx, "after.example", "UTC", false).map(drop))
            .await
            .unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM events"), 2);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sites WHERE domain = 'after.example'"
            ),
            1
        );
        handle.shutdown();
    }

    #[tokio::test]
    async fn a_panic_while_committing_stops_the_writer_and_keeps_the_journal() {
        let data = tempfile::tempdir().unwrap();
        let (store, writer, handle) = started(&data);
        assert!(writer.is_running());
        // The events and the crash land in one transaction: another process
        // holds the write lock until both are queued.
        let blocker = store.write_connection().unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        writer.submit(vec![event(), event()]).await.ok();
        writer.crash().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        blocker.execute_batch("COMMIT").unwrap();

        let mut stopped = false;
        for _ in 0..100 {
            if !writer.is_running() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stopped, "the writer reports itself stopped");
        assert!(matches!(
            writer.submit(vec![event()]).await,
            Err(WriteError::Closed)
        ));
        assert!(matches!(
            writer.run(|_| Ok(())).await,
            Err(WriteError::Closed)
        ));
        assert_eq!(count(&store, "SELECT count(*) FROM events"), 0);
        assert!(!handle.shutdown(), "not a clean stop");
        drop(writer);

        // The acknowledged events were kept: the next start adds them.
        let mut conn = store.write_connection().unwrap();
        let (_, added) =
            EventJournal::open(&data.path().join(super::super::JOURNAL_DIR), &mut conn).unwrap();
        assert_eq!(added, 2);
        assert_eq!(count(&store, "SELECT count(*) FROM events"), 2);
    }

    #[tokio::test]
    async fn journaled_events_land_after_the_database_was_locked() {
        let data = tempfile::tempdir().unwrap();
        let (store, writer, handle) = started(&data);
        let count = || -> i64 {
            store
                .reader()
                .unwrap()
                .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap()
        };

        // Another process holds the write lock: the writer cannot even
        // begin its transaction, then cannot commit, for a while.
        let blocker = store.write_connection().unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // Answered at once, or (the writer idle) with the failed commit's
        // error: journaled either way.
        writer.submit(vec![event()]).await.ok();
        std::thread::sleep(Duration::from_millis(300));
        writer.submit(vec![event()]).await.ok();
        std::thread::sleep(Duration::from_millis(300));
        blocker.execute_batch("COMMIT").unwrap();

        // Both were journaled: the writer keeps retrying until they land.
        let mut settled = false;
        for _ in 0..50 {
            if writer.settled().await.is_ok() && count() == 2 {
                settled = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(settled, "events committed: {}", count());
        handle.shutdown();
    }
}
