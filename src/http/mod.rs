//! HTTP: thin routes that turn requests into calls on `ingest` and `query`
//! and their results into responses. Status codes are decided in
//! [`error`] alone.

mod assets;
mod client_ip;
mod error;
mod event;
mod health;
mod stats_api;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use ipnet::IpNet;

pub use error::ApiError;

use crate::ingest::Ingestor;
use crate::store::Store;
use crate::store::recent::RecentTraffic;

/// What every handler can reach.
pub struct AppState {
    pub ingestor: Arc<Ingestor>,
    pub store: Store,
    pub trusted_proxies: Vec<IpNet>,
    /// How long raw events are kept: filtered reports cannot reach further.
    pub raw_events_days: u32,
    /// Recent traffic held in memory for filtered reports.
    pub recent: Option<Arc<RecentTraffic>>,
}

/// Registers every route on an actix app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/event")
            .route(web::post().to(event::post))
            .route(web::get().to(event::pixel))
            .route(web::method(actix_web::http::Method::OPTIONS).to(event::preflight)),
    )
    .route("/js/script.js", web::get().to(assets::script))
    .route("/api/health", web::get().to(health::health))
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
    );
}

/// Runs the HTTP server on `listener` until SIGINT or SIGTERM; in-flight
/// requests finish (up to `shutdown_timeout`) before this returns.
pub async fn run(
    state: AppState,
    listener: std::net::TcpListener,
    shutdown_timeout: Duration,
) -> std::io::Result<()> {
    let state = web::Data::new(state);
    HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
        // Slow clients: headers must arrive within 5 s; bodies are bounded in `event`.
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(2))
        .shutdown_timeout(shutdown_timeout.as_secs())
        .listen(listener)?
        .run()
        .await
}
