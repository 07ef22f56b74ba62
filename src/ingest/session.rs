//! Visits (sessions): which visit an event belongs to, and the visit's running
//! totals.
//!
//! A visit ends after 30 minutes without events from its visitor. The open
//! visits live in memory, sharded by visitor to keep lock contention low, and
//! are reloaded from the database at start so a restart does not split them.
//! Each event yields a full snapshot of its visit with a higher `seq`; the
//! store keeps the newest snapshot whatever order the writes land in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::store::{VisitDims, VisitRecord};
use crate::sync::Lock;

pub const VISIT_TIMEOUT_SECS: i64 = 30 * 60;
const SHARDS: usize = 32;

/// How an event moves its visit along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Pageview {
        path: &'a str,
    },
    Custom {
        name: &'a str,
        interactive: bool,
    },
    /// Time-on-page reports extend a visit but never start one.
    Engagement,
}

type Key = (i64, i64); // (site_id, visitor_id)
type Shard = hashbrown::HashMap<Key, Open>;

fn shard_of(key: Key) -> usize {
    let mix = (key.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.1 as u64;
    (mix % SHARDS as u64) as usize
}

/// An open visit and whether its latest snapshot still has to be written.
struct Open {
    visit: VisitRecord,
    dirty: bool,
    /// The pages viewed and custom events sent in this visit, to tell first
    /// views. Not kept across a restart: after one, a page seen before it
    /// counts as first seen again.
    seen: Seen,
}

/// Hashes of what a visit has seen. Most visits see one or two things and
/// a busy server holds many open visits, so the first hash is kept inline.
/// 32 bits halve the memory of long visits; with hundreds of pages in one
/// visit, a new page is taken for a seen one about once in ten million.
#[derive(Default)]
struct Seen {
    first: Option<u32>,
    // Boxed: 8 bytes inline instead of a `Vec`'s 24, in every open visit,
    // for a second allocation in the few visits that see a third thing.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<u32>>>,
}

impl Seen {
    fn contains(&self, key: u32) -> bool {
        self.first == Some(key) || self.more.as_ref().is_some_and(|m| m.contains(&key))
    }

    /// Records `key`; true if it had not been seen.
    fn insert(&mut self, key: u32) -> bool {
        match self.first {
            None => {
                self.first = Some(key);
                true
            }
            Some(k) if k == key => false,
            Some(_) => {
                let more = self.more.get_or_insert_with(Default::default);
                if more.contains(&key) {
                    false
                } else {
                    // Grown by half, not doubled: long visits all grow at
                    // about the same pace, so doubling would jump the
                    // memory of all of them at once.
                    if more.len() == more.capacity() {
                        more.reserve_exact((more.len() / 2).max(4));
                    }
                    more.push(key);
                    true
                }
            }
        }
    }
}

/// What makes an event a "first view" in its visit: its page, or its name.
fn seen_key(step: &Step<'_>) -> Option<u32> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match step {
        Step::Pageview { path } => (0u8, path).hash(&mut h),
        Step::Custom { name, .. } => (1u8, name).hash(&mut h),
        Step::Engagement => return None,
    }
    Some(h.finish() as u32)
}

/// What [`SessionTracker::track`] decided for one event.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub visit_id: i64,
    /// The visit's visitor id: yesterday's for a visit carried over midnight.
    pub visitor_id: i64,
    /// The event starts this visit.
    pub is_new: bool,
    pub dims: Arc<VisitDims>,
    /// The visit's first view of this page, or first event of this name.
    pub first_view: bool,
}

pub struct SessionTracker {
    /// hashbrown's maps: their hasher is several times cheaper than std's
    /// SipHash, and the keys are site ids and keyed-hash visitor ids, which
    /// no client can aim at one bucket.
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicI64,
    /// Ended visits replaced by a new one before their last snapshot was taken.
    retired: Mutex<Vec<VisitRecord>>,
}

