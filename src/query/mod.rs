//! The Stats API's query side: parameters in, Plausible-shaped JSON out.
//!
//! Parameters arrive as plain key/value pairs (this module knows nothing about
//! HTTP); periods are resolved in the site's timezone. The numbers come from
//! a [`Reports`], which picks the engine that answers (see
//! [`crate::report`]); this module only shapes requests and answers.

pub mod filters;
pub mod period;

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::parallel;
use crate::report::model::{BreakdownRow, Dimension, Filter, TimeRange, Totals, VisitColumn};
use crate::report::{ReportError, Reports, SiteReport};
use crate::store::sites::{GoalKind, Site};
use period::Period;

#[derive(Debug, Error)]
pub enum QueryError {
    /// A request parameter is missing or wrong; the message names it.
    #[error("{0}")]
    BadParam(String),
    #[error("site {0} does not exist")]
    NoSuchSite(String),
    #[error(transparent)]
    Report(ReportError),
}

impl From<ReportError> for QueryError {
    fn from(e: ReportError) -> QueryError {
        match e {
            // The request asked for data that is not kept: its fault.
            ReportError::NotKept { .. } => QueryError::BadParam(e.to_string()),
            other => QueryError::Report(other),
        }
    }
}

impl From<crate::store::StoreError> for QueryError {
    fn from(e: crate::store::StoreError) -> QueryError {
        QueryError::Report(ReportError::Store(e))
    }
}

pub type Params = HashMap<String, String>;

/// What a query needs to know besides its parameters.
#[derive(Clone, Copy)]
pub struct Context {
    /// Today in the site's timezone.
    pub today: chrono::NaiveDate,
    pub now: i64,
}

impl Context {
    /// The context of a query on a site in `timezone` as of `now`.
    pub fn new(timezone: &str, now: i64) -> Context {
        Context {
            today: period::today_in(timezone, now),
            now,
        }
    }
}

/// A site's numbers narrowed by the request's `filters`.
fn open<'r>(
    reports: &'r dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Box<dyn SiteReport + 'r>, QueryError> {
    let filters = filters::parse(params.get("filters").map(String::as_str))?;
    Ok(reports.open(site, &filters, ctx.now)?)
}

fn bad(message: impl Into<String>) -> QueryError {
    QueryError::BadParam(message.into())
}

/// The `site_id` parameter.
pub fn site_param(params: &Params) -> Result<&str, QueryError> {
    params
        .get("site_id")
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("site_id is required"))
}

/// Metrics every report computes from its totals.
const BASE_METRICS: &[&str] = &[
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
];

/// The aggregate also computes the conversion rate over all goals.
const CONVERSION_RATE: &str = "conversion_rate";

/// The `metrics` parameter, each one of `allowed` or `extra`.
fn metrics(params: &Params, allowed: &[&str], extra: &[&str]) -> Result<Vec<String>, QueryError> {
    let raw = params
        .get("metrics")
        .map(String::as_str)
        .unwrap_or("visitors");
    let list: Vec<String> = raw.split(',').map(|m| m.trim().to_string()).collect();
    for m in &list {
        if !allowed.contains(&m.as_str()) && !extra.contains(&m.as_str()) {
            let valid: Vec<&str> = allowed.iter().chain(extra).copied().collect();
            return Err(bad(format!(
                "metrics: unknown metric `{m}`; valid here: {}",
                valid.join(", ")
            )));
        }
    }
    Ok(list)
}

/// `num / den` rounded half away from zero, in exact integer arithmetic
/// (floating point turns 1.005 into 1.00 and -21.5 into -21); 0 for 0/0.
fn div_round(num: i64, den: i64) -> i64 {
    if den == 0 {
        return 0;
    }
    let (n, d) = (i128::from(num), i128::from(den));
    let q = (2 * n.abs() + d.abs()) / (2 * d.abs());
    (if (n < 0) != (d < 0) { -q } else { q }) as i64
}

/// Metrics that are a share or an average over visits: null without visits,
/// as Plausible answers, since a 0 would read as a real 0% bounce rate.
const PER_VISIT: &[&str] = &["views_per_visit", "bounce_rate", "visit_duration"];

