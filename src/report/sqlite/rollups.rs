//! The read model: counts per site, local hour/day/month and dimension value,
//! kept up to date beside the raw tables so reports read a few rows per day.
//!
//! Two feeds keep it current, both applied by the single writer:
//! - events: after each commit the writer hands the committed events
//!   to a [`RollupFeed`]; once a second the follower folds them into
//!   [`Deltas`] and adds them to the rollups, then records the newest event
//!   id folded in (`rollups_through`). After an unclean stop the events past
//!   that id are folded in at start ([`recover`]).
//! - visits: a visit still changes while it is open, so it is added once it
//!   has ended ([`roll_ended_visits`]), in the same transaction that marks
//!   its row `rolled`. Reports read open visits from the `visits` table.
//!
//! So at any instant: rollups = events up to `rollups_through` + rolled
//! visits, and nothing is counted twice. [`rebuild`] recomputes a site's
//! rollups from the raw tables in one transaction (at start, or by the
//! CLI); after a timezone change the server rebuilds them in the background
//! instead (`super::rebuild`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::sketch::VisitorSketch;
use crate::report::calendar;
use crate::report::model::{NOT_AN_ACTION, VisitColumn};
use crate::store::{EventWriter, NewEvent, StoreError, VisitRecord, WriteError};
use crate::sync::Lock;

pub const GRAIN_HOUR: i64 = 0;
pub const GRAIN_DAY: i64 = 1;
pub const GRAIN_MONTH: i64 = 2;
/// Local weeks from Monday: a 30-day report reads four weeks and a few days
/// rather than thirty days.
pub const GRAIN_WEEK: i64 = 3;

/// The grains every dimension has rows of (hours keep totals only).
const DAY_AND_LONGER: [i64; 3] = [GRAIN_DAY, GRAIN_WEEK, GRAIN_MONTH];

pub const DIM_TOTALS: i64 = 0;
pub const DIM_PAGE: i64 = 1;
pub const DIM_NAME: i64 = 2;
pub const DIM_PROP: i64 = 3;
const DIM_VISIT_FIRST: i64 = 10;

/// Separates a property's key from its value in a `DIM_PROP` row. Control
/// characters are refused in keys at ingest, so the split is unambiguous.
pub const PROP_SEP: char = '\u{1f}';

/// A visit is added to the rollups this long after its last event: the
/// 30-minute visit timeout plus a margin for events still in flight.
pub const VISIT_SETTLED_AFTER: i64 = 30 * 60 + 120;

/// The dimension code of a visit attribute.
pub fn visit_dim(column: VisitColumn) -> i64 {
    DIM_VISIT_FIRST + column.index() as i64
}

/// The rollup value of a property.
pub fn prop_value(key: &str, value: &str) -> String {
    format!("{key}{PROP_SEP}{value}")
}

/// Committed events on their way to the rollups. The writer folds each
/// commit's events into rollup changes as it hands them over, so a second of
/// traffic waits in memory as a few thousand rows, not as every event; the
/// sites whose recent traffic is held in memory also get their events
/// whole.
#[derive(Default)]
pub struct RollupFeed {
    state: Mutex<FeedState>,
    /// Events handed over, and events whose rollup changes are committed.
    handed: AtomicU64,
    folded: AtomicU64,
}

#[derive(Default)]
struct FeedState {
    fed: FedEvents,
    /// Sites whose events are also kept whole (see [`FedEvents::events`]).
    keep: HashSet<i64>,
    /// Site timezones, set at start and changed by a timezone change as it
    /// commits; a site missing here is looked up when its first event
    /// arrives.
    zones: HashMap<i64, Tz>,
    /// Numbers each [`FedEvents`] taken, so changes taken before a site's
    /// rollups were reset can be told apart (see `resets`).
    taken: u64,
    /// Sites whose rollups were reset for a rebuild, with the `taken` count
    /// at that moment: changes of theirs taken before are dropped.
    resets: HashMap<i64, u64>,
    /// Sites being rebuilt, with the cutoff: their events up to it are the
    /// rebuild's to fold, not the feed's.
    rebuilding: HashMap<i64, i64>,
    /// Changes made by writer jobs of the open transaction, applied once it
    /// commits (and dropped if it fails), before its events are handed over.
    staged: Vec<Staged>,
}

