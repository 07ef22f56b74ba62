//! HTTP: thin routes that turn requests into calls on `ingest` and `query`
//! and their results into responses. Status codes are decided in
//! [`error`] alone.

mod assets;
mod client_ip;
mod error;
mod event;
mod health;
mod metrics;
mod pages;
mod stats_api;

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{App, HttpServer, web};
use ipnet::IpNet;

pub use error::{ApiError, PageError};
pub use metrics::EVENT_ROUTE;
pub use pages::LiveStreams;

use crate::auth::LoginLimiter;
use crate::ingest::Ingestor;
use crate::metrics::HistogramFamily;
use crate::query;
use crate::report::{Reports, Upkeep};
use crate::store::backup::BackupStats;
use crate::store::retention::RetentionStats;
use crate::store::sites::Site;
use crate::store::{self, Store};

/// What every handler can reach.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub store: Store,
    pub trusted_proxies: Vec<IpNet>,
    /// How long raw events are kept: filtered reports cannot reach further.
    pub raw_events_days: u32,
    pub retention: Arc<RetentionStats>,
    pub backups: Arc<BackupStats>,
    pub summaries: Arc<crate::summary::SummaryStats>,
    /// Panicked passes of background tasks, by [`crate::supervise::TASKS`].
    pub task_panics: Arc<crate::metrics::CounterSet>,
    /// Addresses that may read `/metrics`.
    pub metrics_allow: Vec<IpNet>,
    /// Time to answer, per route pattern.
    pub request_seconds: HistogramFamily,
    /// `request_seconds` of the tracking endpoint, held apart so the hot
    /// path does not look it up.
    pub event_seconds: Arc<crate::metrics::Histogram>,
    /// What answers reports.
    pub reports: Arc<dyn Reports>,
    /// What keeps the read model current: rebuilds, lag, recent traffic.
    pub upkeep: Arc<dyn Upkeep>,
    pub login_limiter: LoginLimiter,
    /// Slots for password hashing ([`crate::auth::CONCURRENT_PASSWORD_CHECKS`]);
    /// shared, so that a slot can go with the hash to its blocking thread.
    pub password_checks: Arc<tokio::sync::Semaphore>,
    /// Set when the server starts to stop: open event streams end, so a
    /// dashboard left open does not hold the shutdown back.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// While no user exists, the token the first-run page asks for.
    pub setup_token: Option<String>,
    /// Share links may be framed by other sites.
    pub embed_share_links: bool,
    /// A dashboard session unused this long ends (`[dashboard]
    /// session_idle_minutes`).
    pub session_idle_secs: i64,
    /// Open live streams, capped per client and in total, and the live
    /// numbers they share.
    pub live_streams: Arc<LiveStreams>,
    /// Slots for zip exports ([`EXPORTS_AT_ONCE`]). Shared so that a
    /// slot can move onto the blocking thread that builds the zip.
    pub exports: Arc<tokio::sync::Semaphore>,
}

/// Zip exports built at once. Each runs every panel's report for the view
/// on a blocking thread and may be asked for anonymously (a public site, a
/// share link); beyond this, 503 with `Retry-After`.
pub const EXPORTS_AT_ONCE: usize = 2;

/// Waits until every event acknowledged so far is committed, so a query of
/// the raw tables that follows sees it (the writer commits every 10 ms
/// under load; the rollups follow about a second later).
pub async fn settle_writes(state: &AppState) {
    if let Err(e) = state.ingestor.writer().settled().await {
        tracing::warn!(error = %e, "reading without the latest events");
    }
}

/// What a query on `site` needs besides its parameters, as of now.
pub fn query_context(site: &Site) -> query::Context {
    query::Context::new(&site.timezone, store::now_unix())
}

/// The Content-Security-Policy of every response: scripts and styles only
/// from this server, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// [`CSP`] for a share link that may be embedded (`[dashboard]
/// embed_share_links`): any site may frame it. Browsers ignore
/// `X-Frame-Options` when `frame-ancestors` is present.
pub const CSP_EMBEDDABLE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors *";

/// Registers every route on an actix app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/event")
            .route(web::post().to(event::post))
            .route(web::get().to(event::pixel))
            .route(web::method(actix_web::http::Method::OPTIONS).to(event::preflight)),
    )
    .route("/js/script.js", web::get().to(assets::script))
    .route("/static/app.css", web::get().to(assets::stylesheet))
    .route("/static/app.js", web::get().to(assets::dashboard_script))
    .route("/api/health", web::get().to(health::health))
    .route("/metrics", web::get().to(metrics::metrics))
    // Browsers ask for these on every site; without routes of their own they
    // would be taken for a site called favicon.ico.
    .route("/favicon.ico", web::get().to(assets::no_favicon))
    .route("/robots.txt", web::get().to(assets::robots))
    .route(
        "/api/v1/stats/aggregate",
        web::get().to(stats_api::aggregate),
    )
    .route(
        "/api/v1/stats/breakdown",
        web::get().to(stats_api::breakdown),
    )
    .route(
        "/api/v1/stats/timeseries",
        web::get().to(stats_api::timeseries),
    )
    .route(
        "/api/v1/stats/realtime/visitors",
        web::get().to(stats_api::realtime_visitors),
    )
    .configure(pages::routes);
}

/// Security headers on every response (a handler may set its own).
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("Content-Security-Policy", CSP))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("X-Frame-Options", "DENY"))
}

/// `Strict-Transport-Security` of responses over https: browsers then use
/// https for a year. Only when a trusted proxy says the request came over
/// https: sent over plain http it would be ignored at best, and a
/// deployment without https must not be told to require it. Subdomains are
/// left alone; they may be other services.
const HSTS: &str = "max-age=31536000";

/// Adds [`HSTS`] to every response to a request that came over https.
async fn strict_transport(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let https = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| client_ip::forwarded_https(req.request(), &s.trusted_proxies));
    let mut res = next.call(req).await?;
    if https {
        res.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static(HSTS),
        );
    }
    Ok(res)
}

/// Runs the HTTP server on `listener` until SIGINT or SIGTERM; in-flight
/// requests finish (up to `shutdown_timeout`) before this returns.
pub async fn run(
    state: AppState,
    listener: std::net::TcpListener,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    let state = web::Data::new(state);
    let stopping = state.stopping.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(security_headers())
            .wrap(actix_web::middleware::from_fn(strict_transport))
            .wrap(actix_web::middleware::from_fn(metrics::time_requests))
            .configure(routes)
    })
    // Slow clients: headers must arrive within 5 s; bodies are bounded in `event`.
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(2))
    // A client that closes its side is gone: end the connection at once.
    // Otherwise an event stream whose page was closed would be noticed only
    // when a write fails, seconds later, and hold its place in the stream
    // caps (`pages::LiveStreams`) until then.
    .h1_allow_half_closed(false)
    .shutdown_timeout(shutdown_timeout.as_secs())
    // Signals are handled below, so event streams can be told first.
    .disable_signals()
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        stop_signal().await;
        tracing::info!("stopping: no new connections, finishing requests");
        stopping.send_replace(true);
        handle.stop(true).await;
    });
    server.await
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot listen for signals; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
