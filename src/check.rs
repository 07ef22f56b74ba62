//! `tally check`: validates the configuration and the database, then says in
//! plain words what Tally collects, where it is kept, for how long and how it
//! is processed, and whether the setup meets the conditions under which EU
//! regulators (the CNIL's audience-measurement exemption, taken up by other
//! authorities) let a site measure its audience without asking for consent.
//! Any failing condition makes the command exit 1, so it can gate a deploy.

use std::fmt;
use std::path::Path;

use crate::config::{MAX_RETENTION_DAYS, Settings, SmtpSecurity};
use crate::store::inventory::{self, Inventory};
use crate::store::{DB_FILE_NAME, StoreError, schema_version};

const DAY: i64 = 86_400;
/// A retention pass runs hourly; a day of slack keeps a check run between
/// passes (or just after a restart) from failing.
const RETENTION_SLACK_DAYS: i64 = 1;
/// Column names that could only hold what Tally promises never to store.
const FORBIDDEN_COLUMNS: &[&str] = &[
    "ip",
    "ip_address",
    "remote_addr",
    "client_ip",
    "user_agent",
    "useragent",
    "ua",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Fail,
    /// A fact worth knowing; never fails the check.
    Note,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub mark: Mark,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub sections: Vec<(&'static str, Vec<Line>)>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.sections
            .iter()
            .flat_map(|(_, lines)| lines)
            .filter(|l| l.mark == Mark::Fail)
            .count()
    }

    fn section(&mut self, title: &'static str) -> &mut Vec<Line> {
        self.sections.push((title, Vec::new()));
        let last = self.sections.len() - 1;
        &mut self.sections[last].1
    }
}

fn line(mark: Mark, text: impl Into<String>) -> Line {
    Line {
        mark,
        text: text.into(),
    }
}

