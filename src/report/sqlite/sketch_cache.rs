//! `SketchCache`: visitor sketches recently read from `rollup_sketches`.
//!
//! A breakdown merges a few hundred stored sketches, a dense one 16 KiB;
//! copying them out of SQLite's pages was the largest cost of a 30-day
//! dashboard on a large site, though most of them (past days and weeks)
//! never change again. The cache keeps their bytes in a `quick_cache`
//! cache weighed in bytes, so what it holds stays within its capacity;
//! its eviction (a CLOCK-PRO variant) keeps the sketches that are read
//! again and lets one-off reads pass through.
//!
//! A cached sketch is used only when the row's version (stored beside the
//! sketch: its visits + pageviews + events, which grow with every change to
//! the sketch, since every visitor added comes with a visit or an event,
//! plus an epoch that moves on whenever rows are deleted to be rebuilt)
//! equals the version the reading transaction sees. So a report never mixes
//! another instant's sketch into its own, whatever the writer does
//! meanwhile, and nothing has to be told about writes: a row read at
//! another version is read from the database and replaces the entry.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::rollups::{Dim, Grain};

/// (site, grain, dim, bucket, value): a rollup row's key.
pub type RowKey = (i64, Grain, Dim, i64, Box<str>);

/// A row's version and its sketch's bytes.
type Entry = (i64, Arc<[u8]>);

/// What an entry costs besides its sketch and its value's text: the key's
/// numbers, the version, the `Arc`'s counts and the cache's own slot.
const ENTRY_OVERHEAD: u64 = 96;

/// Shards of the cache, each locked on its own (fewer for a small cache:
/// `quick_cache` keeps at least 32 entries a shard). A power of two, so
/// that a capacity rounded down to a multiple of it splits evenly and the
/// shards' capacities add up to no more than the whole.
const SHARDS: usize = 8;

/// The size of an entry the capacity is divided by to size the cache's
/// tables: sketches run from a few bytes (sparse) to 16 KiB (dense).
const TYPICAL_ENTRY: usize = 4096;

#[derive(Clone)]
struct Bytes;

impl Weighter<RowKey, Entry> for Bytes {
    fn weight(&self, key: &RowKey, (_, bytes): &Entry) -> u64 {
        weight_of(key, bytes)
    }
}

fn weight_of(key: &RowKey, bytes: &[u8]) -> u64 {
    (bytes.len() + key.4.len()) as u64 + ENTRY_OVERHEAD
}

pub struct SketchCache {
    /// Larger sketches are not kept: one would push out many.
    largest: usize,
    cache: Cache<RowKey, Entry, Bytes>,
}

impl SketchCache {
    /// A cache holding up to `capacity` bytes of sketches (with their keys
    /// and the cache's bookkeeping).
    pub fn new(capacity: usize) -> SketchCache {
        let capacity = capacity - capacity % SHARDS;
        let options = quick_cache::OptionsBuilder::new()
            .shards(SHARDS)
            .estimated_items_capacity((capacity / TYPICAL_ENTRY).max(1))
            .weight_capacity(capacity as u64)
            .build();
        let cache = match options {
            Ok(options) => {
                Cache::with_options(options, Bytes, Default::default(), Default::default())
            }
            // Only a missing capacity is refused, and both are set above.
            Err(_) => Cache::with_weighter(capacity / TYPICAL_ENTRY, capacity as u64, Bytes),
        };
        SketchCache {
            largest: capacity / 8,
            cache,
        }
    }

    /// The sketch of row `key` at `version`, if cached.
    pub fn get(&self, key: &RowKey, version: i64) -> Option<Arc<[u8]>> {
        self.cache
            .get(key)
            .and_then(|(v, bytes)| (v == version).then_some(bytes))
    }

    /// Remembers the sketch of row `key` at `version`, in place of the one
    /// at any other version.
    pub fn put(&self, key: RowKey, version: i64, bytes: Arc<[u8]>) {
        if bytes.len() > self.largest {
            return;
        }
        self.cache.insert(key, (version, bytes));
    }

    /// Weight held: the sketches' bytes, their values' text and
    /// [`ENTRY_OVERHEAD`] each.
    pub fn size(&self) -> usize {
        self.cache.weight() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bucket: i64) -> RowKey {
        (1, Grain::Day, Dim::Page, bucket, "/".into())
    }

    /// A sketch that weighs `weight` with its key of [`key`].
    fn sketch(weight: u64) -> Arc<[u8]> {
        Arc::from(vec![0u8; (weight - ENTRY_OVERHEAD - 1) as usize])
    }

    #[test]
    fn a_sketch_is_found_only_at_its_version() {
        let cache = SketchCache::new(1 << 20);
        cache.put(key(0), 5, Arc::from(&[1u8, 2, 3][..]));
        assert_eq!(cache.get(&key(0), 5).as_deref(), Some(&[1u8, 2, 3][..]));
        assert!(cache.get(&key(0), 6).is_none(), "a newer row is read again");
        assert!(cache.get(&key(1), 5).is_none());
        cache.put(key(0), 6, Arc::from(&[4u8][..]));
        assert_eq!(cache.size() as u64, weight_of(&key(0), &[4]));
        assert_eq!(cache.get(&key(0), 6).as_deref(), Some(&[4u8][..]));
        assert!(cache.get(&key(0), 5).is_none(), "the older one is gone");
    }

    /// Not strictly least recently used any more: what is kept is the
    /// sketch read again, while sketches read once pass through.
    #[test]
    fn the_least_recently_used_go_first() {
        let cache = SketchCache::new(10 * 1000);
        for b in 0..10 {
            cache.put(key(b), 1, sketch(1000));
        }
        assert!(cache.get(&key(0), 1).is_some());
        cache.put(key(10), 1, sketch(1000));
        assert!(cache.size() <= 10 * 1000);
        assert!(cache.get(&key(0), 1).is_some(), "used recently, kept");
        let dropped = (1..10).filter(|b| cache.get(&key(*b), 1).is_none());
        assert_eq!(dropped.count(), 1, "one unused, dropped");
        assert!(cache.get(&key(10), 1).is_some());
        for b in 11..100 {
            cache.put(key(b), 1, sketch(1000));
            assert!(cache.get(&key(0), 1).is_some(), "read again, kept");
        }
    }

    #[test]
    fn the_weight_stays_within_the_capacity() {
        let capacity = 1 << 20;
        let cache = SketchCache::new(capacity);
        let mut held = 0;
        for b in 0..20_000 {
            // From sparse sketches of a few bytes to dense ones of 16 KiB.
            let len = (b * 7919) % (16 << 10) + 1;
            cache.put(key(b as i64), 1, Arc::from(vec![0u8; len]));
            assert!(cache.size() <= capacity, "{} after {b}", cache.size());
            held = held.max(cache.size());
        }
        assert!(held > capacity / 2, "the cache is used: {held}");
        let too_large = vec![0u8; capacity / 8 + 1];
        cache.put(key(-1), 1, Arc::from(too_large));
        assert!(cache.get(&key(-1), 1).is_none(), "one would push out many");
    }
}
