//! `tally serve`: opens the store, starts the writer and the ingest pipeline,
//! runs the HTTP server until a signal, then drains the writer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::ingest::enrich::GeoLookup;
use crate::ingest::{IngestOptions, Ingestor};
use crate::store::{Store, now_unix, retention};

const READERS: u32 = 4;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
const VISIT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Small, so event commits never wait long behind a rollup transaction.
const VISITS_ROLLED_PER_COMMIT: usize = 256;
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
const SECONDS_PER_DAY: i64 = 86_400;

pub fn serve(settings: Settings) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    let store = Store::open(data_dir, READERS)?;
    tracing::info!(path = %store.path().display(), "opened database");

    let geo = match &settings.geoip_database {
        Some(path) => {
            let geo = GeoLookup::open(path)?;
            tracing::info!(path = %path.display(), kind = geo.database_type().unwrap_or("?"), "GeoIP database loaded");
            geo
        }
        None => {
            tracing::info!(
                "no GeoIP database configured ([geoip] database): locations will be unknown"
            );
            GeoLookup::disabled()
        }
    };

    let (ingestor, writer) = Ingestor::start(
        store.clone(),
        store.write_connection()?,
        geo,
        IngestOptions {
            queue_capacity: settings.raw.storage.queue_capacity,
            respect_opt_out: settings.raw.privacy.respect_gpc,
            recover_visits: true,
            recent_days: Some(settings.raw.storage.recent_days),
        },
        now_unix(),
    )?;
    let ingestor = Arc::new(ingestor);

    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("binding HTTP listener on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    tracing::info!(%addr, "listening on http://{addr}");

    let setup_token = first_run_token(&store, addr)?;
    let raw_days = settings.raw.retention.raw_events_days;
    let aggregates_days = settings.raw.retention.aggregates_days;
    let store_for_shutdown = store.clone();
    let state = AppState {
        ingestor: ingestor.clone(),
        store,
        trusted_proxies: settings.trusted_proxies.clone(),
        raw_events_days: raw_days,
        recent: ingestor.recent(),
        login_limiter: Default::default(),
        password_checks: tokio::sync::Semaphore::new(crate::auth::CONCURRENT_PASSWORD_CHECKS),
        stopping: tokio::sync::watch::channel(false).0,
        setup_token,
        embed_share_links: settings.raw.dashboard.embed_share_links,
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let maintenance = tokio::spawn({
            let ingestor = ingestor.clone();
            async move {
                let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
                loop {
                    tick.tick().await;
                    ingestor.maintain(now_unix()).await;
                }
            }
        });
        let visit_flush = tokio::spawn({
            let ingestor = ingestor.clone();
            async move {
                let mut tick = tokio::time::interval(VISIT_FLUSH_EVERY);
                loop {
                    tick.tick().await;
                    ingestor.flush().await;
                    ingestor
                        .roll_ended_visits(now_unix(), VISITS_ROLLED_PER_COMMIT)
                        .await;
                }
            }
        });
        let retention = tokio::spawn({
            let writer = ingestor.writer().clone();
            async move {
                // The first tick fires at once: retention also runs at start.
                let mut tick = tokio::time::interval(RETENTION_EVERY);
                loop {
                    tick.tick().await;
                    let now = now_unix();
                    let raw_cutoff = now - i64::from(raw_days) * SECONDS_PER_DAY;
                    let rollup_cutoff = now - i64::from(aggregates_days) * SECONDS_PER_DAY;
                    let trimmed = match retention::trim_raw(&writer, raw_cutoff).await {
                        Ok(t) => retention::trim_rollups(&writer, rollup_cutoff)
                            .await
                            .map(|rollups| (t, rollups)),
                        Err(e) => Err(e),
                    };
                    match trimmed {
                        Ok((t, rollups)) => tracing::info!(
                            events = t.events,
                            visits = t.visits,
                            rollup_rows = rollups,
                            raw_events_days = raw_days,
                            aggregates_days,
                            "retention pass removed expired rows"
                        ),
                        Err(e) => tracing::error!(error = %e, "retention pass failed"),
                    }
                }
            }
        });
        let result = http::run(state, listener, SHUTDOWN_TIMEOUT).await;
        maintenance.abort();
        retention.abort();
        visit_flush.abort();
        ingestor.flush().await;
        result
    });
    tracing::info!("HTTP server stopped; committing queued events");
    writer.shutdown();
    // Every visit snapshot was written: the next start need not rebuild.
    crate::store::visits::mark_clean_stop(&store_for_shutdown.write_connection()?)?;
    tracing::info!("shut down cleanly");
    result.context("running the HTTP server")
}

/// While no dashboard user exists, a one-time token for the first-run page,
/// printed in the log: only someone who can read the server's log can claim
/// the new dashboard.
fn first_run_token(store: &Store, addr: std::net::SocketAddr) -> anyhow::Result<Option<String>> {
    if crate::store::users::count_users(&*store.reader()?)? > 0 {
        return Ok(None);
    }
    let token = crate::auth::random_token().context("reading the OS random source")?;
    tracing::warn!(
        setup_token = %token,
        "no dashboard user yet: open http://{addr}/setup and enter this setup token \
         (or run `tally user add EMAIL`)"
    );
    Ok(Some(token))
}
