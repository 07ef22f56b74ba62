//! `GET /api/health`: version, database reachability, writer queue depth,
//! counts of events accepted, refused and dropped since start, events not
//! yet in the rollups, sites whose rollups are being rebuilt after a timezone
//! change, and sites whose recent traffic is held in memory.

use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let db_ok = web::block(move || store.ping()).await.unwrap_or(false);
    let depth = state
        .ingestor
        .writer()
        .stats()
        .queue_depth
        .load(Ordering::Relaxed);
    let ingest = state.ingestor.stats();
    let writer = state.ingestor.writer().stats();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let dropped_bot = ingest.dropped_bots();
    let recent = state.recent.as_ref().map_or((0, 0), |r| r.sites());
    let body = json!({
        "status": if db_ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "database": if db_ok { "ok" } else { "unreachable" },
        "writer_queue_depth": depth,
        "writer": {
            "commits": count(&writer.commits),
            "events_written": count(&writer.events_written),
            "last_batch_events": count(&writer.last_batch_events),
            "last_commit_micros": count(&writer.last_commit_micros),
        },
        "rollups": {
            "pending_events": state.ingestor.rollup_pending(),
            // Their reports may be incomplete until their rebuild is done.
            "rebuilding_sites": state.ingestor.rebuilding_sites().len(),
        },
        "recent_traffic": {
            "sites_loaded": recent.0,
            "sites_loading": recent.1,
        },
        "events": {
            "accepted": ingest.accepted.get(),
            "rejected": ingest.rejected.total(),
            "dropped_bot": dropped_bot,
            "dropped_other": ingest.dropped.total() - dropped_bot,
        },
    });
    if db_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
