//! Backups: a consistent copy of the database taken while the server keeps
//! writing (SQLite's online backup API, in one step, so the copy is one
//! snapshot), checked before it counts; restoring one into a data directory
//! no server is using; and rotation of scheduled backups.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use super::{DB_FILE_NAME, JOURNAL_DIR, migrate};
use crate::metrics::CounterSet;

/// Held by `tally serve` for its lifetime; `tally restore` needs it too.
const LOCK_FILE_NAME: &str = "tally.lock";
/// Scheduled backups are `tally-YYYYMMDDTHHMMSSZ.db`; rotation touches no
/// other file.
const SCHEDULED_PREFIX: &str = "tally-";
const SCHEDULED_SUFFIX: &str = ".db";

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{0} already exists; choose another name or remove it")]
    Exists(String),
    #[error("{0}: no such file")]
    Missing(String),
    #[error("a server is running on {0}; stop it before restoring")]
    InUse(String),
    #[error("{path} is not a usable Tally database: {why}")]
    Damaged { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("copying the database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("deleting what was derived from the replaced database: {0}")]
    Derived(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a checked database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    pub sites: i64,
    pub events: i64,
    pub visits: i64,
    pub bytes: u64,
}

/// Backups made since start, for metrics.
#[derive(Debug)]
pub struct BackupStats {
    /// By result: `ok`, `failed`.
    pub runs: CounterSet,
    /// Unix time of the last good backup; 0 before the first.
    pub last_success: AtomicI64,
    pub last_bytes: AtomicU64,
}

impl Default for BackupStats {
    fn default() -> Self {
        BackupStats {
            runs: CounterSet::new(&["ok", "failed"]),
            last_success: AtomicI64::new(0),
            last_bytes: AtomicU64::new(0),
        }
    }
}

impl BackupStats {
    /// Counts a backup: what it copied, or `None` when it failed.
    pub fn record(&self, copied: Option<&Contents>, now: i64) {
        match copied {
            Some(c) => {
                self.runs.inc("ok");
                self.last_success.store(now, Ordering::Relaxed);
                self.last_bytes.store(c.bytes, Ordering::Relaxed);
            }
            None => self.runs.inc("failed"),
        }
    }
}

/// Exclusive use of a data directory by one server (an OS file lock, so a
/// crashed server leaves nothing to clean up).
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// `Ok(None)` when another process holds it.
    pub fn try_acquire(data_dir: &Path) -> Result<Option<DataDirLock>, BackupError> {
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let path = data_dir.join(LOCK_FILE_NAME);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DataDirLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }
}

/// Checks the database at `path`: SQLite's integrity check, a schema this
/// binary can read, and what it holds.
pub fn check(path: &Path) -> Result<Contents, BackupError> {
    if !path.is_file() {
        return Err(BackupError::Missing(path.display().to_string()));
    }
    let damaged = |why: String| BackupError::Damaged {
        path: path.display().to_string(),
        why,
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| damaged(e.to_string()))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))
        .map_err(|e| damaged(e.to_string()))?;
    if verdict != "ok" {
        return Err(damaged(format!("integrity check: {verdict}")));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 0 || version > migrate::latest() {
        return Err(damaged(format!(
            "schema version {version}; this binary reads 1 to {}",
            migrate::latest()
        )));
    }
    let count = |table: &str| -> Result<i64, BackupError> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| damaged(e.to_string()))
    };
    Ok(Contents {
        sites: count("sites")?,
        events: count("events")?,
        visits: count("visits")?,
        bytes: fs::metadata(path).map_err(io(path))?.len(),
    })
}

/// Copies the database at `source` to `dest` (which must not exist) while
/// others keep writing to it. The copy is one snapshot: the backup runs as a
/// single step inside one read transaction, which WAL mode lets writers work
/// beside. It is written next to `dest`, checked, synced, then renamed, so
/// `dest` is either complete and sound or absent.
pub fn backup(source: &Path, dest: &Path) -> Result<Contents, BackupError> {
    if dest.exists() {
        return Err(BackupError::Exists(dest.display().to_string()));
    }
    if !source.is_file() {
        return Err(BackupError::Missing(source.display().to_string()));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = fs::remove_file(&partial);
    let result = (|| {
        let src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        src.busy_timeout(Duration::from_secs(5))?;
        let mut dst = Connection::open(&partial)?;
        {
            let copy = Backup::new(&src, &mut dst)?;
            loop {
                match copy.step(-1)? {
                    StepResult::Done => break,
                    // Another connection holds a lock for a moment.
                    StepResult::Busy | StepResult::Locked => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    StepResult::More => {}
                    _ => {}
                }
            }
        }
        // One self-contained file: no -wal beside it to forget.
        dst.pragma_update(None, "journal_mode", "DELETE")?;
        drop(dst);
        let contents = check(&partial)?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io(&partial))?;
        fs::rename(&partial, dest).map_err(io(dest))?;
        sync_dir(dest);
        Ok(contents)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    pub contents: Contents,
    /// Where the database it replaced was moved, if there was one.
    pub previous: Option<PathBuf>,
}

/// Replaces the database in `data_dir` with the backup at `from`, after
/// checking it. Refused while a server uses `data_dir`. The replaced database
/// (with its write-ahead log and event journal) is kept beside it, renamed,
/// never deleted. `forget_derived` runs under the data directory's lock once
/// the backup is checked and copied, before anything is replaced: what was
/// derived from the replaced database (the column store) goes first, so a
/// stop halfway never leaves it beside the restored one; its error stops the
/// restore with nothing replaced.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    now: i64,
    forget_derived: impl FnOnce() -> Result<(), String>,
) -> Result<Restored, BackupError> {
    let Some(_lock) = DataDirLock::try_acquire(data_dir)? else {
        return Err(BackupError::InUse(data_dir.display().to_string()));
    };
    let contents = check(from)?;
    let target = data_dir.join(DB_FILE_NAME);
    let incoming = data_dir.join(format!("{DB_FILE_NAME}.restoring"));
    fs::copy(from, &incoming).map_err(io(&incoming))?;
    File::open(&incoming)
        .and_then(|f| f.sync_all())
        .map_err(io(&incoming))?;
    if let Err(e) = forget_derived() {
        let _ = fs::remove_file(&incoming);
        return Err(BackupError::Derived(e));
    }
    let previous = if target.exists() {
        let kept = data_dir.join(format!("{DB_FILE_NAME}.before-restore-{now}"));
        for suffix in ["", "-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", target.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", kept.display()));
                fs::rename(&from, &to).map_err(io(&from))?;
            }
        }
        // Events journaled by the replaced database's server belong to it,
        // not to the backup: a start must not add them to the restored one.
        // After a clean stop it is empty, and simply goes.
        let journal = data_dir.join(JOURNAL_DIR);
        let holds_events = fs::read_dir(&journal).is_ok_and(|mut d| d.next().is_some());
        if holds_events {
            let to = PathBuf::from(format!("{}-{JOURNAL_DIR}", kept.display()));
            fs::rename(&journal, &to).map_err(io(&journal))?;
        } else if journal.exists() {
            fs::remove_dir(&journal).map_err(io(&journal))?;
        }
        Some(kept)
    } else {
        None
    };
    fs::rename(&incoming, &target).map_err(io(&target))?;
    sync_dir(&target);
    Ok(Restored { contents, previous })
}

