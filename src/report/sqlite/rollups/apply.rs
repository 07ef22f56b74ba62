//! Adding changes to the rollup rows: [`apply_all`] (and [`apply_grains`]
//! for some grains only) adds [`Deltas`]' rows and their visitor sketches,
//! versioned within the current sketch epoch; [`flush_events`] commits
//! what the feed folded, in bounded writer jobs, and moves the
//! crash-recovery mark; [`roll_ended_visits`] adds the visits that can no
//! longer change and marks them `rolled`.
//!
//! [`Deltas`]: super::deltas::Deltas

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::deltas::{Delta, Deltas, Group};
use super::feed::{FedEvents, RollupFeed};
use super::{Dim, Grain, zone_of, zones};
use crate::report::sqlite::sketch::VisitorSketch;
use crate::store::{EventWriter, StoreError, WriteError};

/// (site, grain, dim, bucket): a row's key without its value.
type Slot = (i64, Grain, Dim, i64);

/// Adds one row's changes. The sketch is read and rewritten, and the row's
/// visitors recounted, only when the change has visitors.
fn apply_row(
    conn: &Connection,
    slot: Slot,
    value: &str,
    d: &Delta,
    epoch: i64,
) -> Result<(), StoreError> {
    let (site_id, grain, dim, bucket) = (slot.0, slot.1.code(), slot.2.code(), slot.3);
    let sketch = if d.visitors.is_empty() {
        None
    } else {
        let stored: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT visitors FROM rollup_sketches
                 WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND value = ?4 AND bucket = ?5",
            )?
            .query_row(params![site_id, grain, dim, value, bucket], |r| r.get(0))
            .optional()?;
        let mut sketch = stored
            .and_then(|b| VisitorSketch::from_bytes(&b))
            .unwrap_or_default();
        sketch.insert_ids(&d.visitors);
        Some(sketch)
    };
    // The row's new visits + pageviews + events, in the current epoch,
    // versions its sketch.
    let counts: i64 = conn
        .prepare_cached(
            "INSERT INTO rollups (site_id, grain, dim, bucket, value, visits, pageviews, events,
                bounces, duration, visitors)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, COALESCE(?11, 0))
             ON CONFLICT DO UPDATE SET
                visits = visits + excluded.visits, pageviews = pageviews + excluded.pageviews,
                events = events + excluded.events, bounces = bounces + excluded.bounces,
                duration = duration + excluded.duration,
                visitors = COALESCE(?11, visitors)
             RETURNING visits + pageviews + events",
        )?
        .query_row(
            params![
                site_id,
                grain,
                dim,
                bucket,
                value,
                d.visits,
                d.pageviews,
                d.events,
                d.bounces,
                d.duration,
                sketch.as_ref().map(VisitorSketch::count),
            ],
            |r| r.get(0),
        )?;
    let version = counts + (epoch << EPOCH_SHIFT);
    if let Some(sketch) = sketch {
        conn.prepare_cached(
            "INSERT INTO rollup_sketches (site_id, grain, dim, bucket, value, version, visitors)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO UPDATE SET version = excluded.version, visitors = excluded.visitors",
        )?
        .execute(params![
            site_id,
            grain,
            dim,
            bucket,
            value,
            version,
            sketch.to_bytes()
        ])?;
    }
    Ok(())
}

pub(super) fn apply_all(
    conn: &Connection,
    rows: &[(Group, String, Delta)],
) -> Result<(), StoreError> {
    apply_grains(conn, rows, ALL_GRAINS)
}

/// A set of grains, one bit per grain: `1 << code`.
pub(super) type Grains = u8;
pub(super) const ALL_GRAINS: Grains = 0b1111;

/// Sketch versions of one epoch differ from every version of an earlier one
/// in these high bits (row counts stay far below 2^40).
const EPOCH_SHIFT: u32 = 40;

