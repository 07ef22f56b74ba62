//! A site's rollups rebuilt in a new timezone, in the background.
//!
//! Rollup buckets are local hours, days, weeks and months, so a timezone
//! change makes every row of the site wrong. Rebuilding them in one
//! transaction would hold the single writer for as long as the site's
//! history takes to read, and ingest with it. So a change is one short writer
//! job, and the rebuild then goes on in steps of bounded work, each its own
//! writer job, with live events committed between them:
//!
//! - The change ([`change_timezone`]) sets the timezone and takes a cutoff:
//!   every event committed or queued so far has an id up to it. Events
//!   above it are folded by the live feed in the new timezone; those up to
//!   it by the rebuild. The feed forgets its pending changes of the site
//!   (folded in the old timezone, from events the rebuild folds again) and
//!   ignores those taken before the change that are still on their way.
//!   The rows the feed can add to from now on (the last hours to month)
//!   are deleted at once, and the sketch epoch moves on, so no cached
//!   sketch of a deleted row passes for a rebuilt one.
//! - Steps then delete the older rows, fold the events up to the cutoff in
//!   time order, add again the visits rolled before the change (visits that
//!   end meanwhile wait, and reports read them from `visits`), then the
//!   imported aggregates. The progress is stored with each step, in
//!   `rollup_rebuilds`, so a restart resumes it.
//!
//! Raw events are kept `raw_events_days`; rollups longer. Rows of days whose
//! raw events retention already deleted cannot be recomputed, so they are
//! kept as they are, cut at the old timezone's boundaries: for each grain,
//! the rows before the old timezone's first boundary at or after the instant
//! raw events are complete from stay, and only events and visits from that
//! boundary on are folded into that grain again. Every event is then in
//! exactly one row of each grain. When the rollups hold nothing older than
//! the raw events, everything is rebuilt.

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::apply::{self, Grains};
use super::deltas::Deltas;
use super::feed::{RollupFeed, Staged};
use super::imported::{self, ImportedRow};
use super::recover::{EVENT_COLUMNS, StoredEvent};
use super::{Dim, Grain};
use crate::report::calendar;
use crate::store::{StoreError, sites};

const PHASE_DELETE: i64 = 0;
const PHASE_EVENTS: i64 = 1;
const PHASE_VISITS: i64 = 2;
const PHASE_IMPORTED: i64 = 3;

/// Work per step: each is a writer transaction of some tens of
/// milliseconds, so events keep being committed between them.
const ROWS_PER_STEP: i64 = 4096;
const EVENTS_PER_STEP: i64 = 10_000;
const VISITS_PER_STEP: i64 = 4096;
const IMPORTED_DAYS_PER_STEP: i64 = 7;

/// Live events are stamped when they arrive: one with an id up to the cutoff
/// is no later than this after the change.
const ARRIVAL_MARGIN: i64 = 3600;

/// Every dimension, in the order the stored progress of the delete phase
/// counts them.
fn dims() -> Vec<Dim> {
    Dim::all().collect()
}

/// How far before the change a bucket the live feed adds to may start: the
/// longest bucket of the grain, and then some for events in flight.
fn feed_reach(grain: Grain) -> i64 {
    match grain {
        Grain::Hour => 2 * 3600,
        Grain::Day => 2 * 86_400,
        Grain::Week => 8 * 86_400,
        Grain::Month => 32 * 86_400,
    }
}

fn bucket_start(tz: Tz, grain: Grain, ts: i64) -> i64 {
    match grain {
        Grain::Hour => calendar::hour_start(tz, ts),
        Grain::Day => calendar::day_start(tz, ts),
        Grain::Week => calendar::week_start(tz, ts),
        Grain::Month => calendar::month_start(tz, ts),
    }
}

/// The first start of a `grain` bucket of `tz` at or after `t`.
fn first_start_from(tz: Tz, grain: Grain, t: i64) -> i64 {
    let start = bucket_start(tz, grain, t);
    if start == t {
        return t;
    }
    // No bucket is shorter than a quarter of an hour.
    let mut probe = t;
    loop {
        probe += 900;
        let next = bucket_start(tz, grain, probe);
        if next > start {
            return next;
        }
    }
}

/// The rows a rebuild keeps as they were: per grain (indexed by the grain's
/// code), those whose bucket starts before this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    before: [i64; 4],
}

