//! Filtered reports over the raw tables (`events`, `visits`) in SQLite:
//! totals, breakdowns, goal conversions and property keys over a time range.
//! Used for ranges reaching past what recent traffic holds in memory.
//!
//! Filters become SQL in [`super::filter`], beside the in-memory matching
//! that must agree with it. Column names come from
//! [`crate::report::model::VisitColumn::name`] and fixed text here, never
//! from a request; values are bound parameters.

use rusqlite::Connection;

use super::filter::{Sql, filter_sql, glob_of, prop_sql};
use crate::report::model::{
    BreakdownRow, Dimension, Filter, NOT_AN_ACTION, TimeRange, Totals, VisitColumn,
};
use crate::store::StoreError;
use crate::store::sites::GoalKind;

/// A JSON array of strings, for `json_each`.
fn json_list(items: &[String]) -> String {
    // A list of strings always serializes; the fallback matches nothing.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

pub(super) fn is_visit_field(f: &Filter) -> bool {
    !f.on_event()
}

/// `FROM events e [JOIN visits v] WHERE` the site, range, action and filters.
pub(super) fn events_from(sql: &mut Sql, site_id: i64, range: TimeRange, filters: &[Filter]) {
    let join = filters.iter().any(is_visit_field);
    events_joined(sql, site_id, range, filters, join);
}

/// [`events_from`], joining `visits v` also when `join` asks for it.
pub(super) fn events_joined(
    sql: &mut Sql,
    site_id: i64,
    range: TimeRange,
    filters: &[Filter],
    join: bool,
) {
    sql.push(" FROM events e");
    if join {
        sql.push(" JOIN visits v ON v.id = e.visit_id");
    }
    sql.push(" WHERE e.site_id = ").arg(site_id);
    sql.push(" AND e.ts >= ").arg(range.start);
    sql.push(" AND e.ts < ").arg(range.end);
    sql.push(" AND e.name <> ").arg(NOT_AN_ACTION);
    for f in filters {
        filter_sql(sql, f);
    }
}

/// `FROM visits v WHERE` the site, start in range, and filters: visit fields
/// directly, event fields as "had an event matching".
pub(super) fn visits_from(sql: &mut Sql, site_id: i64, range: TimeRange, filters: &[Filter]) {
    sql.push(" FROM visits v WHERE v.site_id = ").arg(site_id);
    sql.push(" AND v.started_at >= ").arg(range.start);
    sql.push(" AND v.started_at < ").arg(range.end);
    for f in filters.iter().filter(|f| is_visit_field(f)) {
        filter_sql(sql, f);
    }
    let event_filters: Vec<&Filter> = filters.iter().filter(|f| !is_visit_field(f)).collect();
    if !event_filters.is_empty() {
        // A visit may run past the end of the range; a day covers any visit.
        sql.push(" AND v.id IN (SELECT e.visit_id FROM events e WHERE e.site_id = ")
            .arg(site_id);
        sql.push(" AND e.ts >= ").arg(range.start);
        sql.push(" AND e.ts < ").arg(range.end + 86_400);
        sql.push(" AND e.name <> ").arg(NOT_AN_ACTION);
        for f in event_filters {
            filter_sql(sql, f);
        }
        sql.push(")");
    }
}

pub fn totals(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    filters: &[Filter],
) -> Result<Totals, StoreError> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT COUNT(DISTINCT e.visitor_id), COALESCE(SUM(e.name = 'pageview'), 0),
            COALESCE(SUM(e.name <> 'pageview'), 0)",
    );
    events_from(&mut sql, site_id, range, filters);
    let (visitors, pageviews, events) = conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut sql = Sql::default();
    sql.push(
        "SELECT COUNT(*), COALESCE(SUM(v.is_bounce), 0),
            COALESCE(SUM(v.last_seen_at - v.started_at), 0)",
    );
    visits_from(&mut sql, site_id, range, filters);
    let (visits, bounces, visit_duration_sum) = conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(Totals {
        visitors,
        pageviews,
        events,
        visits,
        bounces,
        visit_duration_sum,
    })
}