/// A change to the feed that takes effect when its transaction commits.
#[derive(Debug, Clone)]
pub(super) enum Staged {
    /// A site's rollups were reset for a rebuild in zone `tz`; events up to
    /// `cutoff` are the rebuild's.
    Reset { site_id: i64, tz: Tz, cutoff: i64 },
    /// A site's rebuild is complete.
    Rebuilt { site_id: i64 },
}

/// The events handed over since the last [`RollupFeed::take`].
#[derive(Default)]
pub struct FedEvents {
    deltas: Deltas,
    count: usize,
    /// The largest event id among them (0 when none arrived yet).
    through: i64,
    /// The events of the kept sites, whole.
    pub events: FedBatch,
    /// Which take this is (see `FeedState::resets`).
    taken: u64,
}

impl RollupFeed {
    /// Called by the writer after each commit, in commit order; `conn`
    /// answers the timezone of a site not seen yet.
    pub(super) fn push(&self, conn: &Connection, events: Vec<NewEvent>, through: i64) {
        let n = events.len();
        let mut s = self.state.locked();
        let s = &mut *s;
        let mut kept = Vec::new();
        for e in events {
            if s.rebuilding.get(&e.site_id).is_some_and(|c| e.id <= *c) {
                // Folded by the site's rebuild, in the new timezone.
                if s.keep.contains(&e.site_id) {
                    kept.push(FedEvent::from(e));
                }
                continue;
            }
            let tz = match s.zones.get(&e.site_id) {
                Some(tz) => *tz,
                None => {
                    let tz = zone_of_site(conn, e.site_id);
                    s.zones.insert(e.site_id, tz);
                    tz
                }
            };
            s.fed.deltas.add_event(tz, &EventFacts::from(&e));
            if s.keep.contains(&e.site_id) {
                kept.push(FedEvent::from(e));
            }
        }
        if !kept.is_empty() {
            s.fed.events.0.push(kept);
        }
        s.fed.count += n;
        s.fed.through = s.fed.through.max(through);
        self.handed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Events handed over since the last call.
    pub fn take(&self) -> FedEvents {
        let mut s = self.state.locked();
        let through = s.fed.through;
        let mut fed = std::mem::take(&mut s.fed);
        fed.taken = s.taken;
        s.taken += 1;
        // The mark stays where it was when nothing new arrives.
        s.fed.through = through;
        fed
    }

    /// Sets the site timezones (at start).
    pub fn set_zones(&self, zones: HashMap<i64, Tz>) {
        self.state.locked().zones = zones;
    }

    /// Records a change to apply when the writer's open transaction commits.
    pub(super) fn stage(&self, change: Staged) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .staged
            .push(change);
    }

    /// Applies the staged changes: called by the writer right after a
    /// commit, before the commit's events are handed over.
    pub(super) fn commit_staged(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.staged.is_empty() {
            return;
        }
        for change in std::mem::take(&mut s.staged) {
            match change {
                Staged::Reset {
                    site_id,
                    tz,
                    cutoff,
                } => {
                    // Changes waiting here were folded in the old timezone,
                    // from events the rebuild folds again.
                    s.fed.deltas.forget_site(site_id);
                    s.zones.insert(site_id, tz);
                    s.rebuilding.insert(site_id, cutoff);
                    let taken = s.taken;
                    s.resets.insert(site_id, taken);
                }
                Staged::Rebuilt { site_id } => {
                    s.rebuilding.remove(&site_id);
                }
            }
        }
    }

    /// Drops the staged changes: their transaction failed.
    pub(super) fn drop_staged(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .staged
            .clear();
    }

