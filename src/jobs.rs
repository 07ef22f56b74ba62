//! Background jobs of `tally serve`: the retention pass (at start, then
//! hourly) and scheduled backups. Each runs on the server's runtime, logs what
//! it did and counts it for `/metrics`; a failure is logged and retried at
//! the next tick, never fatal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::backup::{self, BackupStats};
use crate::store::retention::{self, RetentionPolicy, RetentionStats};
use crate::store::{EventWriter, now_unix};

const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the backup job looks whether one is due.
const BACKUP_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Runs a retention pass now and then every hour, until aborted.
pub fn spawn_retention(
    writer: EventWriter,
    policy: RetentionPolicy,
    stats: Arc<RetentionStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first tick fires at once: retention also runs at start, so a
        // shorter retention set before a restart takes effect right away.
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        loop {
            tick.tick().await;
            // Errors are logged and counted by the pass itself.
            let _ = retention::run_pass(&writer, policy, now_unix(), &stats).await;
        }
    })
}

/// Where and how often scheduled backups are taken (`[backup]`).
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub dir: PathBuf,
    pub interval_hours: u32,
    pub keep: u32,
}

/// Takes a backup of `database` into `schedule.dir` whenever the newest one
/// there is older than the interval (so also at start when there is none),
/// then deletes the oldest beyond `keep`.
pub fn spawn_backups(
    database: PathBuf,
    schedule: BackupSchedule,
    stats: Arc<BackupStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = i64::from(schedule.interval_hours) * 3600;
        let mut tick = tokio::time::interval(BACKUP_CHECK_EVERY);
        loop {
            tick.tick().await;
            let now = now_unix();
            if backup::newest_scheduled(&schedule.dir).is_some_and(|t| now - t < interval) {
                continue;
            }
            let (database, schedule) = (database.clone(), schedule.clone());
            let result = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&schedule.dir).map_err(|source| {
                    backup::BackupError::Io {
                        path: schedule.dir.display().to_string(),
                        source,
                    }
                })?;
                let dest = schedule.dir.join(backup::scheduled_name(now));
                let contents = backup::backup(&database, &dest)?;
                let removed = backup::rotate(&schedule.dir, schedule.keep as usize)?;
                Ok((dest, contents, removed.len()))
            })
            .await
            .unwrap_or_else(|e| {
                Err(backup::BackupError::Io {
                    path: "backup task".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
            stats.record(result.as_ref().ok().map(|r| &r.1), now);
            match result {
                Ok((dest, contents, removed)) => tracing::info!(
                    path = %dest.display(),
                    bytes = contents.bytes,
                    events = contents.events,
                    removed_old = removed,
                    "scheduled backup written"
                ),
                Err(e) => tracing::error!(error = %e, "scheduled backup failed"),
            }
        }
    })
}
