//! The live view: `?period=realtime` and the Server-Sent Events stream at
//! `/{domain}/live` that keeps it (and the dashboard's visitor count) current.
//!
//! Streams are reachable anonymously on a public site or a share link and
//! each holds a connection for minutes, so they are capped per client
//! address and in total, with a share of the total kept for members
//! ([`LiveStreams`]), and every stream of a site sends the same numbers,
//! computed at most once a second for all of them. A stream checks every
//! [`ACCESS_RECHECK_SECS`] that what admitted it still holds, and ends when
//! it does not.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use askama::Template;
use futures_util::StreamExt;

use actix_web::HttpResponse;

use super::access::{Admitted, Pass, Viewer, admit, still_admitted};
use super::view::Link;
use super::{Nav, html, view};
use crate::http::{AppState, PageError, client_ip};
use crate::ingest::live::LiveSnapshot;
use crate::store;
use crate::store::sites::Site;
use crate::sync::Lock;

/// How long one live stream lasts before the browser reconnects (which
/// checks access again).
const LIVE_STREAM_SECS: u64 = 600;

/// Seconds a refused stream is told to wait: open streams end within
/// [`LIVE_STREAM_SECS`], or when their page is closed.
const STREAM_RETRY_AFTER: u32 = 30;

/// How often an open stream checks that its viewer may still see the site
/// (the session is open and still a member's, the share link still exists,
/// the site is still public), so revoked access ends it within this many
/// seconds rather than at [`LIVE_STREAM_SECS`]. A few indexed reads per
/// stream each time: 256 streams make about 17 a second.
pub const ACCESS_RECHECK_SECS: u64 = 15;

/// Open live streams, per client and in total, and the live numbers of each
/// site with streams, shared by all of them.
pub struct LiveStreams {
    per_client: usize,
    total: usize,
    /// Streams without a member's session (a public site, a share link)
    /// may take this many of `total`, half: the rest stays for members, so
    /// strangers with many addresses cannot lock them out.
    guests: usize,
    /// Of `guests`, those one site may take, a quarter of `total`: one
    /// popular public site leaves room for the others' guests.
    guests_per_site: usize,
    open: Mutex<OpenStreams>,
    /// Per site: the second of the latest numbers and their JSON. At most
    /// one entry per site with an open stream, and those are at most
    /// `total`; entries older than a few seconds are dropped as sites come.
    latest: Mutex<HashMap<i64, Arc<Mutex<Latest>>>>,
    /// Times a site's live numbers were computed, for `/metrics`: at most
    /// once a second per site, however many pages and streams ask.
    computed: AtomicU64,
}

#[derive(Default)]
struct OpenStreams {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    guests: usize,
    guests_by_site: HashMap<i64, usize>,
}

/// Who holds a stream, for the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A signed-in user with access to the site (a member or an admin).
    Member,
    /// Anyone else, by the site: a public site's visitor, a share link.
    Guest { site_id: i64 },
}

#[derive(Default)]
struct Latest {
    second: i64,
    numbers: Option<LiveNumbers>,
}

/// One computation of a site's live numbers, as the page shows them and as
/// streams send them.
#[derive(Clone)]
pub struct LiveNumbers {
    pub snapshot: Arc<LiveSnapshot>,
    pub json: Arc<str>,
}

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client has its share open.
    Client,
    /// The server has its total open.
    Total,
    /// Guests have their share of the total open.
    Guests,
    /// Guests of this site have their share open.
    GuestsOfSite,
}

/// An open stream's place, given back when the stream ends (dropped with it,
/// also when the client goes away).
pub struct StreamSlot {
    streams: Arc<LiveStreams>,
    client: IpAddr,
    holder: Holder,
}

/// One fewer of `key` in `counts`; a count that reaches zero goes.
fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.locked();
        open.total = open.total.saturating_sub(1);
        release(&mut open.by_client, &self.client);
        if let Holder::Guest { site_id } = self.holder {
            open.guests = open.guests.saturating_sub(1);
            release(&mut open.guests_by_site, &site_id);
        }
    }
}

impl LiveStreams {
    pub fn new(per_client: usize, total: usize) -> Arc<LiveStreams> {
        let total = total.max(1);
        Arc::new(LiveStreams {
            per_client: per_client.max(1),
            total,
            guests: (total / 2).max(1),
            guests_per_site: (total / 4).max(1),
            open: Mutex::default(),
            latest: Mutex::default(),
            computed: AtomicU64::new(0),
        })
    }

