//! `tally demo`: realistic synthetic traffic, written through the same
//! ingest path as real events (enrichment, visitor ids, sessions, group
//! commit), so a newcomer sees a full dashboard and benchmarks get a database
//! of any size.
//!
//! The traffic has a daily and weekly rhythm, a long tail of pages, search,
//! social and direct visits, newsletter campaigns, a browser and device mix,
//! visits of several pages and bounces, and custom events with properties.
//! The same seed gives the same traffic.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::StreamExt;

use crate::config::Settings;
use crate::ingest::enrich::GeoLookup;
use crate::ingest::payload::parse_body;
use crate::ingest::{IngestError, IngestOptions, Ingestor, Outcome, RequestMeta};
use crate::report::sqlite::follower::Follower;
use crate::report::sqlite::rollups::RollupFeed;
use crate::store::{self, Store, now_unix};
use crate::usage::UsageError;

/// Visits in flight at once: enough to fill the writer's group commits.
const CONCURRENT_VISITS: usize = 256;

pub struct DemoOptions {
    pub site: String,
    /// Pageviews to write; custom events come on top.
    pub events: u64,
    pub days: u32,
    pub seed: u64,
}

#[derive(Debug, Default)]
pub struct DemoReport {
    pub pageviews: u64,
    pub custom_events: u64,
    pub visits: u64,
}

/// splitmix64: small, fast, and reproducible across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// An index into `weights`, with probability proportional to its weight.
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Browsers by share: (User-Agent, screen width).
const AGENTS: &[(&str, i64, f64)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        1920,
        26.0,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
        1366,
        6.0,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        1536,
        5.0,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        1440,
        9.0,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        1512,
        8.0,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        1920,
        3.0,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        390,
        19.0,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        412,
        14.0,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        384,
        4.0,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        820,
        3.0,
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        1600,
        1.0,
    ),
];

/// Where visits come from: (referrer, share). Empty is direct.
const REFERRERS: &[(&str, f64)] = &[
    ("", 40.0),
    ("https://www.google.com/", 26.0),
    ("https://www.bing.com/", 4.0),
    ("https://duckduckgo.com/", 4.0),
    ("https://t.co/x1y2z3", 4.0),
    ("https://www.reddit.com/r/selfhosted/comments/abc/", 3.0),
    ("https://news.ycombinator.com/item?id=1", 3.0),
    (
        "https://github.com/awesome-selfhosted/awesome-selfhosted",
        2.0,
    ),
    ("https://www.linkedin.com/feed/", 3.0),
    ("https://www.facebook.com/", 2.0),
    ("https://example-blog.net/posts/analytics-roundup", 2.0),
    ("https://lobste.rs/s/abc/", 1.0),
    ("https://mastodon.social/@someone", 1.0),
];

const SECTIONS: &[&str] = &["blog", "docs", "guides", "changelog", "customers"];
const TOPICS: &[&str] = &[
    "getting-started",
    "privacy",
    "self-hosting",
    "pricing-explained",
    "sqlite",
    "performance",
    "gdpr",
    "cookie-banners",
    "migration",
    "api",
    "dashboards",
    "retention",
    "backups",
    "teams",
    "goals",
    "campaigns",
    "single-page-apps",
    "security",
    "release-notes",
    "roadmap",
];
const TOP_PAGES: &[&str] = &[
    "/",
    "/pricing",
    "/features",
    "/about",
    "/contact",
    "/signup",
    "/login",
];

/// Pages by popularity rank; the weight of rank r falls as 1 / r^1.1.
fn pages() -> Vec<String> {
    let mut pages: Vec<String> = TOP_PAGES.iter().map(|p| p.to_string()).collect();
    for section in SECTIONS {
        pages.push(format!("/{section}"));
        for topic in TOPICS {
            pages.push(format!("/{section}/{topic}"));
        }
    }
    pages
}

/// Traffic by hour of day (UTC), lowest at night.
const HOURS: [f64; 24] = [
    2.0, 1.5, 1.0, 1.0, 1.2, 1.8, 3.0, 4.5, 6.0, 7.0, 7.5, 7.5, 7.0, 7.2, 7.5, 7.5, 7.0, 6.5, 6.0,
    5.5, 5.0, 4.5, 3.5, 2.5,
];

/// One visit, as drawn before its events are generated.
struct PlannedVisit {
    start: i64,
    seed: u64,
    pageviews: u64,
    /// The visitor: an address from a pool and an index into `AGENTS`.
    who: u32,
    agent: usize,
}