    /// Whether changes of `site_id` in the take numbered `taken` predate a
    /// reset of its rollups (committed, or staged in the open transaction).
    fn outdated(&self, site_id: i64, taken: u64) -> bool {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.resets.get(&site_id).is_some_and(|t| taken < *t)
            || s.staged
                .iter()
                .any(|c| matches!(c, Staged::Reset { site_id: id, .. } if *id == site_id))
    }

    /// Sites whose rollups are being rebuilt (after a timezone change).
    pub fn rebuilding(&self) -> Vec<i64> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sites: Vec<i64> = s.rebuilding.keys().copied().collect();
        sites.sort_unstable();
        sites
    }

    /// Resumes the rebuilds recorded in the database (at start): `(site,
    /// cutoff)`.
    pub fn resume_rebuilds(&self, rebuilds: Vec<(i64, i64)>) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rebuilding = rebuilds.into_iter().collect();
    }

    /// Keeps the events of `site_id` whole from now on, or stops.
    pub fn keep_events_of(&self, site_id: i64, keep: bool) {
        let mut s = self.state.locked();
        if keep {
            s.keep.insert(site_id);
        } else {
            s.keep.remove(&site_id);
        }
    }

    /// Committed events whose rollup changes are not committed yet.
    pub fn pending(&self) -> u64 {
        self.handed
            .load(Ordering::Relaxed)
            .saturating_sub(self.folded.load(Ordering::Relaxed))
    }
}

/// A site's timezone, UTC for a site that is gone.
fn zone_of_site(conn: &Connection, site_id: i64) -> Tz {
    conn.prepare_cached("SELECT timezone FROM sites WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([site_id], |r| r.get::<_, String>(0))
                .optional()
        })
        .ok()
        .flatten()
        .map_or(Tz::UTC, |name| calendar::zone(&name))
}

/// Events taken from the feed, as the writer committed them: a list per
/// commit, so a second of traffic is never one large buffer that doubles
/// (and is copied) as it grows.
#[derive(Default)]
pub struct FedBatch(Vec<Vec<FedEvent>>);

impl FedBatch {
    pub fn iter(&self) -> impl Iterator<Item = &FedEvent> {
        self.0.iter().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }
}

/// The part of a committed event the read models need: a second of traffic
/// waits in memory in this form, so the rest is dropped at once.
#[derive(Debug, Clone)]
pub struct FedEvent {
    pub id: i64,
    pub site_id: i64,
    pub ts: i64,
    pub visitor_id: i64,
    pub visit_id: i64,
    /// The name, or `None` for a pageview.
    pub name: Option<String>,
    pub path: String,
    pub props: Option<String>,
    pub first_view: bool,
}

impl From<NewEvent> for FedEvent {
    fn from(e: NewEvent) -> Self {
        let pageview = e.name == "pageview";
        FedEvent {
            id: e.id,
            site_id: e.site_id,
            ts: e.ts,
            visitor_id: e.visitor_id,
            visit_id: e.visit_id,
            name: (!pageview).then_some(e.name),
            path: e.path,
            props: e.props,
            first_view: e.first_view,
        }
    }
}

/// What one event contributes; borrowed from a [`FedEvent`] or a stored row.
pub(super) struct EventFacts<'a> {
    pub(super) site_id: i64,
    pub(super) ts: i64,
    pub(super) visitor_id: i64,
    pub(super) name: &'a str,
    pub(super) path: &'a str,
    pub(super) props: Option<&'a str>,
    pub(super) first_view: bool,
}

impl<'a> From<&'a NewEvent> for EventFacts<'a> {
    fn from(e: &'a NewEvent) -> Self {
        EventFacts {
            site_id: e.site_id,
            ts: e.ts,
            visitor_id: e.visitor_id,
            name: &e.name,
            path: &e.path,
            props: e.props.as_deref(),
            first_view: e.first_view,
        }
    }
}

