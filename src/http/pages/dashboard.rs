//! `/{domain}` and `/share/{domain}`: one site's dashboard, Plausible's
//! layout. Every number comes from the same query functions as the Stats
//! API, called with the parameters the URL carries.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_lab::sse;
use askama::Template;
use chrono::{Datelike, Days, Months};
use futures_util::StreamExt;
use serde_json::Value;
use std::convert::Infallible;

use super::chart::{self, Chart, Sample};
use super::session::{self, SignedIn};
use super::view::{self, ViewState};
use super::{Nav, blocking, html};
use crate::http::{AppState, PageError, query_context};
use crate::query::{self, Params, period::Period};
use crate::store::sites::Site;
use crate::store::{self, users};

/// Rows per panel, as Plausible shows.
const PANEL_ROWS: i64 = 9;

/// A tab of a panel: its key in the URL, its name, the property it breaks
/// down, and the column heading.
struct Tab {
    key: &'static str,
    label: &'static str,
    property: &'static str,
}

struct PanelDef {
    key: &'static str,
    title: &'static str,
    tabs: &'static [Tab],
}

const fn tab(key: &'static str, label: &'static str, property: &'static str) -> Tab {
    Tab {
        key,
        label,
        property,
    }
}

const PANELS: &[PanelDef] = &[
    PanelDef {
        key: "sources",
        title: "Top sources",
        tabs: &[
            tab("sources", "Sources", "visit:source"),
            tab("referrers", "Referrers", "visit:referrer"),
            tab("utm_medium", "Medium", "visit:utm_medium"),
            tab("utm_source", "UTM source", "visit:utm_source"),
            tab("utm_campaign", "Campaign", "visit:utm_campaign"),
        ],
    },
    PanelDef {
        key: "pages",
        title: "Top pages",
        tabs: &[
            tab("pages", "Top pages", "event:page"),
            tab("entry", "Entry pages", "visit:entry_page"),
            tab("exit", "Exit pages", "visit:exit_page"),
        ],
    },
    PanelDef {
        key: "locations",
        title: "Locations",
        tabs: &[
            tab("countries", "Countries", "visit:country"),
            tab("regions", "Regions", "visit:region"),
            tab("cities", "Cities", "visit:city"),
        ],
    },
    PanelDef {
        key: "devices",
        title: "Devices",
        tabs: &[
            tab("browsers", "Browsers", "visit:browser"),
            tab("os", "Operating systems", "visit:os"),
            tab("devices", "Devices", "visit:device"),
        ],
    },
    PanelDef {
        key: "goals",
        title: "Goals and events",
        tabs: &[
            tab("goals", "Goals", "event:goal"),
            tab("events", "Custom events", "event:name"),
        ],
    },
];

/// With a browser or OS filtered to one value, its tab lists versions.
fn drill_down(property: &'static str, state: &ViewState) -> (&'static str, Option<String>) {
    match property {
        "visit:browser" => match state.is_filtered("visit:browser") {
            Some(b) => ("visit:browser_version", Some(format!("{b} versions"))),
            None => (property, None),
        },
        "visit:os" => match state.is_filtered("visit:os") {
            Some(o) => ("visit:os_version", Some(format!("{o} versions"))),
            None => (property, None),
        },
        _ => (property, None),
    }
}

pub struct Link {
    pub label: String,
    pub href: String,
    pub active: bool,
}

pub struct Chip {
    pub label: String,
    pub remove_href: String,
}

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
    pub href: String,
    pub count: String,
    pub bar: String,
}

pub struct Panel {
    pub key: &'static str,
    pub title: &'static str,
    pub tabs: Vec<Link>,
    pub column: String,
    pub rows: Vec<Row>,
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
}

/// Who may see this dashboard, and how its links carry that.
enum Viewer {
    User(SignedIn),
    /// A public site, or a share link (whose token every link keeps).
    Guest {
        auth: Option<String>,
    },
}

/// The site at `domain` and who is looking, or why not: signed-in users see
/// their sites, anyone sees a public site, a valid share token opens its
/// site. Unknown and private sites look alike to a stranger.
async fn admit(
    state: &AppState,
    req: &HttpRequest,
    domain: &str,
    share: Option<&str>,
) -> Result<(Site, Viewer, String), PageError> {
    let domain = domain.to_ascii_lowercase();
    let site = find_site(state, &domain).await?;
    if let Some(token) = share {
        let site = site.ok_or(PageError::NotFound)?;
        let (store, id, t) = (state.store.clone(), site.id, token.to_string());
        let valid = !token.is_empty()
            && blocking(move || Ok(users::share_link_valid(&*store.reader()?, id, &t)?)).await?;
        if !valid {
            return Err(PageError::NotFound);
        }
        let auth = Some(token.to_string());
        return Ok((site, Viewer::Guest { auth }, format!("/share/{domain}")));
    }
    let public = site.as_ref().is_some_and(|s| s.public);
    let viewer = match session::signed_in(state, req).await? {
        Some(me) => {
            let (store, user) = (state.store.clone(), me.user.clone());
            let allowed = match site.as_ref().map(|s| s.id) {
                Some(id) => {
                    blocking(move || Ok(users::can_view(&*store.reader()?, &user, id)?)).await?
                }
                None => false,
            };
            match (allowed, public) {
                (true, _) => Viewer::User(me),
                (false, true) => Viewer::Guest { auth: None },
                (false, false) => return Err(PageError::NotFound),
            }
        }
        None if public => Viewer::Guest { auth: None },
        None => return Err(PageError::SignIn(req.uri().to_string())),
    };
    let site = site.ok_or(PageError::NotFound)?;
    Ok((site, viewer, format!("/{domain}")))
}

