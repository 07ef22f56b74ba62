//! Read queries behind the Stats API: totals and breakdowns over a time range.
//!
//! Column names come from the fixed lists here, never from a request.

use rusqlite::{Connection, params};

use super::StoreError;

/// A half-open range of Unix seconds, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start: i64,
    pub end: i64,
}

/// Totals of one site over a range. Event counts cover events in the range;
/// visit counts cover visits that started in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub visitors: i64,
    pub pageviews: i64,
    pub events: i64,
    pub visits: i64,
    pub bounces: i64,
    pub visit_duration_sum: i64,
}

/// What a breakdown groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    /// Pageviews by path.
    Page,
    /// Custom events by name.
    EventName,
    /// Events (pageviews and custom) by the value of one custom property.
    Prop(String),
    /// Visits by one of [`VISIT_COLUMNS`].
    Visit(&'static str),
}

/// Visit attributes a breakdown can group by.
pub const VISIT_COLUMNS: &[&str] = &[
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "country",
    "region",
    "city",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BreakdownRow {
    pub value: Option<String>,
    pub visitors: i64,
    pub visits: i64,
    pub pageviews: i64,
    pub events: i64,
    pub bounces: i64,
    pub visit_duration_sum: i64,
}

/// Events that are not user actions: they never count as events or visitors.
const NOT_AN_ACTION: &str = "engagement";

pub fn totals(conn: &Connection, site_id: i64, range: TimeRange) -> Result<Totals, StoreError> {
    let (visitors, pageviews, events) = conn
        .prepare_cached(
            "SELECT COUNT(DISTINCT visitor_id),
                    COALESCE(SUM(name = 'pageview'), 0),
                    COALESCE(SUM(name <> 'pageview'), 0)
             FROM events WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND name <> ?4",
        )?
        .query_row(
            params![site_id, range.start, range.end, NOT_AN_ACTION],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
    let (visits, bounces, visit_duration_sum) = conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(is_bounce), 0),
                    COALESCE(SUM(last_seen_at - started_at), 0)
             FROM visits WHERE site_id = ?1 AND started_at >= ?2 AND started_at < ?3",
        )?
        .query_row(params![site_id, range.start, range.end], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(Totals {
        visitors,
        pageviews,
        events,
        visits,
        bounces,
        visit_duration_sum,
    })
}

/// Rows ordered by visitors (then value), `limit` rows after skipping `offset`.
pub fn breakdown(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    dimension: &Dimension,
    limit: i64,
    offset: i64,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let sql = match dimension {
        Dimension::Page => "SELECT path, COUNT(DISTINCT visitor_id), COUNT(DISTINCT visit_id),
                    COUNT(*), 0, 0, 0
             FROM events WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND name = 'pageview'
             GROUP BY path ORDER BY 2 DESC, 1 LIMIT ?4 OFFSET ?5"
            .to_string(),
        Dimension::EventName => "SELECT name, COUNT(DISTINCT visitor_id), COUNT(DISTINCT visit_id),
                    0, COUNT(*), 0, 0
             FROM events WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3
               AND name NOT IN ('pageview', 'engagement')
             GROUP BY name ORDER BY 2 DESC, 1 LIMIT ?4 OFFSET ?5"
            .to_string(),
        Dimension::Prop(_) => "SELECT json_extract(props, ?6) AS value, COUNT(DISTINCT visitor_id),
                    COUNT(DISTINCT visit_id), SUM(name = 'pageview'), SUM(name <> 'pageview'), 0, 0
             FROM events WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND props IS NOT NULL
               AND name <> 'engagement' AND json_extract(props, ?6) IS NOT NULL
             GROUP BY value ORDER BY 2 DESC, 1 LIMIT ?4 OFFSET ?5"
            .to_string(),
        Dimension::Visit(column) => {
            assert!(
                VISIT_COLUMNS.contains(column),
                "unknown visit column {column}"
            );
            format!(
                "SELECT {column}, COUNT(DISTINCT visitor_id), COUNT(*), SUM(pageviews),
                        SUM(events), SUM(is_bounce), SUM(last_seen_at - started_at)
                 FROM visits WHERE site_id = ?1 AND started_at >= ?2 AND started_at < ?3
                 GROUP BY {column} ORDER BY 2 DESC, 1 LIMIT ?4 OFFSET ?5"
            )
        }
    };
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![
        Box::new(site_id),
        Box::new(range.start),
        Box::new(range.end),
        Box::new(limit),
        Box::new(offset),
    ];
    if let Dimension::Prop(key) = dimension {
        // A `"` cannot be escaped inside a JSON path label; such a key matches nothing.
        let label = if key.contains('"') {
            "\u{0}"
        } else {
            key.as_str()
        };
        args.push(Box::new(format!("$.\"{label}\"")));
    }
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
        |r| {
            Ok(BreakdownRow {
                value: r.get(0)?,
                visitors: r.get(1)?,
                visits: r.get(2)?,
                pageviews: r.get(3)?,
                events: r.get(4)?,
                bounces: r.get(5)?,
                visit_duration_sum: r.get(6)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many visitors completed `goal` in `range`, and how many events did.
pub fn goal_conversions(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    goal: &super::sites::GoalKind,
) -> Result<(i64, i64), StoreError> {
    use super::sites::GoalKind;
    let (sql, arg) = match goal {
        GoalKind::Event(name) => (
            "SELECT COUNT(DISTINCT visitor_id), COUNT(*) FROM events
             WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND name = ?4",
            name.clone(),
        ),
        // GLOB's `*` is the goal's wildcard; its other specials are escaped.
        GoalKind::Page(path) => (
            "SELECT COUNT(DISTINCT visitor_id), COUNT(*) FROM events
             WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 AND name = 'pageview' AND path GLOB ?4",
            glob_of(path),
        ),
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row(params![site_id, range.start, range.end, arg], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
}

/// Visitors who completed any of `goals` in `range`. (`events.path` is
/// qualified: `json_each` has a column named `path` too.)
pub fn converted_visitors(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    goals: &[super::sites::GoalKind],
) -> Result<i64, StoreError> {
    use super::sites::GoalKind;
    if goals.is_empty() {
        return Ok(0);
    }
    let mut names: Vec<String> = Vec::new();
    let mut globs: Vec<String> = Vec::new();
    for g in goals {
        match g {
            GoalKind::Event(n) => names.push(n.clone()),
            GoalKind::Page(p) => globs.push(glob_of(p)),
        }
    }
    let names = serde_json::to_string(&names).expect("strings serialize");
    let globs = serde_json::to_string(&globs).expect("strings serialize");
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(DISTINCT visitor_id) FROM events
             WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3
               AND (name IN (SELECT value FROM json_each(?4))
                    OR (name = 'pageview'
                        AND EXISTS (SELECT 1 FROM json_each(?5) g WHERE events.path GLOB g.value)))",
        )?
        .query_row(
            params![site_id, range.start, range.end, names, globs],
            |r| r.get(0),
        )?)
}

/// A page goal as a GLOB pattern: `*` stays a wildcard, `?` and `[` are literal.
fn glob_of(path: &str) -> String {
    path.replace('[', "[[]").replace('?', "[?]")
}
