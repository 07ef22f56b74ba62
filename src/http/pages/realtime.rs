//! The live view: `?period=realtime` and the Server-Sent Events stream at
//! `/{domain}/live` that keeps it (and the dashboard's visitor count) current.
//!
//! Streams are reachable anonymously on a public site or a share link and
//! each holds a connection for minutes, so they are capped per client
//! address and in total ([`LiveStreams`]), and every stream of a site sends
//! the same numbers, computed at most once a second for all of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use askama::Template;
use futures_util::StreamExt;

use actix_web::HttpResponse;

use super::access::{Admitted, admit};
use super::dashboard::Link;
use super::{Nav, html, view};
use crate::http::{AppState, PageError, client_ip};
use crate::store;

/// How long one live stream lasts before the browser reconnects (which
/// checks access again).
const LIVE_STREAM_SECS: u64 = 600;

/// Seconds a refused stream is told to wait: open streams end within
/// [`LIVE_STREAM_SECS`], or when their page is closed.
const STREAM_RETRY_AFTER: u32 = 30;

/// Open live streams, per client and in total, and the live numbers of each
/// site with streams, shared by all of them.
pub struct LiveStreams {
    per_client: usize,
    total: usize,
    open: Mutex<OpenStreams>,
    /// Per site: the second of the latest numbers and their JSON. At most
    /// one entry per site with an open stream, and those are at most
    /// `total`; entries older than a few seconds are dropped as sites come.
    latest: Mutex<HashMap<i64, Arc<Mutex<Latest>>>>,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

#[derive(Default)]
struct Latest {
    second: i64,
    json: Arc<str>,
}

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Client,
    Total,
}

/// An open stream's place, given back when the stream ends (dropped with it,
/// also when the client goes away).
pub struct StreamSlot {
    streams: Arc<LiveStreams>,
    client: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock_open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

impl LiveStreams {
    pub fn new(per_client: usize, total: usize) -> Arc<LiveStreams> {
        Arc::new(LiveStreams {
            per_client: per_client.max(1),
            total: total.max(1),
            open: Mutex::default(),
            latest: Mutex::default(),
        })
    }

    // The counts stay right even if a holder panicked: every change is one
    // step.
    fn lock_open(&self) -> std::sync::MutexGuard<'_, OpenStreams> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for one more stream of `client`, if it and the server are
    /// under their caps. An IPv6 client is counted by its /64, the block
    /// one subscriber usually holds.
    pub fn open(self: &Arc<Self>, client: IpAddr) -> Result<StreamSlot, Refused> {
        let client = client_key(client);
        let mut open = self.lock_open();
        if open.by_client.get(&client).copied().unwrap_or(0) >= self.per_client {
            return Err(Refused::Client);
        }
        if open.total >= self.total {
            return Err(Refused::Total);
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            client,
        })
    }

    /// Streams open now, all clients together.
    pub fn open_count(&self) -> usize {
        self.lock_open().total
    }

    /// The live numbers of `site_id` as of `second`: the copy computed in
    /// that second if there is one, else `compute`'s, kept for the other
    /// streams of the site. Only streams of the same site wait for it.
    fn latest(&self, site_id: i64, second: i64, compute: impl FnOnce() -> String) -> Arc<str> {
        let entry = {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            if !latest.contains_key(&site_id) && latest.len() >= self.total {
                latest.retain(|_, l| {
                    l.lock().unwrap_or_else(PoisonError::into_inner).second >= second - 2
                });
            }
            latest.entry(site_id).or_default().clone()
        };
        let mut entry = entry.lock().unwrap_or_else(PoisonError::into_inner);
        if entry.second != second || entry.json.is_empty() {
            entry.json = compute().into();
            entry.second = second;
        }
        entry.json.clone()
    }

    /// Sites whose latest numbers are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// `/{domain}/live` and `/share/{domain}/live`: the live numbers as
/// Server-Sent Events, at most once a second and only when they change.
/// Beyond the caps of [`LiveStreams`]: 429 for a client with too many open,
/// 503 when the server has too many.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<impl actix_web::Responder, PageError> {
    let site = admit(&state, &req, &domain, q.get("auth").map(String::as_str))
        .await?
        .site;
    let client = client_ip::of_request(&req, &state.trusted_proxies)
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let slot = state
        .live_streams
        .open(client)
        .map_err(|refused| match refused {
            Refused::Client => PageError::Throttled(
                "too many live views open from this address",
                STREAM_RETRY_AFTER,
            ),
            Refused::Total => PageError::Busy("too many live views open", STREAM_RETRY_AFTER),
        })?;
    let state = state.into_inner();
    let mut stopping = state.stopping.subscribe();
    let started = std::time::Instant::now();
    let mut last: Arc<str> = Arc::from("");
    let ticks = futures_util::stream::unfold(
        tokio::time::interval(std::time::Duration::from_secs(1)),
        |mut tick| async move {
            tick.tick().await;
            Some(((), tick))
        },
    )
    .take_while(move |_| std::future::ready(started.elapsed().as_secs() < LIVE_STREAM_SECS))
    .take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    let stream = ticks.filter_map(move |_| {
        // Held as long as the stream: its place is given back with it.
        let _slot = &slot;
        let now = store::now_unix();
        let json = state
            .live_streams
            .latest(site.id, now, || live_json(&state, site.id, now));
        let changed = json != last;
        if changed {
            last = json.clone();
        }
        std::future::ready(
            changed
                .then(|| Ok::<_, Infallible>(sse::Event::Data(sse::Data::new(json.to_string())))),
        )
    });
    Ok(sse::Sse::from_stream(stream)
        .with_keep_alive(std::time::Duration::from_secs(5))
        .with_retry_duration(std::time::Duration::from_secs(1))
        .customize()
        // nginx would otherwise hold the stream in its buffers.
        .insert_header(("X-Accel-Buffering", "no")))
}