pub fn run(settings: &Settings, opts: DemoOptions) -> anyhow::Result<DemoReport> {
    if opts.days == 0 {
        bail!(UsageError("--days must be at least 1".into()));
    }
    let store = Store::open(&settings.raw.storage.data_dir, 2)?;
    let domain = opts.site.trim().to_ascii_lowercase();
    if store::sites::find_site(&*store.reader()?, &domain)?.is_none() {
        bail!(UsageError(format!(
            "no site {domain}: add it first with `tally site add {domain}`"
        )));
    }
    let geo = match &settings.geoip_database {
        Some(path) => GeoLookup::open(path)?,
        None => GeoLookup::disabled(),
    };
    // Before the first write as well as after the last: a server beside
    // this process must not go on trusting what it sealed if this one is
    // stopped halfway.
    crate::report::sqlite::recent::mark_external_writes(&store.write_connection()?)?;
    let now = now_unix();
    let feed = Arc::new(RollupFeed::default());
    let (ingestor, writer) = Ingestor::start(
        store.clone(),
        store.write_connection()?,
        geo,
        IngestOptions {
            queue_capacity: settings.raw.storage.queue_capacity,
            respect_opt_out: false,
            recover_visits: false,
            journal: false,
        },
        now,
        feed.clone(),
    )?;
    let ingestor = Arc::new(ingestor);
    // Not the owner of the data directory: the rollup mark is the server's.
    let follower = Follower::new(
        store.clone(),
        ingestor.writer().clone(),
        feed,
        false,
        None,
        now,
    )?;
    let plan = plan_visits(&opts, now);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let pages = Arc::new(pages());
        let page_weights: Arc<Vec<f64>> = Arc::new(
            (1..=pages.len())
                .map(|r| 1.0 / (r as f64).powf(1.1))
                .collect(),
        );
        let mut report = DemoReport::default();
        // Two visits of one visitor must not interleave: the session tracker
        // would see time run backwards. Each visitor's visits get numbered
        // tickets in plan (time) order and wait for their turn.
        let mut turns: HashMap<(u32, usize), (u64, Turn)> = HashMap::new();
        let mut results = futures_util::stream::iter(plan.into_iter().map(|visit| {
            let ingestor = ingestor.clone();
            let pages = pages.clone();
            let page_weights = page_weights.clone();
            let domain = domain.clone();
            let (next, serving) = turns
                .entry((visit.who, visit.agent))
                .or_insert_with(|| (0, Arc::new(tokio::sync::watch::Sender::new(0))));
            let ticket = *next;
            *next += 1;
            let serving = serving.clone();
            async move {
                let mut turn = serving.subscribe();
                let _ = turn.wait_for(|serving| *serving == ticket).await;
                let played = play_visit(&ingestor, &domain, &pages, &page_weights, visit).await;
                serving.send_modify(|s| *s += 1);
                played
            }
        }))
        .buffer_unordered(CONCURRENT_VISITS);
        while let Some(result) = results.next().await {
            let (pageviews, custom) = result?;
            report.visits += 1;
            report.pageviews += pageviews;
            report.custom_events += custom;
            // Keeps the visit snapshots and rollup feed that wait in memory small.
            if report.visits % FLUSH_EVERY_VISITS == 0 {
                follower.pass(ingestor.write_visit_snapshots()).await;
            }
        }
        drop(results);
        follower.pass(ingestor.write_visit_snapshots()).await;
        // Nothing else writes meanwhile: large transactions are cheapest.
        follower.roll_ended_visits(now_unix(), 20_000).await;
        Ok::<DemoReport, anyhow::Error>(report)
    })?;
    drop(follower);
    drop(ingestor);
    writer.shutdown();
    // A server running beside this process reloads what it holds in memory
    // and seals again what it sealed while this one wrote.
    crate::report::sqlite::recent::mark_external_writes(&store.write_connection()?)?;
    Ok(report)
}

/// Draws every visit's start and length so that the pageviews add up to
/// exactly `opts.events`, sorted by start so each visitor's visits replay in
/// order.
/// The ticket a visitor's visits are now serving.
type Turn = Arc<tokio::sync::watch::Sender<u64>>;

/// Visits played between two flushes.
const FLUSH_EVERY_VISITS: u64 = 20_000;

