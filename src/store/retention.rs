//! Retention: raw events and visits older than `raw_events_days`, and rollup
//! rows older than `aggregates_days`, are deleted in small batches, each its
//! own short writer transaction, so ingest never waits behind one long delete.

use rusqlite::params;

use super::rollups::{
    DIM_NAME, DIM_PAGE, DIM_PROP, DIM_TOTALS, GRAIN_DAY, GRAIN_HOUR, GRAIN_MONTH, GRAIN_WEEK,
    visit_dim,
};
use super::stats::VISIT_COLUMNS;
use super::{EventWriter, StoreError, WriteError};

/// Rows deleted per transaction.
const BATCH: i64 = 2000;

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
                let mut events = 0;
                // Per site, so the (site_id, ts) key bounds each delete.
                for id in super::sites::site_ids(tx)? {
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
