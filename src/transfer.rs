//! `tally export` and `tally import`: a site's raw events out as CSV, and
//! past traffic in from Tally's own export, GoatCounter's or Plausible's.
//!
//! Tally's CSV has one row per event with its visit's attributes, so an
//! export imported into another site gives the same reports. GoatCounter
//! exports one row per pageview with a session id; rows of a session become
//! visits the way Tally makes them (30 minutes without an event ends one).
//! Plausible exports daily aggregates per dimension (`imported_*.csv`):
//! they become rollup rows only, as there are no events behind them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use url::Url;

use crate::ingest::enrich::referrer;
use crate::ingest::payload::parse_props;
use crate::report::model::VisitColumn;
use crate::report::sqlite::rollups::{Dim, ImportedRow};
use crate::spreadsheet::{guard, unguard};
use crate::store::transfer::{ExportedEvent, ImportEvent, ImportVisit};
use crate::store::{Db, VisitDims};
use crate::usage::UsageError;

/// A visit ends after this long without an event (as at ingest).
const VISIT_TIMEOUT: i64 = 30 * 60;

/// The columns of Tally's CSV, in order.
pub const COLUMNS: &[&str] = &[
    "time",
    "name",
    "hostname",
    "path",
    "visit",
    "visitor",
    "interactive",
    "props",
    "revenue_amount",
    "revenue_currency",
    "scroll_depth",
    "engaged_ms",
    "referrer",
    "source",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "region",
    "city",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tally's own `tally export` CSV.
    TallyCsv,
    /// GoatCounter's CSV export (format 2; `.csv` or `.csv.gz`).
    GoatcounterCsv,
    /// Plausible's CSV export: the `imported_*.csv` files of its zip.
    PlausibleCsv,
}

/// What an import file holds: visits with their events, or aggregates.
pub enum Parsed {
    Visits(Vec<ImportVisit>),
    Aggregates(Vec<ImportedRow>),
}

/// Writes every event of `site_id` in `[from, to)` as Tally CSV to `out`.
pub fn export(conn: &Db, site_id: i64, from: i64, to: i64, out: impl Write) -> anyhow::Result<u64> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    let written =
        crate::store::transfer::each_event(conn, site_id, from, to, |x: ExportedEvent| {
            let e = &x.event;
            let time = DateTime::<Utc>::from_timestamp(e.ts, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(SecondsFormat::Secs, true);
            let opt = |v: &Option<String>| {
                v.as_deref()
                    .map(|s| guard(s).into_owned())
                    .unwrap_or_default()
            };
            let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
            let d = &x.dims;
            w.write_record([
                time,
                guard(&e.name).into_owned(),
                guard(&e.hostname).into_owned(),
                guard(&e.path).into_owned(),
                x.visit_id.to_string(),
                x.visitor_id.to_string(),
                (e.interactive as u8).to_string(),
                opt(&e.props),
                opt(&e.revenue_amount),
                opt(&e.revenue_currency),
                num(e.scroll_depth),
                num(e.engaged_ms),
                opt(&d.referrer),
                opt(&d.source),
                opt(&d.utm_medium),
                opt(&d.utm_source),
                opt(&d.utm_campaign),
                opt(&d.utm_term),
                opt(&d.utm_content),
                opt(&d.country),
                opt(&d.region),
                opt(&d.city),
                opt(&d.browser),
                opt(&d.browser_version),
                opt(&d.os),
                opt(&d.os_version),
                opt(&d.device),
            ])
        })??;
    w.flush()?;
    Ok(written)
}

