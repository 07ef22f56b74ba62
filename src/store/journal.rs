//! The event journal: where an event is durable before it is acknowledged.
//!
//! A request's events are appended to the journal, one record each, and
//! handed to the writer; the request is answered at once. A segment is a
//! file mapped into memory, so an append is a copy into the OS's page cache
//! with no system call (a `write` per request cost more than the rest of
//! the append). The writer adds them to the database in transactions of a few
//! milliseconds of traffic, and releases journal segments whose events are
//! all committed. So an acknowledged event is in the journal or in the
//! database, and survives a killed process either way (the OS holds written
//! file pages, as it holds the database's write-ahead log; neither is synced
//! per event).
//!
//! Committing each request's events to SQLite before answering cost a
//! transaction per few events: file locks and whole-page log writes, with
//! every request waiting on the writer thread. An append keeps the answer on
//! the worker thread and lets the database work in large groups (see
//! BENCHMARKS.md).
//!
//! A record is `[length: u32][CRC-32 of the body: u32][body]`, the body the
//! event in postcard's compact binary form (JSON lines cost a quarter of the
//! request's CPU time in encoding). A request's records are copied in with
//! the first header last, so a process killed mid-copy leaves no valid
//! record of an unanswered request.
//!
//! A released segment is kept mapped and reused (renamed to its new first
//! id) rather than deleted: writing to fresh file pages cost a page fault and
//! a block reservation per 4 KiB, a measurable share of the append. A reused
//! segment still holds old records past the point written; they carry ids
//! below the segment's name (ids only grow), which ends the replay as a
//! torn or zeroed record does.
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
use std::sync::atomic::{AtomicI64, Ordering, compiler_fence};

use memmap2::MmapMut;
use rusqlite::Connection;

use super::error::WriteError;
use super::events::insert_event_row;
use super::{NewEvent, StoreError};
use crate::sync::Lock;

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR: &str = "journal";

/// The segment file extension.
const SEGMENT_EXT: &str = "journal";

/// The name of the spare segment: not a segment name, so replay skips its
/// committed records.
const SPARE_NAME: &str = "spare";

/// Segments of the JSON-lines journal of earlier versions: replayed, never
/// written.
const JSON_SEGMENT_EXT: &str = "jsonl";

/// The size of a segment file (sparse until written). A new segment starts
/// when an append does not fit; the writer releases full segments whose
/// events are all committed.
/// Small, since the pages written to mapped segments count in the server's
/// memory: the open one, those awaiting their commit and one spare.
const SEGMENT_BYTES: usize = 512 << 10;

/// A record's header: body length, then the body's CRC-32.
const HEADER_BYTES: usize = 8;

/// The journal of a running server. Only the process holding the data
/// directory's lock may open it.
pub struct EventJournal {
    dir: PathBuf,
    state: Mutex<State>,
    /// The newest id appended.
    appended: AtomicI64,
}

struct Segment {
    path: PathBuf,
    map: MmapMut,
    /// The newest id in it; 0 while empty.
    newest: i64,
}

