//! `/{domain}/details/{tab}`: one panel's full breakdown with more metrics,
//! a page at a time, and the same rows as CSV (`format=csv`).

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde_json::Value;

use super::access::admit;
use super::panels::{Chosen, resolve, row_label};
use super::view::{self, ViewState};
use super::{Nav, blocking, html};
use crate::http::{AppState, PageError, query_context, settle_writes};
use crate::query;
use crate::report::Reports;
use crate::spreadsheet;
use crate::store::sites::Site;

/// Rows per page of the details view.
const PAGE_ROWS: i64 = 100;
/// Rows per query while writing CSV, and how many queries at most.
const CSV_CHUNK: i64 = 1000;
const CSV_MAX_CHUNKS: i64 = 100;

/// The metrics a property's breakdown offers, as Stats API names.
fn metrics_for(property: &str) -> &'static [&'static str] {
    match property {
        "event:page" => &["visitors", "visits", "pageviews"],
        "event:name" => &["visitors", "events"],
        "event:goal" => &["visitors", "events", "conversion_rate"],
        p if p.starts_with("event:props:") => &["visitors", "pageviews", "events"],
        _ => &[
            "visitors",
            "visits",
            "pageviews",
            "bounce_rate",
            "visit_duration",
        ],
    }
}

fn metric_label(metric: &str) -> &'static str {
    match metric {
        "visitors" => "Visitors",
        "visits" => "Visits",
        "pageviews" => "Pageviews",
        "bounce_rate" => "Bounce rate",
        "visit_duration" => "Visit duration",
        "events" => "Events",
        "conversion_rate" => "Conversion rate",
        _ => "",
    }
}

pub struct DetailRow {
    pub label: String,
    /// `None` for a value no filter can express.
    pub href: Option<String>,
    pub values: Vec<String>,
}

#[derive(Template)]
#[template(path = "details.html")]
struct DetailsPage {
    signed_in: Option<Nav>,
    domain: String,
    title: String,
    back: String,
    column: String,
    headings: Vec<&'static str>,
    rows: Vec<DetailRow>,
    page: i64,
    previous: Option<String>,
    next: Option<String>,
    csv: String,
}

pub async fn details(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let (domain, tab_key) = path.into_inner();
    let q = q.into_inner();
    let a = admit(&state, &req, &domain, q.get("auth").map(String::as_str)).await?;
    let v = ViewState::from_query(&q);
    let tab = resolve(&tab_key, &v).ok_or(PageError::NotFound)?;
    let property = tab.property.clone();
    let heading = tab.heading.clone();
    let metrics = metrics_for(&property);
    let csv = q.get("format").is_some_and(|f| f == "csv");
    let page: i64 = match q.get("page") {
        None => 1,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| (1..=1_000_000).contains(p))
            .ok_or_else(|| PageError::BadRequest("page: expected a positive number".into()))?,
    };

    settle_writes(&state).await;
    let ctx = query_context(&a.site);
    if csv {
        let (reports, site, v) = (state.reports.clone(), a.site.clone(), v.clone());
        let tab_key = tab.key.clone();
        let out = blocking(move || {
            let tab = resolve(&tab_key, &v).ok_or(PageError::NotFound)?;
            tab_csv(&*reports, &site, &v, &tab, &ctx)
        })
        .await?;
        let filename = format!("{}-{}.csv", a.site.domain, tab.key);
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{filename}\""),
            ))
            .insert_header(("Cache-Control", "no-store"))
            .body(out));
    }
    let mut params = v.api_params(&a.site.domain);
    params.insert("property".into(), property.clone());
    params.insert("metrics".into(), metrics.join(","));
    params.insert("limit".into(), PAGE_ROWS.to_string());
    params.insert("page".into(), page.to_string());
    let (reports, site) = (state.reports.clone(), a.site.clone());
    let rows: Vec<Value> = blocking(move || {
        let result = query::breakdown(&*reports, &site, &params, &ctx)?;
        Ok(result["results"].as_array().cloned().unwrap_or_default())
    })
    .await?;
    let label_of = |r: &Value| row_label(r, &property);
    let column = heading.unwrap_or_else(|| view::property_label(&property));

    let link = |v: &ViewState| a.href("", v);
    let details = format!("/details/{}", tab.key);
    let here = |page: i64| {
        let link = a.href(&details, &v);
        if page > 1 {
            format!("{link}&page={page}")
        } else {
            link
        }
    };
    let next = (rows.len() as i64 == PAGE_ROWS && property != "event:goal").then(|| here(page + 1));
    let previous = (page > 1).then(|| here(page - 1));
    let csv_href = format!("{}&format=csv", here(1));
    let rows = rows
        .iter()
        .map(|r| {
            let label = label_of(r);
            DetailRow {
                href: v.filter_link(&property, &label).map(|f| link(&f)),
                values: metrics
                    .iter()
                    .map(|m| match m {
                        &"conversion_rate" => format!("{}%", r[*m].as_f64().unwrap_or(0.0)),
                        m => view::metric_value(m, &r[*m]),
                    })
                    .collect(),
                label,
            }
        })
        .collect();
    html(&DetailsPage {
        signed_in: a.nav.clone(),
        domain: a.site.domain.clone(),
        title: format!("{} · {}", tab.panel_title, tab.label),
        back: link(&v),
        column,
        headings: metrics.iter().map(|m| metric_label(m)).collect(),
        rows,
        page,
        previous,
        next,
        csv: csv_href,
    })
}

