//! Read queries behind the Stats API: totals and breakdowns over a time range.
//!
//! Column names come from the fixed lists here, never from a request.

use rusqlite::Connection;

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

/// One value of a breakdown. For a page or an event name, `visits` counts
/// the visits whose first view of that page (first event of that name) falls
/// in the range: unlike distinct visits, these add up across days.
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

/// The visitors of the leading values of a breakdown that shows `need`
/// rows, without counting every value's: `bounds` are exact upper bounds on
/// each value's visitors (its visits, pageviews or events), in descending
/// order, and `count(ranks)` counts the visitors of the values at those
/// ranks. Counting starts a little past `need` and widens until no value
/// left can overtake the last one shown. Returns the visitors of the
/// leading ranks, as many as were counted. Both read models rank this way.
pub(super) fn count_leading<E>(
    bounds: &[i64],
    need: usize,
    mut count: impl FnMut(std::ops::Range<usize>) -> Result<Vec<i64>, E>,
) -> Result<Vec<i64>, E> {
    let mut visitors: Vec<i64> = Vec::new();
    let mut take = (need + need / 2 + 5).min(bounds.len());
    loop {
        let counted = count(visitors.len()..take)?;
        visitors.extend(counted);
        let mut top = visitors.clone();
        top.sort_unstable_by(|a, b| b.cmp(a));
        let settled =
            take == bounds.len() || (need > 0 && top.len() >= need && top[need - 1] > bounds[take]);
        if settled {
            return Ok(visitors);
        }
        take = (take * 4).min(bounds.len());
    }
}

/// Events that are not user actions: they never count as events or visitors,
/// in any read model.
pub(super) const NOT_AN_ACTION: &str = "engagement";

/// A JSON array of strings, for `json_each`.
fn json_list(items: &[String]) -> String {
    // A list of strings always serializes; the fallback matches nothing.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The position of a visit attribute in [`VISIT_COLUMNS`].
// Every caller passes an element of VISIT_COLUMNS: the query layer takes
// its columns from that list, and the import's table is checked against it
// by `transfer::tests::imported_columns_are_visit_columns`.
#[allow(clippy::expect_used)]
pub(super) fn visit_column_index(column: &str) -> usize {
    VISIT_COLUMNS
        .iter()
        .position(|c| *c == column)
        .expect("a visit column")
}

/// What a filter looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterField {
    /// The event's page path; values may use `*` wildcards.
    Page,
    EventName,
    /// A custom property of the event.
    Prop(String),
    /// One of [`VISIT_COLUMNS`].
    Visit(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    /// Equal to one of the values (`*` in a page value is a wildcard).
    Is,
    IsNot,
    /// Contains one of the values.
    Contains,
}

/// One condition; `values` are alternatives (`a|b`). A `None` value matches
/// a missing attribute (Plausible's "Direct / None").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: FilterField,
    pub op: FilterOp,
    pub values: Vec<Option<String>>,
}

/// SQL text with its parameters, built together so they cannot drift apart.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Box<dyn rusqlite::ToSql>>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    fn arg<T: rusqlite::ToSql + 'static>(&mut self, value: T) -> &mut Sql {
        self.text.push('?');
        self.args.push(Box::new(value));
        self
    }

    fn params(&self) -> impl rusqlite::Params + '_ {
        rusqlite::params_from_iter(self.args.iter().map(|a| a.as_ref()))
    }
}

/// A JSON path for one property key. A `"` cannot be escaped inside a JSON
/// path label, so such a key gets a path that matches nothing.
fn prop_path(key: &str) -> String {
    let label = if key.contains('"') { "\u{0}" } else { key };
    format!("$.\"{label}\"")
}

/// The SQL expression of a field: events as `e`, visits as `v`.
fn field_sql(sql: &mut Sql, field: &FilterField) {
    match field {
        FilterField::Page => {
            sql.push("e.path");
        }
        FilterField::EventName => {
            sql.push("e.name");
        }
        FilterField::Prop(key) => {
            sql.push("json_extract(e.props, ")
                .arg(prop_path(key))
                .push(")");
        }
        FilterField::Visit(column) => {
            assert!(
                VISIT_COLUMNS.contains(column),
                "unknown visit column {column}"
            );
            sql.push("v.").push(column);
        }
    }
}

/// Appends ` AND (…)` for one filter.
fn filter_sql(sql: &mut Sql, f: &Filter) {
    sql.push(" AND ");
    if f.op == FilterOp::IsNot {
        sql.push("NOT COALESCE(");
    }
    sql.push("(");
    for (i, value) in f.values.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        field_sql(sql, &f.field);
        match (value, f.op) {
            (None, _) => {
                sql.push(" IS NULL");
            }
            (Some(v), FilterOp::Contains) => {
                sql.push(" LIKE ")
                    .arg(format!("%{}%", like_escape(v)))
                    .push(" ESCAPE '\\'");
            }
            (Some(v), _) if f.field == FilterField::Page && v.contains('*') => {
                // `**` and `*` both become GLOB's `*`; `?` and `[` stay literal.
                sql.push(" GLOB ").arg(glob_of(&v.replace("**", "*")));
            }
            (Some(v), _) => {
                sql.push(" = ").arg(v.clone());
            }
        }
    }
    sql.push(")");
    if f.op == FilterOp::IsNot {
        sql.push(", 0)");
    }
}

fn like_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn is_visit_field(f: &Filter) -> bool {
    matches!(f.field, FilterField::Visit(_))
}

/// `FROM events e [JOIN visits v] WHERE` the site, range, action and filters.
fn events_from(sql: &mut Sql, site_id: i64, range: TimeRange, filters: &[Filter]) {
    sql.push(" FROM events e");
    if filters.iter().any(is_visit_field) {
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
fn visits_from(sql: &mut Sql, site_id: i64, range: TimeRange, filters: &[Filter]) {
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
            sql.push("SELECT json_extract(e.props, ")
                .arg(prop_path(key))
                .push(
                    ") AS value, COUNT(DISTINCT e.visitor_id), COUNT(DISTINCT e.visit_id),
                    SUM(e.name = 'pageview'), SUM(e.name <> 'pageview'), 0, 0",
                );
            events_from(&mut sql, site_id, range, filters);
            sql.push(" AND value IS NOT NULL GROUP BY value");
        }
        Dimension::Visit(column) => {
            assert!(
                VISIT_COLUMNS.contains(column),
                "unknown visit column {column}"
            );
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
    let mut sql = Sql::default();
    sql.push("SELECT j.key, COUNT(DISTINCT m.visitor_id) FROM (SELECT e.visitor_id, e.props");
    events_from(&mut sql, site_id, range, filters);
    sql.push(" AND e.props IS NOT NULL) m, json_each(m.props) j GROUP BY j.key ORDER BY 2 DESC, 1 LIMIT ")
        .arg(limit);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let keys = stmt.query_map(sql.params(), |r| r.get(0))?;
    Ok(keys.collect::<Result<_, _>>()?)
}

/// How many visitors completed `goal` in `range`, and how many events did.
pub fn goal_conversions(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    goal: &super::sites::GoalKind,
    filters: &[Filter],
) -> Result<(i64, i64), StoreError> {
    use super::sites::GoalKind;
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
    goals: &[super::sites::GoalKind],
    filters: &[Filter],
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

/// A page path with `*` wildcards as a GLOB pattern: `*` stays a wildcard,
/// `?` and `[` are literal.
pub(super) fn glob_of(path: &str) -> String {
    path.replace('[', "[[]").replace('?', "[?]")
}