struct State {
    /// Segments in order; the last is the open one.
    segments: VecDeque<Segment>,
    /// Bytes appended to the open segment.
    bytes: usize,
    /// A released segment, for the next rotation to reuse.
    spare: Option<Segment>,
    ids: EventIds,
    records: Vec<u8>,
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
        match std::fs::remove_file(dir.join(SPARE_NAME)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let old = segment_paths(dir).map_err(io)?;
        let mut added = 0;
        let mut newest = 0;
        if !old.is_empty() {
            let tx = conn.transaction()?;
            for path in &old {
                let bytes = std::fs::read(path).map_err(io)?;
                for event in replay(path, &bytes) {
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
        let first = ids.peek();
        // So the ids this segment receives are at least its name.
        ids.skip_past(first - 1);
        let first = new_segment(dir, first, None).map_err(io)?;
        let journal = EventJournal {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                segments: VecDeque::from([first]),
                bytes: 0,
                spare: None,
                ids,
                records: Vec::with_capacity(1024),
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
        if events.is_empty() {
            return hand_on(events);
        }
        let mut s = self.state.locked();
        let s = &mut *s;
        s.records.clear();
        for event in &mut events {
            event.id = s.ids.take();
            encode(event, &mut s.records)?;
        }
        let len = s.records.len();
        if len > SEGMENT_BYTES {
            return Err(WriteError::Failed("journal: events too large".into()));
        }
        if s.bytes + len > SEGMENT_BYTES {
            self.rotate(s, events[0].id)?;
        }
        let newest = s.ids.last();
        let at = s.bytes;
        // `open` and `rotate` always leave a segment to write to.
        let Some(segment) = s.segments.back_mut() else {
            return Err(WriteError::Failed("journal: no open segment".into()));
        };
        let records = &s.records;
        // The first header last: until it is in place, replay stops before
        // this request's records.
        segment.map[at + HEADER_BYTES..at + len].copy_from_slice(&records[HEADER_BYTES..]);
        compiler_fence(Ordering::SeqCst);
        segment.map[at..at + HEADER_BYTES].copy_from_slice(&records[..HEADER_BYTES]);
        if let Err(e) = hand_on(events) {
            // A zero length ends the segment before these records.
            segment.map[at..at + HEADER_BYTES].fill(0);
            return Err(e);
        }
        segment.newest = newest;
        s.bytes += len;
        self.appended.store(newest, Ordering::Release);
        Ok(())
    }

    /// The newest id handed out. Taken under the lock an append holds until
    /// its events are queued for the writer, so every event queued so far
    /// has an id up to it, and every later one a larger id.
    pub fn last_id(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ids
            .last()
    }

    /// The newest id appended (0 before the first).
    pub fn appended_through(&self) -> i64 {
        self.appended.load(Ordering::Acquire)
    }

    /// Releases the closed segments whose events are all committed, given
    /// that every event up to `committed` is: one is kept for reuse, the
    /// others deleted.
    pub fn release(&self, committed: i64) {
        let mut s = self.state.locked();
        while s.segments.len() > 1 && s.segments.front().is_some_and(|g| g.newest <= committed) {
            let Some(mut done) = s.segments.pop_front() else {
                break;
            };
            if s.spare.is_some() {
                remove(&done.path);
                continue;
            }
            let spare = self.dir.join(SPARE_NAME);
            match std::fs::rename(&done.path, &spare) {
                Ok(()) => {
                    done.path = spare;
                    s.spare = Some(done);
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %done.path.display(), "keeping a journal segment for reuse failed");
                    remove(&done.path);
                }
            }
        }
    }

    /// Removes every segment: called after the writer committed everything
    /// at a clean stop.
    pub fn close(&self) {
        let mut s = self.state.locked();
        let spare = s.spare.take();
        for segment in s.segments.iter().chain(&spare) {
            remove(&segment.path);
        }
    }

    /// Starts a new segment for ids from `first` on; the full one stays
    /// until its events are committed.
    fn rotate(&self, s: &mut State, first: i64) -> Result<(), WriteError> {
        let segment = new_segment(&self.dir, first, s.spare.take())
            .map_err(|e| WriteError::Failed(format!("journal {}: {e}", self.dir.display())))?;
        s.segments.push_back(segment);
        s.bytes = 0;
        Ok(())
    }
}

/// Appends `event`'s record to `out`.
fn encode(event: &NewEvent, out: &mut Vec<u8>) -> Result<(), WriteError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    let mut buf = postcard::to_extend(event, std::mem::take(out))
        .map_err(|e| WriteError::Failed(format!("journal: {e}")))?;
    let body = &buf[start + HEADER_BYTES..];
    let len = u32::try_from(body.len())
        .map_err(|_| WriteError::Failed("journal: event too large".into()))?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    *out = buf;
    Ok(())
}

/// The events of the segment at `path` holding `bytes`, up to the first
/// record that is not whole (a torn append, the zeroed rest of a new segment
/// or the old records of a reused one).
fn replay(path: &Path, bytes: &[u8]) -> Vec<NewEvent> {
    let mut events = Vec::new();
    if path.extension().is_some_and(|x| x == JSON_SEGMENT_EXT) {
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(event) = serde_json::from_slice::<NewEvent>(line) else {
                break;
            };
            events.push(event);
        }
        return events;
    }
    // Every id in a segment is at least its name (see `new_segment`).
    let mut last = first_id(path).saturating_sub(1);
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_BYTES) {
        let &[len, crc] = header.as_chunks::<4>().0 else {
            break;
        };
        let (len, crc) = (u32::from_le_bytes(len) as usize, u32::from_le_bytes(crc));
        let Some(body) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            break;
        };
        if len == 0 || crc32fast::hash(body) != crc {
            break;
        }
        match postcard::from_bytes::<NewEvent>(body) {
            Ok(event) if event.id > last => {
                last = event.id;
                events.push(event);
            }
            _ => break,
        }
        at += HEADER_BYTES + len;
    }
    events
}

/// The first id a segment may hold, from its name.
fn first_id(path: &Path) -> i64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::error!(error = %e, path = %path.display(), "removing a journal segment failed");
    }
}

