//! `/{domain}` and `/share/{domain}`: one site's dashboard, Plausible's
//! layout. Every number comes from the same query functions as the Stats
//! API, called with the parameters the URL carries.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{Datelike, Months};
use serde_json::Value;

use super::access::{Action, Admitted, Viewer, admit};
use super::chart::{self, Chart, Sample};
use super::panels::{PANEL_ROWS, PANELS, PROP_TAB, offers_props, resolve, row_label};
use super::view::{self, Chip, Link, ViewState};
use super::{Nav, blocking, html, realtime};
use crate::http::{AppState, PageError, query_context, settle_writes};
use crate::parallel;
use crate::query::{self, Params, period::Period};
use crate::report::Reports;
use crate::store;
use crate::store::sites::Site;

pub struct Change {
    pub text: String,
    /// `good`, `bad` or `flat`, for colour; the arrow carries the direction.
    pub class: &'static str,
}

pub struct StatBox {
    pub label: &'static str,
    pub value: String,
    pub change: Option<Change>,
    pub href: String,
    pub active: bool,
}

pub struct Row {
    pub label: String,
    /// `None` for a value no filter can express.
    pub href: Option<String>,
    pub count: String,
    pub bar: String,
}

pub struct Panel {
    pub key: &'static str,
    pub title: &'static str,
    pub tabs: Vec<Link>,
    pub column: String,
    pub rows: Vec<Row>,
    pub details_href: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub signed_in: Option<Nav>,
    pub domain: String,
    pub home: String,
    pub period_label: String,
    pub periods: Vec<Link>,
    pub custom_from: String,
    pub custom_to: String,
    /// Query pairs the custom-range form keeps.
    pub keep: Vec<(String, String)>,
    pub live_href: String,
    pub compare_on: bool,
    pub compare_href: String,
    pub chips: Vec<Chip>,
    pub current_visitors: String,
    pub stats: Vec<StatBox>,
    pub chart: Chart,
    pub panels: Vec<Panel>,
    pub settings_href: Option<String>,
    /// A zip of every panel's CSV for this view.
    pub export_href: String,
    /// The newest weekly summary.
    pub summary: Option<SummaryCard>,
    /// The site's rollups are being rebuilt after a timezone change.
    pub rebuilding: bool,
}

pub struct SummaryCard {
    pub title: String,
    pub lines: Vec<String>,
}

