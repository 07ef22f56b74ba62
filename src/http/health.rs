//! `GET /api/health`: for anyone, what a load balancer or an uptime check
//! needs (version, whether the database answers and the writer runs, events
//! not yet in the rollups, sites whose rollups are being rebuilt after a
//! timezone change, the column store's days sealed and pending); for the addresses that may read `/metrics`, also
//! the traffic counters (writer queue and commits, events accepted, refused
//! and dropped since start, sites whose recent traffic is held in memory),
//! which say how busy the server and its sites are.

use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::metrics::allowed;
use crate::report::ColumnDays;

/// The state of the server's parts, which anyone may see.
struct Condition {
    database: bool,
    /// The writer thread takes events; when it has stopped, ingest is
    /// refused until a restart.
    writer: bool,
    pending_events: u64,
    /// Sites whose rollups are being rebuilt after a timezone change: their
    /// reports may be incomplete until it is done.
    rebuilding_sites: usize,
    /// The column store's days sealed and pending (`None` before the first
    /// look after start).
    columns: Option<ColumnDays>,
}

impl Condition {
    fn healthy(&self) -> bool {
        self.database && self.writer
    }

    fn json(&self) -> Value {
        json!({
            "status": if self.healthy() { "ok" } else { "degraded" },
            "version": env!("CARGO_PKG_VERSION"),
            "database": if self.database { "ok" } else { "unreachable" },
            "writer": if self.writer { "ok" } else { "stopped" },
            "rollups": {
                "pending_events": self.pending_events,
                "rebuilding_sites": self.rebuilding_sites,
            },
            "columns": {
                "sealed_days": self.columns.map(|c| c.sealed_days),
                "pending_days": self.columns.map(|c| c.pending_days),
                "oversized_sites": self.columns.map(|c| c.oversized_sites),
            },
        })
    }
}

pub async fn health(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let store = state.store.clone();
    let condition = Condition {
        database: web::block(move || store.ping()).await.unwrap_or(false),
        writer: state.ingestor.writer().is_running(),
        pending_events: state.upkeep.pending(),
        rebuilding_sites: state.upkeep.rebuilding_sites().len(),
        columns: state.upkeep.column_days(),
    };
    let mut body = condition.json();
    if allowed(&state, &req)
        && let (Value::Object(body), Value::Object(counters)) = (&mut body, counters(&state))
    {
        body.extend(counters);
    }
    if condition.healthy() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Traffic since start, as `/metrics` has it.
fn counters(state: &AppState) -> Value {
    let ingest = state.ingestor.stats();
    let writer = state.ingestor.writer().stats();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let dropped_bot = ingest.dropped_bots();
    let recent = state.upkeep.recent_sites();
    json!({
        "writer_queue_depth": writer.queue_depth.load(Ordering::Relaxed),
        "writer_stats": {
            "commits": count(&writer.commits),
            "events_written": count(&writer.events_written),
            "last_batch_events": count(&writer.last_batch_events),
            "last_commit_micros": count(&writer.last_commit_micros),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_writer_makes_the_server_degraded() {
        let running = Condition {
            database: true,
            writer: true,
            pending_events: 0,
            rebuilding_sites: 0,
            columns: None,
        };
        assert!(running.healthy());
        assert_eq!(running.json()["status"], "ok");
        assert_eq!(running.json()["writer"], "ok");

        let stopped = Condition {
            writer: false,
            ..running
        };
        assert!(!stopped.healthy());
        let body = stopped.json();
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["writer"], "stopped");
        assert_eq!(body["database"], "ok");
    }

    #[test]
    fn the_column_store_days_are_null_until_the_first_look() {
        let mut c = Condition {
            database: true,
            writer: true,
            pending_events: 0,
            rebuilding_sites: 0,
            columns: None,
        };
        assert_eq!(
            c.json()["columns"],
            json!({"sealed_days": null, "pending_days": null, "oversized_sites": null})
        );
        c.columns = Some(ColumnDays {
            sealed_days: 12,
            pending_days: 3,
            oversized_sites: 1,
        });
        assert_eq!(
            c.json()["columns"],
            json!({"sealed_days": 12, "pending_days": 3, "oversized_sites": 1})
        );
        assert!(c.healthy());
    }
}