impl SessionTracker {
    /// `max_id` is the largest visit id already stored.
    ///
    /// New ids count up from `max(max_id + 1, now << 20)`: increasing ids keep
    /// the visits table and its indexes append-only (random ids made every
    /// commit rewrite pages all over the file), and starting from the clock
    /// keeps two processes started a second or more apart from colliding
    /// unless one of them creates over a million visits per second of that gap.
    pub fn new(max_id: i64, now: i64) -> SessionTracker {
        SessionTracker {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_id: AtomicI64::new((max_id + 1).max(now << 20)),
            retired: Mutex::default(),
        }
    }

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        &self.shards[shard_of(key)]
    }

    /// Restores visits still open (from the database at start).
    pub fn restore(&self, visits: Vec<VisitRecord>) {
        for v in visits {
            let key = (v.site_id, v.visitor_id);
            let open = Open {
                visit: v,
                dirty: false,
                seen: Seen::default(),
            };
            self.shard(key).locked().insert(key, open);
        }
    }

    /// Number of open visits held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.locked().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one event at once and returns what it did, or `None` for an
    /// engagement report with no open visit: [`SessionTracker::lock`],
    /// [`Locked::plan`] and [`Locked::apply`] in one go, for callers that
    /// store nothing that can be refused.
    pub fn track(
        &self,
        site_id: i64,
        visitor_id: i64,
        previous_id: Option<i64>,
        now: i64,
        step: Step<'_>,
        dims: impl FnOnce() -> VisitDims,
    ) -> Option<Tracked> {
        let mut visits = self.lock_for(&[(site_id, visitor_id, previous_id)], now);
        let mut plan = visits.plan(site_id, visitor_id, previous_id, now, step, dims)?;
        visits.apply(&mut plan, step);
        Some(plan.tracked)
    }

    /// Locks the visits an event of `visitors` (site, visitor id, id under
    /// yesterday's salt) at `now` may change: the shard of each visitor id,
    /// and of yesterday's id only when no visit is open under today's (a
    /// visit carried over midnight). Most events lock one shard, once.
    pub fn lock_for(&self, visitors: &[(i64, i64, Option<i64>)], now: i64) -> Locked<'_> {
        let current = self.lock(visitors.iter().map(|&(site, id, _)| (site, id)));
        let complete = visitors.iter().all(|&(site, id, previous)| {
            previous.is_none_or(|p| current.is_open((site, id), now) || current.holds((site, p)))
        });
        if complete {
            return current;
        }
        drop(current);
        self.lock(visitors.iter().flat_map(|&(site, id, previous)| {
            [Some((site, id)), previous.map(|p| (site, p))]
                .into_iter()
                .flatten()
        }))
    }

    /// Locks the visits of `keys` (site, visitor), and nothing else of
    /// theirs changes until the [`Locked`] is dropped. Their shards are
    /// locked in one order, lowest first, so two events locking several
    /// cannot deadlock.
    pub fn lock(&self, keys: impl IntoIterator<Item = Key>) -> Locked<'_> {
        let mut wanted: u64 = 0;
        for key in keys {
            wanted |= 1 << shard_of(key);
        }
        let mut guards: [Option<MutexGuard<'_, Shard>>; SHARDS] = Default::default();
        for (i, guard) in guards.iter_mut().enumerate() {
            if wanted & (1 << i) != 0 {
                *guard = Some(
                    self.shards[i]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
            }
        }
        Locked {
            tracker: self,
            guards,
        }
    }

    /// The current state of a visitor's open visit, if any.
    pub fn snapshot(&self, site_id: i64, visitor_id: i64) -> Option<VisitRecord> {
        let key = (site_id, visitor_id);
        self.shard(key).locked().get(&key).map(|o| o.visit.clone())
    }

    /// Snapshots of visits changed since the last call, to be written.
    pub fn take_dirty(&self) -> Vec<VisitRecord> {
        let mut out = std::mem::take(&mut *self.retired.locked());
        for shard in &self.shards {
            for open in shard.locked().values_mut() {
                if open.dirty {
                    open.dirty = false;
                    out.push(open.visit.clone());
                }
            }
        }
        out
    }

    /// Forgets visits that ended (called every minute).
    pub fn evict_ended(&self, now: i64) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.locked();
            let before = shard.len();
            // A dirty visit stays until its last snapshot has been taken.
            shard.retain(|_, o| o.dirty || now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS);
            removed += before - shard.len();
        }
        removed
    }
}

