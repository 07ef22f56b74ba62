//! Traffic into and out of a site: `tally export` (raw events as CSV),
//! `tally import` (past traffic from an export) and `tally demo`
//! (synthetic traffic through the real ingest path).

use anyhow::{Context, bail};

use crate::config::Settings;
use crate::store::backup::{self, BackupError};
use crate::store::{self, sites};
use crate::usage::UsageError;
use crate::{demo, transfer};

use super::shared::{normalize_domain, open};

pub(super) fn export(
    settings: &Settings,
    domain: &str,
    out: &std::path::Path,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> anyhow::Result<()> {
    let store = open(settings)?;
    let domain = normalize_domain(domain)?;
    let conn = store.reader()?;
    let Some(site) = sites::find_site(&conn, &domain)? else {
        bail!(UsageError(format!("no site {domain}")));
    };
    let day_start = |d: chrono::NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
    let from = from.map_or(i64::MIN, day_start);
    let to = to.map_or(i64::MAX, |d| day_start(d) + 86_400);
    if out == std::path::Path::new("-") {
        transfer::export(&conn, site.id, from, to, std::io::stdout().lock())?;
    } else {
        if out.exists() {
            bail!(UsageError(format!("{} already exists", out.display())));
        }
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let n = transfer::export(&conn, site.id, from, to, std::io::BufWriter::new(file))?;
        eprintln!("Exported {n} events of {domain} to {}", out.display());
    }
    Ok(())
}

pub(super) fn import(
    settings: &Settings,
    format: transfer::Format,
    domain: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let data_dir = &settings.raw.storage.data_dir;
    let Some(_lock) = backup::DataDirLock::try_acquire(data_dir)? else {
        bail!(BackupError::InUse(data_dir.display().to_string()));
    };
    let store = open(settings)?;
    let domain = normalize_domain(domain)?;
    let Some(site) = sites::find_site(&*store.reader()?, &domain)? else {
        bail!(UsageError(format!("no site {domain}: add it first")));
    };
    let refused = |e: store::transfer::ImportError| match e {
        store::transfer::ImportError::Overlap(_) | store::transfer::ImportError::Rebuilding => {
            anyhow::Error::new(UsageError(e.to_string()))
        }
        other => other.into(),
    };
    let mut conn = store.write_connection()?;
    match transfer::read(format, path, &domain)? {
        transfer::Parsed::Visits(visits) => {
            // Past days are about to appear: the site's column store goes
            // first, so a stop halfway never leaves it without them (the
            // server seals the site again at its next start).
            crate::report::sqlite::sealer::forget_site(data_dir, site.id)?;
            let imported = crate::report::sqlite::rollups::import_visits(
                &mut conn,
                site.id,
                visits,
                store::now_unix(),
            )
            .map_err(refused)?;
            println!(
                "Imported {} events in {} visits into {domain}",
                imported.events, imported.visits
            );
        }
        transfer::Parsed::Aggregates(rows) => {
            let n = crate::report::sqlite::rollups::import_aggregates(&mut conn, site.id, rows)
                .map_err(refused)?;
            println!("Imported {n} daily aggregate rows into {domain}");
        }
    }
    Ok(())
}

pub(super) fn demo(
    settings: &Settings,
    site: String,
    events: u64,
    days: u32,
    seed: u64,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let report = demo::run(
        settings,
        demo::DemoOptions {
            site,
            events,
            days,
            seed,
        },
    )?;
    println!(
        "Wrote {} pageviews and {} custom events in {} visits ({:.1} s)",
        report.pageviews,
        report.custom_events,
        report.visits,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
