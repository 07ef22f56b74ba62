//! Sets and maps keyed by small integer ids, the kind recent traffic counts
//! and indexes by: visit ids, dense visitor numbers, dictionary ids.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashing for integer keys that are ids or hashes already: one multiply
/// instead of SipHash, which dominated the scans.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

pub(super) type IdBuild = BuildHasherDefault<IdHasher>;
pub(super) type IdSet<T> = HashSet<T, IdBuild>;
pub(super) type IdMap<K, V> = HashMap<K, V, IdBuild>;

/// A set of small integers.
pub(super) struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    pub(super) fn new(size: usize) -> Bitmap {
        Bitmap {
            words: vec![0; size.div_ceil(64)],
        }
    }

    pub(super) fn insert(&mut self, n: u32) {
        let (word, bit) = (n as usize / 64, n % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    pub(super) fn count(&self) -> i64 {
        self.words.iter().map(|w| i64::from(w.count_ones())).sum()
    }
}