fn plan_visits(opts: &DemoOptions, now: i64) -> Vec<PlannedVisit> {
    let mut rng = Rng(opts.seed);
    let first_day = now.div_euclid(86_400) - i64::from(opts.days) + 1;
    let mut visits = Vec::new();
    let mut left = opts.events;
    while left > 0 {
        // 45 % bounce; the rest read two pages or more, a few read many.
        let mut n = if rng.unit() < 0.45 { 1 } else { 2 };
        while n > 1 && n < 30 && rng.unit() < 0.45 {
            n += 1;
        }
        let n = n.min(left);
        left -= n;
        let start = loop {
            let day = first_day + rng.below(u64::from(opts.days)) as i64;
            // Weekends are quieter (1970-01-01 was a Thursday).
            let weekday = (day + 3).rem_euclid(7);
            if weekday >= 5 && rng.unit() < 0.35 {
                continue;
            }
            let hour = rng.weighted(&HOURS) as i64;
            let t = day * 86_400 + hour * 3600 + rng.below(3600) as i64;
            // Later today moves to yesterday: the draws, and so the whole
            // plan, do not depend on the time of day.
            break if t > now { t - 86_400 } else { t };
        };
        // A returning visitor keeps address and browser; a pool the size of
        // a few thousand makes some visitors come back on other days.
        let who = rng.below(50_000) as u32;
        let agent = rng.weighted(&AGENTS.iter().map(|a| a.2).collect::<Vec<_>>());
        visits.push(PlannedVisit {
            start,
            seed: rng.next(),
            pageviews: n,
            who,
            agent,
        });
    }
    visits.sort_unstable_by_key(|v| v.start);
    visits
}

/// Sends one visit's events in order; returns (pageviews, custom events).
async fn play_visit(
    ingestor: &Ingestor,
    domain: &str,
    pages: &[String],
    page_weights: &[f64],
    visit: PlannedVisit,
) -> anyhow::Result<(u64, u64)> {
    let mut rng = Rng(visit.seed);
    let pageviews = visit.pageviews;
    let (ua, width, _) = AGENTS[visit.agent];
    let who = visit.who;
    let ip = IpAddr::V4(Ipv4Addr::new(
        (11 + who % 200) as u8,
        (who >> 8) as u8,
        (who >> 16) as u8 ^ 0x5a,
        (who % 250 + 1) as u8,
    ));
    let referrer = REFERRERS[rng.weighted(&REFERRERS.iter().map(|r| r.1).collect::<Vec<_>>())].0;
    let campaign = match rng.below(100) {
        0..=6 => "?utm_source=newsletter&utm_medium=email&utm_campaign=monthly-update",
        7..=9 => "?utm_source=twitter&utm_medium=social&utm_campaign=launch-week",
        _ => "",
    };
    let mut t = visit.start;
    let mut custom = 0;
    for i in 0..pageviews {
        let page = &pages[rng.weighted(page_weights)];
        let url = if i == 0 {
            format!("https://{domain}{page}{campaign}")
        } else {
            format!("https://{domain}{page}")
        };
        let body = serde_json::json!({
            "n": "pageview", "u": url, "d": domain,
            "r": if i == 0 && !referrer.is_empty() { Some(referrer) } else { None },
            "w": width,
        });
        send(ingestor, &body, ip, ua, t).await?;
        // Readers move on after 10 s to 4 min.
        t += 10 + rng.below(230) as i64;
        if rng.unit() < 0.06 {
            let (name, props) = match rng.below(3) {
                0 => {
                    let plan = ["free", "pro", "business"][rng.below(3) as usize];
                    ("Signup", serde_json::json!({ "plan": plan }))
                }
                1 => (
                    "Outbound Link: Click",
                    serde_json::json!({"url": "https://github.com/"}),
                ),
                _ => (
                    "File Download",
                    serde_json::json!({"url": format!("https://{domain}/files/guide.pdf")}),
                ),
            };
            let body = serde_json::json!({"n": name, "u": format!("https://{domain}{page}"), "d": domain, "p": props});
            send(ingestor, &body, ip, ua, t).await?;
            custom += 1;
        }
    }
    Ok((pageviews, custom))
}

async fn send(
    ingestor: &Ingestor,
    body: &serde_json::Value,
    ip: IpAddr,
    user_agent: &str,
    now: i64,
) -> anyhow::Result<()> {
    let payload = parse_body(body.to_string().as_bytes())?;
    let meta = RequestMeta {
        ip,
        user_agent,
        opted_out: false,
        now,
    };
    loop {
        match ingestor.ingest(payload.clone(), meta).await {
            Ok(Outcome::Stored) => return Ok(()),
            Ok(other) => bail!("demo event not stored: {other:?}"),
            // The writer is behind: wait a moment, as a tracker would retry.
            Err(IngestError::Overloaded) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}
