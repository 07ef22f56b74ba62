//! Visits (sessions): which visit an event belongs to, and the visit's running
//! totals.
//!
//! A visit ends after 30 minutes without events from its visitor. The open
//! visits live in memory, sharded by visitor to keep lock contention low, and
//! are reloaded from the database at start so a restart does not split them.
//! Each event yields a full snapshot of its visit with a higher `seq`; the
//! store keeps the newest snapshot whatever order the writes land in.

use std::collections::HashMap;
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
}

/// What [`SessionTracker::track`] decided for one event.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub visit: VisitRecord,
    /// The event starts this visit.
    pub is_new: bool,
}

pub struct SessionTracker {
    shards: Vec<Mutex<HashMap<Key, Open>>>,
    next_id: AtomicI64,
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
        }
    }

    fn shard(&self, key: Key) -> &Mutex<HashMap<Key, Open>> {
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
        let is_open = |v: &VisitRecord| now - v.last_seen_at < VISIT_TIMEOUT_SECS;
        let key = (site_id, visitor_id);
        // A visit open under yesterday's id moves to today's key. Shards are
        // never locked two at a time, so no lock order can deadlock.
        let carried = match previous_id {
            Some(prev) if !self.is_tracked(key, now) => self
                .shard((site_id, prev))
                .lock()
                .expect("session shard")
                .remove(&(site_id, prev))
                .map(|o| o.visit)
                .filter(is_open),
            _ => None,
        };
        let mut shard = self.shard(key).lock().expect("session shard");
        let existing = shard
            .get(&key)
            .map(|o| &o.visit)
            .filter(|v| is_open(v))
            .cloned()
            .or(carried);
        let is_new = existing.is_none();
        let visit = match existing {
            Some(mut v) => {
                v.seq += 1;
                v.last_seen_at = v.last_seen_at.max(now);
                match step {
                    Step::Pageview { path } => {
                        v.pageviews += 1;
                        if v.entry_page.is_none() {
                            v.entry_page = Some(path.to_string());
                        }
                        v.exit_page = Some(path.to_string());
                    }
                    Step::Custom { interactive } => {
                        v.events += 1;
                        v.interactive += i64::from(interactive);
                    }
                    Step::Engagement => {}
                }
                v
            }
            None => {
                let (pageviews, events, interactive, page) = match step {
                    Step::Pageview { path } => (1, 0, 0, Some(path.to_string())),
                    Step::Custom { interactive } => (0, 1, i64::from(interactive), None),
                    Step::Engagement => return None,
                };
                VisitRecord {
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
                    is_bounce: true,
                    dims: Arc::new(dims()),
                }
            }
        };
        let mut visit = visit;
        visit.is_bounce = visit.pageviews <= 1 && visit.interactive == 0;
        let open = Open {
            visit: visit.clone(),
            dirty: true,
        };
        shard.insert(key, open);
        Some(Tracked { visit, is_new })
    }

    /// Snapshots of visits changed since the last call, to be written.
    pub fn take_dirty(&self) -> Vec<VisitRecord> {
        let mut out = Vec::new();
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

    fn is_tracked(&self, key: Key, now: i64) -> bool {
        self.shard(key)
            .lock()
            .expect("session shard")
            .get(&key)
            .is_some_and(|o| now - o.visit.last_seen_at < VISIT_TIMEOUT_SECS)
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
        assert!(a.is_new && a.visit.is_bounce);
        assert_eq!(t.take_dirty().len(), 1, "a new visit is written in a batch");
        let a = a.visit;
        let b = t
            .track(1, 42, None, 1100, pv("/b"), VisitDims::default)
            .unwrap();
        assert!(!b.is_new);
        let b = b.visit;
        assert_eq!(t.take_dirty().len(), 1, "so is a continued one");
        assert!(t.take_dirty().is_empty());
        assert_eq!(a.id, b.id);
        assert_eq!((b.pageviews, b.seq, b.is_bounce), (2, 2, false));
        assert_eq!(b.entry_page.as_deref(), Some("/a"));
        assert_eq!(b.exit_page.as_deref(), Some("/b"));
        // 30 minutes of silence end the visit.
        let c = t
            .track(
                1,
                42,
                None,
                1100 + VISIT_TIMEOUT_SECS,
                pv("/c"),
                VisitDims::default,
            )
            .unwrap()
            .visit;
        assert_ne!(c.id, b.id);
        assert!(c.id > b.id, "ids grow");
        // A non-interactive event does not clear the bounce; an interactive one does.
        let d = t
            .track(
                1,
                42,
                None,
                4000,
                Step::Custom { interactive: false },
                VisitDims::default,
            )
            .unwrap()
            .visit;
        assert!(d.is_bounce);
        let e = t
            .track(
                1,
                42,
                None,
                4001,
                Step::Custom { interactive: true },
                VisitDims::default,
            )
            .unwrap()
            .visit;
        assert!(!e.is_bounce);
        // Engagement never opens a visit.
        assert!(
            t.track(1, 43, None, 4000, Step::Engagement, VisitDims::default)
                .is_none()
        );
    }

    #[test]
    fn visit_continues_across_midnight_under_previous_id() {
        let t = SessionTracker::new(0, 1000);
        let a = t
            .track(1, 1, None, 1000, pv("/a"), VisitDims::default)
            .unwrap()
            .visit;
        let b = t
            .track(1, 2, Some(1), 1060, pv("/b"), VisitDims::default)
            .unwrap()
            .visit;
        assert_eq!(a.id, b.id);
        assert_eq!(b.visitor_id, 1);
    }
}