fn metric_of(name: &str, t: &Totals) -> Value {
    if t.visits == 0 && PER_VISIT.contains(&name) {
        return Value::Null;
    }
    match name {
        "visitors" => json!(t.visitors),
        "visits" => json!(t.visits),
        "pageviews" => json!(t.pageviews),
        "events" => json!(t.events),
        "views_per_visit" => json!(div_round(t.pageviews * 100, t.visits) as f64 / 100.0),
        "bounce_rate" => json!(div_round(t.bounces * 100, t.visits)),
        "visit_duration" => json!(div_round(t.visit_duration_sum, t.visits)),
        _ => Value::Null,
    }
}

/// `part` of `whole` in percent, one decimal.
fn percent(part: i64, whole: i64) -> f64 {
    div_round(part * 1000, whole) as f64 / 10.0
}

/// Change against the previous period, as Plausible reports it: points for
/// the bounce rate, a rounded percentage otherwise (100 from nothing), and
/// null when either value is (a rate without visits).
/// Metrics have at most two decimals, so hundredths compare exactly.
fn change(name: &str, now: &Value, before: &Value) -> Value {
    if now.is_null() || before.is_null() {
        return Value::Null;
    }
    let hundredths = |v: &Value| (v.as_f64().unwrap_or(0.0) * 100.0).round() as i64;
    let (now, before) = (hundredths(now), hundredths(before));
    if name == "bounce_rate" {
        return json!(div_round(now - before, 100));
    }
    if before == 0 {
        return json!(if now > 0 { 100 } else { 0 });
    }
    json!(div_round((now - before) * 100, before))
}