/// A tab's whole breakdown for the view `v` as CSV: a header of the column
/// and its metrics, then every row (up to 100,000).
pub fn tab_csv(
    reports: &dyn Reports,
    site: &Site,
    v: &ViewState,
    tab: &Chosen,
    ctx: &query::Context,
) -> Result<String, PageError> {
    let metrics = metrics_for(&tab.property);
    let mut params = v.api_params(&site.domain);
    params.insert("property".into(), tab.property.clone());
    params.insert("metrics".into(), metrics.join(","));
    params.insert("limit".into(), CSV_CHUNK.to_string());
    let mut out = CsvFile::new();
    let column = tab
        .heading
        .clone()
        .unwrap_or_else(|| view::property_label(&tab.property));
    out.line(std::iter::once(column).chain(metrics.iter().map(|m| m.to_string())))?;
    for p in 1..=CSV_MAX_CHUNKS {
        params.insert("page".into(), p.to_string());
        let result = query::breakdown(reports, site, &params, ctx)?;
        let rows = result["results"].as_array().cloned().unwrap_or_default();
        for r in &rows {
            out.line(
                std::iter::once(row_label(r, &tab.property))
                    .chain(metrics.iter().map(|m| csv_cell(&r[*m]))),
            )?;
        }
        // Goals come whole, in one answer.
        if (rows.len() as i64) < CSV_CHUNK || tab.property == "event:goal" {
            break;
        }
    }
    out.finish()
}

/// A JSON answer's value as a CSV cell: strings bare, null empty.
pub fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One of the dashboard's CSV files, written by the `csv` crate: RFC 4180
/// quoting and `\r\n` line ends. Every cell goes through
/// [`spreadsheet::guard`], the one formula guard that `tally export` shares:
/// tracked values are typed by strangers.
pub struct CsvFile(csv::Writer<Vec<u8>>);

impl CsvFile {
    pub fn new() -> Self {
        Self(
            csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(Vec::new()),
        )
    }

    /// Adds one record; every record of a file has as many cells as its
    /// header.
    pub fn line<S: AsRef<str>>(
        &mut self,
        cells: impl IntoIterator<Item = S>,
    ) -> Result<(), PageError> {
        self.0
            .write_record(
                cells
                    .into_iter()
                    .map(|c| spreadsheet::guard(c.as_ref()).into_owned()),
            )
            .map_err(csv_error)
    }

    /// The file's text.
    pub fn finish(self) -> Result<String, PageError> {
        let bytes = self
            .0
            .into_inner()
            .map_err(|e| csv_error(e.into_error().into()))?;
        // Only `&str` cells and ASCII punctuation went in.
        String::from_utf8(bytes).map_err(|e| PageError::Internal(format!("writing CSV: {e}")))
    }
}

fn csv_error(e: csv::Error) -> PageError {
    PageError::Internal(format!("writing CSV: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(cells: &[&str]) -> String {
        let mut out = CsvFile::new();
        out.line(cells).unwrap();
        out.finish().unwrap()
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let out = written(&["a,b", "say \"hi\"", "=HYPERLINK(\"x\")", "-1.5", "@home"]);
        assert_eq!(
            out,
            "\"a,b\",\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\",-1.5,'@home\r\n"
        );
    }

    /// The bytes the hand-written writer produced before the `csv` crate
    /// took over: quotes only around a comma, a quote or a line break,
    /// empty cells bare, `\r\n` after every record.
    #[test]
    fn csv_bytes_are_as_before() {
        let mut out = CsvFile::new();
        out.line(["Page", "visitors", "visits"]).unwrap();
        out.line(["/a b", "1", ""]).unwrap();
        out.line(["two\nlines", "x\ry", "Zürich; 'quoted' #1"])
            .unwrap();
        out.line(["", "", ""]).unwrap();
        assert_eq!(
            out.finish().unwrap(),
            "Page,visitors,visits\r\n/a b,1,\r\n\"two\nlines\",\"x\ry\",Zürich; 'quoted' #1\r\n,,\r\n"
        );
    }

    /// The dashboard's CSVs and `tally export` guard cells with the same
    /// function: a plain negative number stays a number in both, `-inf` is
    /// guarded in both, and `tally import` reads both back as they were.
    #[test]
    fn dashboard_and_export_guard_numbers_alike() {
        let cells = ["-1.5", "-inf"];
        let dashboard = written(&cells);
        assert_eq!(dashboard, "-1.5,'-inf\r\n");
        let exported = cells.map(crate::spreadsheet::guard).join(",") + "\r\n";
        assert_eq!(dashboard, exported);
        for (cell, back) in dashboard.trim_end().split(',').zip(cells) {
            assert_eq!(crate::spreadsheet::unguard(cell), back);
        }
    }
}
