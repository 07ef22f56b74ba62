//! `/{domain}/export`: the dashboard's numbers for the current period and
//! filters as a zip of CSV files, one per panel tab plus the visitors over
//! time and the custom properties, as Plausible's export does. At most
//! [`crate::http::EXPORTS_AT_ONCE`] are built at once.

use std::collections::HashMap;
use std::io::Write;

use actix_web::{HttpRequest, HttpResponse, web};

use super::access::admit;
use super::blocking;
use super::details::{CsvFile, csv_cell, tab_csv};
use super::panels::{PANELS, resolve};
use super::view::ViewState;
use crate::http::{AppState, PageError, query_context, settle_writes};
use crate::query;

/// Seconds a refused export is told to wait: an export takes about as long
/// as a dashboard view per panel tab.
const EXPORT_RETRY_AFTER: u32 = 5;

/// The metrics of `visitors.csv`, in its column order.
const SERIES_METRICS: &[&str] = &[
    "visitors",
    "pageviews",
    "visits",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
];

pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let q = q.into_inner();
    let a = admit(&state, &req, &domain, q.get("auth").map(String::as_str)).await?;
    let v = ViewState::from_query(&q);
    if v.period == "realtime" {
        return Err(PageError::BadRequest(
            "choose a period to export; realtime has no history".into(),
        ));
    }
    // An export runs every panel's report and may be asked for by anyone
    // who can see the site, a public one or a share link's included: a few
    // at once, the rest told to come back. The slot is owned and moves into
    // the blocking work below: a client that hangs up drops this handler,
    // but the zip is built all the same, and the slot must stay taken
    // until it is.
    let slot = state
        .exports
        .clone()
        .try_acquire_owned()
        .map_err(|_| PageError::Busy("other exports are being built", EXPORT_RETRY_AFTER))?;
    settle_writes(&state).await;
    let ctx = query_context(&a.site);
    let (reports, site) = (state.reports.clone(), a.site.clone());
    let name = format!("{}-{}.zip", a.site.domain, v.period);
    let zip = blocking(move || {
        let _slot = slot;
        let reports = &*reports;
        let mut files: Vec<(String, String)> = Vec::new();

        let mut params = v.api_params(&site.domain);
        params.insert("metrics".into(), SERIES_METRICS.join(","));
        let interval = if v.period == "day" { "hour" } else { "date" };
        params.insert("interval".into(), interval.into());
        let series = query::timeseries(reports, &site, &params, &ctx)?;
        let mut csv = CsvFile::new();
        csv.line(std::iter::once(interval).chain(SERIES_METRICS.iter().copied()))?;
        for row in series["results"].as_array().into_iter().flatten() {
            csv.line(
                std::iter::once(csv_cell(&row[interval]))
                    .chain(SERIES_METRICS.iter().map(|m| csv_cell(&row[*m]))),
            )?;
        }
        files.push(("visitors.csv".into(), csv.finish()?));

        for tab in PANELS.iter().flat_map(|p| p.tabs) {
            // Version tabs exist only once a browser or OS is chosen.
            let Some(chosen) = resolve(tab.key, &v) else {
                continue;
            };
            files.push((
                format!("{}.csv", file_name(tab.key)),
                tab_csv(reports, &site, &v, &chosen, &ctx)?,
            ));
        }

        let keys = query::prop_keys(reports, &site, &v.api_params(&site.domain), &ctx)?;
        let mut props = CsvFile::new();
        props.line(["property", "value", "visitors", "events"])?;
        for key in keys {
            let mut params = v.api_params(&site.domain);
            params.insert("property".into(), format!("event:props:{key}"));
            params.insert("metrics".into(), "visitors,events".into());
            params.insert("limit".into(), "1000".into());
            let result = query::breakdown(reports, &site, &params, &ctx)?;
            for row in result["results"].as_array().into_iter().flatten() {
                props.line([
                    key.clone(),
                    csv_cell(&row[&key]),
                    csv_cell(&row["visitors"]),
                    csv_cell(&row["events"]),
                ])?;
            }
        }
        files.push(("custom_props.csv".into(), props.finish()?));
        zip_files(&files).map_err(|e| PageError::Internal(format!("writing the zip: {e}")))
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(zip))
}

/// Plausible's file name for a tab, where it differs from the tab's key, so
/// scripts written for its export read ours.
fn file_name(tab: &str) -> &str {
    match tab {
        "entry" => "entry_pages",
        "exit" => "exit_pages",
        "os" => "operating_systems",
        "utm_medium" => "utm_mediums",
        "utm_source" => "utm_sources",
        "utm_campaign" => "utm_campaigns",
        "goals" => "conversions",
        "events" => "custom_events",
        other => other,
    }
}

fn zip_files(files: &[(String, String)]) -> zip::result::ZipResult<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in files {
        zip.start_file(name.as_str(), options)?;
        zip.write_all(content.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}
