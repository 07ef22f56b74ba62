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
/// bitmap over the numbers it spans would be, then that bitmap, grown as
/// numbers outside it come. So a count costs at most the bitmap of the
/// numbers met, and a few numbers cost a few words: a day's visitors are
/// numbered close together, so a bucket of a day spans a day's numbers,
/// not the site's.
pub(super) enum Distinct {
    List(Numbers),
    Bits(Window),
}

/// A bitmap over the words `first..first + words.len()` of the numbers.
pub(super) struct Window {
    first: usize,
    words: Vec<u64>,
    universe: usize,
    bad: bool,
}

impl Window {
    fn new(lo: u32, hi: u32, universe: usize) -> Window {
        let (first, last) = (lo as usize >> 6, hi as usize >> 6);
        Window {
            first,
            words: vec![0; last + 1 - first],
            universe,
            bad: false,
        }
    }

    /// A window of a list's numbers, over the span they cover; a number
    /// past the universe marks it bad (and sizes nothing by it).
    fn of(numbers: &Numbers) -> Window {
        if numbers.past_universe() {
            let mut w = Window::new(0, 0, numbers.universe);
            w.bad = true;
            return w;
        }
        let mut w = Window::new(numbers.lo, numbers.hi, numbers.universe);
        numbers.list.iter().for_each(|&n| w.insert(n));
        w
    }

    fn count(&self) -> Result<i64, ColumnError> {
        if self.bad {
            return Err(damaged());
        }
        Ok(self.words.iter().map(|w| i64::from(w.count_ones())).sum())
    }

    #[inline(always)]
    fn insert(&mut self, n: u32) {
        if n as usize >= self.universe {
            self.bad = true;
            return;
        }
        let w = n as usize >> 6;
        if w < self.first || w >= self.first + self.words.len() {
            self.grow(w);
        }
        self.words[w - self.first] |= 1 << (n & 63);
    }

    /// Widens the window to word `w`, at least doubling it toward `w` (so
    /// numbers arriving in order cost amortised constant time), never past
    /// the universe.
    #[cold]
    fn grow(&mut self, w: usize) {
        let len = self.words.len();
        let end = self.universe.div_ceil(64).max(w + 1);
        if w < self.first {
            let first = w.min(self.first.saturating_sub(len));
            let mut words = vec![0; self.first - first];
            words.extend_from_slice(&self.words);
            self.words = words;
            self.first = first;
        } else {
            let last = w.max(self.first + 2 * len).min(end - 1);
            self.words.resize(last + 1 - self.first, 0);
        }
    }
}

/// A short list of numbers below a universe, with the least and the
/// greatest of them: the span a bitmap of them would cover.
pub(super) struct Numbers {
    list: Vec<u32>,
    lo: u32,
    hi: u32,
    universe: usize,
}

impl Numbers {
    /// Whether a number is past the universe (only a damaged file holds
    /// one): the greatest says, without reading the list.
    fn past_universe(&self) -> bool {
        !self.list.is_empty() && self.hi as usize >= self.universe
    }

    fn push(&mut self, n: u32) {
        self.list.push(n);
        self.lo = self.lo.min(n);
        self.hi = self.hi.max(n);
    }

    /// A list of u32 beats a bitmap below a 32nd of the numbers it spans.
    fn wants_bitmap(&self) -> bool {
        self.list.len() >= 64 && self.list.len() > (self.hi - self.lo) as usize / 32
    }

    fn count(&mut self) -> Result<i64, ColumnError> {
        if self.past_universe() {
            return Err(damaged());
        }
        if self.list.is_empty() {
            return Ok(0);
        }
        // Sorted when that is cheaper than a bitmap over the span.
        let span = (self.hi - self.lo) as usize + 1;
        if span / 64 <= self.list.len() * 4 {
            return Window::of(self).count();
        }
        self.list.sort_unstable();
        self.list.dedup();
        Ok(self.list.len() as i64)
    }
}

impl Distinct {
    pub(super) fn new(universe: usize) -> Distinct {
        Distinct::List(Numbers {
            list: Vec::new(),
            lo: u32::MAX,
            hi: 0,
            universe,
        })
    }

    #[inline]
    pub(super) fn insert(&mut self, n: u32) {
        match self {
            Distinct::Bits(b) => b.insert(n),
            Distinct::List(numbers) => {
                numbers.push(n);
                if numbers.wants_bitmap() {
                    *self = Distinct::Bits(Window::of(numbers));
                }
            }
        }
    }

    /// Inserts every number of `ns`: a run of rows' visitors.
    #[inline]
    pub(super) fn insert_all(&mut self, ns: &[u32]) {
        let mut rest = ns;
        // While a list, one at a time (it may turn into a bitmap); then
        // the rest straight into the bitmap.
        while let (Distinct::List(_), Some((&n, tail))) = (&*self, rest.split_first()) {
            self.insert(n);
            rest = tail;
        }
        if let Distinct::Bits(w) = self {
            for &n in rest {
                w.insert(n);
            }
        }
    }

    pub(super) fn count(&mut self) -> Result<i64, ColumnError> {
        match self {
            Distinct::Bits(b) => b.count(),
            Distinct::List(numbers) => numbers.count(),
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
        // Past the universe once a bitmap, or far past it in a list.
        let mut d = Distinct::new(1000);
        (0..500).for_each(|n| d.insert(n));
        d.insert(1000);
        assert!(d.count().is_err());
        let mut d = Distinct::new(1000);
        (0..100).for_each(|n| d.insert(n));
        d.insert(u32::MAX);
        assert!(d.count().is_err());
    }

    /// A bitmap grows toward numbers on either side of it, in runs (as
    /// day after day of visitors come) and in jumps.
    #[test]
    fn distinct_grows_toward_numbers_on_either_side() {
        let universe = 1 << 22;
        let mut x: u32 = 99;
        let mut next = |m: u32| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 8) % m
        };
        for order in 0..4 {
            let mut d = Distinct::new(universe);
            // The same numbers a day's run at a time.
            let mut runs = Distinct::new(universe);
            let mut want = std::collections::HashSet::new();
            for day in 0..30u32 {
                // A day's numbers, days forward, backward, or scattered.
                let base = match order {
                    0 => day * 100_000,
                    1 => (29 - day) * 100_000,
                    2 => next(40) * 100_000,
                    _ => 2_000_000,
                };
                let run: Vec<u32> = (0..3_000).map(|_| base + next(50_000)).collect();
                for &n in &run {
                    d.insert(n);
                    want.insert(n);
                }
                runs.insert_all(&run);
                if day % 7 == 0 {
                    // A lone number far away.
                    let n = next(universe as u32);
                    d.insert(n);
                    runs.insert_all(&[n]);
                    want.insert(n);
                }
            }
            assert_eq!(d.count().unwrap(), want.len() as i64, "order {order}");
            assert_eq!(runs.count().unwrap(), want.len() as i64, "order {order}");
        }
    }
}
