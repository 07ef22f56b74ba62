//! Who is on each site right now: visitors seen in the last five minutes,
//! their current page, source and country, and pageviews per minute over
//! the last half hour. In memory only, updated as events are committed.
//!
//! Sharded per site, and within a site striped by visitor so concurrent
//! events rarely share a lock. Memory is bounded: a stripe holds at most
//! [`MAX_PER_STRIPE`] visitors (expired ones are swept first; beyond that a
//! new visitor is not counted until room frees up).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::store::{VisitDims, VisitRecord};
use crate::sync::{Lock, ReadWrite};

/// "Current visitors" are those seen in the last five minutes.
pub const WINDOW_SECS: i64 = 300;
/// The realtime chart's span, in minutes.
pub const MINUTES: usize = 30;
const STRIPES: usize = 8;
pub const MAX_PER_STRIPE: usize = 16_384;
/// Rows per list in a snapshot.
const TOP: usize = 10;

struct Seen {
    last_seen: i64,
    page: Option<Arc<str>>,
    dims: Arc<VisitDims>,
}

struct SiteLive {
    /// Keyed-hash visitor ids: hashbrown's cheaper hasher is safe here (see
    /// `SessionTracker`).
    stripes: Vec<Mutex<hashbrown::HashMap<i64, Seen>>>,
    /// (minute since the epoch, pageviews), indexed by minute modulo MINUTES.
    minutes: Mutex<[(i64, u32); MINUTES]>,
}

impl SiteLive {
    fn new() -> SiteLive {
        SiteLive {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            minutes: Mutex::new([(0, 0); MINUTES]),
        }
    }
}

#[derive(Default)]
pub struct LiveCounters {
    sites: RwLock<hashbrown::HashMap<i64, Arc<SiteLive>>>,
}

/// One site's live numbers at one instant.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct LiveSnapshot {
    pub visitors: usize,
    pub pages: Vec<(String, usize)>,
    pub sources: Vec<(String, usize)>,
    pub countries: Vec<(String, usize)>,
    /// Oldest first; the last entry is the current minute.
    pub pageviews_per_minute: Vec<u32>,
}

/// What one committed event tells the live view.
pub struct LiveEvent<'a> {
    pub site_id: i64,
    pub visitor_id: i64,
    pub ts: i64,
    /// The visitor's page now; `None` keeps the one they had.
    pub page: Option<&'a str>,
    /// The event is a pageview (counted per minute).
    pub pageview: bool,
    pub dims: &'a Arc<VisitDims>,
}

fn stripe_of(visitor_id: i64) -> usize {
    (visitor_id as u64 % STRIPES as u64) as usize
}

impl LiveCounters {
    fn site(&self, site_id: i64) -> Arc<SiteLive> {
        if let Some(s) = self.sites.reading().get(&site_id) {
            return s.clone();
        }
        self.sites
            .writing()
            .entry(site_id)
            .or_insert_with(|| Arc::new(SiteLive::new()))
            .clone()
    }

    /// Every site's counters, taken out of the lock.
    fn all_sites(&self) -> Vec<Arc<SiteLive>> {
        self.sites.reading().values().cloned().collect()
    }

    pub fn record(&self, e: LiveEvent<'_>) {
        let site = self.site(e.site_id);
        {
            let mut stripe = site.stripes[stripe_of(e.visitor_id)].locked();
            if stripe.len() >= MAX_PER_STRIPE && !stripe.contains_key(&e.visitor_id) {
                stripe.retain(|_, s| e.ts - s.last_seen < WINDOW_SECS);
            }
            if stripe.len() < MAX_PER_STRIPE || stripe.contains_key(&e.visitor_id) {
                let seen = stripe.entry(e.visitor_id).or_insert_with(|| Seen {
                    last_seen: e.ts,
                    page: None,
                    dims: e.dims.clone(),
                });
                seen.last_seen = seen.last_seen.max(e.ts);
                seen.dims = e.dims.clone();
                if let Some(p) = e.page {
                    seen.page = Some(Arc::from(p));
                }
            }
        }
        if e.pageview {
            let minute = e.ts.div_euclid(60);
            let mut m = site.minutes.locked();
            let slot = &mut m[minute.rem_euclid(MINUTES as i64) as usize];
            if slot.0 != minute {
                *slot = (minute, 0);
            }
            slot.1 += 1;
        }
    }

