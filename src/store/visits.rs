//! Visit rows, derived from events and written in batches.
//!
//! Writing a visit row with each event added its pages to every commit;
//! here the snapshots of changed visits are written once a second, a few
//! hundred per transaction. The events are durable (journaled or committed)
//! before they are acknowledged and the first event of a visit carries the visit's
//! attributes, so a visit row is never the only copy of anything: after an
//! unclean stop, [`rebuild_recent`] recomputes the last visits from events.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use super::{EventWriter, StoreError, VisitRecord, WriteError};

/// Inserts `v`, or replaces the stored snapshot if `v` is newer.
pub fn upsert(tx: &Connection, v: &VisitRecord) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at, entry_page,
            exit_page, pageviews, events, interactive, is_bounce, referrer, source, utm_medium,
            utm_source, utm_campaign, utm_term, utm_content, country, region, city, browser,
            browser_version, os, os_version, device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
            ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)
         ON CONFLICT (id) DO UPDATE SET
            seq = excluded.seq, last_seen_at = excluded.last_seen_at,
            entry_page = excluded.entry_page, exit_page = excluded.exit_page,
            pageviews = excluded.pageviews, events = excluded.events,
            interactive = excluded.interactive, is_bounce = excluded.is_bounce
         WHERE excluded.seq > visits.seq",
    )?
    .execute(rusqlite::params_from_iter(
        [
            &v.id as &dyn rusqlite::ToSql,
            &v.site_id,
            &v.visitor_id,
            &v.seq,
            &v.started_at,
            &v.last_seen_at,
            &v.entry_page,
            &v.exit_page,
            &v.pageviews,
            &v.events,
            &v.interactive,
            &v.is_bounce,
        ]
        .into_iter()
        .chain(v.dims.params()),
    ))?;
    Ok(())
}

/// Snapshots per writer job. Requests do not wait for the writer (they are
/// answered once journaled), so the jobs can be large: fewer commits, each
/// rewriting the pages the snapshots share once.
const SNAPSHOTS_PER_COMMIT: usize = 4096;