/// Reads `path` (a file, or a directory of them) in `format` for the site
/// `domain`.
pub fn read(format: Format, path: &Path, domain: &str) -> anyhow::Result<Parsed> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                let name = p.to_string_lossy();
                name.ends_with(".csv") || name.ends_with(".csv.gz")
            })
            .collect();
        files.sort();
        files
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        bail!(UsageError(format!(
            "{}: no such file or directory",
            path.display()
        )));
    };
    if files.is_empty() {
        bail!(UsageError(format!(
            "{}: no .csv files in it",
            path.display()
        )));
    }
    let mut visits: Vec<ImportVisit> = Vec::new();
    let mut aggregates = Vec::new();
    for file in files {
        let text = read_text(&file)?;
        let context = || format!("reading {}", file.display());
        match format {
            Format::TallyCsv => visits.extend(read_tally(&text).with_context(context)?),
            Format::GoatcounterCsv => {
                visits.extend(read_goatcounter(&text, domain).with_context(context)?)
            }
            Format::PlausibleCsv => {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                aggregates.extend(read_plausible(name, &text).with_context(context)?)
            }
        }
    }
    Ok(match format {
        Format::PlausibleCsv => Parsed::Aggregates(aggregates),
        _ => Parsed::Visits(visits),
    })
}

/// Where a column of one of Plausible's tables goes.
#[derive(Clone, Copy)]
enum Target {
    Totals,
    Page,
    EventName,
    /// A visit attribute, by its column in Tally.
    Visit(VisitColumn),
}

/// One of Plausible's `imported_*` tables: the columns that name a value,
/// where each goes, and which column counts visits.
struct PlausibleTable {
    name: &'static str,
    values: &'static [(&'static str, Target)],
    visits: &'static str,
}

const PLAUSIBLE_TABLES: &[PlausibleTable] = &[
    PlausibleTable {
        name: "imported_visitors",
        values: &[("", Target::Totals)],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_sources",
        values: &[
            ("source", Target::Visit(VisitColumn::Source)),
            ("referrer", Target::Visit(VisitColumn::Referrer)),
            ("utm_source", Target::Visit(VisitColumn::UtmSource)),
            ("utm_medium", Target::Visit(VisitColumn::UtmMedium)),
            ("utm_campaign", Target::Visit(VisitColumn::UtmCampaign)),
            ("utm_content", Target::Visit(VisitColumn::UtmContent)),
            ("utm_term", Target::Visit(VisitColumn::UtmTerm)),
        ],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_pages",
        values: &[("page", Target::Page)],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_entry_pages",
        values: &[("entry_page", Target::Visit(VisitColumn::EntryPage))],
        visits: "entrances",
    },
    PlausibleTable {
        name: "imported_exit_pages",
        values: &[("exit_page", Target::Visit(VisitColumn::ExitPage))],
        visits: "exits",
    },
    PlausibleTable {
        // Cities are GeoNames ids there, names here: left out.
        name: "imported_locations",
        values: &[
            ("country", Target::Visit(VisitColumn::Country)),
            ("region", Target::Visit(VisitColumn::Region)),
        ],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_devices",
        values: &[("device", Target::Visit(VisitColumn::Device))],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_browsers",
        values: &[
            ("browser", Target::Visit(VisitColumn::Browser)),
            (
                "browser_version",
                Target::Visit(VisitColumn::BrowserVersion),
            ),
        ],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_operating_systems",
        values: &[
            ("operating_system", Target::Visit(VisitColumn::Os)),
            (
                "operating_system_version",
                Target::Visit(VisitColumn::OsVersion),
            ),
        ],
        visits: "visits",
    },
    PlausibleTable {
        name: "imported_custom_events",
        values: &[("name", Target::EventName)],
        visits: "",
    },
];