/// A segment in `dir` for ids from `first` on: `spare` renamed, or a new
/// file. The name is a bound replay relies on: every id written to the
/// segment is at least `first`, and every id written before is below it.
fn new_segment(dir: &Path, first: i64, spare: Option<Segment>) -> std::io::Result<Segment> {
    let path = dir.join(format!("{first:020}.{SEGMENT_EXT}"));
    let map = match spare {
        Some(spare) => {
            std::fs::rename(&spare.path, &path)?;
            spare.map
        }
        None => map_new(&path)?,
    };
    Ok(Segment {
        path,
        map,
        newest: 0,
    })
}

/// Creates a segment file and maps it. What is copied into the map is in
/// the OS's page cache at once, as written data is: it survives the
/// process, and reaches the disk with the OS's own writeback.
fn map_new(path: &Path) -> std::io::Result<MmapMut> {
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
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == SEGMENT_EXT || x == JSON_SEGMENT_EXT)
        })
        .collect();
    paths.sort_by_key(|p| (first_id(p), p.clone()));
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
        NewEvent::test_pageview(path)
    }

    fn paths(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT path FROM events ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn database() -> (tempfile::TempDir, Connection, PathBuf) {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let dir = data.path().join(JOURNAL_DIR);
        (data, conn, dir)
    }

    /// Where the records of a segment end (the first zero length).
    fn end_of_records(bytes: &[u8]) -> usize {
        let mut at = 0;
        loop {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                return at;
            }
            at += HEADER_BYTES + len;
        }
    }

    #[test]
    fn events_only_in_the_journal_are_added_once_at_the_next_open() {
        let (_data, mut conn, dir) = database();
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

        // A process killed in the middle of an append: a body without its
        // header, then one whose header is in place but whose body is cut.
        let segment = segment_paths(&dir).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = end_of_records(&bytes);
        let mut torn = Vec::new();
        encode(&event("/torn"), &mut torn).unwrap();
        bytes[end + HEADER_BYTES..end + torn.len()].copy_from_slice(&torn[HEADER_BYTES..]);
        std::fs::write(&segment, &bytes).unwrap();
        // Named 0 so that only the cut ends its replay (the torn event's id
        // is 0).
        let mut cut = vec![0; SEGMENT_BYTES];
        cut[..torn.len() - 3].copy_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(dir.join(format!("{:020}.{SEGMENT_EXT}", 0)), &cut).unwrap();

        let (journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        assert_eq!(added, 3);
        assert_eq!(paths(&conn), ["/a", "/b", "/c"]);
        // The old segments are gone; new ids continue above the replayed ones.
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
        let (_data, mut conn, dir) = database();
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
        assert!(dir.join(SPARE_NAME).exists(), "kept for reuse");
        journal.close();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_reused_segment_replays_only_its_new_records() {
        let (_data, mut conn, dir) = database();
        let (journal, _) = EventJournal::open(&dir, &mut conn).unwrap();
        let big = "x".repeat(SEGMENT_BYTES / 8);
        let append = |i: usize| {
            journal
                .append(vec![event(&format!("/{i:02}{big}"))], |_| Ok(()))
                .unwrap()
        };
        // Seven fit in a segment: 0..=6 in the first, 7 and 8 in the second.
        (0..9).for_each(append);
        journal.release(journal.appended_through() - 1);
        // The second fills up with 9..=13; 14 and 15 go to the first one,
        // reused, which still holds 2..=6 after them.
        (9..16).for_each(append);
        assert_eq!(segment_paths(&dir).unwrap().len(), 2);
        assert!(!dir.join(SPARE_NAME).exists(), "the spare was reused");
        drop(journal); // killed: nothing was committed after 0..=6

        let (_journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        let replayed: Vec<String> = paths(&conn).iter().map(|p| p[1..3].to_string()).collect();
        let expected: Vec<String> = (7..16).map(|i| format!("{i:02}")).collect();
        assert_eq!(replayed, expected);
        assert_eq!(added, 9);
    }

    #[test]
    fn segments_of_the_json_lines_journal_are_replayed() {
        let (_data, mut conn, dir) = database();
        std::fs::create_dir_all(&dir).unwrap();
        let mut lines = Vec::new();
        for (id, path) in [(5, "/old-a"), (6, "/old-b")] {
            let mut e = event(path);
            e.id = id;
            serde_json::to_writer(&mut lines, &e).unwrap();
            lines.push(b'\n');
        }
        lines.extend_from_slice(b"{\"id\":7,\"si");
        std::fs::write(dir.join(format!("{:020}.{JSON_SEGMENT_EXT}", 5)), &lines).unwrap();
        let (_journal, added) = EventJournal::open(&dir, &mut conn).unwrap();
        assert_eq!(added, 2);
        assert_eq!(paths(&conn), ["/old-a", "/old-b"]);
        assert_eq!(segment_paths(&dir).unwrap().len(), 1);
    }
}
