//! Opening the database: pragmas, migrations, the read pool.

use std::path::{Path, PathBuf};

use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::{StoreError, migrate};

pub const DB_FILE_NAME: &str = "tally.db";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Address space, not memory: the OS keeps only the pages read, and drops
/// them under pressure like any file cache.
const READ_MMAP_BYTES: i64 = 1 << 40;

/// Handle to the database: the path and a pool of read-only connections.
/// Writes go through
/// [`super::EventWriter`] (server) or [`Store::write_connection`] (short CLI
/// commands).
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    readers: r2d2::Pool<SqliteConnectionManager>,
}

impl Store {
    /// Creates `data_dir` if needed, migrates the schema and opens the pool.
    pub fn open(data_dir: &Path, readers: u32) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        let mut conn = open_connection(&path)?;
        migrate::run(&mut conn)?;
        drop(conn);
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.busy_timeout(BUSY_TIMEOUT)?;
                // Reports read rollup pages and 16 KiB visitor sketches many
                // times over; mapped, they are read in place instead of
                // copied out of the OS cache one page per system call.
                c.pragma_update(None, "mmap_size", READ_MMAP_BYTES)?;
                c.pragma_update(None, "foreign_keys", "ON")
            });
        let readers = r2d2::Pool::builder()
            .max_size(readers.max(1))
            .build(manager)?;
        Ok(Store { path, readers })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the database file.
    pub fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// A pooled read-only connection.
    pub fn reader(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        let conn = self.readers.get()?;
        // A connection handed back inside a transaction (whoever held it
        // could not end it) would read a stale instant for every later user
        // and refuse their `BEGIN`: it is ended here, for all of them.
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")?;
        }
        Ok(conn)
    }

    /// A fresh read-write connection. The server hands its one to the
    /// [`super::EventWriter`]; CLI commands use one for a few statements.
    pub fn write_connection(&self) -> Result<Connection, StoreError> {
        open_connection(&self.path)
    }

    /// Whether the database answers a trivial query.
    pub fn ping(&self) -> bool {
        self.reader()
            .and_then(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .is_ok()
    }
}

/// Bytes of the database file at `path` and its write-ahead log.
pub fn file_bytes(path: &Path) -> u64 {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    [path.as_os_str(), wal.as_os_str()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints, so
    // a commit survives a killed process (the OS holds the WAL pages) but the
    // last commits may be lost on power failure.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    Ok(conn)
}