/// One `imported_<table>_<from>_<to>.csv` file of Plausible's export.
fn read_plausible(file_name: &str, text: &str) -> anyhow::Result<Vec<ImportedRow>> {
    // Longest name first: imported_pages is a prefix of no other, but
    // imported_visitors must not swallow another table.
    let Some(table) = PLAUSIBLE_TABLES
        .iter()
        .filter(|t| file_name.starts_with(t.name))
        .max_by_key(|t| t.name.len())
    else {
        // Tables Tally has no place for (scroll depth, …) are skipped.
        return Ok(Vec::new());
    };
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let headers = r.headers()?.clone();
    let at = |name: &str| headers.iter().position(|h| h.trim() == name);
    let Some(date_col) = at("date") else {
        bail!(UsageError(format!("{file_name}: no column \"date\"")));
    };
    let mut rows = Vec::new();
    for (i, record) in r.records().enumerate() {
        let record = record?;
        let line = i + 2;
        let cell = |name: &str| at(name).and_then(|c| record.get(c)).unwrap_or("").trim();
        let count = |name: &str| -> anyhow::Result<i64> {
            match cell(name) {
                "" => Ok(0),
                s => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    UsageError(format!(
                        "{file_name} line {line}: {name} {s:?} is not a count"
                    ))
                    .into()
                }),
            }
        };
        let day = record
            .get(date_col)
            .unwrap_or("")
            .trim()
            .parse::<chrono::NaiveDate>()
            .map_err(|_| {
                UsageError(format!(
                    "{file_name} line {line}: the date is not YYYY-MM-DD"
                ))
            })?;
        let counts = ImportedRow {
            day,
            visitors: count("visitors")?,
            visits: if table.visits.is_empty() {
                0
            } else {
                count(table.visits)?
            },
            pageviews: count("pageviews")?,
            events: count("events")?,
            bounces: count("bounces")?,
            duration: count("visit_duration")?,
            ..ImportedRow::default()
        };
        for (column, target) in table.values {
            let (dim, value) = match target {
                Target::Totals => (Dim::Totals, String::new()),
                // A column older exports lack is skipped, not taken as empty.
                _ if at(column).is_none() => continue,
                Target::Page => (Dim::Page, cell(column).to_string()),
                Target::EventName => (Dim::EventName, cell(column).to_string()),
                Target::Visit(tally_column) => {
                    (Dim::Visit(*tally_column), cell(column).to_string())
                }
            };
            if matches!(target, Target::Page | Target::EventName) && value.is_empty() {
                continue;
            }
            rows.push(ImportedRow {
                dim,
                value,
                ..counts.clone()
            });
        }
    }
    Ok(rows)
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut text = String::new();
    if file.to_string_lossy().ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .with_context(|| format!("decompressing {}", file.display()))?;
    } else {
        text =
            String::from_utf8(raw).with_context(|| format!("{} is not UTF-8", file.display()))?;
    }
    Ok(text)
}

/// Column positions by header name; every name in `needed` must be there.
fn columns<'a>(
    headers: &csv::StringRecord,
    needed: &[&'a str],
) -> anyhow::Result<HashMap<&'a str, usize>> {
    let mut found = HashMap::new();
    for name in needed {
        let Some(i) = headers.iter().position(|h| h.trim() == *name) else {
            bail!(UsageError(format!("no column {name:?} in the header")));
        };
        found.insert(*name, i);
    }
    Ok(found)
}

fn parse_time(s: &str, line: u64) -> anyhow::Result<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp())
        .map_err(|_| {
            UsageError(format!(
                "line {line}: {s:?} is not a time like 2026-01-31T12:00:00Z"
            ))
            .into()
        })
}

