//! The rollups recomputed from the raw tables: after an unclean stop, the
//! events past the mark `rollups_through` ([`recover`]); when a migration
//! asks, or after past visits were imported ([`import_visits`]), a site's
//! rows whole ([`rebuild`], in one transaction). A timezone change rebuilds
//! in steps instead (`super::timezone`).

use std::collections::HashMap;

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::apply::{apply_all, next_sketch_epoch, roll_some_visits, set_through};
use super::deltas::{Deltas, EventFacts};
use super::imported::{fold_imported, imported_rows};
use super::{VISIT_SETTLED_AFTER, zone_of, zones};
use crate::store::StoreError;
use crate::store::transfer::{self, ImportError, ImportVisit, Imported};

/// Reads stored events into deltas; `sql` selects [`EVENT_COLUMNS`].
/// Returns how many were read and the largest id among them.
pub(super) fn fold_stored_events(
    conn: &Connection,
    zones: &HashMap<i64, Tz>,
    deltas: &mut Deltas,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<(usize, i64), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(args)?;
    let (mut count, mut through) = (0, 0);
    while let Some(r) = rows.next()? {
        let row = StoredEvent::read(r)?;
        let facts = row.facts();
        deltas.add_event(zone_of(zones, facts.site_id), &facts);
        through = through.max(row.id);
        count += 1;
    }
    Ok((count, through))
}

pub(super) const EVENT_COLUMNS: &str = "site_id, ts, visitor_id, name, path, props, first_view, id";

/// One stored event as read with [`EVENT_COLUMNS`].
pub(super) struct StoredEvent {
    site_id: i64,
    ts: i64,
    visitor_id: i64,
    name: String,
    path: String,
    props: Option<String>,
    first_view: bool,
    pub(super) id: i64,
}

impl StoredEvent {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
        Ok(StoredEvent {
            site_id: r.get(0)?,
            ts: r.get(1)?,
            visitor_id: r.get(2)?,
            name: r.get(3)?,
            path: r.get(4)?,
            props: r.get(5)?,
            first_view: r.get(6)?,
            id: r.get(7)?,
        })
    }

    pub(super) fn facts(&self) -> EventFacts<'_> {
        EventFacts {
            site_id: self.site_id,
            ts: self.ts,
            visitor_id: self.visitor_id,
            name: &self.name,
            path: &self.path,
            props: self.props.as_deref(),
            first_view: self.first_view,
        }
    }
}

/// Folds in the events an unclean stop kept from the rollups: those past
/// `rollups_through`. Live events are written within seconds of their
/// timestamp, so only the last minutes before that mark are read. Run at
/// start, before the writer. Returns the events folded in.
pub fn recover(conn: &Connection) -> Result<usize, StoreError> {
    let Some(through) = marked_through(conn)? else {
        // No mark: a database no server of this version has run on; its
        // events were folded by whoever wrote them. [`ensure_mark`] sets one.
        return Ok(0);
    };
    // Event ids are microseconds of the writer's clock. A mark of 0 (set at
    // the first start, before any traffic was folded in) covers nothing.
    let since = if through == 0 {
        0
    } else {
        through / 1_000_000 - 600
    };
    let zones = zones(conn)?;
    let tx = conn.unchecked_transaction()?;
    let mut deltas = Deltas::default();
    let (count, newest) = fold_stored_events(
        &tx,
        &zones,
        &mut deltas,
        &format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE site_id IN (SELECT id FROM sites) AND ts >= ?1 AND id > ?2
               AND NOT EXISTS (SELECT 1 FROM rollup_rebuilds r
                               WHERE r.site_id = events.site_id AND events.id <= r.cutoff)"
        ),
        params![since, through],
    )?;
    if !deltas.is_empty() {
        apply_all(&tx, &deltas.into_rows())?;
    }
    set_through(&tx, newest.max(through))?;
    tx.commit()?;
    Ok(count)
}

