//! The event journal: where an event is durable before it is acknowledged.
//!
//! A request's events are appended to the journal, one JSON line each, and
//! handed to the writer; the request is answered at once. A segment is a
//! file mapped into memory, so an append is a copy into the OS's page cache
//! with no system call (a `write` per request cost more than the rest of
//! the append). The writer adds them to the database in transactions of a few
//! milliseconds of traffic, and deletes journal segments whose events are all
//! committed. So an acknowledged event is in the journal or in the database,
//! and survives a killed process either way (the OS holds written file pages,
//! as it holds the database's write-ahead log; neither is synced per event).
//!
//! Committing each request's events to SQLite before answering cost a
//! transaction per few events: file locks and whole-page log writes, with
//! every request waiting on the writer thread. An append keeps the answer on
//! the worker thread and lets the database work in large groups (see
//! BENCHMARKS.md).
//!
//! Ids are handed out here, under the same lock as the append and the
//! hand-over to the writer, so the journal, the writer's queue and the
//! database all see events in id order. At start, [`EventJournal::open`]
//! adds every journaled event the database lacks (the key makes this
//! idempotent), then starts a new segment.
//!
//! The journal holds what the `events` table holds and nothing more: no
//! address, no User-Agent.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use memmap2::MmapMut;
use rusqlite::Connection;

use super::writer::{WriteError, insert_event_row};
use super::{NewEvent, StoreError};

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";

/// The size of a segment file (sparse until written). A new segment starts
/// when an append does not fit; the writer deletes full segments whose
/// events are all committed.
/// Small, since the pages written to the open segment count in the
/// server's memory until it is full (a few thousand events).
const SEGMENT_BYTES: usize = 1 << 20;

/// The journal of a running server. Only the process holding the data
/// directory's lock may open it.
pub struct EventJournal {
    dir: PathBuf,
    state: Mutex<State>,
    /// The newest id appended.
    appended: AtomicI64,
}

struct State {
    /// The open segment.
    map: MmapMut,
    /// Bytes appended to it.
    bytes: usize,
    /// Segments in order: (path, newest id in it; 0 while empty).
    segments: VecDeque<(PathBuf, i64)>,
    ids: EventIds,
    line: Vec<u8>,
}

impl EventJournal {
    /// Adds the events of `dir`'s segments that `conn`'s database lacks,
    /// removes the segments, and opens a new one. Returns the journal and
    /// the number of events added.
    pub fn open(dir: &Path, conn: &mut Connection) -> Result<(EventJournal, usize), StoreError> {
        let io = |source: std::io::Error| StoreError::Journal {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let old = segment_paths(dir).map_err(io)?;
        let mut added = 0;
        let mut newest = 0;
        if !old.is_empty() {
            let tx = conn.transaction()?;
            for path in &old {
                let bytes = std::fs::read(path).map_err(io)?;
                // The unwritten rest of a segment is zeros, and a line cut
                // short by a crash does not parse: either ends the segment.
                for line in bytes.split(|b| *b == b'\n') {
                    let Ok(event) = serde_json::from_slice::<NewEvent>(line) else {
                        break;
                    };
                    newest = newest.max(event.id);
                    added += insert_event_row(&tx, &event, true)?;
                }
            }
            tx.commit()?;
            for path in &old {
                std::fs::remove_file(path).map_err(io)?;
            }
        }
        let mut ids = EventIds::new();
        ids.skip_past(newest);
        let path = dir.join(segment_name(ids.peek()));
        let map = open_segment(&path).map_err(io)?;
        let journal = EventJournal {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                map,
                bytes: 0,
                segments: VecDeque::from([(path, 0)]),
                ids,
                line: Vec::with_capacity(1024),
            }),
            appended: AtomicI64::new(0),
        };
        Ok((journal, added))
    }

    /// Gives `events` their ids and appends them, then calls `hand_on` with
    /// them, all under one lock. If `hand_on` fails, the append is undone,
    /// so an event is journaled exactly when the writer has it.
    pub fn append(
        &self,
        mut events: Vec<NewEvent>,
        hand_on: impl FnOnce(Vec<NewEvent>) -> Result<(), WriteError>,
    ) -> Result<(), WriteError> {
        let mut s = self.state.lock().expect("event journal");
        let s = &mut *s;
        s.line.clear();
        for event in &mut events {
            event.id = s.ids.take();
            serde_json::to_writer(&mut s.line, &*event)
                .map_err(|e| WriteError::Failed(format!("journal: {e}")))?;
            s.line.push(b'\n');
        }
        if s.line.len() > SEGMENT_BYTES {
            return Err(WriteError::Failed("journal: events too large".into()));
        }
        if s.bytes + s.line.len() > SEGMENT_BYTES {
            self.rotate(s)?;
        }
        let newest = s.ids.last();
        let at = s.bytes..s.bytes + s.line.len();
        s.map[at.clone()].copy_from_slice(&s.line);
        if let Err(e) = hand_on(events) {
            // Zeros again: the segment ends before these lines.
            s.map[at].fill(0);
            return Err(e);
        }
        s.bytes += s.line.len();
        if let Some(last) = s.segments.back_mut() {
            last.1 = newest;
        }
        self.appended.store(newest, Ordering::Release);
        Ok(())
    }

    /// The newest id appended (0 before the first).
    pub fn appended_through(&self) -> i64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Deletes the closed segments whose events are all committed, given
    /// that every event up to `committed` is.
    pub fn release(&self, committed: i64) {
        let mut s = self.state.lock().expect("event journal");
        while s.segments.len() > 1 && s.segments.front().is_some_and(|(_, n)| *n <= committed) {
            let (path, _) = s.segments.pop_front().expect("checked");
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::error!(error = %e, path = %path.display(), "removing a journal segment failed");
            }
        }
    }

    /// Removes every segment: called after the writer committed everything
    /// at a clean stop.
    pub fn close(&self) {
        let s = self.state.lock().expect("event journal");
        for (path, _) in &s.segments {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::error!(error = %e, path = %path.display(), "removing a journal segment failed");
            }
        }
    }

    /// Starts a new segment; the full one stays until its events are committed.
    fn rotate(&self, s: &mut State) -> Result<(), WriteError> {
        let path = self.dir.join(segment_name(s.ids.peek()));
        let map = open_segment(&path)
            .map_err(|e| WriteError::Failed(format!("journal {}: {e}", path.display())))?;
        s.map = map;
        s.bytes = 0;
        s.segments.push_back((path, 0));
        Ok(())
    }
}