/// The epoch of sketch versions: bumped when rollup rows are deleted to be
/// built again, so that a rebuilt row never shows a version that a sketch
/// cached from the deleted row had.
fn sketch_epoch(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'sketch_epoch'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Starts a new epoch of sketch versions (see [`sketch_epoch`]).
pub(super) fn next_sketch_epoch(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('sketch_epoch', 1)
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

/// Applies `rows` to the grains among `grains` only.
pub(super) fn apply_grains(
    conn: &Connection,
    rows: &[(Group, String, Delta)],
    grains: Grains,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let epoch = sketch_epoch(conn)?;
    for ((site_id, dim, span), value, d) in rows {
        for (grain, bucket) in span.grains() {
            if grains & (1 << grain.code()) != 0 {
                apply_row(conn, (*site_id, grain, *dim, bucket), value, d, epoch)?;
            }
        }
    }
    Ok(())
}

pub(super) fn set_through(conn: &Connection, through: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('rollups_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
    )?
    .execute([through])?;
    Ok(())
}

/// Groups of rows per writer job (a group is three or four rows): large,
/// like visit snapshots (requests do not wait for the writer), but bounded
/// so a burst of new values is split.
const GROUPS_PER_COMMIT: usize = 1024;

/// Commits the rollup changes of `fed`, taken from `feed`. `record_through`
/// keeps the crash-recovery mark; only the server keeps it. Returns the
/// events folded in.
pub async fn flush_events(
    writer: &EventWriter,
    feed: &Arc<RollupFeed>,
    fed: FedEvents,
    record_through: bool,
) -> Result<usize, WriteError> {
    let FedEvents {
        deltas,
        count,
        through,
        taken,
        ..
    } = fed;
    if count == 0 {
        return Ok(0);
    }
    // Moved into the chunks, not copied: the visitor lists are most of a
    // second's memory.
    let mut rows = deltas.into_rows();
    let mut chunks: Vec<Arc<[(Group, String, Delta)]>> = Vec::new();
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().saturating_sub(GROUPS_PER_COMMIT));
        chunks.push(Arc::from(rest));
    }
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mark = (record_through && i == last).then_some(through);
        let feed = feed.clone();
        writer
            .run(move |tx| {
                // A site whose rollups were reset since these changes were
                // taken gets its events from the rebuild instead; a site
                // removed meanwhile gets nothing (its rows are being
                // deleted).
                let mut sites: Vec<i64> = chunk.iter().map(|((site, _, _), _, _)| *site).collect();
                sites.sort_unstable();
                sites.dedup();
                let mut skip = Vec::new();
                for site in sites {
                    if feed.outdated(site, taken) || !site_exists(tx, site)? {
                        skip.push(site);
                    }
                }
                if !skip.is_empty() {
                    let current: Vec<_> = chunk
                        .iter()
                        .filter(|((site, _, _), _, _)| !skip.contains(site))
                        .cloned()
                        .collect();
                    apply_all(tx, &current)?;
                } else {
                    apply_all(tx, &chunk)?;
                }
                if let Some(through) = mark {
                    set_through(tx, through)?;
                }
                Ok(())
            })
            .await?;
    }
    feed.folded.fetch_add(count as u64, Ordering::Relaxed);
    Ok(count)
}

fn site_exists(conn: &Connection, site_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sites WHERE id = ?1")?
        .exists([site_id])?)
}

/// Adds to the rollups every visit whose last event is older than
/// `ended_before`, `per_commit` visits per transaction, marking each row
/// `rolled` in the same transaction. Returns the visits added.
///
/// Visits in one transaction share most of their rows (same days, same
/// browsers), so large batches are much cheaper per visit; the server uses
/// small ones so that event commits never wait long behind one.
pub async fn roll_ended_visits(
    writer: &EventWriter,
    ended_before: i64,
    per_commit: usize,
) -> Result<usize, WriteError> {
    let mut total = 0;
    loop {
        // Timezones read in the transaction that uses them: a change
        // commits either before or after it, never between.
        let n = writer
            .run_for(move |tx| roll_some_visits(tx, &zones(tx)?, ended_before, per_commit))
            .await?;
        total += n;
        if n < per_commit {
            return Ok(total);
        }
    }
}

/// Rolls up to `limit` ended visits; the caller owns the transaction.
/// Visits of a site being rebuilt wait (reports read them from `visits`
/// meanwhile): its rebuild adds the visits rolled before it began. Visits
/// of a removed site are left to the batches that delete them.
pub(super) fn roll_some_visits(
    conn: &Connection,
    zones: &HashMap<i64, Tz>,
    ended_before: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    let visits = crate::store::sites::visits_where(
        conn,
        // The eligible sites drive the search of the index of unrolled
        // visits: the visits of a site being rebuilt (after an upgrade, all
        // of them) are not walked past at every pass.
        "rolled = 0 AND last_seen_at < ?1
           AND site_id IN (SELECT id FROM sites
                           WHERE id NOT IN (SELECT site_id FROM rollup_rebuilds))
         LIMIT ?2",
        params![ended_before, limit as i64],
    )?;
    if visits.is_empty() {
        return Ok(0);
    }
    let mut deltas = Deltas::default();
    for v in &visits {
        deltas.add_visit(zone_of(zones, v.site_id), v);
    }
    apply_all(conn, &deltas.into_rows())?;
    let mut mark = conn.prepare_cached("UPDATE visits SET rolled = 1 WHERE id = ?1")?;
    for v in &visits {
        mark.execute([v.id])?;
    }
    Ok(visits.len())
}
