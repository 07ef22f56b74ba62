//! `GET /metrics` in the Prometheus text format, for addresses in
//! `[metrics] allow` only, and the middleware that times every request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::client_ip;
use crate::metrics::Exposition;

/// The tracking endpoint's route label.
pub const EVENT_ROUTE: &str = "/api/event";

/// Whether `req` may read the metrics. The address is the client's as the
/// trusted proxies report it; a request that carries forwarding headers but
/// comes from a proxy that is not trusted is refused, so a reverse proxy on
/// the same host does not make every visitor look local. A client the
/// proxies could not name (a hop that is no address) is refused too.
pub(super) fn allowed(state: &AppState, req: &HttpRequest) -> bool {
    let forwarded = ["x-forwarded-for", "forwarded"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    if forwarded && !client_ip::from_trusted_proxy(req, &state.trusted_proxies) {
        return false;
    }
    client_ip::resolve(req, &state.trusted_proxies)
        .is_some_and(|c| c.named && state.metrics_allow.iter().any(|n| n.contains(&c.ip)))
}

pub async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if !allowed(&state, &req) {
        return HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body("metrics are not served to this address; see [metrics] allow\n");
    }
    let path = state.store.path().to_path_buf();
    let db_bytes = web::block(move || crate::store::file_bytes(&path))
        .await
        .unwrap_or(0);
    HttpResponse::Ok()
        .content_type(Exposition::CONTENT_TYPE)
        .insert_header(("Cache-Control", "no-store"))
        .body(render(&state, db_bytes))
}

