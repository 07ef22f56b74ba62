//! Retention: raw events and visits older than the configured number of days
//! are deleted in small batches, each its own short writer transaction, so
//! ingest never waits behind one long delete.

use std::sync::{Arc, Mutex};

use rusqlite::params;

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
        let removed: Arc<Mutex<Trimmed>> = Arc::default();
        let out = removed.clone();
        writer
            .run(move |tx| {
                // Per site, so the (site_id, ts) key bounds each delete.
                let mut sites = tx.prepare_cached("SELECT id FROM sites")?;
                let ids: Vec<i64> = sites
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let mut events = 0;
                for id in ids {
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
                *out.lock().expect("retention slot") = Trimmed {
                    events: events as u64,
                    visits: visits as u64,
                };
                Ok::<(), StoreError>(())
            })
            .await?;
        let batch = *removed.lock().expect("retention slot");
        total.events += batch.events;
        total.visits += batch.visits;
        if batch.events < BATCH as u64 && batch.visits < BATCH as u64 {
            return Ok(total);
        }
    }
}