/// `GET /api/v1/stats/aggregate`.
pub fn aggregate(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Value, QueryError> {
    let metrics = metrics(params, BASE_METRICS, &[CONVERSION_RATE])?;
    let period = Period::from_params(params, &site.timezone, ctx.today)?;
    let source = open(reports, site, params, ctx)?;
    let previous = match params.get("compare").map(String::as_str) {
        None => None,
        Some("previous_period") => Some(period.previous(&site.timezone)?),
        Some(other) => {
            return Err(bad(format!(
                "compare: `{other}` is not supported; use previous_period"
            )));
        }
    };
    let goals: Vec<GoalKind> = if metrics.iter().any(|m| m == CONVERSION_RATE) {
        source.goal_list()?.into_iter().map(|g| g.kind).collect()
    } else {
        Vec::new()
    };
    let measure = |source: &dyn SiteReport, range| -> Result<(Totals, i64), QueryError> {
        let converted = if goals.is_empty() {
            0
        } else {
            source.goals(range, &goals)?.0
        };
        Ok((source.totals(range)?, converted))
    };
    // The previous period over a report of its own, side by side: its
    // read transaction begins a moment after this one's.
    let (current, before) = match &previous {
        Some(p) => parallel::join(
            || measure(&*source, period.range),
            || {
                let other = open(reports, site, params, ctx)?;
                measure(&*other, p.range).map(Some)
            },
        ),
        None => (measure(&*source, period.range), Ok(None)),
    };
    let (t, converted) = current?;
    let before = before?;
    let value_of = |m: &str, t: &Totals, converted: i64| {
        if m == CONVERSION_RATE {
            json!(percent(converted, t.visitors))
        } else {
            metric_of(m, t)
        }
    };
    let mut results = Map::new();
    for m in &metrics {
        let value = value_of(m, &t, converted);
        let entry = match &before {
            Some((b, bc)) => {
                let prev = value_of(m, b, *bc);
                json!({ "value": value, "change": change(m, &value, &prev) })
            }
            None => json!({ "value": value }),
        };
        results.insert(m.clone(), entry);
    }
    Ok(json!({ "results": results }))
}

/// `GET /api/v1/stats/timeseries`: every bucket of the period, empty ones
/// included, as `{"results":[{"date":"2024-01-01","visitors":N},…]}`.
pub fn timeseries(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Value, QueryError> {
    let metrics = metrics(params, BASE_METRICS, &[])?;
    let period = Period::from_params(params, &site.timezone, ctx.today)?;
    let interval = period::Interval::from_params(params)?;
    let source = open(reports, site, params, ctx)?;
    let buckets = period.buckets(interval, &site.timezone)?;
    let ranges: Vec<TimeRange> = buckets.iter().map(|b| b.range).collect();
    let totals = source.series(&ranges, interval == period::Interval::Hour)?;
    let mut results = Vec::new();
    for (bucket, t) in buckets.into_iter().zip(totals) {
        let mut row = Map::new();
        row.insert("date".into(), json!(bucket.label));
        for m in &metrics {
            row.insert(m.clone(), metric_of(m, &t));
        }
        results.push(Value::Object(row));
    }
    Ok(json!({ "results": results }))
}

/// `GET /api/v1/stats/realtime/visitors`: visitors of the last five minutes,
/// as a bare number, narrowed by `filters` as every other report is
/// (Plausible documents only `site_id` here; Tally takes `filters` too).
pub fn realtime_visitors(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Value, QueryError> {
    let visitors = open(reports, site, params, ctx)?.current_visitors(current(ctx.now))?;
    Ok(json!(visitors))
}

/// "Current visitors" are those seen in the last five minutes.
pub const REALTIME_WINDOW: i64 = 300;
/// The realtime chart's span, in minutes.
pub const REALTIME_MINUTES: i64 = 30;
/// Rows of each realtime list.
const REALTIME_ROWS: i64 = 10;

/// The last [`REALTIME_WINDOW`] seconds up to `now`, included.
fn current(now: i64) -> TimeRange {
    TimeRange {
        start: now - REALTIME_WINDOW,
        end: now + 1,
    }
}

/// The realtime view of a site narrowed by filters, from the reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Realtime {
    /// Visitors of the last five minutes.
    pub visitors: i64,
    /// Pages viewed in the last five minutes, by visitors, most first
    /// (ties by name); at most ten rows, as each list.
    pub pages: Vec<(String, i64)>,
    /// Those visitors by their visit's source.
    pub sources: Vec<(String, i64)>,
    /// Those visitors by their visit's country.
    pub countries: Vec<(String, i64)>,
    /// Pageviews of each of the last 30 minutes, oldest first; the last is
    /// the current minute.
    pub pageviews_per_minute: Vec<i64>,
}

/// The realtime view of `site` narrowed by `filters` (parsed with
/// [`filters::parse`]) as of `now`: what the dashboard shows of a filtered
/// realtime view. Filtered reports read raw events, which keep minutes; an
/// unfiltered view comes from the live counters in memory instead, so
/// `filters` is not empty here (the rollups keep no minutes).
pub fn realtime(
    reports: &dyn Reports,
    site: &Site,
    filters: &[Filter],
    now: i64,
) -> Result<Realtime, QueryError> {
    let source = reports.open(site, filters, now)?;
    let minute = now.div_euclid(60);
    let now = current(now);
    let minutes: Vec<TimeRange> = (minute - REALTIME_MINUTES + 1..=minute)
        .map(|m| TimeRange {
            start: m * 60,
            end: m * 60 + 60,
        })
        .collect();
    let labelled = |rows: Vec<(Option<String>, i64)>, key: &str| -> Vec<(String, i64)> {
        rows.into_iter()
            .map(|(v, n)| (v.unwrap_or_else(|| none_label(key).to_string()), n))
            .collect()
    };
    let pages = source
        .breakdown(now, &Dimension::Page, false, REALTIME_ROWS, 0)?
        .into_iter()
        .map(|r| (r.value, r.visitors))
        .collect();
    Ok(Realtime {
        visitors: source.current_visitors(now)?,
        pages: labelled(pages, "page"),
        sources: labelled(
            source.current_breakdown(now, VisitColumn::Source, REALTIME_ROWS)?,
            "source",
        ),
        countries: labelled(
            source.current_breakdown(now, VisitColumn::Country, REALTIME_ROWS)?,
            "country",
        ),
        pageviews_per_minute: source
            .series(&minutes, false)?
            .into_iter()
            .map(|t| t.pageviews)
            .collect(),
    })
}

/// A breakdown property: its dimension, its key in results, the metrics it supports.
fn property(name: &str) -> Result<(Dimension, String, &'static [&'static str]), QueryError> {
    const PAGE_METRICS: &[&str] = &["visitors", "visits", "pageviews"];
    const EVENT_METRICS: &[&str] = &["visitors", "visits", "events"];
    const PROP_METRICS: &[&str] = &["visitors", "visits", "pageviews", "events"];
    match name {
        "event:page" => Ok((Dimension::Page, "page".into(), PAGE_METRICS)),
        "event:name" => Ok((Dimension::EventName, "name".into(), EVENT_METRICS)),
        _ if name.starts_with("event:props:") => {
            let key = &name["event:props:".len()..];
            if key.is_empty() {
                return Err(bad("property: event:props: needs a property name"));
            }
            Ok((
                Dimension::Prop(key.to_string()),
                key.to_string(),
                PROP_METRICS,
            ))
        }
        _ => {
            let column = name
                .strip_prefix("visit:")
                .and_then(VisitColumn::from_name)
                .ok_or_else(|| bad(format!("property: unknown property `{name}`")))?;
            Ok((
                Dimension::Visit(column),
                column.name().to_string(),
                BASE_METRICS,
            ))
        }
    }
}

/// How a missing value is shown, as Plausible does.
fn none_label(key: &str) -> &'static str {
    match key {
        "source" | "referrer" => "Direct / None",
        _ => "(none)",
    }
}