/// The live numbers of `site_id` as the stream sends them.
fn live_json(state: &AppState, site_id: i64, now: i64) -> String {
    let snapshot = state.ingestor.live().snapshot(site_id, now);
    serde_json::json!({
        "visitors": snapshot.visitors,
        "visitors_text": view::count(snapshot.visitors as i64),
        "pages": snapshot.pages,
        "sources": snapshot.sources,
        "countries": snapshot.countries,
        "pageviews_per_minute": snapshot.pageviews_per_minute,
    })
    .to_string()
}

pub struct LiveRow {
    pub label: String,
    pub count: String,
    pub bar: String,
}

pub struct LiveList {
    pub key: &'static str,
    pub title: &'static str,
    pub column: &'static str,
    pub rows: Vec<LiveRow>,
}

pub struct MinuteBar {
    pub x: String,
    pub y: String,
    pub height: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "realtime.html")]
pub struct RealtimePage {
    pub signed_in: Option<Nav>,
    pub domain: String,
    pub home: String,
    pub periods: Vec<Link>,
    pub live_href: String,
    pub current_visitors: String,
    pub minutes: Vec<MinuteBar>,
    pub lists: Vec<LiveList>,
}

fn live_rows(rows: &[(String, usize)]) -> Vec<LiveRow> {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    rows.iter()
        .map(|(label, n)| LiveRow {
            label: label.clone(),
            count: view::count(*n as i64),
            bar: format!("{:.1}", 100.0 * *n as f64 / max as f64),
        })
        .collect()
}

/// The realtime chart: one bar per minute in a 600 × 120 box; `app.js`
/// moves the same bars as numbers arrive.
fn minute_bars(per_minute: &[u32]) -> Vec<MinuteBar> {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = per_minute.len();
    per_minute
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let h = 110.0 * f64::from(v) / max;
            let ago = n - 1 - i;
            MinuteBar {
                x: format!("{:.1}", 600.0 * i as f64 / n as f64 + 2.0),
                y: format!("{:.1}", 115.0 - h),
                height: format!("{h:.1}"),
                title: match ago {
                    0 => format!("This minute: {v} pageviews"),
                    _ => format!("{ago} min ago: {v} pageviews"),
                },
            }
        })
        .collect()
}

/// `?period=realtime`: the live numbers as of now; the page's script keeps
/// them current over [`live`].
pub fn page(
    state: &AppState,
    a: &Admitted,
    periods: Vec<Link>,
    home: String,
    live_href: String,
) -> Result<HttpResponse, PageError> {
    let snapshot = state.ingestor.live().snapshot(a.site.id, store::now_unix());
    html(&RealtimePage {
        signed_in: a.nav.clone(),
        home,
        domain: a.site.domain.clone(),
        periods,
        live_href,
        current_visitors: view::count(snapshot.visitors as i64),
        minutes: minute_bars(&snapshot.pageviews_per_minute),
        lists: [
            ("pages", "Current pages", "Page", snapshot.pages),
            ("sources", "Sources", "Source", snapshot.sources),
            ("countries", "Countries", "Country", snapshot.countries),
        ]
        .into_iter()
        .map(|(key, title, column, rows)| LiveList {
            key,
            title,
            column,
            rows: live_rows(&rows),
        })
        .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn streams_are_capped_per_client_and_in_total() {
        let streams = LiveStreams::new(2, 4);
        let a1 = streams.open(ip("192.0.2.1")).unwrap();
        let _a2 = streams.open(ip("192.0.2.1")).unwrap();
        assert_eq!(streams.open(ip("192.0.2.1")).err(), Some(Refused::Client));
        let _b = streams.open(ip("2001:db8:1:2::1")).unwrap();
        // Another address of the same IPv6 /64 counts as the same client.
        let _b2 = streams.open(ip("2001:db8:1:2::ffff")).unwrap();
        assert_eq!(
            streams.open(ip("2001:db8:1:2::3")).err(),
            Some(Refused::Client)
        );
        assert_eq!(streams.open_count(), 4);
        drop(a1);
        assert_eq!(streams.open_count(), 3);
        let _c = streams.open(ip("198.51.100.1")).unwrap();
        assert_eq!(streams.open(ip("198.51.100.2")).err(), Some(Refused::Total));
    }

    #[test]
    fn a_sites_numbers_are_computed_once_a_second_for_all_its_streams() {
        let streams = LiveStreams::new(8, 4);
        let computed = std::cell::Cell::new(0);
        let compute = || {
            computed.set(computed.get() + 1);
            format!("{{\"n\":{}}}", computed.get())
        };
        let first = streams.latest(1, 100, compute);
        for _ in 0..10 {
            assert_eq!(streams.latest(1, 100, compute), first);
        }
        assert_eq!(computed.get(), 1);
        assert_ne!(streams.latest(1, 101, compute), first);
        assert_eq!(computed.get(), 2);
        streams.latest(2, 101, compute);
        assert_eq!(computed.get(), 3);

        // Bounded: sites without a stream for a while make room.
        for site in 3..=40 {
            streams.latest(site, 200 + site, compute);
        }
        assert!(streams.kept() <= 4, "{}", streams.kept());
    }
}
