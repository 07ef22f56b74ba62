//! `/{domain}/details/{tab}`: one panel's full breakdown with more metrics,
//! a page at a time, and the same rows as CSV (`format=csv`).

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde_json::Value;

use super::access::admit;
use super::panels::{resolve, row_label};
use super::view::{self, ViewState};
use super::{Nav, blocking, html};
use crate::http::{AppState, PageError, query_context};
use crate::query;

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

    let mut params = v.api_params(&a.site.domain);
    params.insert("property".into(), property.clone());
    params.insert("metrics".into(), metrics.join(","));
    let ctx = query_context(&state, &a.site);
    let (store, site, prop) = (state.store.clone(), a.site.clone(), property.clone());
    let (limit, pages) = if csv {
        (CSV_CHUNK, (1..=CSV_MAX_CHUNKS).collect::<Vec<_>>())
    } else {
        (PAGE_ROWS, vec![page])
    };
    let rows: Vec<Value> = blocking(move || {
        let conn = store.reader()?;
        let mut all = Vec::new();
        for p in pages {
            let mut params = params.clone();
            params.insert("limit".into(), limit.to_string());
            params.insert("page".into(), p.to_string());
            let result = query::breakdown(&conn, &site, &params, &ctx)?;
            let rows = result["results"].as_array().cloned().unwrap_or_default();
            let done = (rows.len() as i64) < limit || prop == "event:goal";
            all.extend(rows);
            if done {
                break;
            }
        }
        Ok(all)
    })
    .await?;
    let label_of = |r: &Value| row_label(r, &property);
    let column = heading.unwrap_or_else(|| view::property_label(&property));

    if csv {
        let mut out = String::new();
        let header: Vec<String> = std::iter::once(column.clone())
            .chain(metrics.iter().map(|m| m.to_string()))
            .collect();
        push_csv_line(&mut out, &header);
        for r in &rows {
            let line: Vec<String> = std::iter::once(label_of(r))
                .chain(metrics.iter().map(|m| match &r[*m] {
                    Value::Null => String::new(),
                    other => other.to_string(),
                }))
                .collect();
            push_csv_line(&mut out, &line);
        }
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
                        m => view::metric(m, r[*m].as_f64().unwrap_or(0.0)),
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

/// One CSV record (RFC 4180 quoting). A cell that a spreadsheet would run
/// as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`: tracked
/// values are typed by strangers.
fn push_csv_line(out: &mut String, cells: &[String]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let numeric = cell.parse::<f64>().is_ok();
        let guarded = if !numeric && cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{cell}")
        } else {
            cell.clone()
        };
        if guarded.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&guarded.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&guarded);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut out = String::new();
        push_csv_line(
            &mut out,
            &[
                "a,b".into(),
                "say \"hi\"".into(),
                "=HYPERLINK(\"x\")".into(),
                "-1.5".into(),
                "@home".into(),
            ],
        );
        assert_eq!(
            out,
            "\"a,b\",\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\",-1.5,'@home\r\n"
        );
    }
}