/// `GET /api/v1/stats/breakdown`.
pub fn breakdown(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Value, QueryError> {
    let prop = params
        .get("property")
        .ok_or_else(|| bad("property is required"))?;
    if prop == "event:goal" {
        return goal_breakdown(reports, site, params, ctx);
    }
    let (dimension, key, allowed) = property(prop)?;
    let metrics = metrics(params, allowed, &[])?;
    let period = Period::from_params(params, &site.timezone, ctx.today)?;
    let limit = int_param(params, "limit", 100, 1, 1000)?;
    let page = int_param(params, "page", 1, 1, 1_000_000)?;
    let need_visits = metrics.iter().any(|m| m == "visits");
    let source = open(reports, site, params, ctx)?;
    let rows: Vec<BreakdownRow> = source.breakdown(
        period.range,
        &dimension,
        need_visits,
        limit,
        (page - 1) * limit,
    )?;
    let results: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let totals = Totals {
                visitors: r.visitors,
                pageviews: r.pageviews,
                events: r.events,
                visits: r.visits,
                bounces: r.bounces,
                visit_duration_sum: r.visit_duration_sum,
            };
            let mut obj = Map::new();
            obj.insert(
                key.clone(),
                json!(r.value.unwrap_or_else(|| none_label(&key).to_string())),
            );
            for m in &metrics {
                obj.insert(m.clone(), metric_of(m, &totals));
            }
            Value::Object(obj)
        })
        .collect();
    Ok(json!({ "results": results }))
}

/// The custom property keys of the events in the period (and filters), most
/// visitors first: what a dashboard offers to break down. Reads raw events,
/// so only the days they are kept for.
pub fn prop_keys(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Vec<String>, QueryError> {
    const MAX_KEYS: i64 = 20;
    let period = Period::from_params(params, &site.timezone, ctx.today)?;
    Ok(open(reports, site, params, ctx)?.prop_keys(period.range, MAX_KEYS)?)
}

fn int_param(
    params: &Params,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, QueryError> {
    match params.get(name) {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| bad(format!("{name}: expected an integer from {min} to {max}"))),
    }
}

/// `property=event:goal`: each goal with the visitors who completed it, how
/// often, and the share of all visitors.
fn goal_breakdown(
    reports: &dyn Reports,
    site: &Site,
    params: &Params,
    ctx: &Context,
) -> Result<Value, QueryError> {
    let metrics = metrics(params, &["visitors", "events"], &[CONVERSION_RATE])?;
    let period = Period::from_params(params, &site.timezone, ctx.today)?;
    let source = open(reports, site, params, ctx)?;
    let all = source.totals(period.range)?.visitors;
    let mut rows = Vec::new();
    for goal in source.goal_list()? {
        let (visitors, events) = source.goals(period.range, std::slice::from_ref(&goal.kind))?;
        let mut row = Map::new();
        row.insert("goal".into(), json!(goal.display_name()));
        for m in &metrics {
            let v = match m.as_str() {
                "visitors" => json!(visitors),
                "events" => json!(events),
                _ => json!(percent(visitors, all)),
            };
            row.insert(m.clone(), v);
        }
        rows.push((visitors, Value::Object(row)));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(json!({ "results": rows.into_iter().map(|r| r.1).collect::<Vec<_>>() }))
}
