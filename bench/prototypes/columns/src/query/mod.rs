//! Filtered reports over a [`Store`]: the filter scan (answers remembered
//! per dictionary id and per attribute set), totals, series and
//! breakdowns, with Tally's raw-path semantics (`src/report/sqlite/raw.rs`):
//! - event metrics count action events in range passing every filter, visit
//!   filters judged on the event's visit;
//! - visit metrics count visits started in range passing the visit filters
//!   and, with event filters, having a matching event in `[start, end + 1 day)`;
//! - distinct visitors are counted exactly, in bitmaps over the site's dense
//!   visitor numbers.
//!
//! - [`scan`]: filters compiled for a scan, and the scan of a segment.
//! - [`report`]: totals, series and breakdowns.

mod report;
mod scan;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::format::{Error, Result};
use crate::model::Filter;
use crate::store::{Segment, Store};

pub use report::{breakdown, series, totals};
pub use scan::Scan;

/// A set of small integers, sized for a universe; an insert past it marks
/// the bitmap bad (a corrupt file), checked when counted.
pub struct Bitmap {
    words: Vec<u64>,
    bad: bool,
}

impl Bitmap {
    pub fn new(universe: usize) -> Bitmap {
        Bitmap {
            words: vec![0; universe.div_ceil(64)],
            bad: false,
        }
    }

    #[inline(always)]
    pub fn insert(&mut self, n: u32) {
        match self.words.get_mut(n as usize >> 6) {
            Some(w) => *w |= 1 << (n & 63),
            None => self.bad = true,
        }
    }

    #[inline(always)]
    pub fn contains(&self, n: u32) -> bool {
        self.words
            .get(n as usize >> 6)
            .is_some_and(|w| w & (1 << (n & 63)) != 0)
    }

    pub fn count(&self) -> Result<i64> {
        if self.bad {
            return Err(Error::Corrupt(
                "segment".into(),
                "a number past its universe".into(),
            ));
        }
        Ok(self.words.iter().map(|w| i64::from(w.count_ones())).sum())
    }

    /// How many of `lo..hi` are in the set, a word at a time.
    pub fn count_range(&self, lo: u32, hi: u32) -> usize {
        let mut n = 0;
        self.for_words(lo, hi, |_, w| n += w.count_ones() as usize);
        n
    }

    /// Calls `f` with each member of `lo..hi`, ascending.
    #[inline]
    pub fn for_each_in(&self, lo: u32, hi: u32, mut f: impl FnMut(u32)) {
        self.for_words(lo, hi, |base, mut w| {
            while w != 0 {
                f(base + w.trailing_zeros());
                w &= w - 1;
            }
        });
    }

    /// The words covering `lo..hi`, masked to it, with their first number.
    #[inline]
    fn for_words(&self, lo: u32, hi: u32, mut f: impl FnMut(u32, u64)) {
        if lo >= hi {
            return;
        }
        let (first, last) = (lo as usize >> 6, (hi as usize - 1) >> 6);
        for k in first..=last.min(self.words.len().saturating_sub(1)) {
            let mut w = self.words[k];
            if k == first {
                w &= u64::MAX << (lo & 63);
            }
            if k == last && hi & 63 != 0 {
                w &= u64::MAX >> (64 - (hi & 63));
            }
            f((k as u32) << 6, w);
        }
    }

    /// Adds the members of `other`.
    pub fn or(&mut self, other: &Bitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
        self.bad |= other.bad;
    }

    /// The union of `parts` (an empty set of `universe` if none).
    pub fn union(parts: Vec<Bitmap>, universe: usize) -> Result<Bitmap> {
        let mut parts = parts.into_iter();
        let mut first = parts.next().unwrap_or_else(|| Bitmap::new(universe));
        for p in parts {
            first.or(&p);
        }
        first.count()?;
        Ok(first)
    }

    pub fn clear(&mut self) {
        self.words.fill(0);
    }
}

/// Threads a report may use (1: none besides the caller's).
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many threads a report scans with (at least 1).
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// Runs `f` over `segs` cut into up to [`set_threads`] runs of about equal
/// rows, each with its own [`Scan`] (its memos are per thread), the first
/// on this thread; returns the partial results in order.
fn in_parts<T: Send>(
    store: &Store,
    filters: &[Filter],
    segs: &[Arc<Segment>],
    f: impl Fn(&Scan<'_>, &[Arc<Segment>]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = THREADS.load(Ordering::Relaxed).min(segs.len()).max(1);
    if threads == 1 {
        return Ok(vec![f(&Scan::new(store, filters), segs)?]);
    }
    let total: usize = segs.iter().map(|s| s.n_events + s.n_visits).sum();
    let mut cuts = vec![0];
    let mut acc = 0;
    for (i, s) in segs.iter().enumerate() {
        acc += s.n_events + s.n_visits;
        if acc * threads >= total * cuts.len() && cuts.len() < threads && i + 1 < segs.len() {
            cuts.push(i + 1);
        }
    }
    cuts.push(segs.len());
    let parts: Vec<&[Arc<Segment>]> = cuts.windows(2).map(|w| &segs[w[0]..w[1]]).collect();
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = parts[1..]
            .iter()
            .map(|&part| s.spawn(move || f(&Scan::new(store, filters), part)))
            .collect();
        let mut out = vec![f(&Scan::new(store, filters), parts[0])?];
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r?),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(out)
    })
}