    /// A place for one more stream of `client`, if it and the server are
    /// under their caps, and for a guest if guests (of the site) are under
    /// theirs. An IPv6 client is counted by its /64, the block one
    /// subscriber usually holds. The counts stay right even if a holder
    /// panicked: every change is made under one lock, in one step.
    pub fn open(self: &Arc<Self>, client: IpAddr, holder: Holder) -> Result<StreamSlot, Refused> {
        let client = client_key(client);
        let mut open = self.open.locked();
        if open.by_client.get(&client).copied().unwrap_or(0) >= self.per_client {
            return Err(Refused::Client);
        }
        if open.total >= self.total {
            return Err(Refused::Total);
        }
        if let Holder::Guest { site_id } = holder {
            if open.guests >= self.guests {
                return Err(Refused::Guests);
            }
            if open.guests_by_site.get(&site_id).copied().unwrap_or(0) >= self.guests_per_site {
                return Err(Refused::GuestsOfSite);
            }
            open.guests += 1;
            *open.guests_by_site.entry(site_id).or_default() += 1;
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Ok(StreamSlot {
            streams: self.clone(),
            client,
            holder,
        })
    }

    /// Streams open now, all clients together.
    pub fn open_count(&self) -> usize {
        self.open.locked().total
    }

    /// Streams open now without a member's session.
    pub fn guest_count(&self) -> usize {
        self.open.locked().guests
    }

    /// The live numbers of `site_id` as of `second`: the copy computed in
    /// that second if there is one, else `compute`'s, kept for the other
    /// streams and realtime pages of the site (each computation scans every
    /// live visitor of the site, so a flood of anonymous page views of a
    /// public site must not repeat it). Only callers for the same site wait.
    pub fn latest(
        &self,
        site_id: i64,
        second: i64,
        compute: impl FnOnce() -> LiveSnapshot,
    ) -> LiveNumbers {
        let entry = {
            let mut latest = self.latest.locked();
            if !latest.contains_key(&site_id) && latest.len() >= self.total {
                latest.retain(|_, l| l.locked().second >= second - 2);
            }
            latest.entry(site_id).or_default().clone()
        };
        let mut entry = entry.locked();
        match &entry.numbers {
            Some(numbers) if entry.second == second => numbers.clone(),
            _ => {
                let snapshot = compute();
                self.computed.fetch_add(1, Ordering::Relaxed);
                let numbers = LiveNumbers {
                    json: live_json(&snapshot).into(),
                    snapshot: Arc::new(snapshot),
                };
                entry.second = second;
                entry.numbers = Some(numbers.clone());
                numbers
            }
        }
    }

    /// Times live numbers were computed since start.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Sites whose latest numbers are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.latest.locked().len()
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
/// 503 when the server (or its share for guests) has too many.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<impl actix_web::Responder, PageError> {
    let a = admit(&state, &req, &domain, q.get("auth").map(String::as_str)).await?;
    let client = client_ip::of_request(&req, &state.trusted_proxies)
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let holder = match a.viewer {
        Viewer::User(_) => Holder::Member,
        Viewer::Guest { .. } => Holder::Guest { site_id: a.site.id },
    };
    let slot = state
        .live_streams
        .open(client, holder)
        .map_err(|refused| match refused {
            Refused::Client => PageError::Throttled(
                "too many live views open from this address",
                STREAM_RETRY_AFTER,
            ),
            Refused::Total => PageError::Busy("too many live views open", STREAM_RETRY_AFTER),
            Refused::Guests => PageError::Busy(
                "too many live views open without signing in",
                STREAM_RETRY_AFTER,
            ),
            Refused::GuestsOfSite => PageError::Busy(
                "too many live views of this site open without signing in",
                STREAM_RETRY_AFTER,
            ),
        })?;
    let mut stopping = state.stopping.subscribe();
    let live = Live {
        state: state.into_inner(),
        site: a.site,
        pass: a.pass,
        _slot: slot,
        tick: tokio::time::interval(Duration::from_secs(1)),
        started: Instant::now(),
        checked: Instant::now(),
        last: Arc::from(""),
    };
    let stream = futures_util::stream::unfold(live, |mut live| async move {
        let json = live.next().await?;
        Some((
            Ok::<_, Infallible>(sse::Event::Data(sse::Data::new(json.to_string()))),
            live,
        ))
    })
    .take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    Ok(sse::Sse::from_stream(stream)
        .with_keep_alive(Duration::from_secs(5))
        .with_retry_duration(Duration::from_secs(1))
        .customize()
        // nginx would otherwise hold the stream in its buffers.
        .insert_header(("X-Accel-Buffering", "no")))
}

/// One open stream.
struct Live {
    state: Arc<AppState>,
    site: Site,
    /// What admitted the viewer, checked again every
    /// [`ACCESS_RECHECK_SECS`].
    pass: Pass,
    /// Held as long as the stream: its place is given back with it.
    _slot: StreamSlot,
    tick: tokio::time::Interval,
    started: Instant,
    checked: Instant,
    /// The numbers sent last.
    last: Arc<str>,
}

impl Live {
    /// The next numbers to send, once they change; `None` when the stream
    /// ends: its time is up, or its viewer may no longer see the site.
    async fn next(&mut self) -> Option<Arc<str>> {
        loop {
            self.tick.tick().await;
            if self.started.elapsed() >= Duration::from_secs(LIVE_STREAM_SECS) {
                return None;
            }
            if self.checked.elapsed() >= Duration::from_secs(ACCESS_RECHECK_SECS) {
                self.checked = Instant::now();
                match still_admitted(&self.state, &self.site, &self.pass).await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => {
                        // Ended rather than kept unchecked; the browser
                        // reconnects, and is admitted afresh.
                        tracing::warn!(error = %e, "live stream ended: access not checked");
                        return None;
                    }
                }
            }
            let now = store::now_unix();
            let (state, site_id) = (&self.state, self.site.id);
            let json = state
                .live_streams
                .latest(site_id, now, || {
                    state.ingestor.live().snapshot(site_id, now)
                })
                .json;
            if json != self.last {
                self.last = json.clone();
                return Some(json);
            }
        }
    }
}