/// Writes visit snapshots, a few thousand per writer job.
pub async fn write_snapshots(
    writer: &EventWriter,
    visits: &[VisitRecord],
) -> Result<(), WriteError> {
    for chunk in visits.chunks(SNAPSHOTS_PER_COMMIT) {
        let chunk: Arc<[VisitRecord]> = chunk.into();
        writer
            .run(move |tx| {
                for v in chunk.iter() {
                    write_snapshot(tx, v)?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Writes snapshot `v` as [`upsert`] does. Most snapshots are of a visit
/// already stored (one is written every second it changes): for those, an
/// update of the changing columns, rather than an insert of all 27 that
/// turns into an update.
fn write_snapshot(tx: &Connection, v: &VisitRecord) -> Result<(), StoreError> {
    // A visit's first snapshot has seq 1; a later one may still be its first.
    if v.seq > 1 {
        let updated = tx
            .prepare_cached(
                "UPDATE visits SET seq = ?2, last_seen_at = ?3, entry_page = ?4, exit_page = ?5,
                    pageviews = ?6, events = ?7, interactive = ?8, is_bounce = ?9
                 WHERE id = ?1 AND seq < ?2",
            )?
            .execute(params![
                v.id,
                v.seq,
                v.last_seen_at,
                v.entry_page,
                v.exit_page,
                v.pageviews,
                v.events,
                v.interactive,
                v.is_bounce
            ])?;
        if updated == 1 {
            return Ok(());
        }
    }
    // Not stored yet, or stored with a newer snapshot (left as it is).
    upsert(tx, v)
}

/// Events further back than this are not read when rebuilding: visits are
/// not resumed after a day either.
const REBUILD_HISTORY: i64 = 24 * 3600;

/// Records that visits were written completely: the next start skips the
/// rebuild. Call after the writer has stopped.
pub fn mark_clean_stop(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('clean_stop', '1')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [],
    )?;
    Ok(())
}

/// Whether the last run stopped cleanly; from now on it counts as unclean
/// until [`mark_clean_stop`].
pub fn take_clean_stop(conn: &rusqlite::Connection) -> Result<bool, StoreError> {
    let clean = conn
        .query_row(
            "SELECT value = '1' FROM meta WHERE key = 'clean_stop'",
            [],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false);
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('clean_stop', '0')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [],
    )?;
    Ok(clean)
}

/// Rebuilds, from the events, every visit with an event in the last `window`
/// seconds before the newest event: rows a crash kept from being written are
/// inserted (from the visit's first event) and totals are recomputed. Run at
/// start, before the writer, after an unclean stop. Returns the visits changed.
pub fn rebuild_recent(conn: &rusqlite::Connection, window: i64) -> Result<usize, StoreError> {
    let Some(newest) = conn.query_row(
        // Per site: the newest event of each is one step down its key.
        "SELECT MAX((SELECT MAX(ts) FROM events WHERE site_id = s.id)) FROM sites s",
        [],
        |r| r.get::<_, Option<i64>>(0),
    )?
    else {
        return Ok(0);
    };
    let (recent, history) = (newest - window, newest - window - REBUILD_HISTORY);
    let tx = conn.unchecked_transaction()?;
    let inserted = tx.execute(
        "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at, pageviews,
            events, interactive, is_bounce, referrer, source, utm_medium, utm_source,
            utm_campaign, utm_term, utm_content, country, region, city, browser,
            browser_version, os, os_version, device)
         SELECT visit_id, site_id, visitor_id, 0, ts, ts, 0, 0, 0, 1, referrer, source,
            utm_medium, utm_source, utm_campaign, utm_term, utm_content, country, region, city,
            browser, browser_version, os, os_version, device
         FROM events
         WHERE site_id IN (SELECT id FROM sites) AND ts >= ?1 AND first_of_visit
         ON CONFLICT (id) DO NOTHING",
        [history],
    )?;
    // Every read of `events` is bounded by (site_id, ts), the one index it has.
    let updated = tx.execute(
        "WITH scope AS (
            SELECT * FROM events WHERE site_id IN (SELECT id FROM sites) AND ts >= ?2
         ),
         recent AS (SELECT DISTINCT visit_id FROM scope WHERE ts >= ?1),
         mine AS (SELECT * FROM scope WHERE visit_id IN (SELECT visit_id FROM recent)),
         totals AS (
            SELECT visit_id AS id, MAX(ts) AS last_seen,
                SUM(name = 'pageview') AS pageviews,
                SUM(name NOT IN ('pageview', 'engagement')) AS events,
                SUM(name NOT IN ('pageview', 'engagement') AND interactive) AS interactive
            FROM mine GROUP BY visit_id
         ),
         -- SQLite takes a bare column from the row holding the MIN/MAX.
         entry AS (SELECT visit_id AS id, path, MIN(id) FROM mine WHERE name = 'pageview' GROUP BY visit_id),
         exit AS (SELECT visit_id AS id, path, MAX(id) FROM mine WHERE name = 'pageview' GROUP BY visit_id)
         UPDATE visits SET
            last_seen_at = totals.last_seen, pageviews = totals.pageviews,
            events = totals.events, interactive = totals.interactive,
            entry_page = entry.path, exit_page = exit.path,
            is_bounce = (totals.pageviews <= 1 AND totals.interactive = 0),
            seq = visits.seq + 1
         FROM totals LEFT JOIN entry ON entry.id = totals.id LEFT JOIN exit ON exit.id = totals.id
         WHERE visits.id = totals.id",
        params![recent, history],
    )?;
    tx.commit()?;
    Ok(inserted.max(updated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, VisitDims};

    fn visit(id: i64, seq: i64, pageviews: i64) -> VisitRecord {
        VisitRecord {
            id,
            site_id: 1,
            visitor_id: 7,
            seq,
            started_at: 1_700_000_000,
            last_seen_at: 1_700_000_000 + seq,
            entry_page: Some("/".into()),
            exit_page: Some(format!("/{seq}")),
            pageviews,
            events: 0,
            interactive: 0,
            is_bounce: pageviews <= 1,
            dims: Arc::new(VisitDims {
                browser: Some("Firefox".into()),
                ..Default::default()
            }),
        }
    }

    fn stored(conn: &Connection, id: i64) -> Option<(i64, i64, String, Option<String>)> {
        conn.query_row(
            "SELECT seq, pageviews, exit_page, browser FROM visits WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .unwrap()
    }

    #[test]
    fn snapshots_keep_the_newest_whether_inserted_or_updated() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        crate::store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let firefox = Some("Firefox".to_string());

        write_snapshot(&conn, &visit(1, 1, 1)).unwrap();
        assert_eq!(stored(&conn, 1), Some((1, 1, "/1".into(), firefox.clone())));
        // Stored: updated in place, attributes kept.
        write_snapshot(&conn, &visit(1, 3, 3)).unwrap();
        assert_eq!(stored(&conn, 1), Some((3, 3, "/3".into(), firefox.clone())));
        // Older than the stored one: left as it is.
        write_snapshot(&conn, &visit(1, 2, 2)).unwrap();
        assert_eq!(stored(&conn, 1), Some((3, 3, "/3".into(), firefox.clone())));
        // A first snapshot taken after several events: inserted.
        write_snapshot(&conn, &visit(2, 4, 4)).unwrap();
        assert_eq!(stored(&conn, 2), Some((4, 4, "/4".into(), firefox)));
    }
}