impl Kept {
    /// Rows kept when raw events are complete from `raw_from` only, cut in
    /// `old`; `None` keeps nothing.
    pub fn new(old: Tz, raw_from: Option<i64>) -> Kept {
        let mut before = [i64::MIN; 4];
        if let Some(t) = raw_from {
            for grain in Grain::ALL {
                before[grain.code() as usize] = first_start_from(old, grain, t);
            }
        }
        Kept { before }
    }

    /// Rows of `grain` whose bucket starts before this are kept.
    fn before(&self, grain: Grain) -> i64 {
        self.before[grain.code() as usize]
    }

    /// The first instant anything is folded again.
    fn from(&self) -> i64 {
        self.before.iter().copied().min().unwrap_or(i64::MIN)
    }

    /// The grains whose rows an event or visit at `ts` goes into again.
    fn grains_at(&self, ts: i64) -> Grains {
        Grain::ALL
            .into_iter()
            .filter(|g| ts >= self.before(*g))
            .fold(0, |set, g| set | (1 << g.code()))
    }
}

/// The instant from which a site's raw events are complete, if its rollups
/// hold anything older (rows that only retention's deleted events, or
/// imported aggregates, are behind): then those older rows are kept.
/// `raw_from` is the retention cutoff the configuration gives now.
pub fn kept_from(
    conn: &Connection,
    site_id: i64,
    old: Tz,
    raw_from: i64,
) -> Result<Option<i64>, StoreError> {
    // A larger cutoff applied earlier (`raw_events_days` was raised since)
    // is where the events actually stop.
    let trimmed: Option<i64> = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'raw_trimmed_before'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let raw_from = raw_from.max(trimmed.unwrap_or(i64::MIN));
    let first_day = first_start_from(old, Grain::Day, raw_from);
    // Every event and imported day is in a day row: none before the first
    // complete day means nothing older than the raw events.
    let older: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM rollups
                        WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket < ?4)",
        params![site_id, Grain::Day.code(), Dim::Totals.code(), first_day],
        |r| r.get(0),
    )?;
    Ok(older.then_some(raw_from))
}

/// A timezone change, as [`change_timezone`] applies it.
#[derive(Debug, Clone)]
pub struct Change {
    pub site_id: i64,
    pub timezone: String,
    /// Unix seconds.
    pub now: i64,
    /// Raw events before this may have been deleted by retention.
    pub raw_from: i64,
    /// No event committed or queued before the change has a larger id.
    pub cutoff: i64,
}

/// Sets a site's timezone and starts the rebuild of its rollups; a writer
/// job. Returns false when the timezone was already that one.
pub fn change_timezone(
    conn: &Connection,
    feed: &RollupFeed,
    change: &Change,
) -> Result<bool, StoreError> {
    let site_id = change.site_id;
    let current: String = conn
        .query_row("SELECT timezone FROM sites WHERE id = ?1", [site_id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| StoreError::NoSuchSite(site_id.to_string()))?;
    if current == change.timezone {
        return Ok(false);
    }
    start(conn, change, &current, false)?;
    sites::set_timezone(conn, site_id, &change.timezone)?;
    // Last, once nothing here can fail: applied when this commits.
    feed.stage(Staged::Reset {
        site_id,
        tz: calendar::zone(&change.timezone),
        cutoff: change.cutoff,
    });
    Ok(true)
}

/// Rebuilds every site's rollups in the background if a migration asked for
/// it (`meta.rollups_rebuild`): run at start by the server, on the writer's
/// connection before the writer (so before anything listens), once the
/// journal is in `events`. Each site starts a rebuild as if its timezone
/// changed to itself, with the newest event stored as the cutoff: the live
/// feed folds every later event, the steps everything up to it. Rows older
/// than the raw events go too (see `start`'s `whole`). The request
/// is cleared in the same transaction. Returns the sites to rebuild.
///
/// The recovery mark moves to the cutoff too: every event up to it is a
/// rebuild's, so crash recovery (run right after) and a crash before the
/// feed's first pass leave them to the rebuilds.
///
/// A database with nothing to rebuild from or of (a new one: the first
/// migrations ask too) only has the request cleared, by any process; other
/// requests are left to the server (`owner`), which runs the rebuilds.
pub fn start_asked(conn: &Connection, now: i64, owner: bool) -> Result<usize, StoreError> {
    let asked = conn
        .prepare("SELECT 1 FROM meta WHERE key = 'rollups_rebuild'")?
        .exists([])?;
    if !asked {
        return Ok(0);
    }
    let empty: bool = conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM events) AND NOT EXISTS (SELECT 1 FROM visits)
            AND NOT EXISTS (SELECT 1 FROM rollups) AND NOT EXISTS (SELECT 1 FROM imported_rollups)",
        [],
        |r| r.get(0),
    )?;
    if empty {
        conn.execute("DELETE FROM meta WHERE key = 'rollups_rebuild'", [])?;
        return Ok(0);
    }
    if !owner {
        return Ok(0);
    }
    let tx = conn.unchecked_transaction()?;
    // As `EventWriter::last_event_id`: ids are microseconds of the clock at
    // ingest, or above the last, so the clock is above every stored one.
    // The last day's events are read too, so that a clock set back a little
    // since they were written does not leave them above the cutoff. (The
    // largest id of all would read the whole table: two seconds at 10 M
    // events, before the server listens.)
    let newest: i64 = tx.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM events
         WHERE site_id IN (SELECT id FROM sites) AND ts >= ?1",
        [now - 86_400],
        |r| r.get(0),
    )?;
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let cutoff = newest.max(clock);
    let all: Vec<(i64, String)> = tx
        .prepare("SELECT id, timezone FROM sites ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (site_id, timezone) in &all {
        let change = Change {
            site_id: *site_id,
            timezone: timezone.clone(),
            now,
            // Nothing older is kept (`whole`).
            raw_from: i64::MAX,
            cutoff,
        };
        start(&tx, &change, timezone, true)?;
    }
    tx.execute("DELETE FROM meta WHERE key = 'rollups_rebuild'", [])?;
    apply::set_through(&tx, cutoff)?;
    tx.commit()?;
    Ok(all.len())
}