/// The live numbers of `site_id` as the stream sends them.
fn live_json(snapshot: &LiveSnapshot) -> String {
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
    let (site_id, now) = (a.site.id, store::now_unix());
    let snapshot = state
        .live_streams
        .latest(site_id, now, || {
            state.ingestor.live().snapshot(site_id, now)
        })
        .snapshot;
    html(&RealtimePage {
        signed_in: a.nav.clone(),
        home,
        domain: a.site.domain.clone(),
        periods,
        live_href,
        current_visitors: view::count(snapshot.visitors as i64),
        minutes: minute_bars(&snapshot.pageviews_per_minute),
        lists: [
            ("pages", "Current pages", "Page", snapshot.pages.clone()),
            ("sources", "Sources", "Source", snapshot.sources.clone()),
            (
                "countries",
                "Countries",
                "Country",
                snapshot.countries.clone(),
            ),
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
        let a1 = streams.open(ip("192.0.2.1"), Holder::Member).unwrap();
        let _a2 = streams.open(ip("192.0.2.1"), Holder::Member).unwrap();
        assert_eq!(
            streams.open(ip("192.0.2.1"), Holder::Member).err(),
            Some(Refused::Client)
        );
        let _b = streams.open(ip("2001:db8:1:2::1"), Holder::Member).unwrap();
        // Another address of the same IPv6 /64 counts as the same client.
        let _b2 = streams
            .open(ip("2001:db8:1:2::ffff"), Holder::Member)
            .unwrap();
        assert_eq!(
            streams.open(ip("2001:db8:1:2::3"), Holder::Member).err(),
            Some(Refused::Client)
        );
        assert_eq!(streams.open_count(), 4);
        drop(a1);
        assert_eq!(streams.open_count(), 3);
        let _c = streams.open(ip("198.51.100.1"), Holder::Member).unwrap();
        assert_eq!(
            streams.open(ip("198.51.100.2"), Holder::Member).err(),
            Some(Refused::Total)
        );
    }

    #[test]
    fn guests_take_at_most_half_of_the_total_and_a_quarter_per_site() {
        let streams = LiveStreams::new(8, 8);
        let guest = |site_id| Holder::Guest { site_id };
        let a1 = streams.open(ip("198.51.100.1"), guest(1)).unwrap();
        let _a2 = streams.open(ip("198.51.100.2"), guest(1)).unwrap();
        assert_eq!(
            streams.open(ip("198.51.100.3"), guest(1)).err(),
            Some(Refused::GuestsOfSite)
        );
        let _b1 = streams.open(ip("198.51.100.4"), guest(2)).unwrap();
        let _b2 = streams.open(ip("198.51.100.5"), guest(2)).unwrap();
        assert_eq!(
            streams.open(ip("198.51.100.6"), guest(3)).err(),
            Some(Refused::Guests)
        );
        assert_eq!(streams.guest_count(), 4);
        // Members have the rest, and may fill the total.
        let members: Vec<_> = (1..=4)
            .map(|i| streams.open(ip(&format!("203.0.113.{i}")), Holder::Member))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            streams.open(ip("203.0.113.5"), Holder::Member).err(),
            Some(Refused::Total)
        );
        // A guest's place given back is a guest's again, once the total
        // has room.
        drop(a1);
        assert_eq!(streams.guest_count(), 3);
        drop(members);
        let _a3 = streams.open(ip("198.51.100.3"), guest(1)).unwrap();
        assert_eq!(streams.open_count(), 4);
    }

    #[test]
    fn a_sites_numbers_are_computed_once_a_second_for_all_its_streams() {
        let streams = LiveStreams::new(8, 4);
        let computed = std::cell::Cell::new(0);
        let compute = || {
            computed.set(computed.get() + 1);
            LiveSnapshot {
                visitors: computed.get(),
                ..LiveSnapshot::default()
            }
        };
        let first = streams.latest(1, 100, compute);
        for _ in 0..10 {
            let again = streams.latest(1, 100, compute);
            assert_eq!(again.json, first.json);
            assert_eq!(again.snapshot, first.snapshot);
        }
        assert_eq!(computed.get(), 1);
        assert_ne!(streams.latest(1, 101, compute).json, first.json);
        assert_eq!(computed.get(), 2);
        assert_eq!(streams.computed(), 2);
        streams.latest(2, 101, compute);
        assert_eq!(computed.get(), 3);

        // Bounded: sites without a stream for a while make room.
        for site in 3..=40 {
            streams.latest(site, 200 + site, compute);
        }
        assert!(streams.kept() <= 4, "{}", streams.kept());
    }
}
