//! The raw tables' side of a join at the seam: the visits that crossed it
//! (started before it, with events after it), and what they make both
//! sides count twice or neither count. Every query here starts from the
//! events after the seam or from those visits, so it costs what the part
//! after the seam holds, not the range.

use rusqlite::Connection;

use super::super::filter::{Sql, filter_sql, prop_sql};
use super::super::raw::{events_from, is_visit_field};
use crate::report::model::{
    BreakdownRow, Dimension, Filter, NOT_AN_ACTION, TimeRange, VisitColumn,
};
use crate::store::StoreError;

/// Where the part of `range` before `seam` can share a visitor or a visit
/// with the part after it: the earliest start of the visits that started
/// before the seam and have an event after it (up to a day past the
/// range's end, as visit metrics look), whenever they started. `None` when
/// no visit crosses. Read from the events after the seam (each joined to
/// its visit), so it costs what the part after the seam holds, and a visit
/// of any length is found.
pub fn seam_reach(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(v.started_at) FROM events e CROSS JOIN visits v ON v.id = e.visit_id
             WHERE e.site_id = ?1 AND e.ts >= ?2 AND e.ts < ?3 AND v.started_at < ?2",
        )?
        .query_row(rusqlite::params![site_id, seam, range.end + 86_400], |r| {
            r.get(0)
        })?)
}

/// Where visitors counted before the seam may be the crossing visits'
/// (started from `earliest`): an id is its visitor's for every visit begun
/// on one UTC day, so from the start of `earliest`'s day, or the range's.
fn same_ids_from(range: TimeRange, earliest: i64) -> i64 {
    range.start.max(earliest.div_euclid(86_400) * 86_400)
}

/// `AND e.visit_id IN` the visits that started from `from` to `seam`.
fn started_before(sql: &mut Sql, site_id: i64, from: i64, seam: i64) {
    sql.push(" AND e.visit_id IN (SELECT id FROM visits WHERE site_id = ")
        .arg(site_id);
    sql.push(" AND started_at >= ").arg(from);
    sql.push(" AND started_at < ").arg(seam);
    sql.push(")");
}

