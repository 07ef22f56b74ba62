//! Visit rows: inserted with a visit's first event, then updated in batches.
//!
//! Updating a visit row with every event rewrote a page at a random place in
//! the file per event; batching the snapshots once a second writes each busy
//! visit once per batch instead. The events themselves are committed before
//! they are acknowledged, so a visit row is never the only copy of anything:
//! after a crash, [`rebuild_recent`] recomputes the visits of the last events
//! from them.

use std::sync::Arc;

use rusqlite::{Transaction, params};

use super::{EventWriter, StoreError, VisitRecord, WriteError};

/// Inserts `v`, or replaces the stored snapshot if `v` is newer.
pub fn upsert(tx: &Transaction, v: &VisitRecord) -> Result<(), StoreError> {
    let d = &*v.dims;
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
    .execute(params![
        v.id,
        v.site_id,
        v.visitor_id,
        v.seq,
        v.started_at,
        v.last_seen_at,
        v.entry_page,
        v.exit_page,
        v.pageviews,
        v.events,
        v.interactive,
        v.is_bounce,
        d.referrer,
        d.source,
        d.utm_medium,
        d.utm_source,
        d.utm_campaign,
        d.utm_term,
        d.utm_content,
        d.country,
        d.region,
        d.city,
        d.browser,
        d.browser_version,
        d.os,
        d.os_version,
        d.device,
    ])?;
    Ok(())
}

/// Snapshots per transaction: small enough that event commits queued behind
/// one wait a millisecond or two, not the time of a whole flush.
const SNAPSHOTS_PER_COMMIT: usize = 256;

/// Writes visit snapshots, a few hundred per transaction.
pub async fn write_snapshots(
    writer: &EventWriter,
    visits: Vec<VisitRecord>,
) -> Result<(), WriteError> {
    for chunk in visits.chunks(SNAPSHOTS_PER_COMMIT) {
        let chunk: Arc<[VisitRecord]> = chunk.into();
        writer
            .run(move |tx| {
                for v in chunk.iter() {
                    upsert(tx, v)?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(())
}

/// Recomputes the totals of every visit with an event in the last `window`
/// seconds before the newest event, from the events themselves. Run at start
/// (before the writer): it repairs what a crash left between two snapshot
/// batches and is a no-op after a clean shutdown. Returns the visits updated.
pub fn rebuild_recent(conn: &rusqlite::Connection, window: i64) -> Result<usize, StoreError> {
    let Some(newest) = conn.query_row("SELECT MAX(ts) FROM events", [], |r| {
        r.get::<_, Option<i64>>(0)
    })?
    else {
        return Ok(0);
    };
    let tx = conn.unchecked_transaction()?;
    let changed = tx.execute(
        "WITH recent AS (
            SELECT DISTINCT visit_id FROM events
            WHERE site_id IN (SELECT id FROM sites) AND ts >= ?1
         ),
         totals AS (
            SELECT e.visit_id AS id, MAX(e.ts) AS last_seen,
                SUM(e.name = 'pageview') AS pageviews,
                SUM(e.name NOT IN ('pageview', 'engagement')) AS events,
                SUM(e.name NOT IN ('pageview', 'engagement') AND e.interactive) AS interactive,
                (SELECT path FROM events f WHERE f.visit_id = e.visit_id AND f.name = 'pageview'
                 ORDER BY f.id LIMIT 1) AS entry_page,
                (SELECT path FROM events f WHERE f.visit_id = e.visit_id AND f.name = 'pageview'
                 ORDER BY f.id DESC LIMIT 1) AS exit_page
            FROM events e WHERE e.visit_id IN (SELECT visit_id FROM recent)
            GROUP BY e.visit_id
         )
         UPDATE visits SET
            last_seen_at = totals.last_seen, pageviews = totals.pageviews,
            events = totals.events, interactive = totals.interactive,
            entry_page = totals.entry_page, exit_page = totals.exit_page,
            is_bounce = (totals.pageviews <= 1 AND totals.interactive = 0),
            seq = visits.seq + 1
         FROM totals
         WHERE visits.id = totals.id AND (visits.last_seen_at, visits.pageviews, visits.events,
            visits.interactive) IS NOT (totals.last_seen, totals.pageviews, totals.events,
            totals.interactive)",
        params![newest - window],
    )?;
    tx.commit()?;
    Ok(changed)
}
