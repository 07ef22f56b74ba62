//! The weekly summary: a site's last local week (Monday to Sunday) in plain
//! words — visitors and their change, pageviews, top pages and sources, new
//! entries in those lists, notable days — written by a template
//! (`templates/summary.txt`) from numbers the Stats API queries return. No
//! outside service is involved.

use askama::Template;
use chrono::{Datelike, Duration, NaiveDate};
use serde_json::Value;

use crate::query::{self, Context, Params, QueryError};
use crate::report::Reports;
use crate::store::sites::Site;

/// Entries shown per top list, and how far down last week's list an entry
/// must have been missing to count as new.
const TOP: usize = 5;
const PREVIOUS_TOP: usize = 10;
/// A day is notable when it has this many times the week's median visitors,
/// and at least [`SPIKE_MIN_VISITORS`].
const SPIKE_FACTOR: f64 = 2.0;
const SPIKE_MIN_VISITORS: i64 = 10;

/// The numbers of one week, and of the week before where a change is told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeekNumbers {
    pub domain: String,
    /// The week's Monday.
    pub start: NaiveDate,
    pub visitors: i64,
    pub prev_visitors: i64,
    pub pageviews: i64,
    pub prev_pageviews: i64,
    /// Percent.
    pub bounce_rate: i64,
    /// Seconds.
    pub visit_duration: i64,
    /// This week's top pages and sources by visitors.
    pub pages: Vec<(String, i64)>,
    pub sources: Vec<(String, i64)>,
    /// Last week's top lists (longer), to tell what is new.
    pub prev_pages: Vec<String>,
    pub prev_sources: Vec<String>,
    /// Visitors per day, Monday first.
    pub daily: Vec<i64>,
}

/// The Monday of the last full week before `today`.
pub fn last_full_week(today: NaiveDate) -> NaiveDate {
    crate::report::calendar::monday_of(today) - Duration::weeks(1)
}

/// The summary text of the week starting `start` (a Monday, site time).
pub fn text(
    reports: &dyn Reports,
    site: &Site,
    start: NaiveDate,
    ctx: &Context,
) -> Result<String, QueryError> {
    Ok(render(&gather(reports, site, start, ctx)?))
}

/// Reads the numbers of the week starting `start` (a Monday, site time).
pub fn gather(
    reports: &dyn Reports,
    site: &Site,
    start: NaiveDate,
    ctx: &Context,
) -> Result<WeekNumbers, QueryError> {
    let range = |monday: NaiveDate| {
        let mut p = Params::new();
        p.insert("site_id".into(), site.domain.clone());
        p.insert("period".into(), "custom".into());
        p.insert(
            "date".into(),
            format!("{monday},{}", monday + Duration::days(6)),
        );
        p
    };
    let int = |v: &Value| v.as_f64().unwrap_or(0.0).round() as i64;
    let totals = |monday: NaiveDate| -> Result<Value, QueryError> {
        let mut p = range(monday);
        p.insert(
            "metrics".into(),
            "visitors,pageviews,bounce_rate,visit_duration".into(),
        );
        Ok(query::aggregate(reports, site, &p, ctx)?["results"].clone())
    };
    let top =
        |monday: NaiveDate, property: &str, n: usize| -> Result<Vec<(String, i64)>, QueryError> {
            let mut p = range(monday);
            p.insert("property".into(), property.into());
            p.insert("metrics".into(), "visitors".into());
            p.insert("limit".into(), n.to_string());
            let key = property.split(':').nth(1).unwrap_or(property);
            Ok(query::breakdown(reports, site, &p, ctx)?["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let label = match &r[key] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (label, int(&r["visitors"]))
                })
                .collect())
        };
    let before = start - Duration::weeks(1);
    let this = totals(start)?;
    let prev = totals(before)?;
    let mut series = range(start);
    series.insert("metrics".into(), "visitors".into());
    series.insert("interval".into(), "date".into());
    let daily = query::timeseries(reports, site, &series, ctx)?["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| int(&r["visitors"]))
        .collect();
    let names = |v: Vec<(String, i64)>| v.into_iter().map(|(s, _)| s).collect();
    Ok(WeekNumbers {
        domain: site.domain.clone(),
        start,
        visitors: int(&this["visitors"]["value"]),
        prev_visitors: int(&prev["visitors"]["value"]),
        pageviews: int(&this["pageviews"]["value"]),
        prev_pageviews: int(&prev["pageviews"]["value"]),
        bounce_rate: int(&this["bounce_rate"]["value"]),
        visit_duration: int(&this["visit_duration"]["value"]),
        pages: top(start, "event:page", TOP)?,
        sources: top(start, "visit:source", TOP)?,
        prev_pages: names(top(before, "event:page", PREVIOUS_TOP)?),
        prev_sources: names(top(before, "visit:source", PREVIOUS_TOP)?),
        daily,
    })
}