pub async fn site(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let (site, viewer, base) = admit(&state, &req, &domain, None).await?;
    let signed_in = match &viewer {
        Viewer::User(me) => Some(Nav::of(me)),
        Viewer::Guest { .. } => session::signed_in(&state, &req)
            .await?
            .as_ref()
            .map(Nav::of),
    };
    render(&state, site, base, viewer, signed_in, q.into_inner()).await
}

pub async fn shared(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let token = q.get("auth").cloned().unwrap_or_default();
    let (site, viewer, base) = admit(&state, &req, &domain, Some(&token)).await?;
    let mut resp = render(&state, site, base, viewer, None, q.into_inner()).await?;
    // Share links are for reading, not for passing on: no Referer leaks the token.
    resp.headers_mut().insert(
        actix_web::http::header::REFERRER_POLICY,
        actix_web::http::header::HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

/// How long one live stream lasts before the browser reconnects (which
/// checks access again).
const LIVE_STREAM_SECS: u64 = 600;

/// `/{domain}/live` and `/share/{domain}/live`: the live numbers as
/// Server-Sent Events, at most once a second and only when they change.
pub async fn live(
    state: web::Data<AppState>,
    req: HttpRequest,
    domain: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> Result<impl actix_web::Responder, PageError> {
    let share = req.path().starts_with("/share/");
    let token = q.get("auth").cloned().unwrap_or_default();
    let (site, _, _) = admit(&state, &req, &domain, share.then_some(token.as_str())).await?;
    let state = state.into_inner();
    let started = std::time::Instant::now();
    let mut last = String::new();
    let ticks = futures_util::stream::unfold(
        tokio::time::interval(std::time::Duration::from_secs(1)),
        |mut tick| async move {
            tick.tick().await;
            Some(((), tick))
        },
    )
    .take_while(move |_| std::future::ready(started.elapsed().as_secs() < LIVE_STREAM_SECS));
    let stream = ticks.filter_map(move |_| {
        let snapshot = state.ingestor.live().snapshot(site.id, store::now_unix());
        let json = serde_json::json!({
            "visitors": snapshot.visitors,
            "visitors_text": view::count(snapshot.visitors as i64),
            "pages": snapshot.pages,
            "sources": snapshot.sources,
            "countries": snapshot.countries,
            "pageviews_per_minute": snapshot.pageviews_per_minute,
        })
        .to_string();
        let changed = json != last;
        if changed {
            last = json.clone();
        }
        std::future::ready(
            changed.then(|| Ok::<_, Infallible>(sse::Event::Data(sse::Data::new(json)))),
        )
    });
    Ok(sse::Sse::from_stream(stream)
        .with_keep_alive(std::time::Duration::from_secs(15))
        .with_retry_duration(std::time::Duration::from_secs(1)))
}

async fn find_site(state: &AppState, domain: &str) -> Result<Option<Site>, PageError> {
    let (store, d) = (state.store.clone(), domain.to_string());
    blocking(move || Ok(store::sites::find_site(&*store.reader()?, &d)?)).await
}

/// Appends a share token to a view's link.
fn linker(base: String, auth: Option<String>) -> impl Fn(&ViewState) -> String {
    move |v: &ViewState| match &auth {
        Some(a) => {
            let extra = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("auth", a)
                .finish();
            format!("{}&{extra}", v.href(&base))
        }
        None => v.href(&base),
    }
}

async fn render(
    state: &AppState,
    site: Site,
    base: String,
    viewer: Viewer,
    signed_in: Option<Nav>,
    q: HashMap<String, String>,
) -> Result<HttpResponse, PageError> {
    let auth = match &viewer {
        Viewer::Guest { auth } => auth.clone(),
        Viewer::User(_) => None,
    };
    // The custom-range form sends `from` and `to`: fold them into `date`.
    if let (Some(from), Some(to)) = (q.get("from"), q.get("to")) {
        let mut v = ViewState::from_query(&q).with_period("custom", Some(format!("{from},{to}")));
        if from.is_empty() || to.is_empty() {
            v = v.with_period("30d", None);
        }
        let href = linker(base, auth)(&v);
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", href))
            .finish());
    }
    let v = ViewState::from_query(&q);
    let live_href = match &auth {
        Some(a) => format!(
            "{base}/live?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("auth", a)
                .finish()
        ),
        None => format!("{base}/live"),
    };
    let link = linker(base.clone(), auth);
    let periods = period_links(&v, &link, query_context(state, &site).today);
    if v.period == "realtime" {
        let snapshot = state.ingestor.live().snapshot(site.id, store::now_unix());
        return html(&RealtimePage {
            signed_in,
            home: link(&ViewState::from_query(&HashMap::new())),
            domain: site.domain.clone(),
            periods,
            live_href,
            current_visitors: view::count(snapshot.visitors as i64),
            minutes: minute_bars(&snapshot.pageviews_per_minute),
            lists: vec![
                ("pages", "Current pages", "Page", snapshot.pages),
                ("sources", "Sources", "Source", snapshot.sources),
                ("countries", "Countries", "Country", snapshot.countries),
            ]
            .into_iter()
            .map(|(key, title, column, rows)| LiveList {
                key,
                title,
                column,
                rows: live_rows(&rows),
            })
            .collect(),
        });
    }
    let ctx = query_context(state, &site);
    let today = ctx.today;
    let period = Period::from_params(&api_params(&site, &v), &site.timezone, today)?;
    let store = state.store.clone();
    let data = {
        let (site, v) = (site.clone(), v.clone());
        blocking(move || {
            let conn = store.reader()?;
            fetch(&conn, &site, &v, &ctx)
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
    if let Viewer::Guest { auth: Some(a) } = &viewer {
        keep.push(("auth".into(), a.clone()));
    }

    let chips = v
        .filters
        .iter()
        .enumerate()
        .map(|(i, c)| Chip {
            label: c.label(),
            remove_href: link(&v.without_filter(i)),
        })
        .collect();

    let stats = STAT_BOXES
        .iter()
        .map(|(metric, label)| {
            let entry = &data.aggregate[*metric];
            let value = entry["value"].as_f64().unwrap_or(0.0);
            StatBox {
                label,
                value: view::metric(metric, value),
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
                    .map(|t| Link {
                        label: t.label.into(),
                        href: link(&v.with_tab(def.key, t.key)),
                        active: t.key == tab_key,
                    })
                    .collect(),
                column,
                rows: rows
                    .into_iter()
                    .map(|(label, n)| Row {
                        href: link(&v.with_filter(&property, &label)),
                        count: view::count(n),
                        bar: format!("{:.1}", 100.0 * n as f64 / max as f64),
                        label,
                    })
                    .collect(),
            }
        })
        .collect();

    let settings_href = match &viewer {
        Viewer::User(_) => Some(format!("/{}/settings", site.domain)),
        Viewer::Guest { .. } => None,
    };
    let page = DashboardPage {
        signed_in,
        home: link(&ViewState::from_query(&HashMap::new())),
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
        current_visitors: view::count(data.current_visitors),
        stats,
        chart,
        panels,
        settings_href,
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
    let yesterday = (today - Days::new(1)).to_string();
    let last_month = (today.with_day(1).expect("day 1") - Months::new(1)).to_string();
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

pub struct LiveRow {
    pub label: String,
    pub count: String,
    pub bar: String,
}

pub struct LiveList {
    pub key: &'static str,
    pub title: &'static str,
    pub column: &'static str,
    pub rows: Vec<LiveRow>,
}

pub struct MinuteBar {
    pub x: String,
    pub y: String,
    pub height: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "realtime.html")]
pub struct RealtimePage {
    pub signed_in: Option<Nav>,
    pub domain: String,
    pub home: String,
    pub periods: Vec<Link>,
    pub live_href: String,
    pub current_visitors: String,
    pub minutes: Vec<MinuteBar>,
    pub lists: Vec<LiveList>,
}

fn live_rows(rows: &[(String, usize)]) -> Vec<LiveRow> {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    rows.iter()
        .map(|(label, n)| LiveRow {
            label: label.clone(),
            count: view::count(*n as i64),
            bar: format!("{:.1}", 100.0 * *n as f64 / max as f64),
        })
        .collect()
}

/// The realtime chart: one bar per minute in a 600 × 120 box; `app.js`
/// moves the same bars as numbers arrive.
fn minute_bars(per_minute: &[u32]) -> Vec<MinuteBar> {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = per_minute.len();
    per_minute
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let h = 110.0 * f64::from(v) / max;
            let ago = n - 1 - i;
            MinuteBar {
                x: format!("{:.1}", 600.0 * i as f64 / n as f64 + 2.0),
                y: format!("{:.1}", 115.0 - h),
                height: format!("{h:.1}"),
                title: match ago {
                    0 => format!("This minute: {v} pageviews"),
                    _ => format!("{ago} min ago: {v} pageviews"),
                },
            }
        })
        .collect()
}

const STAT_BOXES: &[(&str, &str)] = &[
    ("visitors", "Unique visitors"),
    ("visits", "Total visits"),
    ("pageviews", "Total pageviews"),
    ("views_per_visit", "Views per visit"),
    ("bounce_rate", "Bounce rate"),
    ("visit_duration", "Visit duration"),
];

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

/// The Stats API parameters of this view, for one site.
fn api_params(site: &Site, v: &ViewState) -> Params {
    let mut p = Params::new();
    p.insert("site_id".into(), site.domain.clone());
    p.insert("period".into(), v.period.clone());
    if let Some(d) = &v.date {
        p.insert("date".into(), d.clone());
    }
    if let Some(f) = v.filters_param() {
        p.insert("filters".into(), f);
    }
    p
}

struct Data {
    aggregate: Value,
    series: Vec<Sample>,
    previous_series: Option<Vec<Sample>>,
    current_visitors: i64,
    panels: Vec<PanelData>,
}

/// One panel's chosen tab and its rows (label, visitors).
struct PanelData {
    tab: &'static str,
    property: String,
    heading: String,
    rows: Vec<(String, i64)>,
}

fn fetch(
    conn: &store::Db,
    site: &Site,
    v: &ViewState,
    ctx: &query::Context,
) -> Result<Data, PageError> {
    let base = api_params(site, v);
    let with = |pairs: &[(&str, &str)]| {
        let mut p = base.clone();
        for (k, val) in pairs {
            p.insert(k.to_string(), val.to_string());
        }
        p
    };
    let aggregate = query::aggregate(
        conn,
        site,
        &with(&[
            (
                "metrics",
                "visitors,visits,pageviews,views_per_visit,bounce_rate,visit_duration",
            ),
            ("compare", "previous_period"),
        ]),
        ctx,
    )?["results"]
        .take();
    let series_of = |params: &Params| -> Result<Vec<Sample>, PageError> {
        let value = query::timeseries(conn, site, params, ctx)?;
        Ok(value["results"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| Sample {
                        label: r["date"].as_str().unwrap_or_default().to_string(),
                        value: r[&v.graph].as_f64().unwrap_or(0.0),
                    })
                    .collect()
            })
            .unwrap_or_default())
    };
    let interval = match query::period::Interval::from_params(&base)? {
        query::period::Interval::Hour => "hour",
        query::period::Interval::Date => "date",
        query::period::Interval::Month => "month",
    };
    let series = series_of(&with(&[("metrics", &v.graph), ("interval", interval)]))?;
    let previous_series = if v.compare {
        let p = Period::from_params(&base, &site.timezone, ctx.today)?.previous(&site.timezone);
        let date = format!("{},{}", p.first, p.last);
        Some(series_of(&with(&[
            ("metrics", &v.graph),
            ("interval", interval),
            ("period", "custom"),
            ("date", &date),
        ]))?)
    } else {
        None
    };
    let current_visitors = query::realtime_visitors(conn, site, &base, ctx)?
        .as_i64()
        .unwrap_or(0);
    let has_goals = !store::sites::list_goals(conn, site.id)?.is_empty();
    let mut panels = Vec::new();
    for def in PANELS {
        let chosen = v.tab(def.key);
        let default = if def.key == "goals" && !has_goals {
            &def.tabs[1]
        } else {
            &def.tabs[0]
        };
        let t = def
            .tabs
            .iter()
            .find(|t| Some(t.key) == chosen)
            .unwrap_or(default);
        let (property, heading) = drill_down(t.property, v);
        let limit = PANEL_ROWS.to_string();
        let result = query::breakdown(
            conn,
            site,
            &with(&[
                ("property", property),
                ("metrics", "visitors"),
                ("limit", &limit),
            ]),
            ctx,
        )?;
        let key = result_key(property);
        let rows = result["results"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        let label = match &r[key.as_str()] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (label, r["visitors"].as_i64().unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        panels.push(PanelData {
            tab: t.key,
            property: property.to_string(),
            heading: heading.unwrap_or_else(|| view::property_label(property)),
            rows,
        });
    }
    Ok(Data {
        aggregate,
        series,
        previous_series,
        current_visitors,
        panels,
    })
}

/// The key a breakdown's rows carry their value under.
fn result_key(property: &str) -> String {
    match property {
        "event:page" => "page".into(),
        "event:name" => "name".into(),
        "event:goal" => "goal".into(),
        p => p
            .strip_prefix("visit:")
            .or_else(|| p.strip_prefix("event:props:"))
            .unwrap_or(p)
            .to_string(),
    }
}
