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
//!
//! Without filters the numbers are the live counters' in memory. A view
//! with filters (`?filters=…`, as every report takes them) gets its numbers
//! from the reports instead, over the raw events of the last half hour, so
//! they follow the same filter rules as the rest of the dashboard; those
//! are computed at most once a second per site and filters, shared by the
//! streams and pages of that view, for at most [`FILTERED_VIEWS`] views at
//! once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use askama::Template;
use futures_util::StreamExt;

use actix_web::HttpResponse;

use super::access::{Admitted, Pass, Viewer, admit, still_admitted};
use super::view::{Chip, Link, ViewState};
use super::{Nav, blocking, html, view};
use crate::http::{AppState, PageError, client_ip};
use crate::ingest::live::LiveSnapshot;
use crate::query::{self, QueryError};
use crate::report::Reports;
use crate::report::model::Filter;
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

/// Filtered views (site and filters) whose live numbers are kept at once.
/// Each costs a few dozen short queries over the site's last half hour of
/// raw events a second while it is watched; a view unwatched for
/// [`KEPT_SECS`] makes room. Beyond it, a new filtered view's page and
/// stream are refused with `503` and `Retry-After` (views without filters
/// are never refused: their numbers are in memory).
pub const FILTERED_VIEWS: usize = 16;

/// Seconds a view's latest numbers are kept unasked before another view
/// may take their place.
const KEPT_SECS: i64 = 2;

/// Seconds a refused filtered view is told to wait: watched views make room
/// within [`KEPT_SECS`] of their last page or stream going.
const VIEW_RETRY_AFTER: u32 = 10;

/// Which live numbers: a site's, narrowed by filters (none: the live
/// counters' numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LiveKey {
    pub site_id: i64,
    pub filters: Vec<Filter>,
}

impl LiveKey {
    fn filtered(&self) -> bool {
        !self.filters.is_empty()
    }
}

/// Open live streams, per client and in total, and the live numbers of each
/// view with streams, shared by all of them.
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
    /// Per view: its latest numbers. Without filters, about one entry per
    /// site with an open stream, and those are at most `total`; with
    /// filters, at most [`FILTERED_VIEWS`]. Entries unasked for
    /// [`KEPT_SECS`] are dropped as views come.
    latest: Mutex<HashMap<LiveKey, Arc<Latest>>>,
    /// Times a view's live numbers were computed, for `/metrics`: at most
    /// once a second per view, however many pages and streams ask.
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

/// One view's latest numbers.
struct Latest {
    /// The second they were last asked for: read without waiting for a
    /// computation under way, to tell whether the view is still watched.
    asked: AtomicI64,
    /// The second they were computed in, and the numbers.
    numbers: Mutex<Option<(i64, LiveNumbers)>>,
}

/// Why a view's live numbers could not be had.
#[derive(Debug)]
pub enum Unavailable<E> {
    /// [`FILTERED_VIEWS`] other filtered views are being watched.
    Busy,
    /// Computing them failed.
    Failed(E),
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

    /// The entry of `key`, marked asked at `second`; `None` for a new
    /// filtered view when [`FILTERED_VIEWS`] others are watched. Views
    /// without filters always get one: dropping those unasked for a while
    /// keeps them near the number of sites with streams.
    fn entry(&self, key: &LiveKey, second: i64) -> Option<Arc<Latest>> {
        let mut latest = self.latest.locked();
        if let Some(entry) = latest.get(key) {
            entry.asked.fetch_max(second, Ordering::Relaxed);
            return Some(entry.clone());
        }
        let filtered = key.filtered();
        let cap = if filtered { FILTERED_VIEWS } else { self.total };
        let alike = |latest: &HashMap<LiveKey, Arc<Latest>>| {
            latest.keys().filter(|k| k.filtered() == filtered).count()
        };
        if alike(&latest) >= cap {
            latest.retain(|_, l| l.asked.load(Ordering::Relaxed) >= second - KEPT_SECS);
            if filtered && alike(&latest) >= cap {
                return None;
            }
        }
        let entry = Arc::new(Latest {
            asked: AtomicI64::new(second),
            numbers: Mutex::new(None),
        });
        latest.insert(key.clone(), entry.clone());
        Some(entry)
    }

    /// Whether the numbers of `key` can be had at `second`: a place for a
    /// new filtered view is taken now, so a stream is refused at its start
    /// rather than after it opened.
    pub fn reserve(&self, key: &LiveKey, second: i64) -> bool {
        self.entry(key, second).is_some()
    }