fn marked_through(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'rollups_through'",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Sets the recovery mark where there is none, covering the events already
/// stored, so that from the first start on a crash (or a backup taken before
/// the first fold) finds a mark to recover from. Run at start by the server.
pub fn ensure_mark(conn: &Connection) -> Result<(), StoreError> {
    if marked_through(conn)?.is_none() {
        let newest: i64 =
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        set_through(conn, newest)?;
    }
    Ok(())
}

/// Recomputes the rollups of every site from `events` and ended visits, if
/// a migration asked for it. Run at start, before the writer.
pub fn rebuild_if_asked(conn: &Connection, now: i64) -> Result<(), StoreError> {
    let asked: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'rollups_rebuild'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if asked.is_none() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let sites: Vec<i64> = zones(conn)?.into_keys().collect();
    for site in &sites {
        rebuild(conn, *site, now)?;
    }
    conn.execute("DELETE FROM meta WHERE key = 'rollups_rebuild'", [])?;
    // Rows of sites that no longer exist.
    conn.execute("DELETE FROM rollup_rebuilds", [])?;
    // A rebuild rewrites most of a large database through the WAL; folded
    // back now, while nothing reads, reports do not look pages up in a
    // gigabyte of WAL until a checkpoint gets to it.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    tracing::info!(
        sites = sites.len(),
        ms = started.elapsed().as_millis() as u64,
        "rebuilt rollups from raw events"
    );
    Ok(())
}

/// Writes past `visits` of `site_id` with their events (see
/// [`transfer::import_visits`]), then rebuilds the site's rollups.
pub fn import_visits(
    conn: &mut Connection,
    site_id: i64,
    visits: Vec<ImportVisit>,
    now: i64,
) -> Result<Imported, ImportError> {
    let imported = transfer::import_visits(conn, site_id, visits)?;
    rebuild(conn, site_id, now)?;
    Ok(imported)
}

/// Recomputes one site's rollups from its raw events and its ended visits
/// (needed when its timezone changes). Data already past raw-event retention
/// is gone from the raw tables, so it is gone from the rebuilt rollups too.
pub fn rebuild(conn: &Connection, site_id: i64, now: i64) -> Result<(), StoreError> {
    let zones = zones(conn)?;
    let tx = conn.unchecked_transaction()?;
    // Supersedes a timezone change's rebuild in progress.
    tx.execute("DELETE FROM rollup_rebuilds WHERE site_id = ?1", [site_id])?;
    next_sketch_epoch(&tx)?;
    tx.execute("DELETE FROM rollups WHERE site_id = ?1", [site_id])?;
    tx.execute("DELETE FROM rollup_sketches WHERE site_id = ?1", [site_id])?;
    tx.execute(
        "UPDATE visits SET rolled = 0 WHERE site_id = ?1 AND rolled = 1",
        [site_id],
    )?;
    let bounds: (Option<i64>, Option<i64>) = tx.query_row(
        "SELECT MIN(ts), MAX(ts) FROM events WHERE site_id = ?1",
        [site_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut through = 0;
    if let (Some(first), Some(last)) = bounds {
        // A week at a time keeps memory flat however large the site.
        let step = 7 * 86_400;
        let mut from = first;
        while from <= last {
            let mut deltas = Deltas::default();
            let (_, newest) = fold_stored_events(
                &tx,
                &zones,
                &mut deltas,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events
                     WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3"
                ),
                params![site_id, from, from + step],
            )?;
            through = through.max(newest);
            apply_all(&tx, &deltas.into_rows())?;
            from += step;
        }
    }
    while roll_some_visits(&tx, &zones, now - VISIT_SETTLED_AFTER, 10_000)? > 0 {}
    let imported = imported_rows(&tx, site_id)?;
    fold_imported(&tx, site_id, zone_of(&zones, site_id), &imported)?;
    if through > 0 {
        set_through(&tx, through)?;
    }
    tx.commit()?;
    Ok(())
}
