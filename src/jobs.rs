//! Background jobs of `tally serve`: the retention pass (at start, then
//! hourly), scheduled backups, and the weekly summaries (written, and
//! e-mailed when `[smtp]` is set, once a site's week has ended). Each runs on
//! the server's runtime, logs what it did and counts it for `/metrics`; a
//! failure is logged, never fatal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::mail::Mailer;
use crate::metrics::CounterSet;
use crate::query;
use crate::report::sqlite::rollups::retention as rollup_retention;
use crate::report::sqlite::sealer::Sealer;
use crate::report::{Reports, Upkeep, calendar};
use crate::store::backup::{self, BackupStats};
use crate::store::retention::{self, RetentionPolicy, RetentionStats};
use crate::store::{EventWriter, now_unix};
use crate::store::{Store, StoreError, WriteError, sites, summaries, users};
use crate::summary::{self, SummaryStats};
use crate::supervise::spawn_every;

const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the backup job looks whether one is due.
const BACKUP_CHECK_EVERY: Duration = Duration::from_secs(60);
/// Summaries are looked for hourly: within an hour of a site's Monday.
const SUMMARY_CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How often a summary pass looks whether rollup rebuilds have finished.
const REBUILD_WAIT: Duration = Duration::from_secs(1);
/// A failed e-mail is tried once more after this long.
const EMAIL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs a retention pass now and then every hour, until aborted.
pub fn spawn_retention(
    writer: EventWriter,
    policy: RetentionPolicy,
    stats: Arc<RetentionStats>,
    sealer: Option<Arc<Sealer>>,
    panics: Arc<CounterSet>,
) -> tokio::task::JoinHandle<()> {
    // The first pass runs at once: retention also runs at start, so a
    // shorter retention set before a restart takes effect right away.
    spawn_every("retention", RETENTION_EVERY, panics, move || {
        let (writer, stats, sealer) = (writer.clone(), stats.clone(), sealer.clone());
        async move {
            // Errors are logged and counted by the pass itself.
            let _ = retention_pass(&writer, policy, now_unix(), &stats, sealer.as_ref()).await;
        }
    })
}

/// Seconds in a day, for retention periods given in days.
const SECONDS_PER_DAY: i64 = 86_400;

