//! Sets of dense numbers (visitors, visits), for exact distinct counts
//! without hashing: a bitmap over the site's numbers, or while a set is
//! small next to that, a list (sorted when counted, or put in a bitmap
//! when that is quicker).

use super::ColumnError;

/// A set of numbers below a universe. A number past it (only a damaged file
/// holds one) marks the set bad, an error when counted.
pub(super) struct Bitmap {
    words: Vec<u64>,
    bad: bool,
}

impl Bitmap {
    pub(super) fn new(universe: usize) -> Bitmap {
        Bitmap {
            words: vec![0; universe.div_ceil(64)],
            bad: false,
        }
    }

    #[inline(always)]
    pub(super) fn insert(&mut self, n: u32) {
        match self.words.get_mut(n as usize >> 6) {
            Some(w) => *w |= 1 << (n & 63),
            None => self.bad = true,
        }
    }

    #[inline(always)]
    pub(super) fn contains(&self, n: u32) -> bool {
        self.words
            .get(n as usize >> 6)
            .is_some_and(|w| w & (1 << (n & 63)) != 0)
    }

    pub(super) fn count(&self) -> Result<i64, ColumnError> {
        if self.bad {
            return Err(damaged());
        }
        Ok(self.words.iter().map(|w| i64::from(w.count_ones())).sum())
    }

    /// How many of `lo..hi` are in the set, a word at a time.
    pub(super) fn count_range(&self, lo: u32, hi: u32) -> usize {
        let mut n = 0;
        self.for_words(lo, hi, |_, w| n += w.count_ones() as usize);
        n
    }

    /// Calls `f` with each member of `lo..hi`, ascending.
    #[inline]
    pub(super) fn for_each_in(&self, lo: u32, hi: u32, mut f: impl FnMut(u32)) {
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
        if lo >= hi || self.words.is_empty() {
            return;
        }
        let (first, last) = (lo as usize >> 6, (hi as usize - 1) >> 6);
        for k in first..=last.min(self.words.len() - 1) {
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
}

/// Distinct numbers below a universe: a list while it is smaller than a
/// bitmap would be, a bitmap after. So a count costs at most the bitmap,
/// and a few numbers cost a few words.
pub(super) enum Distinct {
    List(Vec<u32>, usize),
    Bits(Bitmap),
}

impl Distinct {
    pub(super) fn new(universe: usize) -> Distinct {
        Distinct::List(Vec::new(), universe)
    }

    #[inline]
    pub(super) fn insert(&mut self, n: u32) {
        match self {
            Distinct::Bits(b) => b.insert(n),
            Distinct::List(list, universe) => {
                list.push(n);
                // A list of u32 beats a bitmap below universe / 32 entries.
                if list.len() > (*universe / 32).max(64) {
                    let mut b = Bitmap::new(*universe);
                    list.iter().for_each(|&n| b.insert(n));
                    *self = Distinct::Bits(b);
                }
            }
        }
    }

    pub(super) fn count(&mut self) -> Result<i64, ColumnError> {
        match self {
            Distinct::Bits(b) => b.count(),
            Distinct::List(list, universe) => {
                if list.iter().any(|&n| n as usize >= *universe) {
                    return Err(damaged());
                }
                // A long list is counted faster in a bitmap than sorted
                // (n log n): a day's visitors of a page filter are tens of
                // thousands. The bitmap spans only the list's numbers,
                // which a day's visitors keep close together (each day's
                // visitors are numbered as they come).
                let (lo, hi) = list
                    .iter()
                    .fold((u32::MAX, 0), |(lo, hi), &n| (lo.min(n), hi.max(n)));
                let span = hi.saturating_sub(lo) as usize + 1;
                if span / 64 <= list.len() * 4 {
                    let mut b = Bitmap::new(span);
                    list.iter().for_each(|&n| b.insert(n - lo));
                    return b.count();
                }
                list.sort_unstable();
                list.dedup();
                Ok(list.len() as i64)
            }
        }
    }
}

fn damaged() -> ColumnError {
    ColumnError::Damaged {
        path: "segment".into(),
        what: "a number past the site's".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists counted sorted or through a bitmap, and bitmaps, count each
    /// number once.
    #[test]
    fn distinct_counts_each_number_once_whatever_its_form() {
        // Numbers from 0, and far from it (as a late day's visitors are).
        for (universe, from) in [(1 << 16, 0), (1 << 22, 3_000_000)] {
            for n in [0usize, 10, 300, 1_500, 5_000, 40_000] {
                let mut d = Distinct::new(universe);
                let mut want = std::collections::HashSet::new();
                let mut x: u32 = 12345;
                for _ in 0..n {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let v = from + (x >> 8) % (n as u32 / 2 + 1);
                    d.insert(v);
                    want.insert(v);
                }
                assert_eq!(d.count().unwrap(), want.len() as i64, "{n}");
            }
        }
        let mut d = Distinct::new(100);
        (0..50).for_each(|n| d.insert(n));
        d.insert(100);
        assert!(d.count().is_err());
    }
}