#[derive(Template)]
#[template(path = "summary.txt", escape = "none")]
struct SummaryText<'a> {
    domain: &'a str,
    week: String,
    empty: bool,
    headline: String,
    pages_line: String,
    pages: String,
    new_pages: String,
    sources: String,
    new_sources: String,
    spikes: Vec<String>,
}

/// "10–16 March 2025", or "28 April – 4 May 2025" across months.
pub fn week_label(start: NaiveDate) -> String {
    let end = start + Duration::days(6);
    if start.year() != end.year() {
        format!(
            "{} – {}",
            start.format("%-d %B %Y"),
            end.format("%-d %B %Y")
        )
    } else if start.month() != end.month() {
        format!("{} – {}", start.format("%-d %B"), end.format("%-d %B %Y"))
    } else {
        format!("{}–{}", start.format("%-d"), end.format("%-d %B %Y"))
    }
}

/// 1234567 → "1,234,567".
fn number(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// How `now` compares with `before`, as words.
fn change(now: i64, before: i64) -> String {
    if before == 0 {
        return "with none the week before".into();
    }
    let pct = (now - before) as f64 / before as f64 * 100.0;
    if pct.abs() < 1.0 {
        "about as many as the week before".into()
    } else if pct > 0.0 {
        format!("up {:.0}% from {} the week before", pct, number(before))
    } else {
        format!("down {:.0}% from {} the week before", -pct, number(before))
    }
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{} min {} s", s / 60, s % 60),
    }
}