fn render(state: &AppState, db_bytes: u64) -> String {
    let ingest = state.ingestor.stats();
    let writer = state.ingestor.writer().stats();
    let mut e = Exposition::default();
    e.gauge_labelled(
        "tally_build_info",
        "The running version.",
        &[(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
    e.counter(
        "tally_events_accepted_total",
        "Events stored and acknowledged.",
        ingest.accepted.get(),
    );
    e.counter_set(
        "tally_events_rejected_total",
        "Tracking requests refused with an error status, by reason.",
        "reason",
        &ingest.rejected,
    );
    e.counter_set(
        "tally_events_dropped_total",
        "Events acknowledged but not stored, by reason (bots, opt-outs, exclusions).",
        "reason",
        &ingest.dropped,
    );

    e.counter(
        "tally_events_dropped_bot_total",
        "Events dropped as bots, all bot reasons together.",
        ingest.dropped_bots(),
    );
    e.histogram_family(
        "tally_http_request_duration_seconds",
        "Time to answer a request, by route; route=\"/api/event\" is ingest latency, \
         /api/v1/stats/* and the dashboard routes are query latency.",
        "route",
        &state.request_seconds,
    );
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    e.gauge(
        "tally_writer_up",
        "1 while the writer takes events; 0 once it has stopped (ingest answers 503 \
         until a restart).",
        if state.ingestor.writer().is_running() {
            1.0
        } else {
            0.0
        },
    );
    e.counter(
        "tally_writer_job_panics_total",
        "Writer jobs that panicked, each rolled back alone.",
        writer.job_panics.get(),
    );
    e.counter_set(
        "tally_task_panics_total",
        "Passes of background tasks that panicked, by task; the next pass runs as scheduled.",
        "task",
        &state.task_panics,
    );
    e.gauge(
        "tally_writer_queue_depth",
        "Submissions waiting for the writer.",
        writer.queue_depth.load(relaxed) as f64,
    );
    e.counter(
        "tally_writer_commits_total",
        "Writer commits.",
        writer.commits.load(relaxed),
    );
    e.counter(
        "tally_writer_events_written_total",
        "Events committed.",
        writer.events_written.load(relaxed),
    );
    e.histogram(
        "tally_writer_batch_events",
        "Events per writer commit.",
        &writer.batch_events,
    );
    e.histogram(
        "tally_writer_commit_duration_seconds",
        "Time per writer commit.",
        &writer.commit_seconds,
    );
    e.gauge(
        "tally_rollup_pending_events",
        "Committed events not yet in the rollups.",
        state.upkeep.pending() as f64,
    );
    if let Some(days) = state.upkeep.column_days() {
        e.gauge(
            "tally_column_sealed_days",
            "Days of all sites sealed into the column store.",
            days.sealed_days as f64,
        );
        e.gauge(
            "tally_column_pending_days",
            "Complete days with raw events not yet sealed into the column store.",
            days.pending_days as f64,
        );
        e.gauge(
            "tally_column_oversized_sites",
            "Sites that stopped sealing at a day over seal_max_events_per_day.",
            days.oversized_sites as f64,
        );
    }
    e.counter(
        "tally_column_seal_errors_total",
        "Failures to open the column store or to seal a site's day (each tried again later).",
        state.upkeep.column_seal_errors(),
    );
    let (answered, failed) = state.upkeep.column_answers();
    e.counter(
        "tally_column_answers_total",
        "Parts of filtered reports (a total, a series, a breakdown) the column store answered.",
        answered,
    );
    e.counter(
        "tally_column_answer_errors_total",
        "Parts of filtered reports the column store failed to answer (read from the raw tables instead).",
        failed,
    );
    e.counter_set(
        "tally_retention_runs_total",
        "Retention passes, by result.",
        "result",
        &state.retention.runs,
    );
    e.counter_set(
        "tally_retention_rows_removed_total",
        "Rows deleted by retention, by table.",
        "table",
        &state.retention.removed,
    );
    e.gauge(
        "tally_retention_last_success_timestamp_seconds",
        "When the last retention pass completed (Unix time; 0 before the first).",
        state.retention.last_success.load(relaxed) as f64,
    );
    e.counter_set(
        "tally_backups_total",
        "Scheduled backups, by result.",
        "result",
        &state.backups.runs,
    );
    e.gauge(
        "tally_backup_last_success_timestamp_seconds",
        "When the last scheduled backup was written (Unix time; 0 before the first).",
        state.backups.last_success.load(relaxed) as f64,
    );
    e.gauge(
        "tally_backup_last_size_bytes",
        "Size of the last scheduled backup.",
        state.backups.last_bytes.load(relaxed) as f64,
    );
    e.counter(
        "tally_summaries_written_total",
        "Weekly summaries written.",
        state.summaries.written.get(),
    );
    e.counter_set(
        "tally_summary_emails_total",
        "Weekly summary e-mails, by result (after one retry).",
        "result",
        &state.summaries.emails,
    );
    e.gauge(
        "tally_database_size_bytes",
        "Size of the database file and its write-ahead log.",
        db_bytes as f64,
    );
    e.gauge(
        "tally_live_visitors",
        "Visitors in the last 5 minutes, all sites together.",
        state
            .ingestor
            .live()
            .total_visitors(crate::store::now_unix()) as f64,
    );
    e.gauge(
        "tally_live_streams",
        "Live streams (/{domain}/live) open now, all clients together.",
        state.live_streams.open_count() as f64,
    );
    e.counter(
        "tally_live_snapshots_total",
        "Times a site's live numbers were computed (each scans its live visitors): at \
         most once a second per site, shared by its realtime pages and live streams.",
        state.live_streams.computed(),
    );
    e.gauge(
        "tally_live_streams_guests",
        "Of tally_live_streams, those without a member's session (public sites, share \
         links); at most half of [dashboard] live_streams_total.",
        state.live_streams.guest_count() as f64,
    );
    e.gauge(
        "tally_exports_running",
        "Zip exports being built now (at most 2; more are refused with 503).",
        super::EXPORTS_AT_ONCE.saturating_sub(state.exports.available_permits()) as f64,
    );
    if let Some(rss) = resident_bytes() {
        e.gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            rss as f64,
        );
    }
    e.finish()
}

/// Resident set size from `/proc` (Linux); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Times every request into `tally_http_request_duration_seconds` under its
/// route pattern (never the raw path, so the label set stays bounded), and
/// logs one line per request at debug level: method, route, status, time.
/// Neither the address nor the query string (share tokens) is logged.
pub async fn time_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let res = next.call(req).await?;
    let took = started.elapsed();
    let request = res.request();
    // The tracking endpoint, by far the busiest, skips the pattern lookup.
    let event = request.path() == EVENT_ROUTE;
    let route: std::borrow::Cow<'static, str> = if event {
        EVENT_ROUTE.into()
    } else {
        request
            .match_pattern()
            .map_or("unmatched".into(), Into::into)
    };
    if let Some(state) = request.app_data::<web::Data<AppState>>() {
        if event {
            state.event_seconds.observe_duration(took);
        } else {
            state.request_seconds.get(&route).observe_duration(took);
        }
    }
    tracing::debug!(
        method = %request.method(),
        route = %route,
        status = res.status().as_u16(),
        micros = took.as_micros() as u64,
        "request"
    );
    Ok(res)
}