/// `AND e.visitor_id IN` `ids`.
fn visitor_in(sql: &mut Sql, ids: &[i64]) {
    sql.push(" AND e.visitor_id IN (SELECT value FROM json_each(")
        .arg(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        .push("))");
}

/// Visitors counted on both sides of `seam` in `range`: with a matching
/// event before it and one after it. Visitor ids change with the daily
/// salt, so only a visit that crossed the seam (started from `earliest`,
/// see [`seam_reach`], whenever that is) carries an id over it; the ids of
/// those visits' matching events after the seam are looked for among the
/// matching events before it (see [`same_ids_from`]).
pub fn seam_visitors_on_both_sides(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    earliest: i64,
    filters: &[Filter],
) -> Result<i64, StoreError> {
    let mut sql = Sql::default();
    sql.push("SELECT DISTINCT e.visitor_id");
    let after = TimeRange {
        start: seam,
        end: range.end,
    };
    events_from(&mut sql, site_id, after, filters);
    started_before(&mut sql, site_id, earliest, seam);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let ids: Vec<i64> = stmt
        .query_map(sql.params(), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sql = Sql::default();
    sql.push("SELECT COUNT(DISTINCT e.visitor_id)");
    let before = TimeRange {
        start: same_ids_from(range, earliest),
        end: seam,
    };
    events_from(&mut sql, site_id, before, filters);
    visitor_in(&mut sql, &ids);
    Ok(conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| r.get(0))?)
}

/// `FROM visits v WHERE` the visits of the site that started from `from`
/// to `seam`, pass the visit filters, and have (or, `false`, have not) a
/// matching event in each window `(start, end, has)`.
fn visits_between(
    sql: &mut Sql,
    site_id: i64,
    (from, seam): (i64, i64),
    filters: &[Filter],
    windows: &[(i64, i64, bool)],
) {
    sql.push(" FROM visits v WHERE v.site_id = ").arg(site_id);
    sql.push(" AND v.started_at >= ").arg(from);
    sql.push(" AND v.started_at < ").arg(seam);
    for f in filters.iter().filter(|f| is_visit_field(f)) {
        filter_sql(sql, f);
    }
    for &(start, end, has) in windows {
        sql.push(if has {
            " AND v.id IN"
        } else {
            " AND v.id NOT IN"
        });
        // A missing visit id would make NOT IN match nothing.
        sql.push(" (SELECT e.visit_id FROM events e WHERE e.visit_id IS NOT NULL")
            .push(" AND e.site_id = ")
            .arg(site_id);
        sql.push(" AND e.ts >= ").arg(start);
        sql.push(" AND e.ts < ").arg(end);
        sql.push(" AND e.name <> ").arg(NOT_AN_ACTION);
        for f in filters.iter().filter(|f| !is_visit_field(f)) {
            filter_sql(sql, f);
        }
        sql.push(")");
    }
}

/// The windows of a visit that matches only after `seam`: a matching event
/// after it (up to a day past the range's end, as visit metrics look) and
/// none from `from` to it.
fn matched_only_after(range: TimeRange, seam: i64, from: i64) -> [(i64, i64, bool); 2] {
    [(seam, range.end + 86_400, true), (from, seam, false)]
}

fn has_event_filters(filters: &[Filter]) -> bool {
    filters.iter().any(|f| !is_visit_field(f))
}

/// Visits that started in `range` before `seam` (from `from`, see
/// [`seam_reach`]) and, under event filters, match only after it: (visits,
/// bounces, duration). The side before the seam counts a visit by its
/// matching events there; the side after counts visits that started after
/// the seam; these fall between.
pub fn seam_visits_matched_after(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    from: i64,
    filters: &[Filter],
) -> Result<(i64, i64, i64), StoreError> {
    if !has_event_filters(filters) {
        return Ok((0, 0, 0));
    }
    let mut sql = Sql::default();
    sql.push(
        "SELECT COUNT(*), COALESCE(SUM(v.is_bounce), 0),
            COALESCE(SUM(v.last_seen_at - v.started_at), 0)",
    );
    let windows = matched_only_after(range, seam, from);
    visits_between(&mut sql, site_id, (from, seam), filters, &windows);
    Ok(conn
        .prepare_cached(&sql.text)?
        .query_row(sql.params(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
}

/// One matching event's value of an event dimension, its visitor and its
/// visit.
pub type ValuedEvent = (Option<String>, i64, Option<i64>);

/// `SELECT value, visitor, visit` of the matching events of an event
/// dimension (a page, an event name, a property) in `range`; conditions may
/// follow.
fn valued_events(
    sql: &mut Sql,
    site_id: i64,
    range: TimeRange,
    dimension: &Dimension,
    filters: &[Filter],
) {
    sql.push("SELECT ");
    match dimension {
        Dimension::Page => {
            sql.push("e.path");
        }
        Dimension::EventName => {
            sql.push("e.name");
        }
        Dimension::Prop(key) => prop_sql(sql, key),
        // Visit attributes are counted by visit, not here.
        Dimension::Visit(_) => {
            sql.push("NULL");
        }
    }
    sql.push(", e.visitor_id, e.visit_id");
    events_from(sql, site_id, range, filters);
    match dimension {
        Dimension::Page => {
            sql.push(" AND e.name = 'pageview'");
        }
        Dimension::EventName => {
            sql.push(" AND e.name <> 'pageview'");
        }
        Dimension::Prop(key) => {
            sql.push(" AND ");
            prop_sql(sql, key);
            sql.push(" IS NOT NULL");
        }
        Dimension::Visit(_) => {}
    }
}

/// For an event dimension: the matching events after `seam` of the visits
/// that crossed it (started from `earliest`), and the matching events
/// before it of the same visitors (see [`same_ids_from`]). A value's
/// visitor (or visit) in both lists is counted by both sides.
pub fn seam_valued_events(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    earliest: i64,
    dimension: &Dimension,
    filters: &[Filter],
) -> Result<(Vec<ValuedEvent>, Vec<ValuedEvent>), StoreError> {
    let read = |sql: &Sql| -> Result<Vec<ValuedEvent>, StoreError> {
        let mut stmt = conn.prepare_cached(&sql.text)?;
        let rows = stmt.query_map(sql.params(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let mut sql = Sql::default();
    let after = TimeRange {
        start: seam,
        end: range.end,
    };
    valued_events(&mut sql, site_id, after, dimension, filters);
    started_before(&mut sql, site_id, earliest, seam);
    let after = read(&sql)?;
    if after.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut ids: Vec<i64> = after.iter().map(|e| e.1).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sql = Sql::default();
    let before = TimeRange {
        start: same_ids_from(range, earliest),
        end: seam,
    };
    valued_events(&mut sql, site_id, before, dimension, filters);
    visitor_in(&mut sql, &ids);
    Ok((after, read(&sql)?))
}

/// Property keys, each with a visitor or a count of visitors.
pub type KeyVisitors = Vec<(String, i64)>;

/// A visit attribute's value and a visitor.
pub type ValueVisitor = (Option<String>, i64);

/// For property keys: (key, visitor) of the matching events after `seam`
/// of the visits that crossed it (started from `earliest`), and of the
/// matching events before it of the same visitors (see [`same_ids_from`]).
pub fn seam_key_visitors(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    earliest: i64,
    filters: &[Filter],
) -> Result<(KeyVisitors, KeyVisitors), StoreError> {
    let read = |sql: &Sql| -> Result<KeyVisitors, StoreError> {
        let mut stmt = conn.prepare_cached(&sql.text)?;
        let rows = stmt.query_map(sql.params(), |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let select = |sql: &mut Sql, range: TimeRange| {
        sql.push("SELECT DISTINCT j.key, m.visitor_id FROM (SELECT e.visitor_id, e.props");
        events_from(sql, site_id, range, filters);
        sql.push(" AND e.props IS NOT NULL");
    };
    let mut sql = Sql::default();
    select(
        &mut sql,
        TimeRange {
            start: seam,
            end: range.end,
        },
    );
    started_before(&mut sql, site_id, earliest, seam);
    sql.push(") m, json_each(m.props) j");
    let after = read(&sql)?;
    if after.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut ids: Vec<i64> = after.iter().map(|e| e.1).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sql = Sql::default();
    select(
        &mut sql,
        TimeRange {
            start: same_ids_from(range, earliest),
            end: seam,
        },
    );
    visitor_in(&mut sql, &ids);
    sql.push(") m, json_each(m.props) j");
    Ok((after, read(&sql)?))
}

/// A crossing visit that matches only after the seam, with its value of a
/// visit attribute (in `row.value`) and its visitor.
pub struct AddedVisit {
    pub row: BreakdownRow,
    pub visitor_id: i64,
}

/// For a visit attribute `column` under event filters: the visits of
/// [`seam_visits_matched_after`] one by one; and (value, visitor) of the
/// visits of the same visitors that the part before the seam counts (see
/// [`same_ids_from`]), so that a visitor counts once per value.
pub fn seam_visits_matched_after_by(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    seam: i64,
    earliest: i64,
    column: VisitColumn,
    filters: &[Filter],
) -> Result<(Vec<AddedVisit>, Vec<ValueVisitor>), StoreError> {
    if !has_event_filters(filters) {
        return Ok((Vec::new(), Vec::new()));
    }
    let name = column.name();
    let from = range.start.max(earliest);
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT v.{name}, v.visitor_id, v.pageviews, v.events, v.is_bounce,
            v.last_seen_at - v.started_at"
    ));
    let windows = matched_only_after(range, seam, from);
    visits_between(&mut sql, site_id, (from, seam), filters, &windows);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let added: Vec<AddedVisit> = stmt
        .query_map(sql.params(), |r| {
            Ok(AddedVisit {
                row: BreakdownRow {
                    value: r.get(0)?,
                    visitors: 0,
                    visits: 1,
                    pageviews: r.get(2)?,
                    events: r.get(3)?,
                    bounces: r.get(4)?,
                    visit_duration_sum: r.get(5)?,
                },
                visitor_id: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if added.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<i64> = added.iter().map(|v| v.visitor_id).collect();
    let from = same_ids_from(range, earliest);
    let mut sql = Sql::default();
    sql.push(&format!("SELECT v.{name}, v.visitor_id"));
    visits_between(
        &mut sql,
        site_id,
        (from, seam),
        filters,
        &[(from, seam, true)],
    );
    sql.push(" AND v.visitor_id IN (SELECT value FROM json_each(")
        .arg(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
        .push("))");
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let counted = stmt
        .query_map(sql.params(), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok((added, counted))
}