    /// Seeds the counters with visits restored at start (their last page
    /// and time), so a restart does not empty the live view.
    pub fn restore<'a>(&self, visits: impl IntoIterator<Item = &'a VisitRecord>, now: i64) {
        for v in visits
            .into_iter()
            .filter(|v| now - v.last_seen_at < WINDOW_SECS)
        {
            self.record(LiveEvent {
                site_id: v.site_id,
                visitor_id: v.visitor_id,
                ts: v.last_seen_at,
                page: v.exit_page.as_deref(),
                pageview: false,
                dims: &v.dims,
            });
        }
    }

    /// Forgets visitors gone for longer than the window.
    pub fn sweep(&self, now: i64) {
        for site in self.all_sites() {
            for stripe in &site.stripes {
                stripe
                    .locked()
                    .retain(|_, s| now - s.last_seen < WINDOW_SECS);
            }
        }
    }

    /// Visitors in the window, all sites together.
    pub fn total_visitors(&self, now: i64) -> usize {
        self.all_sites()
            .iter()
            .flat_map(|site| site.stripes.iter())
            .map(|stripe| {
                stripe
                    .locked()
                    .values()
                    .filter(|s| now - s.last_seen < WINDOW_SECS)
                    .count()
            })
            .sum()
    }

    pub fn snapshot(&self, site_id: i64, now: i64) -> LiveSnapshot {
        let Some(site) = self.sites.reading().get(&site_id).cloned() else {
            return LiveSnapshot {
                pageviews_per_minute: vec![0; MINUTES],
                ..LiveSnapshot::default()
            };
        };
        let mut visitors = 0;
        let mut pages: HashMap<Arc<str>, usize> = HashMap::new();
        let mut sources: HashMap<Option<String>, usize> = HashMap::new();
        let mut countries: HashMap<Option<String>, usize> = HashMap::new();
        for stripe in &site.stripes {
            for s in stripe.locked().values() {
                if now - s.last_seen >= WINDOW_SECS {
                    continue;
                }
                visitors += 1;
                if let Some(p) = &s.page {
                    *pages.entry(p.clone()).or_default() += 1;
                }
                *sources.entry(s.dims.source.clone()).or_default() += 1;
                *countries.entry(s.dims.country.clone()).or_default() += 1;
            }
        }
        let minute = now.div_euclid(60);
        let m = site.minutes.locked();
        let pageviews_per_minute = (0..MINUTES as i64)
            .rev()
            .map(|ago| {
                let want = minute - ago;
                let slot = m[want.rem_euclid(MINUTES as i64) as usize];
                if slot.0 == want { slot.1 } else { 0 }
            })
            .collect();
        LiveSnapshot {
            visitors,
            pages: top(pages.into_iter().map(|(k, n)| (k.to_string(), n))),
            sources: top(sources
                .into_iter()
                .map(|(k, n)| (k.unwrap_or_else(|| "Direct / None".into()), n))),
            countries: top(countries
                .into_iter()
                .map(|(k, n)| (k.unwrap_or_else(|| "(none)".into()), n))),
            pageviews_per_minute,
        }
    }
}

/// The largest counts first, ties by name, at most [`TOP`].
fn top(items: impl Iterator<Item = (String, usize)>) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = items.collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(TOP);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(source: &str) -> Arc<VisitDims> {
        Arc::new(VisitDims {
            source: Some(source.into()),
            ..VisitDims::default()
        })
    }

    #[test]
    fn counts_visitors_of_the_last_five_minutes() {
        let live = LiveCounters::default();
        let google = dims("Google");
        for v in 0..3 {
            live.record(LiveEvent {
                site_id: 1,
                visitor_id: v,
                ts: 1_000,
                page: Some("/a"),
                pageview: true,
                dims: &google,
            });
        }
        // A custom event keeps the visitor's page.
        live.record(LiveEvent {
            site_id: 1,
            visitor_id: 0,
            ts: 1_100,
            page: None,
            pageview: false,
            dims: &google,
        });
        live.record(LiveEvent {
            site_id: 2,
            visitor_id: 9,
            ts: 1_100,
            page: Some("/other-site"),
            pageview: true,
            dims: &google,
        });
        let s = live.snapshot(1, 1_200);
        assert_eq!(s.visitors, 3);
        assert_eq!(s.pages, vec![("/a".to_string(), 3)]);
        assert_eq!(s.sources, vec![("Google".to_string(), 3)]);
        assert_eq!(s.pageviews_per_minute.len(), MINUTES);
        assert_eq!(s.pageviews_per_minute.iter().sum::<u32>(), 3);
        assert_eq!(live.snapshot(1, 1_350).visitors, 1, "two left the window");
        live.sweep(1_350);
        assert_eq!(live.snapshot(1, 1_350).visitors, 1);
        assert_eq!(live.snapshot(3, 1_350).visitors, 0);
        // Half an hour later the minute counts have rolled over.
        assert_eq!(
            live.snapshot(1, 1_000 + 31 * 60)
                .pageviews_per_minute
                .iter()
                .sum::<u32>(),
            0
        );
    }

    #[test]
    fn memory_is_bounded() {
        let live = LiveCounters::default();
        let d = dims("x");
        for v in 0..(MAX_PER_STRIPE * STRIPES + 100) as i64 {
            live.record(LiveEvent {
                site_id: 1,
                visitor_id: v,
                ts: 10,
                page: None,
                pageview: false,
                dims: &d,
            });
        }
        assert_eq!(live.snapshot(1, 10).visitors, MAX_PER_STRIPE * STRIPES);
        // Once the window has passed, new visitors find room again.
        live.record(LiveEvent {
            site_id: 1,
            visitor_id: -1,
            ts: 10 + WINDOW_SECS,
            page: None,
            pageview: false,
            dims: &d,
        });
        assert_eq!(live.snapshot(1, 10 + WINDOW_SECS).visitors, 1);
    }
}
