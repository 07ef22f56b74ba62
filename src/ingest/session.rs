//! Visits (sessions): which visit an event belongs to, and the visit's running
//! totals.
//!
//! A visit ends after 30 minutes without events from its visitor. The open
//! visits live in memory, sharded by visitor to keep lock contention low, and
//! are reloaded from the database at start so a restart does not split them.
//! Each event yields a full snapshot of its visit with a higher `seq`; the
//! store keeps the newest snapshot whatever order the writes land in.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::{VisitDims, VisitRecord};

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
    shards: Vec<Mutex<hashbrown::HashMap<Key, Open>>>,
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

    fn shard(&self, key: Key) -> &Mutex<hashbrown::HashMap<Key, Open>> {
        let mix = (key.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.1 as u64;
        &self.shards[(mix % SHARDS as u64) as usize]
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
            self.shard(key)
                .lock()
                .expect("session shard")
                .insert(key, open);
        }
    }

    /// Number of open visits held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("session shard").len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one event and returns the visit's new snapshot, or `None` for
    /// an engagement report with no open visit. The visit is marked for the
    /// next [`SessionTracker::take_dirty`].
    ///
    /// `previous_id` is the visitor's id under yesterday's salt: a visit open
    /// under it continues (and keeps that id) across midnight.
    pub fn track(
        &self,
        site_id: i64,
        visitor_id: i64,
        previous_id: Option<i64>,
        now: i64,
        step: Step<'_>,
        dims: impl FnOnce() -> VisitDims,
    ) -> Option<Tracked> {
        let is_open = |o: &Open| now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS;
        let key = (site_id, visitor_id);
        let mut shard = self.shard(key).lock().expect("session shard");
        // A visit open under yesterday's id moves to today's key. Shards are
        // never locked two at a time, so no lock order can deadlock.
        if let Some(prev) = previous_id.filter(|_| !shard.get(&key).is_some_and(is_open)) {
            drop(shard);
            let carried = self
                .shard((site_id, prev))
                .lock()
                .expect("session shard")
                .remove(&(site_id, prev))
                .filter(is_open);
            shard = self.shard(key).lock().expect("session shard");
            if let Some(open) = carried
                && !shard.get(&key).is_some_and(is_open)
            {
                shard.insert(key, open);
            }
        }
        // Updated in place: no copy of the visit per event.
        if let Some(open) = shard.get_mut(&key).filter(|o| is_open(o)) {
            let v = &mut open.visit;
            v.seq += 1;
            v.last_seen_at = v.last_seen_at.max(now);
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
            let first_view = seen_key(&step).is_some_and(|k| open.seen.insert(k));
            return Some(Tracked {
                visit_id: v.id,
                visitor_id: v.visitor_id,
                is_new: false,
                dims: v.dims.clone(),
                first_view,
            });
        }
        let (pageviews, events, interactive, page) = match step {
            Step::Pageview { path } => (1, 0, 0, Some(path.to_string())),
            Step::Custom { interactive, .. } => (0, 1, i64::from(interactive), None),
            Step::Engagement => return None,
        };
        let visit = VisitRecord {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
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
        let tracked = Tracked {
            visit_id: visit.id,
            visitor_id,
            is_new: true,
            dims: visit.dims.clone(),
            first_view: true,
        };
        let open = Open {
            visit,
            dirty: true,
            seen: Seen {
                first: seen_key(&step),
                more: None,
            },
        };
        if let Some(old) = shard.insert(key, open)
            && old.dirty
        {
            self.retired.lock().expect("retired visits").push(old.visit);
        }
        Some(tracked)
    }

    /// The current state of a visitor's open visit, if any.
    pub fn snapshot(&self, site_id: i64, visitor_id: i64) -> Option<VisitRecord> {
        let key = (site_id, visitor_id);
        self.shard(key)
            .lock()
            .expect("session shard")
            .get(&key)
            .map(|o| o.visit.clone())
    }

    /// Snapshots of visits changed since the last call, to be written.
    pub fn take_dirty(&self) -> Vec<VisitRecord> {
        let mut out = std::mem::take(&mut *self.retired.lock().expect("retired visits"));
        for shard in &self.shards {
            for open in shard.lock().expect("session shard").values_mut() {
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
            let mut shard = shard.lock().expect("session shard");
            let before = shard.len();
            // A dirty visit stays until its last snapshot has been taken.
            shard.retain(|_, o| o.dirty || now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS);
            removed += before - shard.len();
        }
        removed
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