impl<'a> From<&'a FedEvent> for EventFacts<'a> {
    fn from(e: &'a FedEvent) -> Self {
        EventFacts {
            site_id: e.site_id,
            ts: e.ts,
            visitor_id: e.visitor_id,
            name: e.name.as_deref().unwrap_or("pageview"),
            path: &e.path,
            props: e.props.as_deref(),
            first_view: e.first_view,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Delta {
    pub(super) visits: i64,
    pub(super) pageviews: i64,
    pub(super) events: i64,
    pub(super) bounces: i64,
    pub(super) duration: i64,
    /// Visitor ids seen, duplicates included.
    pub(super) visitors: Vec<i64>,
}

/// Where one instant falls: its local hour, and its day, week and month.
#[derive(Clone, Copy)]
pub(super) struct Buckets {
    hour: i64,
    longer: [i64; 3],
}

impl Buckets {
    /// The day and longer grains.
    pub(super) fn longer(self) -> Span {
        Span {
            hour: None,
            longer: self.longer,
        }
    }

    /// Every grain.
    fn all(self) -> Span {
        Span {
            hour: Some(self.hour),
            longer: self.longer,
        }
    }
}

/// The buckets one change lands in: its day, week and month, and its hour
/// for the rows that have hours.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Span {
    hour: Option<i64>,
    longer: [i64; 3],
}

impl Span {
    /// (grain, bucket) of each.
    fn grains(self) -> impl Iterator<Item = (i64, i64)> {
        self.hour
            .map(|h| (GRAIN_HOUR, h))
            .into_iter()
            .chain(DAY_AND_LONGER.into_iter().zip(self.longer))
    }
}

/// (site, grain, dim, bucket): a row's key without its value.
type Slot = (i64, i64, i64, i64);

/// (site, dim, span): the rows of every grain that one change lands in,
/// without their value. Changes are gathered per group rather than per row,
/// since every grain of a group gets the same change: a third of the
/// lookups, and one visitor list for all the grains.
pub(super) type Group = (i64, i64, Span);

/// Changes to rollup rows, gathered in memory and then applied at once.
#[derive(Default)]
pub struct Deltas {
    /// hashbrown's map: `entry_ref` finds a value by `&str` in one lookup and
    /// allocates its key only when new (std's map needs two lookups or an
    /// allocation per call), and its hasher is several times cheaper than
    /// std's SipHash; this runs for every event several times.
    rows: hashbrown::HashMap<Group, hashbrown::HashMap<String, Delta>>,
    /// (site, minute) → starts of its hour, day, week and month.
    buckets: hashbrown::HashMap<(i64, i64), Buckets>,
}

impl Deltas {
    /// Drops the changes of `site_id`, and the buckets it cached (its
    /// timezone changed).
    fn forget_site(&mut self, site_id: i64) {
        self.rows.retain(|(site, _, _), _| *site != site_id);
        self.buckets.retain(|(site, _), _| *site != site_id);
    }

    pub(super) fn delta(&mut self, group: Group, value: &str) -> &mut Delta {
        self.rows
            .entry(group)
            .or_default()
            .entry_ref(value)
            .or_default()
    }

    pub(super) fn buckets_of(&mut self, tz: Tz, site_id: i64, ts: i64) -> Buckets {
        // DST changes fall on whole minutes, so a minute has one of each.
        *self
            .buckets
            .entry((site_id, ts.div_euclid(60)))
            .or_insert_with(|| Buckets {
                hour: calendar::hour_start(tz, ts),
                longer: [
                    calendar::day_start(tz, ts),
                    calendar::week_start(tz, ts),
                    calendar::month_start(tz, ts),
                ],
            })
    }

    pub(super) fn add_event(&mut self, tz: Tz, e: &EventFacts<'_>) {
        if e.name == NOT_AN_ACTION {
            return;
        }
        let b = self.buckets_of(tz, e.site_id, e.ts);
        let is_pageview = e.name == "pageview";
        let (pv, ev) = (i64::from(is_pageview), i64::from(!is_pageview));
        let count = |d: &mut Delta| {
            d.pageviews += pv;
            d.events += ev;
            d.visitors.push(e.visitor_id);
        };
        count(self.delta((e.site_id, DIM_TOTALS, b.all()), ""));
        let props: Vec<(String, String)> = e
            .props
            .and_then(|p| {
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p).ok()
            })
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| prop_value(&k, v)).map(|pv| (k, pv)))
                    .collect()
            })
            .unwrap_or_default();
        let (dim, value) = if is_pageview {
            (DIM_PAGE, e.path)
        } else {
            (DIM_NAME, e.name)
        };
        let d = self.delta((e.site_id, dim, b.longer()), value);
        count(d);
        d.visits += i64::from(e.first_view);
        for (_, value) in &props {
            count(self.delta((e.site_id, DIM_PROP, b.longer()), value));
        }
    }

    /// Adds an ended visit, by the hour, day and month it started in.
    pub(super) fn add_visit(&mut self, tz: Tz, v: &VisitRecord) {
        let b = self.buckets_of(tz, v.site_id, v.started_at);
        let (bounce, duration) = (i64::from(v.is_bounce), v.last_seen_at - v.started_at);
        let d = self.delta((v.site_id, DIM_TOTALS, b.all()), "");
        d.visits += 1;
        d.bounces += bounce;
        d.duration += duration;
        for column in VisitColumn::ALL {
            let value = column.of(v).unwrap_or("");
            let d = self.delta((v.site_id, visit_dim(column), b.longer()), value);
            d.visits += 1;
            d.pageviews += v.pageviews;
            d.events += v.events;
            d.bounces += bounce;
            d.duration += duration;
            d.visitors.push(v.visitor_id);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The changes as a flat list, to apply in chunks.
    pub(super) fn into_rows(self) -> Vec<(Group, String, Delta)> {
        self.rows
            .into_iter()
            .flat_map(|(group, values)| values.into_iter().map(move |(v, d)| (group, v, d)))
            .collect()
    }
}

/// Adds one row's changes. The sketch is read and rewritten, and the row's
/// visitors recounted, only when the change has visitors.
fn apply_row(
    conn: &Connection,
    slot: Slot,
    value: &str,
    d: &Delta,
    epoch: i64,
) -> Result<(), StoreError> {
    let (site_id, grain, dim, bucket) = slot;
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

fn apply_all(conn: &Connection, rows: &[(Group, String, Delta)]) -> Result<(), StoreError> {
    apply_grains(conn, rows, ALL_GRAINS)
}

/// A set of grains, one bit per grain constant.
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
            if grains & (1 << grain) != 0 {
                apply_row(conn, (*site_id, grain, *dim, bucket), value, d, epoch)?;
            }
        }
    }
    Ok(())
}