/// Distinct visitors with a matching event in `range`, by the value of
/// their visit's `column`, most first (then by value), at most `limit`.
/// Visit rows trail their first event by about a second, so a visitor
/// that new is not counted yet.
pub fn visitors_by_visit(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    column: VisitColumn,
    filters: &[Filter],
    limit: i64,
) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    let column = column.name();
    let mut sql = Sql::default();
    sql.push(&format!("SELECT v.{column}, COUNT(DISTINCT e.visitor_id)"));
    events_joined(&mut sql, site_id, range, filters, true);
    sql.push(&format!(" GROUP BY v.{column} ORDER BY 2 DESC, 1 LIMIT "))
        .arg(limit);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let rows = stmt.query_map(sql.params(), |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Rows ordered by visitors (then value), `limit` rows after skipping `offset`.
pub fn breakdown(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
    limit: i64,
    offset: i64,
) -> Result<Vec<BreakdownRow>, StoreError> {
    let mut sql = Sql::default();
    match dimension {
        Dimension::Page => {
            sql.push(
                "SELECT e.path, COUNT(DISTINCT e.visitor_id), SUM(e.first_view),
                    COUNT(*), 0, 0, 0",
            );
            events_from(&mut sql, site_id, range, filters);
            sql.push(" AND e.name = 'pageview' GROUP BY e.path");
        }
        Dimension::EventName => {
            sql.push(
                "SELECT e.name, COUNT(DISTINCT e.visitor_id), SUM(e.first_view),
                    0, COUNT(*), 0, 0",
            );
            events_from(&mut sql, site_id, range, filters);
            sql.push(" AND e.name <> 'pageview' GROUP BY e.name");
        }
        Dimension::Prop(key) => {
            sql.push("SELECT ");
            prop_sql(&mut sql, key);
            sql.push(
                " AS value, COUNT(DISTINCT e.visitor_id), COUNT(DISTINCT e.visit_id),
                    SUM(e.name = 'pageview'), SUM(e.name <> 'pageview'), 0, 0",
            );
            events_from(&mut sql, site_id, range, filters);
            sql.push(" AND value IS NOT NULL GROUP BY value");
        }
        Dimension::Visit(column) => {
            let column = column.name();
            sql.push(&format!(
                "SELECT v.{column}, COUNT(DISTINCT v.visitor_id), COUNT(*), SUM(v.pageviews),
                    SUM(v.events), SUM(v.is_bounce), SUM(v.last_seen_at - v.started_at)"
            ));
            visits_from(&mut sql, site_id, range, filters);
            sql.push(&format!(" GROUP BY v.{column}"));
        }
    }
    sql.push(" ORDER BY 2 DESC, 1 LIMIT ")
        .arg(limit)
        .push(" OFFSET ")
        .arg(offset);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let rows = stmt.query_map(sql.params(), |r| {
        Ok(BreakdownRow {
            value: r.get(0)?,
            visitors: r.get(1)?,
            visits: r.get(2)?,
            pageviews: r.get(3)?,
            events: r.get(4)?,
            bounces: r.get(5)?,
            visit_duration_sum: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The property keys of matching events in `range`, by visitors, then name.
pub fn prop_keys(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    filters: &[Filter],
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let keys = prop_key_visitors(conn, site_id, range, filters, limit)?;
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// [`prop_keys`] with their visitors.
pub fn prop_key_visitors(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    filters: &[Filter],
    limit: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT j.key, COUNT(DISTINCT m.visitor_id) FROM (SELECT e.visitor_id, e.props");
    events_from(&mut sql, site_id, range, filters);
    sql.push(" AND e.props IS NOT NULL) m, json_each(m.props) j GROUP BY j.key ORDER BY 2 DESC, 1 LIMIT ")
        .arg(limit);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let keys = stmt.query_map(sql.params(), |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(keys.collect::<Result<_, _>>()?)
}

/// How many visitors completed `goal` in `range`, and how many events did.
pub fn goal_conversions(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    goal: &GoalKind,
    filters: &[Filter],
) -> Result<(i64, i64), StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT COUNT(DISTINCT e.visitor_id), COUNT(*)");
    events_from(&mut sql, site_id, range, filters);
    match goal {
        GoalKind::Event(name) => {
            sql.push(" AND e.name = ").arg(name.clone());
        }
        // GLOB's `*` is the goal's wildcard; its other specials are escaped.
        GoalKind::Page(path) => {
            sql.push(" AND e.name = 'pageview' AND e.path GLOB ")
                .arg(glob_of(path));
        }
    }
    Ok(conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// Visitors who completed any of `goals` in `range`. (`e.path` is qualified:
/// `json_each` has a column named `path` too.)
pub fn converted_visitors(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    goals: &[GoalKind],
    filters: &[Filter],
) -> Result<i64, StoreError> {
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
    let mut sql = Sql::default();
    sql.push("SELECT COUNT(DISTINCT e.visitor_id)");
    events_from(&mut sql, site_id, range, filters);
    sql.push(" AND (e.name IN (SELECT value FROM json_each(")
        .arg(json_list(&names))
        .push(")) OR (e.name = 'pageview' AND EXISTS (SELECT 1 FROM json_each(")
        .arg(json_list(&globs))
        .push(") g WHERE e.path GLOB g.value)))");
    Ok(conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| r.get(0))?)
}