/// Open visits locked by [`SessionTracker::lock`] for one event.
///
/// What the event does to its visits is planned first ([`Locked::plan`]:
/// the visit id, whether it starts the visit or first views its page, all
/// the event record needs) and applied only once the event is stored
/// ([`Locked::apply`]); an event refused in between (queue full, writer
/// stopped) leaves its visits as they were. The locks are held from plan
/// to apply, so no other event of these visits comes between: each plans
/// on the visit as the events stored before it left it.
pub struct Locked<'a> {
    tracker: &'a SessionTracker,
    /// By shard index; `None` for the shards not locked.
    guards: [Option<MutexGuard<'a, Shard>>; SHARDS],
}

/// What one event will do to its visit, once applied.
pub struct Plan {
    key: Key,
    now: i64,
    kind: PlanKind,
    seen: Option<u32>,
    pub tracked: Tracked,
}

enum PlanKind {
    /// The open visit under the key, or under `from` (yesterday's visitor
    /// id), which moves to the key.
    Continue { from: Option<Key> },
    /// A new visit; `None` once applied.
    Start(Option<VisitRecord>),
}

impl Locked<'_> {
    fn map(&mut self, key: Key) -> Option<&mut Shard> {
        self.guards[shard_of(key)].as_deref_mut()
    }

    fn holds(&self, key: Key) -> bool {
        self.guards[shard_of(key)].is_some()
    }

    fn is_open(&self, key: Key, now: i64) -> bool {
        self.guards[shard_of(key)]
            .as_ref()
            .and_then(|m| m.get(&key))
            .is_some_and(|o| now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS)
    }

    /// What `step` of the visitor's event would do to its visit, changing
    /// nothing: `None` for an engagement report with no open visit, or
    /// when the visit's shard was not locked.
    ///
    /// `previous_id` is the visitor's id under yesterday's salt: a visit open
    /// under it continues (and keeps that id) across midnight.
    pub fn plan(
        &mut self,
        site_id: i64,
        visitor_id: i64,
        previous_id: Option<i64>,
        now: i64,
        step: Step<'_>,
        dims: impl FnOnce() -> VisitDims,
    ) -> Option<Plan> {
        let is_open = |o: &Open| now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS;
        let key = (site_id, visitor_id);
        let seen = seen_key(&step);
        let open_here = self.map(key)?.get(&key).filter(|o| is_open(o)).is_some();
        let from = match previous_id {
            Some(prev) if !open_here => {
                let prev = (site_id, prev);
                self.map(prev)?
                    .get(&prev)
                    .filter(|o| is_open(o))
                    .map(|_| prev)
            }
            _ => None,
        };
        if open_here || from.is_some() {
            let at = from.unwrap_or(key);
            let open = self.map(at)?.get(&at)?;
            let v = &open.visit;
            return Some(Plan {
                key,
                now,
                kind: PlanKind::Continue { from },
                seen,
                tracked: Tracked {
                    visit_id: v.id,
                    visitor_id: v.visitor_id,
                    is_new: false,
                    dims: v.dims.clone(),
                    first_view: seen.is_some_and(|k| !open.seen.contains(k)),
                },
            });
        }
        let (pageviews, events, interactive, page) = match step {
            Step::Pageview { path } => (1, 0, 0, Some(path.to_string())),
            Step::Custom { interactive, .. } => (0, 1, i64::from(interactive), None),
            Step::Engagement => return None,
        };
        let visit = VisitRecord {
            // Taken even if the event is then refused: ids need only grow.
            id: self.tracker.next_id.fetch_add(1, Ordering::Relaxed),
            site_id,
            visitor_id,
            seq: 1,
            started_at: now,
            last_seen_at: now,
            entry_page: page.clone(),
            exit_page: page,
            pageviews,
            events,
            interactive,
            is_bounce: interactive == 0,
            dims: Arc::new(dims()),
        };
        Some(Plan {
            key,
            now,
            seen,
            tracked: Tracked {
                visit_id: visit.id,
                visitor_id,
                is_new: true,
                dims: visit.dims.clone(),
                first_view: true,
            },
            kind: PlanKind::Start(Some(visit)),
        })
    }

    /// Applies a plan of this lock (once its event is stored) with the
    /// `step` it was planned for. The visit is marked for the next
    /// [`SessionTracker::take_dirty`].
    pub fn apply(&mut self, plan: &mut Plan, step: Step<'_>) {
        let key = plan.key;
        match &mut plan.kind {
            PlanKind::Start(visit) => {
                let Some(visit) = visit.take() else { return };
                let open = Open {
                    visit,
                    dirty: true,
                    seen: Seen {
                        first: plan.seen,
                        more: None,
                    },
                };
                self.replace(key, open);
            }
            PlanKind::Continue { from } => {
                if let Some(from) = from.take()
                    && let Some(open) = self.map(from).and_then(|m| m.remove(&from))
                {
                    self.replace(key, open);
                }
                let Some(open) = self.map(key).and_then(|m| m.get_mut(&key)) else {
                    return;
                };
                // Updated in place: no copy of the visit per event.
                let v = &mut open.visit;
                v.seq += 1;
                v.last_seen_at = v.last_seen_at.max(plan.now);
                match step {
                    Step::Pageview { path } => {
                        v.pageviews += 1;
                        if v.entry_page.is_none() {
                            v.entry_page = Some(path.to_string());
                        }
                        match &mut v.exit_page {
                            Some(exit) => {
                                exit.clear();
                                exit.push_str(path);
                            }
                            None => v.exit_page = Some(path.to_string()),
                        }
                    }
                    Step::Custom { interactive, .. } => {
                        v.events += 1;
                        v.interactive += i64::from(interactive);
                    }
                    Step::Engagement => {}
                }
                v.is_bounce = v.pageviews <= 1 && v.interactive == 0;
                open.dirty = true;
                if let Some(k) = plan.seen {
                    open.seen.insert(k);
                }
            }
        }
    }

    /// Puts `open` under `key`; a visit it replaces whose last snapshot is
    /// still to be written is kept for that.
    fn replace(&mut self, key: Key, open: Open) {
        let Some(map) = self.map(key) else { return };
        if let Some(old) = map.insert(key, open)
            && old.dirty
        {
            self.tracker
                .retired
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(old.visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(path: &str) -> Step<'_> {
        Step::Pageview { path }
    }

    #[test]
    fn visit_lifecycle() {
        let t = SessionTracker::new(0, 1000);
        let a = t
            .track(1, 42, None, 1000, pv("/a"), VisitDims::default)
            .unwrap();
        assert!(a.is_new && t.snapshot(1, 42).unwrap().is_bounce);
        assert_eq!(t.take_dirty().len(), 1, "a new visit is written in a batch");
        let a = t.snapshot(1, 42).unwrap();
        let b = t
            .track(1, 42, None, 1100, pv("/b"), VisitDims::default)
            .unwrap();
        assert!(!b.is_new);
        let b = t.snapshot(1, 42).unwrap();
        assert_eq!(t.take_dirty().len(), 1, "so is a continued one");
        assert!(t.take_dirty().is_empty());
        assert_eq!(a.id, b.id);
        assert_eq!((b.pageviews, b.seq, b.is_bounce), (2, 2, false));
        assert_eq!(b.entry_page.as_deref(), Some("/a"));
        assert_eq!(b.exit_page.as_deref(), Some("/b"));
        // 30 minutes of silence end the visit.
        t.track(
            1,
            42,
            None,
            1100 + VISIT_TIMEOUT_SECS,
            pv("/c"),
            VisitDims::default,
        )
        .unwrap();
        let c = t.snapshot(1, 42).unwrap();
        assert_ne!(c.id, b.id);
        assert!(c.id > b.id, "ids grow");
        // A non-interactive event does not clear the bounce; an interactive one does.
        t.track(
            1,
            42,
            None,
            4000,
            Step::Custom {
                name: "Signup",
                interactive: false,
            },
            VisitDims::default,
        )
        .unwrap();
        let d = t.snapshot(1, 42).unwrap();
        assert!(d.is_bounce);
        t.track(
            1,
            42,
            None,
            4001,
            Step::Custom {
                name: "Signup",
                interactive: true,
            },
            VisitDims::default,
        )
        .unwrap();
        let e = t.snapshot(1, 42).unwrap();
        assert!(!e.is_bounce);
        // Engagement never opens a visit.
        assert!(
            t.track(1, 43, None, 4000, Step::Engagement, VisitDims::default)
                .is_none()
        );
    }

    #[test]
    fn an_ended_visit_is_written_even_when_replaced_before_a_flush() {
        let t = SessionTracker::new(0, 1000);
        let a = t
            .track(1, 7, None, 1000, pv("/a"), VisitDims::default)
            .unwrap();
        let b = t
            .track(
                1,
                7,
                None,
                1000 + VISIT_TIMEOUT_SECS,
                pv("/b"),
                VisitDims::default,
            )
            .unwrap();
        assert_ne!(a.visit_id, b.visit_id);
        let mut ids: Vec<i64> = t.take_dirty().iter().map(|v| v.id).collect();
        ids.sort();
        assert_eq!(ids, vec![a.visit_id, b.visit_id]);
    }

    #[test]
    fn a_plan_not_applied_changes_nothing() {
        let t = SessionTracker::new(0, 1000);
        t.track(1, 42, None, 1000, pv("/a"), VisitDims::default)
            .unwrap();
        t.take_dirty();
        {
            let mut visits = t.lock_for(&[(1, 42, None), (1, 43, Some(42))], 1010);
            let b = visits
                .plan(1, 42, None, 1010, pv("/b"), VisitDims::default)
                .unwrap();
            assert!(!b.tracked.is_new && b.tracked.first_view);
            let c = visits
                .plan(1, 43, None, 1010, pv("/c"), VisitDims::default)
                .unwrap();
            assert!(c.tracked.is_new);
            // Dropped: the event was refused.
        }
        let a = t.snapshot(1, 42).unwrap();
        assert_eq!(
            (a.pageviews, a.seq, a.exit_page.as_deref()),
            (1, 1, Some("/a"))
        );
        assert!(t.snapshot(1, 43).is_none());
        assert!(t.take_dirty().is_empty());
        // Applied, the same plan counts, and the page is seen from then on.
        let mut visits = t.lock_for(&[(1, 42, None)], 1020);
        let mut b = visits
            .plan(1, 42, None, 1020, pv("/b"), VisitDims::default)
            .unwrap();
        visits.apply(&mut b, pv("/b"));
        let again = visits
            .plan(1, 42, None, 1021, pv("/b"), VisitDims::default)
            .unwrap();
        assert!(!again.tracked.first_view);
        drop(visits);
        let a = t.snapshot(1, 42).unwrap();
        assert_eq!(
            (a.pageviews, a.seq, a.exit_page.as_deref()),
            (2, 2, Some("/b"))
        );
    }

    #[test]
    fn visit_continues_across_midnight_under_previous_id() {
        let t = SessionTracker::new(0, 1000);
        let a = t
            .track(1, 1, None, 1000, pv("/a"), VisitDims::default)
            .unwrap();
        let b = t
            .track(1, 2, Some(1), 1060, pv("/b"), VisitDims::default)
            .unwrap();
        assert_eq!(a.visit_id, b.visit_id);
        assert_eq!(b.visitor_id, 1);
        assert_eq!(t.snapshot(1, 2).unwrap().pageviews, 2);
    }
}