impl SummaryCard {
    /// The stored text: its first line is the title, the rest its lines.
    fn from_text(body: &str) -> SummaryCard {
        let mut lines = body.lines();
        SummaryCard {
            title: lines.next().unwrap_or_default().to_string(),
            lines: lines
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

pub async fn site(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let a = admit(&state, &req, &domain, q.get("auth").map(String::as_str)).await?;
    let mut resp = render(&state, &a, q.into_inner()).await?;
    if a.auth().is_some() {
        use actix_web::http::header::{self, HeaderValue};
        // A share link is for reading, not passing on: no Referer carries the token.
        let headers = resp.headers_mut();
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if state.embed_share_links {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(crate::http::CSP_EMBEDDABLE),
            );
        }
    }
    Ok(resp)
}

async fn render(
    state: &AppState,
    a: &Admitted,
    q: HashMap<String, String>,
) -> Result<HttpResponse, PageError> {
    let site = &a.site;
    let link = |v: &ViewState| a.href("", v);
    // The custom-range form sends `from` and `to`: fold them into `date`.
    if let (Some(from), Some(to)) = (q.get("from"), q.get("to")) {
        let mut v = ViewState::from_query(&q).with_period("custom", Some(format!("{from},{to}")));
        if from.is_empty() || to.is_empty() {
            v = v.with_period("30d", None);
        }
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", link(&v)))
            .finish());
    }
    let v = ViewState::from_query(&q);
    let live_href = a.path("/live");
    settle_writes(state).await;
    let ctx = query_context(site);
    let periods = period_links(&v, &link, ctx.today);
    let home = link(&ViewState::from_query(&HashMap::new()));
    if v.period == "realtime" {
        return realtime::page(state, a, &v, periods, home).await;
    }
    let period = Period::from_params(&v.api_params(&site.domain), &site.timezone, ctx.today)?;
    let (store, reports) = (state.store.clone(), state.reports.clone());
    let (data, summary) = {
        let (site, v, period) = (site.clone(), v.clone(), period.clone());
        blocking(move || {
            let (summary, has_goals) = {
                // Back to the pool before the reports take readers.
                let conn = store.reader()?;
                (
                    store::summaries::latest(&conn, site.id)?,
                    !store::sites::list_goals(&conn, site.id)?.is_empty(),
                )
            };
            let data = fetch(&*reports, &site, &v, &period, &ctx, has_goals)?;
            Ok((data, summary))
        })
        .await?
    };

    let mut keep: Vec<(String, String)> = Vec::new();
    if let Some(f) = v.filters_param() {
        keep.push(("filters".into(), f));
    }
    if v.compare {
        keep.push(("compare".into(), "previous_period".into()));
    }
    if v.graph != "visitors" {
        keep.push(("graph".into(), v.graph.clone()));
    }
    keep.extend(v.tabs.iter().cloned());
    if let Some(auth) = a.auth() {
        keep.push(("auth".into(), auth));
    }

    let chips = v.chips(link);

    let stats = view::TOP_STATS
        .iter()
        .map(|(metric, label)| {
            let entry = &data.aggregate[*metric];
            StatBox {
                label,
                value: view::metric_value(metric, &entry["value"]),
                change: entry["change"].as_i64().map(|c| change(metric, c)),
                href: link(&v.with_graph(metric)),
                active: v.graph == *metric,
            }
        })
        .collect();

    let months = matches!(v.period.as_str(), "6mo" | "12mo");
    let chart = chart::chart(
        &v.graph,
        &data.series,
        data.previous_series.as_deref(),
        months,
    );

    let panels = PANELS
        .iter()
        .zip(data.panels)
        .map(|(def, data)| {
            let PanelData {
                tab: tab_key,
                prop_tabs,
                property,
                heading: column,
                rows,
            } = data;
            let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
            Panel {
                key: def.key,
                title: def.title,
                tabs: def
                    .tabs
                    .iter()
                    .map(|t| (t.label.to_string(), t.key.to_string()))
                    .chain(
                        prop_tabs
                            .iter()
                            .map(|p| (format!("Property: {p}"), format!("{PROP_TAB}{p}"))),
                    )
                    .map(|(label, key)| Link {
                        label,
                        href: link(&v.with_tab(def.key, &key)),
                        active: key == tab_key,
                    })
                    .collect(),
                column,
                details_href: a.href(&format!("/details/{tab_key}"), &v),
                rows: rows
                    .into_iter()
                    .map(|(label, n)| Row {
                        href: v.filter_link(&property, &label).map(|f| link(&f)),
                        count: view::count(n),
                        bar: format!("{:.1}", 100.0 * n as f64 / max as f64),
                        label,
                    })
                    .collect(),
            }
        })
        .collect();

    let summary = summary.map(|s| SummaryCard::from_text(&s.body));
    // Viewers have nothing to change, so no settings to open.
    let settings_href = match &a.viewer {
        Viewer::User(access) if access.can(Action::Configure) => {
            Some(format!("/{}/settings", site.domain))
        }
        Viewer::User(_) | Viewer::Guest { .. } => None,
    };
    let page = DashboardPage {
        signed_in: a.nav.clone(),
        home,
        domain: site.domain.clone(),
        period_label: period_label(&v, &period),
        periods,
        custom_from: period.first.to_string(),
        custom_to: period.last.to_string(),
        keep,
        live_href,
        compare_on: v.compare,
        compare_href: link(&v.with_compare(!v.compare)),
        chips,
        // The same number the live stream then keeps current.
        current_visitors: view::count(
            state
                .ingestor
                .live()
                .snapshot(site.id, store::now_unix())
                .visitors as i64,
        ),
        stats,
        chart,
        panels,
        settings_href,
        export_href: a.href("/export", &v),
        summary,
        rebuilding: state.upkeep.rebuilding_sites().contains(&site.id),
    };
    html(&page)
}

/// The period picker's links, realtime first.
fn period_links(
    v: &ViewState,
    link: &impl Fn(&ViewState) -> String,
    today: chrono::NaiveDate,
) -> Vec<Link> {
    let active = |p: &str, d: Option<String>| v.period == p && v.date == d;
    let yesterday = today.pred_opt().unwrap_or(today).to_string();
    let last_month = crate::report::calendar::first_of_month(today)
        .checked_sub_months(Months::new(1))
        .unwrap_or(today)
        .to_string();
    let mut periods = Vec::new();
    for (label, p, d) in [
        ("Realtime", "realtime", None),
        ("Today", "day", None),
        ("Yesterday", "day", Some(yesterday)),
        ("7 days", "7d", None),
        ("30 days", "30d", None),
        ("This month", "month", None),
        ("Last month", "month", Some(last_month)),
        ("6 months", "6mo", None),
        ("12 months", "12mo", None),
    ] {
        periods.push(Link {
            label: label.into(),
            active: active(p, d.clone()),
            href: link(&v.with_period(p, d)),
        });
    }
    periods
}

/// "↑ 12%"; for the bounce rate a rise is bad, and it moves in points.
fn change(metric: &str, c: i64) -> Change {
    let arrow = match c.signum() {
        1 => "↑",
        -1 => "↓",
        _ => "→",
    };
    let unit = if metric == "bounce_rate" { " pt" } else { "%" };
    let good = if metric == "bounce_rate" {
        c < 0
    } else {
        c > 0
    };
    Change {
        text: format!("{arrow} {}{unit}", c.abs()),
        class: if c == 0 {
            "flat"
        } else if good {
            "good"
        } else {
            "bad"
        },
    }
}

fn period_label(v: &ViewState, p: &Period) -> String {
    let range = if p.first == p.last {
        p.first.format("%a %-d %b %Y").to_string()
    } else {
        format!(
            "{} – {}",
            p.first.format("%-d %b %Y"),
            p.last.format("%-d %b %Y")
        )
    };
    let name = match (v.period.as_str(), v.date.is_some()) {
        ("day", false) => "Today",
        ("7d", false) => "Last 7 days",
        ("30d", false) => "Last 30 days",
        ("month", false) => "This month",
        ("6mo", false) => "Last 6 months",
        ("12mo", false) => "Last 12 months",
        _ => return range,
    };
    format!("{name} · {range}")
}

struct Data {
    aggregate: Value,
    series: Vec<Sample>,
    previous_series: Option<Vec<Sample>>,
    panels: Vec<PanelData>,
}

/// One panel's chosen tab and its rows (label, visitors).
struct PanelData {
    tab: String,
    /// Custom property keys offered as extra tabs.
    prop_tabs: Vec<String>,
    property: String,
    heading: String,
    rows: Vec<(String, i64)>,
}

/// One of the view's parts, as a job of [`parallel::run`] gives it.
enum Part {
    Aggregate(Value),
    Series(Vec<Sample>),
    Previous(Vec<Sample>),
    Panel(PanelData),
}

/// The view's numbers. `has_goals`: the site has goals (the goals panel
/// opens on them, otherwise on custom events). The parts are independent
/// queries, each over its own report, run side by side.
fn fetch(
    reports: &dyn Reports,
    site: &Site,
    v: &ViewState,
    period: &Period,
    ctx: &query::Context,
    has_goals: bool,
) -> Result<Data, PageError> {
    let base = v.api_params(&site.domain);
    let with = |pairs: &[(&str, &str)]| {
        let mut p = base.clone();
        for (k, val) in pairs {
            p.insert(k.to_string(), val.to_string());
        }
        p
    };
    let top_metrics: Vec<&str> = view::TOP_STATS.iter().map(|(m, _)| *m).collect();
    let top_metrics = top_metrics.join(",");
    let interval = match query::period::Interval::from_params(&base)? {
        query::period::Interval::Hour => "hour",
        query::period::Interval::Date => "date",
        query::period::Interval::Month => "month",
    };
    let previous = match v.compare {
        true => Some(period.previous(&site.timezone)?),
        false => None,
    };
    // A previous period reaching before 1970 has nothing to chart, and
    // `date` would refuse it.
    let previous = previous.filter(|p| p.first.year() >= query::period::FIRST_YEAR);
    // The goals panel's tabs: the property keys, read first.
    let prop_keys = if offers_props(v) {
        query::prop_keys(reports, site, &base, ctx)?
    } else {
        Vec::new()
    };

    let mut jobs: Vec<parallel::Job<'_, Result<Part, PageError>>> = Vec::new();
    let params = with(&[("metrics", &top_metrics), ("compare", "previous_period")]);
    jobs.push(Box::new(move || {
        let value = query::aggregate(reports, site, &params, ctx)?;
        Ok(Part::Aggregate(value["results"].clone()))
    }));
    let params = with(&[("metrics", &v.graph), ("interval", interval)]);
    jobs.push(Box::new(move || {
        Ok(Part::Series(series_of(reports, site, v, &params, ctx)?))
    }));
    if let Some(p) = previous {
        let date = format!("{},{}", p.first, p.last);
        let params = with(&[
            ("metrics", &v.graph),
            ("interval", interval),
            ("period", "custom"),
            ("date", &date),
        ]);
        jobs.push(Box::new(move || {
            Ok(Part::Previous(series_of(reports, site, v, &params, ctx)?))
        }));
    }
    let limit = PANEL_ROWS.to_string();
    for def in PANELS {
        let default = if def.key == "goals" && !has_goals {
            def.tabs[1].key
        } else {
            def.tabs[0].key
        };
        let props: Vec<String> = if def.key == "goals" {
            prop_keys.clone()
        } else {
            Vec::new()
        };
        let chosen = v
            .tab(def.key)
            .filter(|t| {
                def.tabs.iter().any(|d| d.key == *t)
                    || t.strip_prefix(PROP_TAB)
                        .is_some_and(|k| props.iter().any(|p| p == k))
            })
            .and_then(|t| resolve(t, v))
            .or_else(|| resolve(default, v));
        // Every panel's first tabs exist (the dashboard tests render each);
        // a panel without one is left out rather than failing the page.
        let Some(chosen) = chosen else {
            continue;
        };
        let params = with(&[
            ("property", &chosen.property),
            ("metrics", "visitors"),
            ("limit", &limit),
        ]);
        jobs.push(Box::new(move || {
            let result = query::breakdown(reports, site, &params, ctx)?;
            let rows = result["results"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|r| {
                            (
                                row_label(r, &chosen.property),
                                r["visitors"].as_i64().unwrap_or(0),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(Part::Panel(PanelData {
                heading: chosen
                    .heading
                    .clone()
                    .unwrap_or_else(|| view::property_label(&chosen.property)),
                tab: chosen.key,
                property: chosen.property,
                prop_tabs: props,
                rows,
            }))
        }));
    }

    let mut data = Data {
        aggregate: Value::Null,
        series: Vec::new(),
        previous_series: None,
        panels: Vec::new(),
    };
    for part in parallel::run(jobs) {
        match part? {
            Part::Aggregate(a) => data.aggregate = a,
            Part::Series(s) => data.series = s,
            Part::Previous(s) => data.previous_series = Some(s),
            Part::Panel(p) => data.panels.push(p),
        }
    }
    Ok(data)
}

/// The chart's points: `v.graph` per bucket of the `params`' period.
fn series_of(
    reports: &dyn Reports,
    site: &Site,
    v: &ViewState,
    params: &Params,
    ctx: &query::Context,
) -> Result<Vec<Sample>, PageError> {
    let value = query::timeseries(reports, site, params, ctx)?;
    Ok(value["results"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| Sample {
                    label: r["date"].as_str().unwrap_or_default().to_string(),
                    // Null (a rate without visits) is no point at all.
                    value: r[&v.graph].as_f64(),
                })
                .collect()
        })
        .unwrap_or_default())
}