    /// The live numbers of `key` as of `second`: the copy computed in that
    /// second if there is one, else `compute`'s, kept for the other streams
    /// and realtime pages of the view (each computation scans every live
    /// visitor of the site, or queries its last half hour of events, so a
    /// flood of anonymous page views of a public site must not repeat it).
    /// Only callers for the same view wait. A failed computation is not
    /// kept: the next caller tries again.
    pub fn latest<E>(
        &self,
        key: &LiveKey,
        second: i64,
        compute: impl FnOnce() -> Result<LiveSnapshot, E>,
    ) -> Result<LiveNumbers, Unavailable<E>> {
        let entry = self.entry(key, second).ok_or(Unavailable::Busy)?;
        let mut kept = entry.numbers.locked();
        match &*kept {
            Some((at, numbers)) if *at == second => Ok(numbers.clone()),
            _ => {
                let snapshot = compute().map_err(Unavailable::Failed)?;
                self.computed.fetch_add(1, Ordering::Relaxed);
                let numbers = LiveNumbers {
                    json: live_json(&snapshot).into(),
                    snapshot: Arc::new(snapshot),
                };
                *kept = Some((second, numbers.clone()));
                Ok(numbers)
            }
        }
    }

    /// The live numbers of `key` as of `second`, computed as the view needs
    /// them: the live counters' without filters (in memory, here), the
    /// reports' with filters (on a blocking thread).
    pub async fn numbers(
        self: &Arc<Self>,
        state: &AppState,
        site: &Site,
        key: &LiveKey,
        second: i64,
    ) -> Result<LiveNumbers, PageError> {
        if !key.filtered() {
            let live = state.ingestor.live();
            let numbers = self.latest(key, second, || {
                Ok::<_, Infallible>(live.snapshot(site.id, second))
            });
            return numbers.map_err(|e| match e {
                Unavailable::Busy => busy(),
                Unavailable::Failed(never) => match never {},
            });
        }
        let (streams, reports, site, key) = (
            self.clone(),
            state.reports.clone(),
            site.clone(),
            key.clone(),
        );
        blocking(move || {
            streams
                .latest(&key, second, || {
                    filtered_snapshot(&*reports, &site, &key.filters, second)
                })
                .map_err(|e| match e {
                    Unavailable::Busy => busy(),
                    Unavailable::Failed(e) => PageError::from(e),
                })
        })
        .await
    }

    /// Times live numbers were computed since start.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Views whose latest numbers are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.latest.locked().len()
    }
}

/// The refusal of a new filtered view while [`FILTERED_VIEWS`] are watched.
fn busy() -> PageError {
    PageError::Busy("too many filtered live views open", VIEW_RETRY_AFTER)
}

/// A filtered view's numbers, from the reports, in the live counters' shape
/// (the page and the stream show both alike).
fn filtered_snapshot(
    reports: &dyn Reports,
    site: &Site,
    filters: &[Filter],
    now: i64,
) -> Result<LiveSnapshot, QueryError> {
    let r = query::realtime(reports, site, filters, now)?;
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    let rows = |rows: Vec<(String, i64)>| -> Vec<(String, usize)> {
        rows.into_iter().map(|(v, n)| (v, count(n))).collect()
    };
    Ok(LiveSnapshot {
        visitors: count(r.visitors),
        pages: rows(r.pages),
        sources: rows(r.sources),
        countries: rows(r.countries),
        pageviews_per_minute: r
            .pageviews_per_minute
            .into_iter()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .collect(),
    })
}

/// The view of `site` that `filters` (the `filters` parameter) asks for;
/// a bad filter is a `400` naming `filters`.
fn view_key(site: &Site, filters: Option<&str>) -> Result<LiveKey, PageError> {
    Ok(LiveKey {
        site_id: site.id,
        filters: query::filters::parse(filters)?,
    })
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
/// Server-Sent Events, at most once a second and only when they change,
/// narrowed by `filters` when given (a bad one is a 400 naming `filters`).
/// Beyond the caps of [`LiveStreams`]: 429 for a client with too many open,
/// 503 when the server (or its share for guests) has too many, or when
/// [`FILTERED_VIEWS`] other filtered views are watched.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<impl actix_web::Responder, PageError> {
    let a = admit(&state, &req, &domain, q.get("auth").map(String::as_str)).await?;
    let key = view_key(&a.site, q.get("filters").map(String::as_str))?;
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
    if !state.live_streams.reserve(&key, store::now_unix()) {
        return Err(busy());
    }
    let mut stopping = state.stopping.subscribe();
    let live = Live {
        state: state.into_inner(),
        site: a.site,
        key,
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
    /// The view it follows: the site, and the filters it was opened with.
    key: LiveKey,
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
            let state = &self.state;
            let json = match state
                .live_streams
                .numbers(state, &self.site, &self.key, now)
                .await
            {
                Ok(numbers) => numbers.json,
                Err(e) => {
                    // Ended rather than left silent; the browser reconnects
                    // and is told to wait if the view cannot be had.
                    tracing::warn!(error = ?e, "live stream ended: numbers not computed");
                    return None;
                }
            };
            if json != self.last {
                self.last = json.clone();
                return Some(json);
            }
        }
    }
}

