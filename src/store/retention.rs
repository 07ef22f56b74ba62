//! Retention of the store's tables: raw events and visits older than
//! `raw_events_days`, weekly summaries and imported aggregates older than
//! `aggregates_days`, and visitor-id salts older than 48 hours, deleted in
//! small batches, each its own short writer transaction, so ingest never
//! waits behind one long delete. The read model trims its rollup rows
//! itself; `jobs::retention_pass` runs both, as of a time it is given (the
//! server passes the clock, tests pass whatever day they need).

use std::sync::atomic::AtomicI64;

use rusqlite::params;

use super::{EventWriter, StoreError, WriteError};
use crate::metrics::CounterSet;

/// Rows deleted per transaction.
const BATCH: i64 = 2000;
const SECONDS_PER_DAY: i64 = 86_400;

/// How long data is kept, in days (both at least 1, checked by the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub raw_events_days: u32,
    pub aggregates_days: u32,
}

/// What the retention job did since start, for metrics.
#[derive(Debug)]
pub struct RetentionStats {
    /// Passes by result: `ok`, `failed`.
    pub runs: CounterSet,
    /// Rows removed by table: `events`, `visits`, `rollups`, `salts`.
    pub removed: CounterSet,
    /// Unix time of the last pass that completed; 0 before the first.
    pub last_success: AtomicI64,
}

impl Default for RetentionStats {
    fn default() -> Self {
        RetentionStats {
            runs: CounterSet::new(&["ok", "failed"]),
            removed: CounterSet::new(&["events", "visits", "rollups", "salts", "summaries"]),
            last_success: AtomicI64::new(0),
        }
    }
}

/// What one full retention pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub events: u64,
    pub visits: u64,
    pub rollup_rows: u64,
    pub salts: u64,
    pub summaries: u64,
}

/// Deletes weekly summaries of weeks, and imported aggregates of days, that
/// began before `cutoff`: both are aggregates, kept as long as the rollups.
/// Returns (summaries, imported rows) removed.
pub async fn trim_dated(writer: &EventWriter, cutoff: i64) -> Result<(u64, u64), WriteError> {
    let day = chrono::DateTime::from_timestamp(cutoff, 0)
        .unwrap_or_default()
        .date_naive()
        .to_string();
    writer
        .run_for(move |tx| {
            let summaries = tx.execute("DELETE FROM summaries WHERE week_start < ?1", [&day])?;
            let imported = tx.execute("DELETE FROM imported_rollups WHERE day < ?1", [&day])?;
            Ok((summaries as u64, imported as u64))
        })
        .await
}

/// Deletes visitor-id salts created more than 48 hours before `now`: a salt
/// of UTC day D serves D and, for visits across midnight, D + 1. Rotation
/// deletes them too; this catches a server that was down at midnight.
pub async fn trim_salts(writer: &EventWriter, now: i64) -> Result<u64, WriteError> {
    let keep_from = now.div_euclid(SECONDS_PER_DAY) - 1;
    writer
        .run_for(move |tx| Ok(tx.execute("DELETE FROM salts WHERE day < ?1", [keep_from])? as u64))
        .await
}

/// Whether `site_id`'s rollups are being rebuilt (a row of the read
/// model's `rollup_rebuilds`): its raw rows wait until the rebuild has read
/// them.
fn rebuilding(conn: &rusqlite::Connection, site_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM rollup_rebuilds WHERE site_id = ?1")?
        .exists([site_id])?)
}

/// What one retention pass removed of the raw tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub events: u64,
    pub visits: u64,
}

/// Deletes events and visits whose time is before `cutoff` (Unix seconds).
pub async fn trim_raw(writer: &EventWriter, cutoff: i64) -> Result<Trimmed, WriteError> {
    let mut total = Trimmed::default();
    loop {
        let batch = writer
            .run_for(move |tx| {
                // Raw events before this may be gone: a timezone change
                // keeps the rollups of such days rather than recount them.
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('raw_trimmed_before', ?1)
                     ON CONFLICT (key) DO UPDATE
                     SET value = MAX(CAST(value AS INTEGER), excluded.value)",
                )?
                .execute([cutoff])?;
                let mut events = 0;
                // Per site, so the (site_id, ts) key bounds each delete. A
                // site whose rollups are being rebuilt keeps its raw rows
                // until the rebuild has read them.
                for id in super::sites::site_ids(tx)? {
                    if rebuilding(tx, id)? {
                        continue;
                    }
                    let left = BATCH - events;
                    if left <= 0 {
                        break;
                    }
                    // Through the second of the `left`-th oldest row: about
                    // `left` rows (a few more when that second holds several).
                    events += tx
                        .prepare_cached(
                            "DELETE FROM events WHERE site_id = ?1 AND ts < ?2 AND ts <= COALESCE(
                                (SELECT ts FROM events WHERE site_id = ?1 AND ts < ?2
                                 ORDER BY ts LIMIT 1 OFFSET ?3 - 1), ?2)",
                        )?
                        .execute(params![id, cutoff, left])? as i64;
                }
                // By start time, which is indexed; a visit lasts minutes to hours,
                // far less than any retention period.
                let visits = tx
                    .prepare_cached(
                        "DELETE FROM visits WHERE id IN (
                            SELECT id FROM visits WHERE site_id IN (SELECT id FROM sites)
                              AND site_id NOT IN (SELECT site_id FROM rollup_rebuilds)
                              AND started_at < ?1 LIMIT ?2)",
                    )?
                    .execute(params![cutoff, BATCH])?;
                Ok::<_, StoreError>(Trimmed {
                    events: events as u64,
                    visits: visits as u64,
                })
            })
            .await?;
        total.events += batch.events;
        total.visits += batch.visits;
        if batch.events < BATCH as u64 && batch.visits < BATCH as u64 {
            return Ok(total);
        }
    }
}