/// Starts (or starts again) the rebuild of a site's rollups in
/// `change.timezone`; the site's timezone is `current` until the caller
/// sets the new one. The feed learns of it from the caller: staged by a
/// writer job, read from `rollup_rebuilds` at start.
///
/// `whole` drops the rows older than the raw events too, as a migration's
/// rebuild must: they are in the format before it (a migration that adds
/// week rows, or a column, cannot fill them in for days whose events are
/// gone), and a report reading them would silently miss what they lack.
fn start(conn: &Connection, change: &Change, current: &str, whole: bool) -> Result<(), StoreError> {
    let site_id = change.site_id;
    // A change during a rebuild keeps the rows the first one kept: they are
    // still cut in the timezone before it.
    let running: Option<(String, Option<i64>)> = conn
        .query_row(
            "SELECT old_timezone, kept_before FROM rollup_rebuilds WHERE site_id = ?1",
            [site_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (old, kept_before) = match running {
        Some(running) => running,
        None if whole => (current.to_string(), None),
        None => {
            let kept = kept_from(conn, site_id, calendar::zone(current), change.raw_from)?;
            (current.to_string(), kept)
        }
    };
    let kept_before = if whole { None } else { kept_before };
    let kept = Kept::new(calendar::zone(&old), kept_before);
    // The rows the feed adds to from now on go at once; older ones in steps.
    let dims = dims();
    for grain in Grain::ALL {
        let from = kept.before(grain).max(change.now - feed_reach(grain));
        for &dim in &dims {
            delete_rows(conn, site_id, (grain, dim), (from, i64::MAX), -1)?;
        }
    }
    apply::next_sketch_epoch(conn)?;
    conn.execute(
        "INSERT INTO rollup_rebuilds (site_id, old_timezone, kept_before, cutoff, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (site_id) DO UPDATE SET cutoff = excluded.cutoff,
            kept_before = excluded.kept_before,
            changed_at = excluded.changed_at, phase = 0, next_ts = 0, next_id = 0",
        params![site_id, old, kept_before, change.cutoff, change.now],
    )?;
    Ok(())
}

/// Deletes up to `limit` (-1: all) rows of one grain and dimension of a
/// site whose bucket is in `[from, to)`, with their sketches. Returns the
/// rows deleted.
fn delete_rows(
    conn: &Connection,
    site_id: i64,
    (grain, dim): (Grain, Dim),
    (from, to): (i64, i64),
    limit: i64,
) -> Result<i64, StoreError> {
    if to <= from {
        return Ok(0);
    }
    let (grain, dim) = (grain.code(), dim.code());
    let keys: Vec<(i64, String)> = conn
        .prepare_cached(
            "DELETE FROM rollups
             WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket >= ?4 AND bucket < ?5
               AND (bucket, value) IN (
                SELECT bucket, value FROM rollups
                WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket >= ?4 AND bucket < ?5
                LIMIT ?6)
             RETURNING bucket, value",
        )?
        .query_map(params![site_id, grain, dim, from, to, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    // A sketch row exists only beside its rollup row: found by its key.
    let mut sketch = conn.prepare_cached(
        "DELETE FROM rollup_sketches
         WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND value = ?4 AND bucket = ?5",
    )?;
    for (bucket, value) in &keys {
        sketch.execute(params![site_id, grain, dim, value, bucket])?;
    }
    Ok(keys.len() as i64)
}

/// A rebuild in progress, as stored.
struct Rebuild {
    site_id: i64,
    old: Tz,
    kept: Kept,
    new: Tz,
    cutoff: i64,
    changed_at: i64,
    phase: i64,
    next_ts: i64,
    next_id: i64,
}

/// The sites being rebuilt, with their cutoffs (read at start).
pub fn in_progress(conn: &Connection) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut stmt = conn.prepare("SELECT site_id, cutoff FROM rollup_rebuilds")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether `site_id` is being rebuilt.
pub fn in_progress_for(conn: &Connection, site_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM rollup_rebuilds WHERE site_id = ?1")?
        .exists([site_id])?)
}

/// Runs one step of the oldest rebuild in progress; a writer job. Returns
/// false when there was none.
pub fn step(conn: &Connection, feed: &RollupFeed) -> Result<bool, StoreError> {
    let row = conn
        .query_row(
            "SELECT r.site_id, r.old_timezone, r.kept_before, s.timezone, r.cutoff,
                r.changed_at, r.phase, r.next_ts, r.next_id
             FROM rollup_rebuilds r JOIN sites s ON s.id = r.site_id
             ORDER BY r.changed_at LIMIT 1",
            [],
            |r| {
                let old = calendar::zone(&r.get::<_, String>(1)?);
                Ok(Rebuild {
                    site_id: r.get(0)?,
                    old,
                    kept: Kept::new(old, r.get(2)?),
                    new: calendar::zone(&r.get::<_, String>(3)?),
                    cutoff: r.get(4)?,
                    changed_at: r.get(5)?,
                    phase: r.get(6)?,
                    next_ts: r.get(7)?,
                    next_id: r.get(8)?,
                })
            },
        )
        .optional()?;
    // Rebuilds of sites removed meanwhile went with them.
    let stored: Vec<i64> = in_progress(conn)?.into_iter().map(|(s, _)| s).collect();
    for site_id in feed.rebuilding() {
        if !stored.contains(&site_id) {
            feed.stage(Staged::Rebuilt { site_id });
        }
    }
    let Some(rb) = row else {
        return Ok(false);
    };
    let (phase, next_ts, next_id) = match rb.phase {
        PHASE_DELETE => delete_step(conn, &rb)?,
        PHASE_EVENTS => events_step(conn, &rb)?,
        PHASE_VISITS => visits_step(conn, &rb)?,
        _ => imported_step(conn, &rb)?,
    };
    if phase > PHASE_IMPORTED {
        conn.execute(
            "DELETE FROM rollup_rebuilds WHERE site_id = ?1",
            [rb.site_id],
        )?;
        feed.stage(Staged::Rebuilt {
            site_id: rb.site_id,
        });
        tracing::info!(site_id = rb.site_id, "rebuilt the site's rollups");
    } else {
        conn.execute(
            "UPDATE rollup_rebuilds SET phase = ?2, next_ts = ?3, next_id = ?4 WHERE site_id = ?1",
            params![rb.site_id, phase, next_ts, next_id],
        )?;
    }
    Ok(true)
}

/// Where a phase starts: before the first instant folded again.
fn start_of(rb: &Rebuild, phase: i64) -> (i64, i64, i64) {
    (phase, rb.kept.from().saturating_sub(1), i64::MAX)
}

/// Deletes old rows, (grain, dimension) after (grain, dimension) from
/// `next_ts`; the newest were deleted by the change.
fn delete_step(conn: &Connection, rb: &Rebuild) -> Result<(i64, i64, i64), StoreError> {
    let dims = dims();
    let pairs: Vec<(Grain, Dim)> = Grain::ALL
        .into_iter()
        .flat_map(|g| dims.iter().map(move |d| (g, *d)))
        .collect();
    let mut budget = ROWS_PER_STEP;
    for (i, &(grain, dim)) in pairs.iter().enumerate().skip(rb.next_ts.max(0) as usize) {
        let range = (rb.kept.before(grain), rb.changed_at - feed_reach(grain));
        budget -= delete_rows(conn, rb.site_id, (grain, dim), range, budget)?;
        if budget <= 0 {
            return Ok((PHASE_DELETE, i as i64, 0));
        }
    }
    Ok(start_of(rb, PHASE_EVENTS))
}

/// Changes to rollups, apart by the grains they go into.
#[derive(Default)]
struct ByGrains(Vec<(Grains, Deltas)>);

impl ByGrains {
    fn get(&mut self, grains: Grains) -> &mut Deltas {
        let at = match self.0.iter().position(|(g, _)| *g == grains) {
            Some(at) => at,
            None => {
                self.0.push((grains, Deltas::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    fn apply(self, conn: &Connection) -> Result<(), StoreError> {
        for (grains, deltas) in self.0 {
            if grains != 0 {
                apply::apply_grains(conn, &deltas.into_rows(), grains)?;
            }
        }
        Ok(())
    }
}

/// Folds the next events up to the cutoff, in (time, id) order.
fn events_step(conn: &Connection, rb: &Rebuild) -> Result<(i64, i64, i64), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE site_id = ?1 AND (ts, id) > (?2, ?3) AND ts <= ?4 AND id <= ?5
         ORDER BY ts, id LIMIT ?6"
    ))?;
    let mut rows = stmt.query(params![
        rb.site_id,
        rb.next_ts,
        rb.next_id,
        rb.changed_at + ARRIVAL_MARGIN,
        rb.cutoff,
        EVENTS_PER_STEP
    ])?;
    let mut changes = ByGrains::default();
    let (mut count, mut last) = (0, (rb.next_ts, rb.next_id));
    while let Some(r) = rows.next()? {
        let row = StoredEvent::read(r)?;
        let facts = row.facts();
        changes
            .get(rb.kept.grains_at(facts.ts))
            .add_event(rb.new, &facts);
        last = (facts.ts, row.id);
        count += 1;
    }
    changes.apply(conn)?;
    Ok(if count < EVENTS_PER_STEP {
        start_of(rb, PHASE_VISITS)
    } else {
        (PHASE_EVENTS, last.0, last.1)
    })
}

/// Adds again the next visits rolled before the change, in (start, id)
/// order. (Visits that end during the rebuild wait for it to finish.)
fn visits_step(conn: &Connection, rb: &Rebuild) -> Result<(i64, i64, i64), StoreError> {
    let visits = sites::visits_where(
        conn,
        "site_id = ?1 AND rolled = 1 AND (started_at, id) > (?2, ?3)
         ORDER BY started_at, id LIMIT ?4",
        params![rb.site_id, rb.next_ts, rb.next_id, VISITS_PER_STEP],
    )?;
    let mut changes = ByGrains::default();
    for v in &visits {
        changes
            .get(rb.kept.grains_at(v.started_at))
            .add_visit(rb.new, v);
    }
    changes.apply(conn)?;
    Ok(match visits.last() {
        Some(v) if visits.len() as i64 == VISITS_PER_STEP => (PHASE_VISITS, v.started_at, v.id),
        _ => (PHASE_IMPORTED, i64::MIN, 0),
    })
}

/// Adds again the imported aggregates of the next days that have some.
/// `next_ts` is a day number (days from the common era).
fn imported_step(conn: &Connection, rb: &Rebuild) -> Result<(i64, i64, i64), StoreError> {
    let day = |n: i64| NaiveDate::from_num_days_from_ce_opt(n.clamp(1, 3_000_000) as i32);
    let from = day(rb.next_ts).unwrap_or(NaiveDate::MIN).to_string();
    let first: Option<String> = conn.query_row(
        "SELECT MIN(day) FROM imported_rollups WHERE site_id = ?1 AND day >= ?2",
        params![rb.site_id, from],
        |r| r.get(0),
    )?;
    let Some(first) = first.and_then(|d| d.parse::<NaiveDate>().ok()) else {
        return Ok((PHASE_IMPORTED + 1, 0, 0));
    };
    let until = i64::from(first.num_days_from_ce()) + IMPORTED_DAYS_PER_STEP;
    let end = day(until).unwrap_or(NaiveDate::MAX).to_string();
    let rows: Vec<ImportedRow> =
        imported::imported_rows_between(conn, rb.site_id, (&first.to_string(), &end))?;
    let mut changes = ByGrains::default();
    for r in &rows {
        // Where the kept rows have this day: by its midnight in the old zone.
        let grains =
            rb.kept.grains_at(calendar::midnight(rb.old, r.day)) & !(1 << Grain::Hour.code());
        imported::add_imported(changes.get(grains), rb.site_id, rb.new, r);
    }
    changes.apply(conn)?;
    Ok((PHASE_IMPORTED, until, 0))
}

#[cfg(test)]
mod tests;