fn set_through(conn: &Connection, through: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('rollups_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
    )?
    .execute([through])?;
    Ok(())
}

/// Numbers of one local day and dimension value imported from another
/// tool's aggregates (Plausible's export). They exist only as rollups; the
/// `imported_rollups` table keeps them so a rebuild adds them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedRow {
    pub day: chrono::NaiveDate,
    pub dim: i64,
    pub value: String,
    pub visitors: i64,
    pub visits: i64,
    pub pageviews: i64,
    pub events: i64,
    pub bounces: i64,
    pub duration: i64,
}

/// A made-up visitor id for the `i`-th visitor of an imported row: distinct
/// per day and value, so visitors over several days add up, as they do in
/// the tool the numbers came from (it cannot tell either).
fn imported_visitor(site_id: i64, r: &ImportedRow, i: i64) -> i64 {
    let mut h = blake3::Hasher::new();
    h.update(&site_id.to_le_bytes());
    h.update(r.day.to_string().as_bytes());
    h.update(&r.dim.to_le_bytes());
    h.update(r.value.as_bytes());
    h.update(&i.to_le_bytes());
    let hash = h.finalize();
    i64::from_le_bytes(std::array::from_fn(|i| hash.as_bytes()[i]))
}

/// Adds imported rows to the day, week and month rollups of `site_id`.
/// (Hours are left out: the imported numbers have none.)
pub fn fold_imported(
    conn: &Connection,
    site_id: i64,
    tz: Tz,
    rows: &[ImportedRow],
) -> Result<(), StoreError> {
    let mut deltas = Deltas::default();
    for r in rows {
        add_imported(&mut deltas, site_id, tz, r);
    }
    apply_all(conn, &deltas.into_rows())
}

