//! The rows of removed sites, deleted in batches.
//!
//! A site's events, visits, rollups and imported aggregates can be millions
//! of rows: deleted in the transaction that removes the site, they would
//! hold the single writer (and ingest of every other site) for as long as
//! that takes. So [`super::sites::remove_site`] deletes the site row only
//! (the site is gone from the dashboard, the API and ingest at once, and its
//! id is never reused) and records it in `removed_sites`; its rows are then
//! deleted [`BATCH`] at a time, each batch its own short transaction, as
//! retention does: by a pass the dashboard starts right after a removal, by
//! every retention pass, and by `tally site remove` itself.
//!
//! Meanwhile nothing counts them: reports go by the id of an existing site,
//! and every pass over all sites (retention, crash recovery, rolling ended
//! visits, the rollup feed's flush, visits restored at start) takes only
//! sites in `sites`. Rows may still arrive after the removal: for a few
//! seconds (events accepted before ingest's site directory noticed, their
//! visit snapshots), or at any later start (events a journal replays). So
//! an entry of `removed_sites` is never forgotten: it is a few bytes, and
//! each pass costs one seek per table and removed site.

use std::time::Duration;

use rusqlite::{Connection, params};

use super::{EventWriter, StoreError, WriteError};

/// Rows deleted per transaction, every table together (of sketches, at
/// most [`SKETCH_BATCH`]).
pub const BATCH: u64 = 2000;

/// After the pass that follows a removal, another this much later deletes
/// what was still on its way.
pub const LATE_ROWS_WITHIN: Duration = Duration::from_secs(20);

/// Each table with a site's rows, how one batch of them is deleted (`?1`
/// the site, `?2` the most rows: by the table's key, so a batch seeks rather
/// than scans), and the most rows of it one batch deletes.
const TABLES: &[(&str, &str, u64)] = &[
    (
        "events",
        "DELETE FROM events WHERE site_id = ?1 AND (ts, id) IN (
            SELECT ts, id FROM events WHERE site_id = ?1 LIMIT ?2)",
        BATCH,
    ),
    (
        "visits",
        "DELETE FROM visits WHERE id IN (
            SELECT id FROM visits WHERE site_id = ?1 LIMIT ?2)",
        BATCH,
    ),
    (
        "rollups",
        "DELETE FROM rollups WHERE site_id = ?1 AND (grain, dim, bucket, value) IN (
            SELECT grain, dim, bucket, value FROM rollups WHERE site_id = ?1 LIMIT ?2)",
        BATCH,
    ),
    (
        "rollup_sketches",
        "DELETE FROM rollup_sketches WHERE rowid IN (
            SELECT rowid FROM rollup_sketches WHERE site_id = ?1 LIMIT ?2)",
        SKETCH_BATCH,
    ),
    (
        "imported_rollups",
        "DELETE FROM imported_rollups WHERE site_id = ?1 AND (day, dim, value) IN (
            SELECT day, dim, value FROM imported_rollups WHERE site_id = ?1 LIMIT ?2)",
        BATCH,
    ),
];

/// Deletes up to `limit` rows of removed sites, in the caller's transaction,
/// and says whether any may be left. It reads, then writes: beside another process's writer, the
/// transaction must be begun IMMEDIATE (the writer's are), or its upgrade to
/// a write fails with "database is locked" instead of waiting.
pub fn delete_batch(conn: &Connection, limit: u64) -> Result<Batch, StoreError> {
    let removed: Vec<i64> = conn
        .prepare_cached("SELECT site_id FROM removed_sites ORDER BY site_id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut left = limit;
    for site_id in removed {
        for (_, sql, most) in TABLES {
            if left == 0 {
                return Ok(Batch {
                    rows: limit,
                    more: true,
                });
            }
            let most = left.min(*most);
            let n = conn
                .prepare_cached(sql)?
                .execute(params![site_id, most as i64])? as u64;
            left -= n;
            if n == most {
                // A bound reached: the rest waits for the next batch, so
                // one batch stays short however large the rows are.
                return Ok(Batch {
                    rows: limit - left,
                    more: true,
                });
            }
        }
    }
    Ok(Batch {
        rows: limit - left,
        more: left == 0,
    })
}

/// What one [`delete_batch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Rows deleted.
    pub rows: u64,
    /// Whether rows may be left: the batch stopped at one of its bounds.
    pub more: bool,
}

/// Sketches deleted per batch. A sketch is up to 16 KiB: 2,000 of them
/// held the writer 130 to 170 ms; 128 are at most 2 MiB to delete.
pub const SKETCH_BATCH: u64 = 128;

/// Deletes every row of removed sites, [`BATCH`] per writer transaction.
/// Returns the rows deleted.
pub async fn purge(writer: &EventWriter) -> Result<u64, WriteError> {
    let mut total = 0;
    loop {
        let done = writer.run_for(move |tx| delete_batch(tx, BATCH)).await?;
        total += done.rows;
        if !done.more {
            if total > 0 {
                tracing::info!(rows = total, "deleted rows of removed sites");
            }
            return Ok(total);
        }
    }
}

