//! Retention of the rollups: rows whose bucket starts before the
//! `aggregates_days` cutoff, deleted in small batches, each its own short
//! writer transaction, so ingest never waits behind one long delete.

use rusqlite::params;

use super::{Dim, Grain};
use crate::store::{EventWriter, StoreError, WriteError, sites};

/// Rows deleted per transaction.
const BATCH: i64 = 2000;

/// Deletes rollup rows whose bucket starts before `cutoff`: a month that
/// began before it goes whole. Returns the rows removed, sketches included.
pub async fn trim_rollups(writer: &EventWriter, cutoff: i64) -> Result<u64, WriteError> {
    let mut total = 0;
    loop {
        let batch = writer
            .run_for(move |tx| {
                let ids = sites::site_ids(tx)?;
                let dims = Dim::all();
                let mut removed = 0;
                // Per site, grain and dimension, so the key bounds each delete.
                'all: for id in ids {
                    for grain in Grain::ALL {
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
                                    .execute(params![id, grain.code(), dim.code(), cutoff, left])?
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
