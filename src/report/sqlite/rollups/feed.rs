//! [`RollupFeed`]: committed events on their way to the rollups.
//!
//! The writer hands each commit's events over as it commits; the feed folds
//! them into [`Deltas`] at once (in the site's timezone), so a second of
//! traffic waits in memory as a few thousand rows, and keeps the events of
//! the sites whose recent traffic is in memory whole ([`FedBatch`]). Once a
//! second the follower takes what arrived ([`FedEvents`]) and commits it
//! (`super::apply::flush_events`). A timezone change reaches the feed as
//! its transaction commits ([`Staged`]): the site's pending changes, folded
//! in the old timezone, are dropped, and its events up to the change's
//! cutoff are left to the rebuild.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension};

use super::deltas::{Deltas, EventFacts};
use crate::report::calendar;
use crate::store::NewEvent;
use crate::sync::Lock;

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
    pub(super) folded: AtomicU64,
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
    pub(super) deltas: Deltas,
    pub(super) count: usize,
    /// The largest event id among them (0 when none arrived yet).
    pub(super) through: i64,
    /// The events of the kept sites, whole.
    pub events: FedBatch,
    /// Which take this is (see `FeedState::resets`).
    pub(super) taken: u64,
}

impl RollupFeed {
    /// Called by the writer after each commit, in commit order; `conn`
    /// answers the timezone of a site not seen yet.
    pub(in crate::report::sqlite) fn push(
        &self,
        conn: &Connection,
        events: Vec<NewEvent>,
        through: i64,
    ) {
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
    pub(in crate::report::sqlite) fn commit_staged(&self) {
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
    pub(in crate::report::sqlite) fn drop_staged(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .staged
            .clear();
    }

    /// Whether changes of `site_id` in the take numbered `taken` predate a
    /// reset of its rollups (committed, or staged in the open transaction).
    pub(super) fn outdated(&self, site_id: i64, taken: u64) -> bool {
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

    /// Forgets a removed site: its pending changes, timezone and rebuild.
    /// (Changes taken already are dropped by the flush, which adds rows of
    /// existing sites only.)
    pub fn forget_site(&self, site_id: i64) {
        let mut s = self.state.locked();
        s.fed.deltas.forget_site(site_id);
        s.zones.remove(&site_id);
        s.keep.remove(&site_id);
        s.rebuilding.remove(&site_id);
        s.resets.remove(&site_id);
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