fn check(ok: bool, pass: impl Into<String>, fail: impl Into<String>) -> Line {
    if ok {
        line(Mark::Pass, pass)
    } else {
        line(Mark::Fail, fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (title, lines) in &self.sections {
            writeln!(f, "{title}")?;
            for l in lines {
                let mark = match l.mark {
                    Mark::Pass => "  ok  ",
                    Mark::Fail => "  FAIL",
                    Mark::Note => "      ",
                };
                // Continuation lines of a long text keep the indent.
                let mut parts = l.text.split('\n');
                writeln!(f, "{mark} {}", parts.next().unwrap_or(""))?;
                for more in parts {
                    writeln!(f, "       {more}")?;
                }
            }
            writeln!(f)?;
        }
        match self.failures() {
            0 => writeln!(
                f,
                "Result: every condition holds; this setup qualifies for the consent exemption."
            ),
            n => writeln!(
                f,
                "Result: {n} condition(s) FAIL; fix them before relying on the consent exemption."
            ),
        }
    }
}

fn days(n: u32) -> String {
    let months = f64::from(n) / 30.4;
    format!("{n} days (about {months:.0} months)")
}

/// Builds the report as of `now` (Unix seconds) from the validated settings
/// and the database they point at, which it only reads.
pub fn run(settings: &Settings, now: i64) -> Result<Report, StoreError> {
    let raw = &settings.raw;
    let db_path = raw.storage.data_dir.join(DB_FILE_NAME);
    let inventory = inventory::read(&db_path)?;
    let mut report = Report::default();

    let s = report.section("Configuration");
    s.push(line(Mark::Pass, format!("{} is valid", settings.source)));
    let raw_days = raw.retention.raw_events_days;
    let agg_days = raw.retention.aggregates_days;
    s.push(check(
        raw_days <= MAX_RETENTION_DAYS,
        format!("retention.raw_events_days = {raw_days}: within 25 months"),
        format!(
            "retention.raw_events_days = {raw_days}: over 25 months ({MAX_RETENTION_DAYS} days); lower it"
        ),
    ));
    s.push(check(
        agg_days <= MAX_RETENTION_DAYS,
        format!("retention.aggregates_days = {agg_days}: within 25 months"),
        format!(
            "retention.aggregates_days = {agg_days}: over 25 months ({MAX_RETENTION_DAYS} days); lower it"
        ),
    ));

    let s = report.section("Database");
    let mut no_identifier_columns = true;
    match &inventory {
        None => s.push(line(
            Mark::Note,
            format!(
                "{} does not exist yet; the server creates it at first start",
                db_path.display()
            ),
        )),
        Some(inv) => database_lines(s, inv, raw_days, agg_days, now, &mut no_identifier_columns),
    }

    let s = report.section("What is collected");
    s.push(line(
        Mark::Note,
        "per pageview or custom event: the time, the site, the page's host and path (query \
         string only for UTM tags and click ids), the referrer, the event name, its properties \
         and revenue when the site sends them",
    ));
    s.push(line(
        Mark::Note,
        "per visit: entry and exit page, pageviews, duration, bounce, source and UTM tags, \
         browser and OS (name and major version), device type",
    ));
    s.push(line(
        Mark::Note,
        match &settings.geoip_database {
            Some(p) => format!(
                "location: country, region and city, looked up locally in {}",
                p.display()
            ),
            None => "location: not collected (no [geoip] database configured)".to_string(),
        },
    ));
    s.push(line(
        Mark::Note,
        "visitor id: a keyed hash of a random daily salt, the site, the IP address and the \
         User-Agent; it changes every day and cannot be computed back once the salt is deleted",
    ));
    s.push(line(
        Mark::Note,
        "never stored: IP addresses, User-Agent strings, cookies or any identifier kept on the \
         visitor's device",
    ));

    let s = report.section("Where it is kept");
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    s.push(line(
        Mark::Note,
        format!("database: {} (on this machine only)", abs(&db_path)),
    ));
    s.push(line(
        Mark::Note,
        format!(
            "event journal: {} (the database's event fields, for the milliseconds until \
             they are committed; emptied at every clean stop)",
            abs(&raw.storage.data_dir.join(crate::store::JOURNAL_DIR))
        ),
    ));
    s.push(line(
        Mark::Note,
        match &settings.backup_dir {
            Some(dir) => format!(
                "scheduled backups: {}, every {} h, the newest {} kept",
                abs(dir),
                raw.backup.interval_hours,
                raw.backup.keep
            ),
            None => "scheduled backups: off ([backup] dir is empty)".to_string(),
        },
    ));
    s.push(line(
        Mark::Note,
        "logs: standard error; no IP address or query string is logged at any level",
    ));
    s.push(line(
        Mark::Note,
        if raw.smtp.host.is_empty() {
            "weekly summaries: on the dashboard only (no [smtp] host)".to_string()
        } else {
            format!(
                "weekly summaries: also e-mailed to each site's users through {}:{}",
                raw.smtp.host, raw.smtp.port
            )
        },
    ));

    let s = report.section("How long");
    s.push(line(
        Mark::Note,
        format!("raw events and visits: {}", days(raw_days)),
    ));
    s.push(line(
        Mark::Note,
        format!("aggregated statistics: {}", days(agg_days)),
    ));
    s.push(line(Mark::Note, "visitor-id salts: 48 hours"));
    s.push(line(Mark::Note, "dashboard sign-in sessions: 30 days"));

    let s = report.section("Processing");
    s.push(line(
        Mark::Note,
        "everything happens on this machine: User-Agent rules and GeoIP data are local; Tally \
         makes no network call except to the configured mail server",
    ));
    s.push(line(
        Mark::Note,
        "bots, crawlers, headless browsers and monitors are recognised and not stored",
    ));
    s.push(line(
        Mark::Note,
        if raw.privacy.respect_gpc {
            "requests with Global Privacy Control or Do Not Track are not stored"
        } else {
            "Global Privacy Control / Do Not Track: not honoured ([privacy] respect_gpc = false)"
        },
    ));

    let s = report.section("Consent exemption (audience measurement)");
    s.push(line(
        Mark::Pass,
        "no cookie or local storage on tracked sites: the tracker sets none",
    ));
    s.push(line(
        Mark::Pass,
        "no cross-site tracking: the visitor id includes the site and a salt that changes daily",
    ));
    s.push(check(
        no_identifier_columns,
        "no raw IP address kept: used in memory for the visitor id and location, then dropped",
        "a column that could hold an IP address or User-Agent exists (see Database)",
    ));
    s.push(check(
        raw_days <= MAX_RETENTION_DAYS && agg_days <= MAX_RETENTION_DAYS,
        "retention bounded: at most 25 months",
        "retention not bounded to 25 months (see Configuration)",
    ));
    s.push(line(Mark::Pass, "location no finer than the city"));
    s.push(line(
        Mark::Pass,
        "data not shared: it stays on this machine and serves the site's own statistics",
    ));
    let local_relay = ["localhost", "127.0.0.1", "::1"].contains(&raw.smtp.host.as_str());
    if !raw.smtp.host.is_empty() {
        s.push(check(
            raw.smtp.security != SmtpSecurity::None || local_relay,
            "summaries travel encrypted (or only to a relay on this machine)",
            format!(
                "smtp.security = \"none\" with {}: summaries would cross the network in clear; \
                 use starttls or tls",
                raw.smtp.host
            ),
        ));
    }
    if let Some(inv) = &inventory {
        let public: Vec<&str> = inv
            .sites
            .iter()
            .filter(|(_, p)| *p)
            .map(|(d, _)| d.as_str())
            .collect();
        if !public.is_empty() || inv.share_links > 0 {
            s.push(line(
                Mark::Note,
                format!(
                    "aggregated statistics are published: public dashboards: {}; share links: {}",
                    if public.is_empty() {
                        "none".to_string()
                    } else {
                        public.join(", ")
                    },
                    inv.share_links
                ),
            ));
        }
    }
    Ok(report)
}

fn database_lines(
    s: &mut Vec<Line>,
    inv: &Inventory,
    raw_days: u32,
    agg_days: u32,
    now: i64,
    no_identifier_columns: &mut bool,
) {
    s.push(check(
        inv.integrity == "ok",
        "integrity check passed",
        format!("integrity check failed: {}", inv.integrity),
    ));
    s.push(check(
        inv.schema_version <= schema_version(),
        format!("schema version {}", inv.schema_version),
        format!(
            "schema version {} is newer than this binary ({})",
            inv.schema_version,
            schema_version()
        ),
    ));
    s.push(line(
        Mark::Note,
        format!(
            "{} site(s), {} events, {} visits, {} dashboard user(s), {:.1} MB",
            inv.sites.len(),
            inv.events,
            inv.visits,
            inv.users,
            inv.bytes as f64 / 1e6
        ),
    ));
    let age_days = |t: i64| (now - t).div_euclid(DAY);
    for (what, oldest, limit) in [
        ("raw event", inv.oldest_event, raw_days),
        ("visit", inv.oldest_visit, raw_days),
        ("aggregate", inv.oldest_rollup, agg_days),
    ] {
        if let Some(t) = oldest {
            let age = age_days(t);
            s.push(check(
                age <= i64::from(limit) + RETENTION_SLACK_DAYS,
                format!("oldest {what}: {age} days old, within {limit} days"),
                format!(
                    "oldest {what}: {age} days old, beyond {limit} days: retention has not run \
                     since the limit changed; start the server (it trims at start)"
                ),
            ));
        }
    }
    s.push(check(
        inv.removed_rows == 0,
        "removed sites: none of their events or visits left",
        format!(
            "{} events and visits of removed sites remain; start the server (it deletes them \
             in batches)",
            inv.removed_rows
        ),
    ));
    let today = now.div_euclid(DAY);
    let stale: Vec<i64> = inv
        .salt_days
        .iter()
        .copied()
        .filter(|d| *d < today - 1)
        .collect();
    s.push(check(
        stale.is_empty(),
        format!(
            "visitor-id salts: {} kept, none older than 48 hours",
            inv.salt_days.len()
        ),
        format!(
            "{} visitor-id salt(s) older than 48 hours remain; start the server (it deletes them)",
            stale.len()
        ),
    ));
    let bad: Vec<String> = inv
        .columns
        .iter()
        .filter(|(_, c)| FORBIDDEN_COLUMNS.contains(&c.to_ascii_lowercase().as_str()))
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    *no_identifier_columns = bad.is_empty();
    s.push(check(
        bad.is_empty(),
        format!(
            "no column for IP addresses or User-Agents among {} columns",
            inv.columns.len()
        ),
        format!("columns that could hold identifiers: {}", bad.join(", ")),
    ));
}