/// The file name of a scheduled backup taken at `now` (Unix seconds).
pub fn scheduled_name(now: i64) -> String {
    let t = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
    format!(
        "{SCHEDULED_PREFIX}{}{SCHEDULED_SUFFIX}",
        t.format("%Y%m%dT%H%M%SZ")
    )
}

/// Scheduled backups in `dir`, oldest first (their names sort by time).
pub fn scheduled_backups(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.len() == SCHEDULED_PREFIX.len() + 16 + SCHEDULED_SUFFIX.len()
                    && n.starts_with(SCHEDULED_PREFIX)
                    && n.ends_with(SCHEDULED_SUFFIX)
            })
        })
        .collect();
    found.sort();
    found
}

/// When the newest scheduled backup in `dir` was taken (from its name).
pub fn newest_scheduled(dir: &Path) -> Option<i64> {
    let newest = scheduled_backups(dir).pop()?;
    let name = newest.file_name()?.to_str()?;
    let stamp = &name[SCHEDULED_PREFIX.len()..name.len() - SCHEDULED_SUFFIX.len()];
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Deletes the oldest scheduled backups in `dir` beyond the newest `keep`.
pub fn rotate(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let all = scheduled_backups(dir);
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for old in all.into_iter().take(excess) {
        fs::remove_file(&old).map_err(io(&old))?;
        removed.push(old);
    }
    Ok(removed)
}

/// Makes a rename durable (best effort: not every filesystem allows it).
fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_names_sort_by_time_and_parse_back() {
        let dir = tempfile::tempdir().unwrap();
        for t in [1_700_000_000, 1_700_086_400, 1_700_003_600] {
            fs::write(dir.path().join(scheduled_name(t)), b"x").unwrap();
        }
        fs::write(dir.path().join("tally-notes.db"), b"keep me").unwrap();
        assert_eq!(scheduled_name(1_700_000_000), "tally-20231114T221320Z.db");
        assert_eq!(newest_scheduled(dir.path()), Some(1_700_086_400));
        let removed = rotate(dir.path(), 1).unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(newest_scheduled(dir.path()), Some(1_700_086_400));
        assert!(dir.path().join("tally-notes.db").exists());
    }

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::try_acquire(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(DataDirLock::try_acquire(dir.path()).unwrap().is_none());
        drop(first);
        assert!(DataDirLock::try_acquire(dir.path()).unwrap().is_some());
    }

    /// What derives from the replaced database goes before anything is
    /// replaced: it sees the old database still in place, and its failure
    /// leaves that database as it was.
    #[test]
    fn a_restore_forgets_what_derives_from_the_database_before_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = crate::store::Store::open(&data, 1).unwrap();
        let copy = dir.path().join("copy.db");
        backup(store.path(), &copy).unwrap();
        drop(store);
        let target = data.join(DB_FILE_NAME);
        let before = fs::read(&target).unwrap();

        let e = restore(&copy, &data, 1, || Err("no".into())).unwrap_err();
        assert!(matches!(e, BackupError::Derived(_)), "{e}");
        assert_eq!(fs::read(&target).unwrap(), before);
        assert!(!data.join(format!("{DB_FILE_NAME}.restoring")).exists());

        let mut saw = None;
        let restored = restore(&copy, &data, 2, || {
            saw = Some(fs::read(&target).map_err(|e| e.to_string())? == before);
            Ok(())
        })
        .unwrap();
        assert_eq!(saw, Some(true));
        assert!(restored.previous.is_some());
    }

    #[test]
    fn a_damaged_file_is_not_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        fs::write(&p, b"SQLite format 3\0 but not really").unwrap();
        assert!(matches!(check(&p), Err(BackupError::Damaged { .. })));
    }
}