/// After a removal: deletes the site's rows now, and again once what was on
/// its way has landed (the retention pass catches anything later).
pub async fn purge_after_removal(writer: EventWriter) {
    for pass in 0..2 {
        if pass > 0 {
            tokio::time::sleep(LATE_ROWS_WITHIN).await;
        }
        if let Err(e) = purge(&writer).await {
            tracing::error!(error = %e, "deleting a removed site's rows failed; the retention pass retries");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sites;

    /// A database with two sites: `big.example` with `n` events and
    /// visits, a rollup row and a sketch per event, and an imported row;
    /// `small.example` with one of each.
    fn two_sites(dir: &tempfile::TempDir, n: i64) -> (Connection, i64, i64) {
        let store = crate::store::Store::open(dir.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        let big = sites::add_site(&conn, "big.example", "UTC", false)
            .unwrap()
            .id;
        let small = sites::add_site(&conn, "small.example", "UTC", false)
            .unwrap()
            .id;
        for (site, count) in [(big, n), (small, 1)] {
            conn.execute(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?2)
                 INSERT INTO events (site_id, ts, id, visitor_id, visit_id, name, hostname, path)
                 SELECT ?1, 1000 + i, ?1 * 1000000 + i, i, ?1 * 1000000 + i, 'pageview', 'h', '/'
                 FROM k",
                params![site, count],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                    pageviews, events, interactive, is_bounce)
                 SELECT visit_id, site_id, visitor_id, 1, ts, ts, 1, 0, 1, 1
                 FROM events WHERE site_id = ?1",
                [site],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO rollups (site_id, grain, dim, bucket, value, visits, pageviews,
                    events, bounces, duration, visitors)
                 SELECT site_id, 1, 1, ts, '/', 1, 1, 0, 1, 0, 1 FROM events WHERE site_id = ?1",
                [site],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO rollup_sketches (site_id, grain, dim, bucket, value, version, visitors)
                 SELECT site_id, 1, 1, ts, '/', 1, x'00' FROM events WHERE site_id = ?1",
                [site],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO imported_rollups (site_id, day, dim, value, visitors, visits,
                    pageviews, bounces, duration)
                 VALUES (?1, '2024-01-01', 0, '', 1, 1, 1, 0, 0)",
                [site],
            )
            .unwrap();
        }
        (conn, big, small)
    }

    fn rows_in(conn: &Connection, table: &str, site_id: i64) -> i64 {
        conn.query_row(
            &format!("SELECT COUNT(*) FROM {table} WHERE site_id = ?1"),
            [site_id],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn rows_of(conn: &Connection, site_id: i64) -> i64 {
        TABLES
            .iter()
            .map(|(table, _, _)| {
                conn.query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE site_id = ?1"),
                    [site_id],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
            })
            .sum()
    }

    #[test]
    fn a_removed_site_goes_at_once_and_its_rows_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, big, small) = two_sites(&dir, 3000);
        let before = rows_of(&conn, big);
        assert_eq!(before, 4 * 3000 + 1);
        let small_rows = rows_of(&conn, small);

        let tx = conn.transaction().unwrap();
        assert_eq!(sites::remove_site(&tx, "big.example").unwrap(), big);
        tx.commit().unwrap();
        // The site is gone; its rows wait for the batches.
        assert!(sites::find_site(&conn, "big.example").unwrap().is_none());
        assert_eq!(rows_of(&conn, big), before);

        let mut batches = Vec::new();
        loop {
            let tx = conn.transaction().unwrap();
            let sketches_before = rows_in(&tx, "rollup_sketches", big);
            let done = delete_batch(&tx, BATCH).unwrap();
            let sketches = sketches_before - rows_in(&tx, "rollup_sketches", big);
            tx.commit().unwrap();
            batches.push((done.rows, sketches));
            if !done.more {
                break;
            }
        }
        // Bounded in rows, and in sketches (16 KiB each in real use): the
        // numbers themselves, so a change of the constants is seen here.
        assert!(
            batches.iter().all(|(n, s)| *n <= 2000 && *s <= 128),
            "{batches:?}"
        );
        assert_eq!(batches.iter().map(|b| b.0).sum::<u64>() as i64, before);
        assert!(batches.len() >= 3000 / 128, "{batches:?}");
        assert_eq!(rows_of(&conn, big), 0);
        assert_eq!(rows_of(&conn, small), small_rows);

        // And its id is never given again.
        let again = sites::add_site(&conn, "big.example", "UTC", false).unwrap();
        assert!(again.id > small);
    }

    /// Rows of a site removed long ago (events a journal replays at a later
    /// start) are deleted by the next pass: the entry is never forgotten.
    #[test]
    fn late_rows_of_a_site_removed_long_ago_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, big, _) = two_sites(&dir, 10);
        let tx = conn.transaction().unwrap();
        sites::remove_site(&tx, "big.example").unwrap();
        tx.commit().unwrap();
        assert!(!delete_batch(&conn, BATCH).unwrap().more);
        assert_eq!(rows_of(&conn, big), 0);
        // Long ago.
        conn.execute("UPDATE removed_sites SET removed_at = 0", [])
            .unwrap();
        // The entry stays, however late rows arrive (events a journal
        // replays at a later start): they are deleted all the same.
        let entries = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM removed_sites", [], |r| r.get(0))
                .unwrap()
        };
        for id in [1, 2] {
            conn.execute(
                "INSERT INTO events (site_id, ts, id, visitor_id, visit_id, name, hostname, path)
                 VALUES (?1, 5000, ?2, 1, 1, 'pageview', 'h', '/late')",
                params![big, id],
            )
            .unwrap();
            let done = delete_batch(&conn, BATCH).unwrap();
            assert_eq!((done.rows, done.more), (1, false));
            assert_eq!(entries(&conn), 1);
            assert_eq!(rows_of(&conn, big), 0);
        }
    }
}