fn listing(items: &[(String, i64)]) -> String {
    items
        .iter()
        .map(|(label, n)| format!("{label} ({})", number(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn newcomers(now: &[(String, i64)], before: &[String]) -> String {
    // Only when there was a list to be new to.
    if before.is_empty() {
        return String::new();
    }
    now.iter()
        .filter(|(label, _)| !before.contains(label))
        .map(|(label, _)| label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn spikes(start: NaiveDate, daily: &[i64]) -> Vec<String> {
    let mut sorted = daily.to_vec();
    sorted.sort_unstable();
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return Vec::new();
    };
    daily
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            **n >= SPIKE_MIN_VISITORS && **n as f64 >= SPIKE_FACTOR * (median.max(1)) as f64
        })
        .map(|(i, n)| {
            let day = start + Duration::days(i as i64);
            format!(
                "{} had {} visitors, {:.1}× a usual day this week.",
                day.format("%A %-d %B"),
                number(*n),
                *n as f64 / median.max(1) as f64
            )
        })
        .collect()
}

/// The summary's text.
pub fn render(w: &WeekNumbers) -> String {
    let empty = w.visitors == 0;
    let headline = if empty && w.prev_visitors == 0 {
        "No visitors were recorded this week or the week before. If that is unexpected, check \
         that the tracking script is on your pages (the site's settings show it)."
            .to_string()
    } else if empty {
        format!(
            "No visitors were recorded this week, after {} the week before. If that is \
             unexpected, check that the tracking script is still on your pages.",
            number(w.prev_visitors)
        )
    } else {
        format!(
            "{} visitors came, {}.",
            number(w.visitors),
            change(w.visitors, w.prev_visitors)
        )
    };
    let pages_line = format!(
        "They viewed {} pages, {}; {}% left after one page, and a visit lasted {} on average.",
        number(w.pageviews),
        change(w.pageviews, w.prev_pageviews),
        w.bounce_rate,
        duration(w.visit_duration)
    );
    SummaryText {
        domain: &w.domain,
        week: week_label(w.start),
        empty,
        headline,
        pages_line,
        pages: listing(&w.pages),
        new_pages: newcomers(&w.pages, &w.prev_pages),
        sources: listing(&w.sources),
        new_sources: newcomers(&w.sources, &w.prev_sources),
        spikes: spikes(w.start, &w.daily),
    }
    .render()
    // Rendering into a String fails only when a value's Display does; these
    // are strings and numbers, whose Display never fails.
    .unwrap_or_else(|e| format!("The summary of {} could not be written: {e}", w.domain))
}

/// Summaries written and e-mails sent since start, for metrics.
#[derive(Debug)]
pub struct SummaryStats {
    pub written: crate::metrics::Counter,
    /// By result: `sent`, `failed`.
    pub emails: crate::metrics::CounterSet,
}

impl Default for SummaryStats {
    fn default() -> Self {
        SummaryStats {
            written: Default::default(),
            emails: crate::metrics::CounterSet::new(&["sent", "failed"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week() -> WeekNumbers {
        WeekNumbers {
            domain: "example.com".into(),
            start: NaiveDate::from_ymd_opt(2025, 3, 10).unwrap(),
            visitors: 1234,
            prev_visitors: 1100,
            pageviews: 3000,
            prev_pageviews: 3000,
            bounce_rate: 42,
            visit_duration: 95,
            pages: vec![
                ("/".into(), 800),
                ("/blog/launch".into(), 310),
                ("/pricing".into(), 90),
            ],
            sources: vec![("Google".into(), 500), ("Hacker News".into(), 300)],
            prev_pages: vec!["/".into(), "/pricing".into()],
            prev_sources: vec!["Google".into(), "Direct / None".into()],
            daily: vec![100, 110, 600, 120, 105, 95, 104],
        }
    }

    #[test]
    fn summary_text_from_known_numbers() {
        assert_eq!(
            render(&week()),
            "example.com, week of 10–16 March 2025\n\
             \n\
             1,234 visitors came, up 12% from 1,100 the week before.\n\
             They viewed 3,000 pages, about as many as the week before; 42% left after one page, \
             and a visit lasted 1 min 35 s on average.\n\
             \n\
             Top pages: / (800), /blog/launch (310), /pricing (90).\n\
             New among the top pages: /blog/launch.\n\
             Top sources: Google (500), Hacker News (300).\n\
             New among the top sources: Hacker News.\n\
             \n\
             Wednesday 12 March had 600 visitors, 5.7× a usual day this week.\n"
        );
    }

    #[test]
    fn an_empty_week_says_what_to_check() {
        let w = WeekNumbers {
            domain: "example.com".into(),
            start: NaiveDate::from_ymd_opt(2025, 4, 28).unwrap(),
            prev_visitors: 40,
            daily: vec![0; 7],
            ..WeekNumbers::default()
        };
        let text = render(&w);
        assert!(
            text.starts_with("example.com, week of 28 April – 4 May 2025\n"),
            "{text}"
        );
        assert!(
            text.contains("No visitors were recorded this week, after 40"),
            "{text}"
        );
        assert!(!text.contains("Top pages"), "{text}");
    }

    #[test]
    fn weeks_start_on_the_monday_before_last() {
        let sunday = NaiveDate::from_ymd_opt(2025, 3, 16).unwrap();
        let monday = NaiveDate::from_ymd_opt(2025, 3, 17).unwrap();
        assert_eq!(
            last_full_week(sunday),
            NaiveDate::from_ymd_opt(2025, 3, 3).unwrap()
        );
        assert_eq!(
            last_full_week(monday),
            NaiveDate::from_ymd_opt(2025, 3, 10).unwrap()
        );
        assert_eq!(number(1_234_567), "1,234,567");
    }
}