/// Adds one imported row to `deltas`, on its local day in `tz`.
pub(super) fn add_imported(deltas: &mut Deltas, site_id: i64, tz: Tz, r: &ImportedRow) {
    let b = deltas.buckets_of(tz, site_id, calendar::midnight(tz, r.day));
    // A sketch is versioned by its row's counts; a row without any
    // keeps no visitors either.
    let counted = r.visits + r.pageviews + r.events > 0;
    let ids: Vec<i64> = if counted {
        (0..r.visitors.max(0))
            .map(|i| imported_visitor(site_id, r, i))
            .collect()
    } else {
        Vec::new()
    };
    let d = deltas.delta((site_id, r.dim, b.longer()), &r.value);
    d.visits += r.visits;
    d.pageviews += r.pageviews;
    d.events += r.events;
    d.bounces += r.bounces;
    d.duration += r.duration;
    d.visitors.extend_from_slice(&ids);
}

/// The imported rows of a site, as stored.
pub fn imported_rows(conn: &Connection, site_id: i64) -> Result<Vec<ImportedRow>, StoreError> {
    imported_rows_between(conn, site_id, ("", "9999-99-99"))
}

/// The imported rows of a site's days in `[from, to)` (`YYYY-MM-DD`).
pub(super) fn imported_rows_between(
    conn: &Connection,
    site_id: i64,
    (from, to): (&str, &str),
) -> Result<Vec<ImportedRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT day, dim, value, visitors, visits, pageviews, events, bounces, duration
         FROM imported_rollups WHERE site_id = ?1 AND day >= ?2 AND day < ?3",
    )?;
    let rows = stmt.query_map(params![site_id, from, to], |r| {
        let day: String = r.get(0)?;
        Ok(ImportedRow {
            day: day.parse().unwrap_or_default(),
            dim: r.get(1)?,
            value: r.get(2)?,
            visitors: r.get(3)?,
            visits: r.get(4)?,
            pageviews: r.get(5)?,
            events: r.get(6)?,
            bounces: r.get(7)?,
            duration: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every site's timezone.
pub fn zones(conn: &Connection) -> Result<HashMap<i64, Tz>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, timezone FROM sites")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, calendar::zone(&r.get::<_, String>(1)?)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn zone_of(zones: &HashMap<i64, Tz>, site_id: i64) -> Tz {
    zones.get(&site_id).copied().unwrap_or(Tz::UTC)
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
                // taken gets its events from the rebuild instead.
                let mut sites: Vec<i64> = chunk.iter().map(|((site, _, _), _, _)| *site).collect();
                sites.sort_unstable();
                sites.dedup();
                if sites.iter().any(|site| feed.outdated(*site, taken)) {
                    let current: Vec<_> = chunk
                        .iter()
                        .filter(|((site, _, _), _, _)| !feed.outdated(*site, taken))
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
/// meanwhile): its rebuild adds the visits rolled before it began.
fn roll_some_visits(
    conn: &Connection,
    zones: &HashMap<i64, Tz>,
    ended_before: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    let visits = crate::store::sites::visits_where(
        conn,
        "rolled = 0 AND last_seen_at < ?1
           AND site_id NOT IN (SELECT site_id FROM rollup_rebuilds) LIMIT ?2",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prop_rows_split_on_the_separator() {
        let v = prop_value("plan", "pro");
        assert_eq!(v.split_once(PROP_SEP), Some(("plan", "pro")));
        assert_eq!(visit_dim(VisitColumn::EntryPage), DIM_VISIT_FIRST);
    }
}