fn read_tally(text: &str) -> anyhow::Result<Vec<ImportVisit>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let col = columns(r.headers()?, COLUMNS)?;
    let mut visits: HashMap<i64, ImportVisit> = HashMap::new();
    for (i, record) in r.records().enumerate() {
        let record = record?;
        let line = i as u64 + 2;
        let get = |name: &str| unguard(record.get(col[name]).unwrap_or(""));
        let opt = |name: &str| Some(get(name).to_string()).filter(|s| !s.is_empty());
        let int = |name: &str| -> anyhow::Result<Option<i64>> {
            match get(name) {
                "" => Ok(None),
                s => s.parse().map(Some).map_err(|_| {
                    UsageError(format!("line {line}: {name} {s:?} is not a number")).into()
                }),
            }
        };
        let visit = int("visit")?.ok_or_else(|| UsageError(format!("line {line}: no visit")))?;
        let visitor = int("visitor")?.unwrap_or(visit);
        let entry = visits.entry(visit).or_insert_with(|| ImportVisit {
            visitor_id: visitor,
            dims: VisitDims {
                referrer: opt("referrer"),
                source: opt("source"),
                utm_medium: opt("utm_medium"),
                utm_source: opt("utm_source"),
                utm_campaign: opt("utm_campaign"),
                utm_term: opt("utm_term"),
                utm_content: opt("utm_content"),
                country: opt("country"),
                region: opt("region"),
                city: opt("city"),
                browser: opt("browser"),
                browser_version: opt("browser_version"),
                os: opt("os"),
                os_version: opt("os_version"),
                device: opt("device"),
            },
            events: Vec::new(),
        });
        let name = get("name");
        if name.is_empty() || get("path").is_empty() {
            bail!(UsageError(format!(
                "line {line}: an event needs a name and a path"
            )));
        }
        entry.events.push(ImportEvent {
            ts: parse_time(get("time"), line)?,
            name: name.to_string(),
            hostname: get("hostname").to_string(),
            path: get("path").to_string(),
            interactive: get("interactive") != "0",
            props: props(opt("props"), line)?,
            revenue_amount: opt("revenue_amount"),
            revenue_currency: opt("revenue_currency"),
            scroll_depth: int("scroll_depth")?,
            engaged_ms: int("engaged_ms")?,
        });
    }
    Ok(visits.into_values().collect())
}

/// An event's props as ingest stores them: a JSON object of strings, none
/// if empty. Numbers and booleans become their text, nulls are left out.
fn props(text: Option<String>, line: u64) -> anyhow::Result<Option<String>> {
    let Some(text) = text else { return Ok(None) };
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|_| UsageError(format!("line {line}: props {text:?} is not a JSON object")))?;
    let pairs = parse_props(&map).map_err(|e| UsageError(format!("line {line}: {e}")))?;
    Ok((!pairs.is_empty()).then(|| {
        let strings: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::Value::Object(strings).to_string()
    }))
}

/// GoatCounter's export, format 2: `2Path, Title, Event, UserAgent, Browser,
/// System, Session, Bot, Referrer, Referrer scheme, Screen size, Location,
/// FirstVisit, Date`.
fn read_goatcounter(text: &str, domain: &str) -> anyhow::Result<Vec<ImportVisit>> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = r.headers()?.clone();
    if !headers.get(0).is_some_and(|h| h.starts_with("2Path")) {
        bail!(UsageError(
            "not a GoatCounter export of format 2 (the first column should be \"2Path\")".into()
        ));
    }
    let mut renamed = headers.clone();
    renamed = renamed
        .iter()
        .enumerate()
        .map(|(i, h)| if i == 0 { "Path" } else { h })
        .collect();
    let col = columns(
        &renamed,
        &[
            "Path",
            "Event",
            "Browser",
            "System",
            "Session",
            "Bot",
            "Referrer",
            "Referrer scheme",
            "Screen size",
            "Location",
            "Date",
        ],
    )?;
    // Rows of a session, in time order, then cut into visits.
    let mut sessions: HashMap<String, Vec<(i64, ImportEvent, VisitDims)>> = HashMap::new();
    for (i, record) in r.records().enumerate() {
        let record = record?;
        let line = i as u64 + 2;
        let get = |name: &str| record.get(col[name]).unwrap_or("").trim();
        if !matches!(get("Bot"), "" | "0") {
            continue;
        }
        let ts = parse_time(get("Date"), line)?;
        let path = get("Path");
        if path.is_empty() {
            bail!(UsageError(format!("line {line}: no path")));
        }
        let event = get("Event") == "true";
        let page = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let dims = goatcounter_dims(
            domain,
            &page,
            get("Referrer"),
            get("Referrer scheme"),
            get("Browser"),
            get("System"),
            get("Screen size"),
            get("Location"),
        );
        let session = match get("Session") {
            "" => format!("row {line}"),
            s => s.to_string(),
        };
        sessions.entry(session).or_default().push((
            ts,
            ImportEvent {
                ts,
                name: if event {
                    path.to_string()
                } else {
                    "pageview".into()
                },
                hostname: domain.to_string(),
                path: if event { "/".into() } else { page },
                interactive: true,
                props: None,
                revenue_amount: None,
                revenue_currency: None,
                scroll_depth: None,
                engaged_ms: None,
            },
            dims,
        ));
    }
    let mut visits: Vec<ImportVisit> = Vec::new();
    for (session, mut rows) in sessions {
        rows.sort_by_key(|r| r.0);
        let hash = blake3::hash(session.as_bytes());
        let visitor_id = i64::from_le_bytes(std::array::from_fn(|i| hash.as_bytes()[i]));
        let mut last: Option<i64> = None;
        for (ts, event, dims) in rows {
            match visits.last_mut() {
                Some(v) if last.is_some_and(|last| ts - last <= VISIT_TIMEOUT) => {
                    v.events.push(event)
                }
                _ => visits.push(ImportVisit {
                    visitor_id,
                    dims,
                    events: vec![event],
                }),
            }
            last = Some(ts);
        }
    }
    Ok(visits)
}

