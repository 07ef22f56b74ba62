//! [`CommitFollower`]: what follows the writer's commits.
//!
//! A read model kept beside the raw tables (the rollups) must see every
//! committed event once, in commit order, and must learn of changes a
//! writer job made only when that job's transaction commits. The writer
//! tells a `CommitFollower` both, without knowing what it keeps, so the
//! store does not depend on the read model built on top of it.

use rusqlite::Connection;

use super::{NewEvent, StoreError};

/// Told of every transaction of the [`super::EventWriter`], on its thread.
pub trait CommitFollower: Send + Sync {
    /// Brings the follower up to date with the database before the writer
    /// starts, on the connection the writer is about to take. `owner`: this
    /// process owns the data directory (the server; not `tally demo` beside
    /// it). `unclean`: the last stop was not clean (visits of the last
    /// minutes were rebuilt just before). Returns the events it folded
    /// again, for the log.
    fn catch_up(
        &self,
        conn: &Connection,
        now: i64,
        owner: bool,
        unclean: bool,
    ) -> Result<usize, StoreError>;

    /// A transaction committed: what its jobs staged takes effect, then its
    /// `events` (may be none) are handed over; `through` is their largest
    /// id. Called before the transaction's submitters are answered. `conn`
    /// is the writer's, outside any transaction.
    fn committed(&self, conn: &Connection, events: Vec<NewEvent>, through: i64);

    /// A transaction failed: what its jobs staged is dropped.
    fn rolled_back(&self);
}

/// A writer that nothing follows (tests of the store alone).
pub struct NoFollower;

impl CommitFollower for NoFollower {
    fn catch_up(&self, _: &Connection, _: i64, _: bool, _: bool) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn committed(&self, _: &Connection, _: Vec<NewEvent>, _: i64) {}

    fn rolled_back(&self) {}
}
