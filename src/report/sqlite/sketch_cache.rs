//! `SketchCache`: visitor sketches recently read from `rollup_sketches`.
//!
//! A breakdown merges a few hundred stored sketches, a dense one 16 KiB;
//! copying them out of SQLite's pages was the largest cost of a 30-day
//! dashboard on a large site, though most of them (past days and weeks)
//! never change again. The cache keeps their bytes, bounded in size, least
//! recently used out first.
//!
//! A cached sketch is used only when the row's version (stored beside the
//! sketch: its visits + pageviews + events, which grow with every change to
//! the sketch, since every visitor added comes with a visit or an event,
//! plus an epoch that moves on whenever rows are deleted to be rebuilt)
//! equals the version the reading transaction sees. So a report never mixes
//! another instant's sketch into its own, whatever the writer does
//! meanwhile, and nothing has to be told about writes.

use super::rollups::{Dim, Grain};
use crate::sync::Lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// (site, grain, dim, bucket, value): a rollup row's key.
pub type RowKey = (i64, Grain, Dim, i64, Box<str>);

struct Entry {
    version: i64,
    bytes: Arc<[u8]>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<RowKey, Entry>,
    bytes: usize,
    clock: u64,
}

pub struct SketchCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl SketchCache {
    /// A cache holding up to `capacity` bytes of sketches.
    pub fn new(capacity: usize) -> SketchCache {
        SketchCache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The sketch of row `key` at `version`, if cached.
    pub fn get(&self, key: &RowKey, version: i64) -> Option<Arc<[u8]>> {
        let mut inner = self.inner.locked();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner
            .entries
            .get_mut(key)
            .filter(|e| e.version == version)?;
        entry.used = now;
        Some(entry.bytes.clone())
    }

    /// Remembers the sketch of row `key` at `version`.
    pub fn put(&self, key: RowKey, version: i64, bytes: Arc<[u8]>) {
        if bytes.len() > self.capacity / 8 {
            return;
        }
        let mut inner = self.inner.locked();
        inner.clock += 1;
        let used = inner.clock;
        let size = bytes.len();
        if let Some(old) = inner.entries.insert(
            key,
            Entry {
                version,
                bytes,
                used,
            },
        ) {
            inner.bytes -= old.bytes.len();
        }
        inner.bytes += size;
        if inner.bytes > self.capacity {
            // Down to three quarters at once, so eviction is rare.
            let mut by_age: Vec<(u64, RowKey)> = inner
                .entries
                .iter()
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(used, _)| *used);
            for (_, k) in by_age {
                if inner.bytes <= self.capacity / 4 * 3 {
                    break;
                }
                if let Some(e) = inner.entries.remove(&k) {
                    inner.bytes -= e.bytes.len();
                }
            }
        }
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.inner.locked().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bucket: i64) -> RowKey {
        (1, Grain::Day, Dim::Page, bucket, "/".into())
    }

    #[test]
    fn a_sketch_is_found_only_at_its_version() {
        let cache = SketchCache::new(1 << 20);
        cache.put(key(0), 5, Arc::from(&[1u8, 2, 3][..]));
        assert_eq!(cache.get(&key(0), 5).as_deref(), Some(&[1u8, 2, 3][..]));
        assert!(cache.get(&key(0), 6).is_none(), "a newer row is read again");
        assert!(cache.get(&key(1), 5).is_none());
        cache.put(key(0), 6, Arc::from(&[4u8][..]));
        assert_eq!(cache.size(), 1);
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let cache = SketchCache::new(10 * 1000);
        for b in 0..10 {
            cache.put(key(b), 1, Arc::from(vec![0u8; 1000]));
        }
        assert!(cache.get(&key(0), 1).is_some());
        cache.put(key(10), 1, Arc::from(vec![0u8; 1000]));
        assert!(cache.size() <= 7500);
        assert!(cache.get(&key(0), 1).is_some(), "used recently, kept");
        assert!(cache.get(&key(1), 1).is_none(), "oldest, dropped");
        assert!(cache.get(&key(10), 1).is_some());
    }
}