/// A visit's attributes from GoatCounter's columns.
#[allow(clippy::too_many_arguments)]
fn goatcounter_dims(
    domain: &str,
    page: &str,
    referrer_text: &str,
    scheme: &str,
    browser: &str,
    system: &str,
    screen: &str,
    location: &str,
) -> VisitDims {
    let mut dims = VisitDims::default();
    if !referrer_text.is_empty() {
        match scheme {
            // A campaign (utm_source or ref=): its name is the source.
            "c" => {
                dims.source = Some(referrer_text.to_string());
                dims.utm_source = Some(referrer_text.to_string());
            }
            _ => {
                let page_url = Url::parse(&format!("https://{domain}{page}")).ok();
                let ref_url = Url::parse(&format!("https://{referrer_text}")).ok();
                match (page_url, ref_url) {
                    (Some(p), Some(r)) if scheme == "h" || scheme.is_empty() => {
                        let a = referrer::attribute(&p, Some(&r));
                        dims.referrer = a.referrer;
                        dims.source = a.source;
                    }
                    _ => dims.source = Some(referrer_text.to_string()),
                }
            }
        }
    }
    let (name, version) = split_version(browser);
    dims.browser = name;
    dims.browser_version = version;
    let (name, version) = split_version(system);
    dims.os = name;
    dims.os_version = version;
    let width: Option<i64> = screen.split(',').next().and_then(|w| w.trim().parse().ok());
    dims.device = width.filter(|w| *w > 0).map(|w| {
        match w {
            w if w < 768 => "Mobile",
            w if w < 1024 => "Tablet",
            w if w < 1440 => "Laptop",
            _ => "Desktop",
        }
        .to_string()
    });
    let mut parts = location.splitn(2, '-');
    dims.country = parts
        .next()
        .filter(|c| c.len() == 2)
        .map(|c| c.to_ascii_uppercase());
    dims.region = parts
        .next()
        .filter(|r| !r.is_empty())
        .map(|_| location.to_ascii_uppercase());
    dims
}

/// "Chrome 120.1" → ("Chrome", "120"); "Linux" → ("Linux", None).
fn split_version(s: &str) -> (Option<String>, Option<String>) {
    let s = s.trim();
    if s.is_empty() {
        return (None, None);
    }
    match s.rsplit_once(' ') {
        Some((name, v)) if v.starts_with(|c: char| c.is_ascii_digit()) => (
            Some(name.to_string()),
            v.split('.').next().map(str::to_string),
        ),
        _ => (Some(s.to_string()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_split_off_at_the_major() {
        assert_eq!(
            split_version("Chrome 120.0.1"),
            (Some("Chrome".into()), Some("120".into()))
        );
        assert_eq!(
            split_version("Mac OS X 10.15"),
            (Some("Mac OS X".into()), Some("10".into()))
        );
        assert_eq!(split_version("Linux"), (Some("Linux".into()), None));
    }

    #[test]
    fn formula_guard_round_trips() {
        for cell in ["=SUM(A1)", "-1", "@x", "/page", "'quoted"] {
            assert_eq!(unguard(&guard(cell)), cell);
        }
    }
}
