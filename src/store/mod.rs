//! The store: one SQLite file in WAL mode, a single writer that commits in
//! groups, the event journal beside it, and a pool of read-only
//! connections.
//!
//! It holds the SQL of the raw tables and the application's data, and
//! knows nothing about HTTP, payloads, enrichment or the read model built
//! on it (`crate::report`, which keeps its own tables' SQL and follows the
//! writer through [`CommitFollower`]). Callers hand it plain records
//! ([`NewEvent`], [`VisitRecord`]) and get plain values back.

pub mod backup;
mod db;
pub mod devices;
mod error;
pub(crate) mod events;
mod follower;
pub mod inventory;
mod journal;
mod migrate;
mod records;
pub mod retention;
pub mod sites;
pub mod summaries;
pub mod transfer;
pub mod users;
pub mod visits;
mod writer;

pub use db::{DB_FILE_NAME, Store, file_bytes};
pub use error::{StoreError, WriteError};
pub use follower::{CommitFollower, NoFollower};
pub use journal::{EventJournal, JOURNAL_DIR};
pub use records::{NewEvent, VisitDims, VisitRecord};
pub use writer::{EventWriter, Queued, WriterHandle, WriterStats};

/// The schema version this binary writes.
pub fn schema_version() -> i64 {
    migrate::latest()
}

/// The current time as Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A database connection, as handed to queries outside this module. Only the
/// store and the read model run SQL; others pass the connection back into
/// their functions.
pub type Db = rusqlite::Connection;
