//! Commands that print a report: `tally check` (the privacy report, failing
//! when a condition fails) and `tally summary` (a site's weekly summary).

use anyhow::bail;
use chrono::Datelike;

use crate::config::Settings;
use crate::store::{self, sites};
use crate::usage::UsageError;
use crate::{check, summary};

use super::shared::{normalize_domain, open};

pub(super) fn check(settings: &Settings) -> anyhow::Result<()> {
    let report = check::run(settings, store::now_unix())?;
    print!("{report}");
    match report.failures() {
        0 => Ok(()),
        n => bail!("{n} condition(s) of the privacy check fail"),
    }
}

pub(super) fn summary(
    domain: String,
    week: Option<chrono::NaiveDate>,
    settings: Settings,
) -> anyhow::Result<()> {
    let store = open(&settings)?;
    let domain = normalize_domain(&domain)?;
    // The reader goes back to the pool (of one) before the reports take it.
    let found = sites::find_site(&*store.reader()?, &domain)?;
    let Some(site) = found else {
        bail!(UsageError(format!("no site {domain}")));
    };
    let now = store::now_unix();
    let ctx = crate::query::Context::new(&site.timezone, now);
    let reports = crate::report::sqlite::SqliteReports::new(
        store.clone(),
        None,
        settings.raw.retention.raw_events_days,
    );
    let week = match week {
        Some(w) if w.weekday() != chrono::Weekday::Mon => {
            bail!(UsageError(format!(
                "--week {w} is a {}; give a Monday",
                w.weekday()
            )))
        }
        Some(w) => w,
        None => summary::last_full_week(ctx.today),
    };
    print!("{}", summary::text(&reports, &site, week, &ctx)?);
    Ok(())
}