/// The live numbers of a view as the stream sends them.
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
    /// The view's filters, each with the link that removes it.
    pub chips: Vec<Chip>,
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

/// `?period=realtime`: the live numbers of the view (its filters
/// included) as of now; the page's script keeps them current over [`live`].
pub async fn page(
    state: &AppState,
    a: &Admitted,
    v: &ViewState,
    periods: Vec<Link>,
    home: String,
) -> Result<HttpResponse, PageError> {
    let filters = v.filters_param();
    let key = view_key(&a.site, filters.as_deref())?;
    let snapshot = state
        .live_streams
        .numbers(state, &a.site, &key, store::now_unix())
        .await?
        .snapshot;
    let mut live_href = a.path("/live");
    if let Some(f) = filters {
        live_href.push(if live_href.contains('?') { '&' } else { '?' });
        live_href.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("filters", &f)
                .finish(),
        );
    }
    html(&RealtimePage {
        signed_in: a.nav.clone(),
        home,
        domain: a.site.domain.clone(),
        periods,
        chips: v.chips(|v| a.href("", v)),
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

    fn site(site_id: i64) -> LiveKey {
        LiveKey {
            site_id,
            filters: Vec::new(),
        }
    }

    fn filtered(site_id: i64, source: &str) -> LiveKey {
        LiveKey {
            site_id,
            filters: query::filters::parse(Some(&format!("visit:source=={source}"))).unwrap(),
        }
    }

    #[test]
    fn a_sites_numbers_are_computed_once_a_second_for_all_its_streams() {
        let streams = LiveStreams::new(8, 4);
        let computed = std::cell::Cell::new(0);
        let compute = || {
            computed.set(computed.get() + 1);
            Ok::<_, Infallible>(LiveSnapshot {
                visitors: computed.get(),
                ..LiveSnapshot::default()
            })
        };
        let first = streams.latest(&site(1), 100, compute).unwrap();
        for _ in 0..10 {
            let again = streams.latest(&site(1), 100, compute).unwrap();
            assert_eq!(again.json, first.json);
            assert_eq!(again.snapshot, first.snapshot);
        }
        assert_eq!(computed.get(), 1);
        assert_ne!(
            streams.latest(&site(1), 101, compute).unwrap().json,
            first.json
        );
        assert_eq!(computed.get(), 2);
        assert_eq!(streams.computed(), 2);
        streams.latest(&site(2), 101, compute).unwrap();
        assert_eq!(computed.get(), 3);
        // The same site with filters is another view, with numbers of its
        // own; the same filters, written alike, are the same view.
        streams
            .latest(&filtered(1, "Google"), 101, compute)
            .unwrap();
        streams
            .latest(&filtered(1, "Google"), 101, compute)
            .unwrap();
        assert_eq!(computed.get(), 4);

        // Bounded: sites without a stream for a while make room.
        for site_id in 3..=40 {
            streams
                .latest(&site(site_id), 200 + site_id, compute)
                .unwrap();
        }
        assert!(streams.kept() <= 4, "{}", streams.kept());
    }

    #[test]
    fn filtered_views_are_bounded_and_make_room_once_unwatched() {
        let streams = LiveStreams::new(8, 4);
        let compute = || Ok::<_, Infallible>(LiveSnapshot::default());
        for i in 0..FILTERED_VIEWS {
            assert!(streams.reserve(&filtered(1, &format!("s{i}")), 100));
        }
        // Every place is watched: a new filtered view is refused, on any
        // site, while the views already kept and those without filters go on.
        let new = filtered(2, "new");
        assert!(!streams.reserve(&new, 101));
        assert!(matches!(
            streams.latest(&new, 101, compute),
            Err(Unavailable::Busy)
        ));
        assert!(streams.latest(&filtered(1, "s0"), 101, compute).is_ok());
        assert!(streams.latest(&site(2), 101, compute).is_ok());
        // Views left unasked for a few seconds make room.
        assert!(streams.latest(&new, 100 + KEPT_SECS + 1, compute).is_ok());
        assert!(streams.kept() <= 3, "{}", streams.kept());
        // A failed computation is not kept: the next caller tries again.
        let failed = streams.latest(&new, 200, || Err::<LiveSnapshot, _>("no"));
        assert!(matches!(failed, Err(Unavailable::Failed("no"))));
        assert!(streams.latest(&new, 200, compute).is_ok());
    }
}
