//! The live view: `?period=realtime` and the Server-Sent Events stream at
//! `/{domain}/live` that keeps it (and the dashboard's visitor count) current.

use std::collections::HashMap;
use std::convert::Infallible;

use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use askama::Template;
use futures_util::StreamExt;

use actix_web::HttpResponse;

use super::access::{Admitted, admit};
use super::dashboard::Link;
use super::{Nav, html, view};
use crate::http::{AppState, PageError};
use crate::store;

/// How long one live stream lasts before the browser reconnects (which
/// checks access again).
const LIVE_STREAM_SECS: u64 = 600;

/// `/{domain}/live` and `/share/{domain}/live`: the live numbers as
/// Server-Sent Events, at most once a second and only when they change.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<impl actix_web::Responder, PageError> {
    let site = admit(&state, &req, &domain, q.get("auth").map(String::as_str))
        .await?
        .site;
    let state = state.into_inner();
    let mut stopping = state.stopping.subscribe();
    let started = std::time::Instant::now();
    let mut last = String::new();
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
        let snapshot = state.ingestor.live().snapshot(site.id, store::now_unix());
        let json = serde_json::json!({
            "visitors": snapshot.visitors,
            "visitors_text": view::count(snapshot.visitors as i64),
            "pages": snapshot.pages,
            "sources": snapshot.sources,
            "countries": snapshot.countries,
            "pageviews_per_minute": snapshot.pageviews_per_minute,
        })
        .to_string();
        let changed = json != last;
        if changed {
            last = json.clone();
        }
        std::future::ready(
            changed.then(|| Ok::<_, Infallible>(sse::Event::Data(sse::Data::new(json)))),
        )
    });
    Ok(sse::Sse::from_stream(stream)
        .with_keep_alive(std::time::Duration::from_secs(5))
        .with_retry_duration(std::time::Duration::from_secs(1))
        .customize()
        // nginx would otherwise hold the stream in its buffers.
        .insert_header(("X-Accel-Buffering", "no")))
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