/// One retention pass as of `now` (Unix seconds): raw rows (and the column
/// store's days before them, when `sealer` keeps one), rollups, then salts,
/// summaries and imported aggregates, each in small transactions. Counts
/// into `stats` and logs the result.
pub async fn retention_pass(
    writer: &EventWriter,
    policy: RetentionPolicy,
    now: i64,
    stats: &RetentionStats,
    sealer: Option<&Arc<Sealer>>,
) -> Result<retention::Removed, WriteError> {
    let result = async {
        // Rows of removed sites that a removal's own pass left (a stop
        // before it was done, a removal by `tally site remove` beside the
        // server, events that were still on their way). First, so that
        // an error in a later step does not keep them another hour.
        let removed_sites = crate::store::removed::purge(writer).await?;
        let raw_cutoff = now - i64::from(policy.raw_events_days) * SECONDS_PER_DAY;
        let raw = retention::trim_raw(writer, raw_cutoff).await?;
        // Derived from the raw rows: a failure here is logged, and the next
        // pass drops what this one could not.
        if let Some(sealer) = sealer {
            match sealer.drop_before(raw_cutoff).await {
                Ok(0) => {}
                Ok(days) => tracing::info!(days, "dropped column store days past raw retention"),
                Err(e) => tracing::error!(error = %e, "dropping column store days failed"),
            }
        }
        stats.removed.add("events", raw.events);
        stats.removed.add("visits", raw.visits);
        let rollup_rows = rollup_retention::trim_rollups(
            writer,
            now - i64::from(policy.aggregates_days) * SECONDS_PER_DAY,
        )
        .await?;
        stats.removed.add("rollups", rollup_rows);
        let salts = retention::trim_salts(writer, now).await?;
        stats.removed.add("salts", salts);
        let (summaries, imported) = retention::trim_dated(
            writer,
            now - i64::from(policy.aggregates_days) * SECONDS_PER_DAY,
        )
        .await?;
        stats.removed.add("summaries", summaries);
        stats.removed.add("rollups", imported);
        Ok(retention::Removed {
            events: raw.events,
            visits: raw.visits,
            rollup_rows: rollup_rows + imported,
            salts,
            summaries,
            removed_sites,
        })
    }
    .await;
    match &result {
        Ok(r) => {
            stats.runs.inc("ok");
            stats
                .last_success
                .store(now, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                events = r.events,
                visits = r.visits,
                rollup_rows = r.rollup_rows,
                salts = r.salts,
                summaries = r.summaries,
                removed_site_rows = r.removed_sites,
                raw_events_days = policy.raw_events_days,
                aggregates_days = policy.aggregates_days,
                "retention pass removed expired rows"
            );
        }
        Err(e) => {
            stats.runs.inc("failed");
            tracing::error!(error = %e, "retention pass failed");
        }
    }
    result
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
    panics: Arc<CounterSet>,
) -> tokio::task::JoinHandle<()> {
    spawn_every("backups", BACKUP_CHECK_EVERY, panics, move || {
        let (database, schedule, stats) = (database.clone(), schedule.clone(), stats.clone());
        async move {
            let interval = i64::from(schedule.interval_hours) * 3600;
            let now = now_unix();
            if backup::newest_scheduled(&schedule.dir).is_some_and(|t| now - t < interval) {
                return;
            }
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

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("background task: {0}")]
    Task(String),
}

/// What the summary job needs.
pub struct SummaryJob {
    pub store: Store,
    pub writer: EventWriter,
    /// What answers the summaries' reports.
    pub reports: Arc<dyn Reports>,
    /// Which sites' reports are being rebuilt: their summaries wait.
    pub upkeep: Arc<dyn Upkeep>,
    pub mailer: Option<Mailer>,
    pub stats: Arc<SummaryStats>,
}

/// Writes each site's summary of its last full week once that week has
/// ended (at start, then hourly), and e-mails it to the site's users.
pub fn spawn_summaries(job: SummaryJob, panics: Arc<CounterSet>) -> tokio::task::JoinHandle<()> {
    let job = Arc::new(job);
    spawn_every("summaries", SUMMARY_CHECK_EVERY, panics, move || {
        let job = job.clone();
        async move {
            if let Err(e) = job.run(now_unix()).await {
                tracing::error!(error = %e, "weekly summaries failed");
            }
        }
    })
}

impl SummaryJob {
    async fn run(self: &Arc<Self>, now: i64) -> Result<(), JobError> {
        // A summary is written once and e-mailed once: one read from rollups
        // still being rebuilt (after an upgrade or a timezone change) would
        // stay wrong. The pass waits for the rebuilds, then reads.
        while !self.upkeep.rebuilding_sites().is_empty() {
            tokio::time::sleep(REBUILD_WAIT).await;
        }
        let list = sites::list_sites(&*self.store.reader()?)?;
        for site in list {
            let today = query::period::today_in(&site.timezone, now);
            let week = summary::last_full_week(today);
            let week_key = week.to_string();
            // Only weeks the site existed for from their start.
            let week_began = calendar::midnight(calendar::zone(&site.timezone), week);
            if site.created_at > week_began {
                continue;
            }
            let stored = summaries::get(&*self.store.reader()?, site.id, &week_key)?;
            let stored = match stored {
                Some(s) => s,
                // A rebuild that began during this pass: the next pass
                // writes this site's week.
                None if self.upkeep.rebuilding_sites().contains(&site.id) => continue,
                None => {
                    let this = self.clone();
                    let s2 = site.clone();
                    let body = tokio::task::spawn_blocking(move || {
                        let ctx = query::Context::new(&s2.timezone, now);
                        Ok::<_, JobError>(summary::text(&*this.reports, &s2, week, &ctx)?)
                    })
                    .await
                    .map_err(|e| JobError::Task(e.to_string()))??;
                    let (id, key, text) = (site.id, week_key.clone(), body.clone());
                    self.writer
                        .run_for(move |tx| summaries::put(tx, id, &key, &text, now))
                        .await?;
                    self.stats.written.inc();
                    tracing::info!(site = %site.domain, week = %week_key, "weekly summary written");
                    summaries::StoredSummary {
                        week_start: week_key.clone(),
                        body,
                        emailed_at: None,
                        email_error: None,
                    }
                }
            };
            if let Some(mailer) = &self.mailer
                && stored.emailed_at.is_none()
            {
                let to = users::summary_recipients(&*self.store.reader()?, site.id)?;
                let body = format!(
                    "{}\n--\nYou receive this because you can see {} on Tally. To stop these \
                     e-mails, turn them off on the dashboard's site list.\n",
                    stored.body, site.domain
                );
                let error = self.email(mailer, &to, &body).await;
                let (id, key) = (site.id, week_key.clone());
                self.writer
                    .run_for(move |tx| summaries::mark_emailed(tx, id, &key, now, error.as_deref()))
                    .await?;
            }
        }
        Ok(())
    }

    /// Sends `body` to each of `to`, retrying a failure once after a pause.
    /// Returns the last error, if any recipient could not be reached.
    async fn email(&self, mailer: &Mailer, to: &[String], body: &str) -> Option<String> {
        let subject = body.lines().next().unwrap_or("Weekly summary").to_string();
        let mut failed = None;
        for recipient in to {
            let mut attempt = 0;
            loop {
                let (m, r, s, b) = (
                    mailer.clone(),
                    recipient.clone(),
                    subject.clone(),
                    body.to_string(),
                );
                let sent = tokio::task::spawn_blocking(move || m.send(&r, &s, &b))
                    .await
                    .unwrap_or_else(|e| Err(crate::mail::MailError::Smtp(e.to_string())));
                match sent {
                    Ok(()) => {
                        self.stats.emails.inc("sent");
                        tracing::info!(server = %mailer.server, "weekly summary e-mailed");
                        break;
                    }
                    Err(e) if attempt == 0 => {
                        tracing::warn!(error = %e, "sending a weekly summary failed; retrying");
                        attempt += 1;
                        tokio::time::sleep(EMAIL_RETRY_AFTER).await;
                    }
                    Err(e) => {
                        self.stats.emails.inc("failed");
                        tracing::error!(error = %e, server = %mailer.server, "sending a weekly summary failed");
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        failed
    }
}
