//! Breakdowns of one site's recent traffic: rows per value of a page, event
//! name, property or visit attribute among what the [`Scan`] lets through,
//! with distinct visitors counted only for the values that can be shown.

use super::event_log::{FIRST_VIEW, PAGEVIEW};
use super::ids::Bitmap;
use super::scan::Scan;
use super::table::{SiteTraffic, prop_key, prop_value};
use crate::report::model::{BreakdownRow, Dimension, Filter, TimeRange, count_leading};

/// Breakdown rows in the making, one per value seen, found through a table
/// indexed by dictionary id rather than a hash per event. That table spans
/// the whole dictionary, so a small direct-mapped cache in front of it
/// answers the few values a breakdown sees over and over.
struct Rows {
    slot_of: Vec<u32>,
    cache: Box<[(u32, u32); 1024]>,
    values: Vec<u32>,
    rows: Vec<BreakdownRow>,
}

impl Rows {
    fn new(dict_len: usize) -> Rows {
        Rows {
            slot_of: vec![u32::MAX; dict_len],
            cache: Box::new([(u32::MAX, 0); 1024]),
            values: Vec::new(),
            rows: Vec::new(),
        }
    }

    #[inline]
    fn slot(&mut self, value: u32) -> u32 {
        let cached = &mut self.cache[value as usize % 1024];
        if cached.0 == value {
            return cached.1;
        }
        let slot = &mut self.slot_of[value as usize];
        if *slot == u32::MAX {
            *slot = self.rows.len() as u32;
            self.values.push(value);
            self.rows.push(BreakdownRow::default());
        }
        *cached = (value, *slot);
        *slot
    }
}

/// Bitmaps of this many bytes in all count the visitors of the values that
/// can be shown; past it, pairs are sorted instead.
const BITMAP_BUDGET: usize = 16 << 20;

/// Distinct second halves of the `pairs` whose first half (a slot) is one of
/// `slots`, per slot of `slots`.
fn count_distinct(pairs: &[(u32, u32)], slots: &[u32], universe: usize) -> Vec<i64> {
    let dense: Vec<usize> = {
        let most = slots.iter().max().map_or(0, |&m| m as usize + 1);
        let mut d = vec![usize::MAX; most];
        for (i, &s) in slots.iter().enumerate() {
            d[s as usize] = i;
        }
        d
    };
    let which = |slot: u32| dense.get(slot as usize).copied().unwrap_or(usize::MAX);
    if slots.len() * universe.div_ceil(8) <= BITMAP_BUDGET {
        let mut sets: Vec<Bitmap> = slots.iter().map(|_| Bitmap::new(universe)).collect();
        for &(slot, n) in pairs {
            let i = which(slot);
            if i != usize::MAX {
                sets[i].insert(n);
            }
        }
        return sets.iter().map(Bitmap::count).collect();
    }
    let mut chosen: Vec<u64> = pairs
        .iter()
        .filter(|(slot, _)| which(*slot) != usize::MAX)
        .map(|&(slot, n)| (u64::from(slot) << 32) | u64::from(n))
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    let mut out = vec![0; slots.len()];
    for p in chosen {
        out[which((p >> 32) as u32)] += 1;
    }
    out
}

pub(super) fn breakdown(
    site: &SiteTraffic,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    limit: i64,
    offset: i64,
) -> Vec<BreakdownRow> {
    let q = Scan::new(site, filters);
    let mut rows = Rows::new(site.dict.len());
    // (slot, visitor) of everything counted, and for properties (slot,
    // visit): distinct ones are counted only for values that can be shown.
    let mut visitor_pairs: Vec<(u32, u32)> = Vec::new();
    let mut visit_pairs: Vec<(u32, u32)> = Vec::new();
    match dimension {
        Dimension::Page | Dimension::EventName => {
            let pages = matches!(dimension, Dimension::Page);
            q.each_event(range, |c, i| {
                let flags = c.flags[i];
                if (flags & PAGEVIEW != 0) != pages {
                    return;
                }
                let slot = rows.slot(if pages { c.path[i] } else { c.name[i] });
                visitor_pairs.push((slot, c.visitor[i]));
                let r = &mut rows.rows[slot as usize];
                r.visits += i64::from(flags & FIRST_VIEW != 0);
                if pages {
                    r.pageviews += 1;
                } else {
                    r.events += 1;
                }
            });
        }
        Dimension::Prop(key) => {
            let Some(key) = prop_key(&site.dict, key) else {
                return Vec::new();
            };
            q.each_event(range, |c, i| {
                let e = c.get(i);
                let Some(value) = prop_value(site, e.props, key) else {
                    return;
                };
                let slot = rows.slot(value);
                visitor_pairs.push((slot, e.visitor));
                visit_pairs.push((slot, e.visit));
                let r = &mut rows.rows[slot as usize];
                if e.pageview {
                    r.pageviews += 1;
                } else {
                    r.events += 1;
                }
            });
        }
        Dimension::Visit(column) => {
            let c = column.index();
            for v in q.visits(range) {
                let slot = rows.slot(site.column(v, c));
                visitor_pairs.push((slot, v.visitor));
                let r = &mut rows.rows[slot as usize];
                r.visits += 1;
                r.pageviews += i64::from(v.pageviews);
                r.events += i64::from(v.events);
                r.bounces += i64::from(v.bounce);
                r.visit_duration_sum += v.duration();
            }
        }
    }
    // A value's visitors never exceed this: rank by it, count visitors down
    // the ranking, and stop once no value left can overtake the last shown.
    let bound = |r: &BreakdownRow| match dimension {
        Dimension::Visit(_) => r.visits,
        Dimension::Page => r.pageviews,
        Dimension::EventName => r.events,
        Dimension::Prop(_) => r.pageviews + r.events,
    };
    let mut ranked: Vec<u32> = (0..rows.rows.len() as u32).collect();
    ranked.sort_by_key(|&s| std::cmp::Reverse(bound(&rows.rows[s as usize])));
    let bounds: Vec<i64> = ranked
        .iter()
        .map(|&s| bound(&rows.rows[s as usize]))
        .collect();
    let need = (offset + limit).max(0) as usize;
    let universe = site.visitor_numbers.len();
    let visitors = count_leading(&bounds, need, |ranks| {
        Ok::<_, std::convert::Infallible>(count_distinct(&visitor_pairs, &ranked[ranks], universe))
    })
    .unwrap_or_else(|never| match never {});
    let take = visitors.len();
    for (&slot, n) in ranked.iter().zip(visitors) {
        rows.rows[slot as usize].visitors = n;
    }
    let mut candidates: Vec<u32> = ranked[..take].to_vec();
    let name = |slot: u32| site.dict.get(rows.values[slot as usize]);
    candidates.sort_by(|&a, &b| {
        rows.rows[b as usize]
            .visitors
            .cmp(&rows.rows[a as usize].visitors)
            .then_with(|| name(a).cmp(&name(b)))
    });
    let shown: Vec<u32> = candidates
        .into_iter()
        .skip(offset.max(0) as usize)
        .take(limit.max(0) as usize)
        .collect();
    if matches!(dimension, Dimension::Prop(_)) {
        let visits = count_distinct(&visit_pairs, &shown, site.visits.len());
        for (&slot, n) in shown.iter().zip(visits) {
            rows.rows[slot as usize].visits = n;
        }
    }
    shown
        .iter()
        .map(|&slot| {
            let mut r = std::mem::take(&mut rows.rows[slot as usize]);
            r.value = name(slot).map(str::to_string);
            r
        })
        .collect()
}
