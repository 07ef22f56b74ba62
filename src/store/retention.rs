//! Retention: raw events and visits older than `raw_events_days`, and rollup
//! rows older than `aggregates_days`, are deleted in small batches, each its
//! own short writer transaction, so ingest never waits behind one long delete.
//! The same pass deletes visitor-id salts older than 48 hours.
//!
//! [`run_pass`] takes the time as a parameter: the server passes the clock,
//! tests pass whatever day they need.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::params;

use super::rollups::{
    DIM_NAME, DIM_PAGE, DIM_PROP, DIM_TOTALS, GRAIN_DAY, GRAIN_HOUR, GRAIN_MONTH, GRAIN_WEEK,
    visit_dim,
};
use super::stats::VISIT_COLUMNS;
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

/// One retention pass as of `now` (Unix seconds): raw rows, rollups, then
/// salts, each in small transactions. Counts into `stats` and logs the result.
pub async fn run_pass(
    writer: &EventWriter,
    policy: RetentionPolicy,
    now: i64,
    stats: &RetentionStats,
) -> Result<Removed, WriteError> {
    let result = async {
        let raw = trim_raw(
            writer,
            now - i64::from(policy.raw_events_days) * SECONDS_PER_DAY,
        )
        .await?;
        stats.removed.add("events", raw.events);
        stats.removed.add("visits", raw.visits);
        let rollup_rows = trim_rollups(
            writer,
            now - i64::from(policy.aggregates_days) * SECONDS_PER_DAY,
        )
        .await?;
        stats.removed.add("rollups", rollup_rows);
        let salts = trim_salts(writer, now).await?;
        stats.removed.add("salts", salts);
        let (summaries, imported) = trim_dated(
            writer,
            now - i64::from(policy.aggregates_days) * SECONDS_PER_DAY,
        )
        .await?;
        stats.removed.add("summaries", summaries);
        stats.removed.add("rollups", imported);
        Ok(Removed {
            events: raw.events,
            visits: raw.visits,
            rollup_rows: rollup_rows + imported,
            salts,
            summaries,
        })
    }
    .await;
    match &result {
        Ok(r) => {
            stats.runs.inc("ok");
            stats.last_success.store(now, Ordering::Relaxed);
            tracing::info!(
                events = r.events,
                visits = r.visits,
                rollup_rows = r.rollup_rows,
                salts = r.salts,
                summaries = r.summaries,
                raw_events_days = policy.raw_events_days,
                aggregates_days = policy.aggregates_days,
                "retention pass removed expired rows"
            );
        }
        Err(e) => {
            stats.runs.inc("failed");
            tracing::error!(error = %e, "retention pass failed");
        }
    }
    result
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

/// What one retention pass removed.
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
                    if super::rebuild::in_progress_for(tx, id)? {
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

/// Deletes rollup rows whose bucket starts before `cutoff`: a month that
/// began before it goes whole. Returns the rows removed, sketches included.
pub async fn trim_rollups(writer: &EventWriter, cutoff: i64) -> Result<u64, WriteError> {
    let mut total = 0;
    loop {
        let batch = writer
            .run_for(move |tx| {
                let ids = super::sites::site_ids(tx)?;
                let dims = [DIM_TOTALS, DIM_PAGE, DIM_NAME, DIM_PROP]
                    .into_iter()
                    .chain(VISIT_COLUMNS.iter().map(|c| visit_dim(c)));
                let mut removed = 0;
                // Per site, grain and dimension, so the key bounds each delete.
                'all: for id in ids {
                    for grain in [GRAIN_HOUR, GRAIN_DAY, GRAIN_WEEK, GRAIN_MONTH] {
                        for dim in dims.clone() {
                            for table in ["rollups", "rollup_sketches"] {
                                let left = BATCH - removed;
                                if left <= 0 {
                                    break 'all;
                                }
                                removed += tx
                                    .prepare_cached(&format!(
                                        "DELETE FROM {table}
                                         WHERE site_id = ?1 AND grain = ?2 AND dim = ?3
                                           AND bucket < ?4 AND (bucket, value) IN (
                                            SELECT bucket, value FROM {table}
                                            WHERE site_id = ?1 AND grain = ?2 AND dim = ?3
                                              AND bucket < ?4 LIMIT ?5)"
                                    ))?
                                    .execute(params![id, grain, dim, cutoff, left])?
                                    as i64;
                            }
                        }
                    }
                }
                Ok::<_, StoreError>(removed as u64)
            })
            .await?;
        total += batch;
        if batch < BATCH as u64 {
            return Ok(total);
        }
    }
}