fn segment_name(first_id: i64) -> String {
    format!("{first_id:020}.jsonl")
}

/// Creates a segment file and maps it. What is copied into the map is in
/// the OS's page cache at once, as written data is: it survives the
/// process, and reaches the disk with the OS's own writeback.
fn open_segment(path: &Path) -> std::io::Result<MmapMut> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    file.set_len(SEGMENT_BYTES as u64)?;
    // SAFETY: the mapping is undefined behaviour only if the file changes
    // underneath it. The file is new, and only the server holding the data
    // directory's lock opens the journal; nothing else writes to it.
    unsafe { MmapMut::map_mut(&file) }
}

/// The segments in `dir`, oldest first (names are zero-padded first ids).
fn segment_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Event ids: increasing within this process and seeded from the clock in
/// microseconds, so they keep increasing across restarts. Together with the
/// site and second they form the key.
pub(super) struct EventIds {
    next: i64,
}

impl EventIds {
    pub(super) fn new() -> EventIds {
        EventIds { next: 0 }
    }

    pub(super) fn take(&mut self) -> i64 {
        self.next = self.peek();
        self.next
    }

    /// The id [`EventIds::take`] would hand out now.
    fn peek(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.next.max(now) + 1
    }

    /// The last id handed out.
    pub(super) fn last(&self) -> i64 {
        self.next
    }

    /// Never hands out `id` or anything below it.
    fn skip_past(&mut self, id: i64) {
        self.next = self.next.max(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn event(path: &str) -> NewEvent {
        NewEvent {
            id: 0,
            site_id: 1,
            visitor_id: 7,
            ts: 1_700_000_000,
            name: "pageview".into(),
            hostname: "example.com".into(),
            path: path.into(),
            props: None,
            revenue_amount: None,
            revenue_currency: None,
            scroll_depth: None,
            engaged_ms: None,
            interactive: true,
            visit_id: 1,
            first_of_visit: Some(Default::default()),
            first_view: true,
        }
    }

    fn paths(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT path FROM events ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn events_only_in_the_journal_are_added_once_at_the_next_open() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let mut conn = store.write_connection().unwrap();
        crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let dir = data.path().join(JOURNAL_DIR);

        let (journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        assert_eq!(added, 0);
        // Handed to a writer that never commits them: a killed process.
        journal
            .append(vec![event("/a"), event("/b")], |_| Ok(()))
            .unwrap();
        journal.append(vec![event("/c")], |_| Ok(())).unwrap();
        // Refused by the writer: undone, never added.
        let refused = journal.append(vec![event("/refused")], |_| Err(WriteError::QueueFull));
        assert!(matches!(refused, Err(WriteError::QueueFull)));
        let newest = journal.appended_through();
        drop(journal);
        assert!(paths(&conn).is_empty());

        // A crash in the middle of a line leaves a partial last line.
        let segment = segment_paths(&dir).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = bytes.iter().rposition(|b| *b == b'\n').unwrap() + 1;
        bytes[end..end + 15].copy_from_slice(b"{\"id\":12,\"site_");
        std::fs::write(&segment, bytes).unwrap();

        let (journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        assert_eq!(added, 3);
        assert_eq!(paths(&conn), ["/a", "/b", "/c"]);
        // The old segment is gone; new ids continue above the replayed ones.
        assert_eq!(segment_paths(&dir).unwrap().len(), 1);
        journal.append(vec![event("/d")], |_| Ok(())).unwrap();
        assert!(journal.appended_through() > newest);
        drop(journal);

        // Opening again adds only what is missing: "/d".
        let (_journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        assert_eq!(added, 1);
        assert_eq!(paths(&conn), ["/a", "/b", "/c", "/d"]);
    }

    #[test]
    fn committed_segments_are_released_and_a_clean_close_leaves_none() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let mut conn = store.write_connection().unwrap();
        let dir = data.path().join(JOURNAL_DIR);
        let (journal, _) = EventJournal::open(&dir, &mut conn).unwrap();
        let big = "x".repeat(SEGMENT_BYTES / 8);
        for _ in 0..9 {
            journal.append(vec![event(&big)], |_| Ok(())).unwrap();
        }
        // Nine events of an eighth of a segment do not fit in one.
        assert_eq!(segment_paths(&dir).unwrap().len(), 2);
        journal.release(journal.appended_through() - 1);
        assert_eq!(
            segment_paths(&dir).unwrap().len(),
            1,
            "the full segment is committed"
        );
        journal.close();
        assert!(segment_paths(&dir).unwrap().is_empty());
    }
}
