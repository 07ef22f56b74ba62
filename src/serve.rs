//! `tally serve`: opens the store, starts the writer and the ingest pipeline,
//! the read model's follower and the reports it keeps, runs the HTTP server
//! until a signal, then drains the writer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::ingest::enrich::GeoLookup;
use crate::ingest::{IngestOptions, Ingestor};
use crate::jobs;
use crate::metrics::CounterSet;
use crate::report::Reports;
use crate::report::sqlite::SqliteReports;
use crate::report::sqlite::follower::Follower;
use crate::report::sqlite::rollups::RollupFeed;
use crate::report::sqlite::sealer::{LateEvents, NoteLate, Sealer};
use crate::store::backup::{BackupStats, DataDirLock};
use crate::store::retention::{RetentionPolicy, RetentionStats};
use crate::store::{Store, now_unix};
use crate::supervise::{self, spawn_every};

/// Readers for requests and background jobs; helper threads of parallel
/// reports get theirs on top ([`crate::parallel::max_helpers`]).
const READERS: u32 = 4;
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
const VISIT_FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Ended visits per writer job (requests do not wait for the writer).
const VISITS_ROLLED_PER_COMMIT: usize = 4096;

pub fn serve(settings: Settings) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    // Held until the process ends: one server per data directory, and
    // `tally restore` cannot swap the database under a running one.
    let _lock = DataDirLock::try_acquire(data_dir)?.with_context(|| {
        format!(
            "another `tally serve` is using {}; stop it first",
            data_dir.display()
        )
    })?;
    let helpers = u32::try_from(crate::parallel::max_helpers()).unwrap_or(u32::MAX);
    let store = Store::open(data_dir, READERS.saturating_add(helpers))?;
    tracing::info!(path = %store.path().display(), "opened database");
    crate::report::sqlite::sealer::ensure_database_id(&store.write_connection()?)?;

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

    // The writer hands each commit to the feed; the follower folds what the
    // feed gathered into the read model.
    let feed = Arc::new(RollupFeed::default());
    // Events committed in complete days are noted on the way, for the
    // column store (kept on disk until the sealer acts on them).
    let late = Arc::new(LateEvents::open(data_dir));
    let now = now_unix();
    let (ingestor, writer) = Ingestor::start(
        store.clone(),
        store.write_connection()?,
        geo,
        IngestOptions {
            queue_capacity: settings.raw.storage.queue_capacity,
            respect_opt_out: settings.raw.privacy.respect_gpc,
            recover_visits: true,
            journal: true,
        },
        now,
        Arc::new(NoteLate::new(feed.clone(), late.clone())),
    )?;
    let ingestor = Arc::new(ingestor);
    // Nothing is opened or sealed before the journal is replayed (by
    // `Ingestor::start`) and the server listens; a store that cannot be
    // opened is tried again in the background, never an error here.
    let sealer = Arc::new(
        Sealer::new(
            store.clone(),
            data_dir,
            settings.raw.retention.raw_events_days,
        )
        .with_writer(ingestor.writer().clone())
        .with_late(late)
        .with_max_events_per_day(settings.raw.columns.seal_max_events_per_day),
    );

    let follower = match Follower::new(
        store.clone(),
        ingestor.writer().clone(),
        feed,
        true,
        Some(settings.raw.storage.recent_days),
        now,
    ) {
        Ok(follower) => Arc::new(follower.with_sealer(sealer.clone())),
        Err(e) => {
            // The writer runs already: it commits what it holds and stops,
            // as at any shutdown, before the error ends the process.
            writer.shutdown();
            return Err(e.into());
        }
    };
    let reports: Arc<dyn Reports> = Arc::new(
        SqliteReports::new(
            store.clone(),
            follower.recent(),
            settings.raw.retention.raw_events_days,
        )
        .with_sealer(sealer.clone()),
    );

    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("binding HTTP listener on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find an ephemeral port.
    tracing::info!(%addr, "listening on http://{addr}");

    let setup_token = first_run_token(&store, addr)?;
    let retention_policy = RetentionPolicy {
        raw_events_days: settings.raw.retention.raw_events_days,
        aggregates_days: settings.raw.retention.aggregates_days,
    };
    let retention_stats = Arc::new(RetentionStats::default());
    let backup_stats = Arc::new(BackupStats::default());
    let backup_schedule = settings.backup_dir.clone().map(|dir| jobs::BackupSchedule {
        dir,
        interval_hours: settings.raw.backup.interval_hours,
        keep: settings.raw.backup.keep,
    });
    let database = store.path().to_path_buf();
    let store_for_shutdown = store.clone();
    let mailer = crate::mail::Mailer::from_config(&settings.raw.smtp)?;
    if let Some(m) = &mailer {
        tracing::info!(server = %m.server, "weekly summaries will be e-mailed");
    }
    let summary_stats = Arc::new(crate::summary::SummaryStats::default());
    let task_panics = Arc::new(CounterSet::new(supervise::TASKS));
    let request_seconds = crate::metrics::HistogramFamily::new(crate::metrics::LATENCY_BOUNDS);
    let summary_job = jobs::SummaryJob {
        store: store.clone(),
        writer: ingestor.writer().clone(),
        reports: reports.clone(),
        upkeep: follower.clone(),
        mailer,
        stats: summary_stats.clone(),
    };
    let state = AppState {
        ingestor: ingestor.clone(),
        store,
        trusted_proxies: settings.trusted_proxies.clone(),
        raw_events_days: retention_policy.raw_events_days,
        retention: retention_stats.clone(),
        backups: backup_stats.clone(),
        summaries: summary_stats,
        task_panics: task_panics.clone(),
        metrics_allow: settings.metrics_allow.clone(),
        event_seconds: request_seconds.get(http::EVENT_ROUTE),
        request_seconds,
        reports,
        upkeep: follower.clone(),
        login_limiter: Default::default(),
        password_checks: Arc::new(tokio::sync::Semaphore::new(
            crate::auth::CONCURRENT_PASSWORD_CHECKS,
        )),
        stopping: tokio::sync::watch::channel(false).0,
        setup_token,
        embed_share_links: settings.raw.dashboard.embed_share_links,
        session_idle_secs: i64::from(settings.raw.dashboard.session_idle_minutes) * 60,
        live_streams: http::LiveStreams::new(
            settings.raw.dashboard.live_streams_per_client,
            settings.raw.dashboard.live_streams_total,
        ),
        exports: Arc::new(tokio::sync::Semaphore::new(http::EXPORTS_AT_ONCE)),
    };
    let result = actix_web::rt::System::new().block_on(async move {
        // Each loop outlives a panic in one of its passes (logged, and
        // counted in `tally_task_panics_total`).
        let maintenance = spawn_every("maintenance", MAINTENANCE_EVERY, task_panics.clone(), {
            let ingestor = ingestor.clone();
            move || {
                let ingestor = ingestor.clone();
                async move { ingestor.maintain(now_unix()).await }
            }
        });
        let visit_flush = spawn_every("visit_flush", VISIT_FLUSH_EVERY, task_panics.clone(), {
            let (ingestor, follower) = (ingestor.clone(), follower.clone());
            move || {
                let (ingestor, follower) = (ingestor.clone(), follower.clone());
                async move {
                    // Stopped (logged once, and shown by health): nothing
                    // can be written until a restart.
                    if !ingestor.writer().is_running() {
                        return;
                    }
                    follower.pass(ingestor.write_visit_snapshots()).await;
                    follower
                        .roll_ended_visits(now_unix(), VISITS_ROLLED_PER_COMMIT)
                        .await;
                }
            }
        });
        // Rollups rebuilt after a timezone change or an upgrade, a short
        // writer job at a time, while the server listens.
        let rebuilds = tokio::spawn({
            let follower = follower.clone();
            async move { follower.run_rebuilds().await }
        });
        // The column store sealed day by day, from the raw tables through a
        // pooled reader, while the server listens.
        let sealing = tokio::spawn(sealer.clone().run());
        let stop_sealing = sealer.clone();
        let retention = jobs::spawn_retention(
            ingestor.writer().clone(),
            retention_policy,
            retention_stats,
            Some(sealer),
            task_panics.clone(),
        );
        let backups = backup_schedule.map(|schedule| {
            jobs::spawn_backups(database, schedule, backup_stats, task_panics.clone())
        });
        let summaries = jobs::spawn_summaries(summary_job, task_panics);
        let result = http::run(state, listener, SHUTDOWN_TIMEOUT).await;
        maintenance.abort();
        rebuilds.abort();
        // No new seal, and the read of the one under way interrupted.
        stop_sealing.stop();
        sealing.abort();
        retention.abort();
        summaries.abort();
        if let Some(b) = backups {
            b.abort();
        }
        visit_flush.abort();
        follower.pass(ingestor.write_visit_snapshots()).await;
        result
    });
    tracing::info!("HTTP server stopped; committing queued events");
    if writer.shutdown() {
        // Every visit snapshot was written: the next start need not rebuild.
        crate::store::visits::mark_clean_stop(&store_for_shutdown.write_connection()?)?;
        tracing::info!("shut down cleanly");
    } else {
        // Events and visit snapshots since the writer stopped were not
        // written: the next start adds the journaled events and rebuilds.
        tracing::error!(
            "stopped after the writer had stopped; the next start recovers from the journal"
        );
    }
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
