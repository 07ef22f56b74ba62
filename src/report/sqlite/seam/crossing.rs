//! The raw tables as the side after the seam ([`RawTables`]): the part
//! after it, the visits that crossed it (started before it, with events
//! after it), and what they make both sides count twice or neither count.
//! Every query here starts from the events after the seam or from those
//! visits, so it costs what the part after the seam holds, not the range.

use rusqlite::Connection;

use super::super::filter::{Sql, filter_sql, prop_sql};
use super::super::raw::{self, events_from, is_visit_field};
use super::{AddedVisit, AfterSeam, Crossing, KeyVisitors, ValueVisitor, ValuedEvent};
use crate::report::model::has_event_filters;
use crate::report::model::{
    BreakdownRow, Dimension, Filter, NOT_AN_ACTION, TimeRange, Totals, VisitColumn,
};
use crate::store::StoreError;

/// The raw tables of one site, read in the report's transaction.
pub struct RawTables<'a> {
    pub conn: &'a Connection,
    pub site_id: i64,
}

/// `AND e.visit_id IN` the visits that started from `from` to `seam`.
fn started_before(sql: &mut Sql, site_id: i64, from: i64, seam: i64) {
    sql.push(" AND e.visit_id IN (SELECT id FROM visits WHERE site_id = ")
        .arg(site_id);
    sql.push(" AND started_at >= ").arg(from);
    sql.push(" AND started_at < ").arg(seam);
    sql.push(")");
}

/// `AND {column} IN` `ids`.
fn in_list(sql: &mut Sql, column: &str, ids: &[i64]) {
    sql.push(&format!(" AND {column} IN (SELECT value FROM json_each("))
        .arg(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()))
        .push("))");
}

/// `ids` sorted, each once.
fn distinct(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids.dedup();
    ids
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

/// `FROM visits v WHERE` the crossing visits the range counts that match
/// only after the seam (see [`Crossing::matched_only_after`]).
fn crossing_matched_only_after(sql: &mut Sql, site_id: i64, c: &Crossing, filters: &[Filter]) {
    let from = (c.visits_from(), c.seam);
    visits_between(sql, site_id, from, filters, &c.matched_only_after());
}

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
    // Distinct: a long visit has many events of one value.
    sql.push("SELECT DISTINCT ");
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

/// `SELECT DISTINCT key, visitor` of the matching events in `range` with
/// properties; `condition` adds to the events' conditions.
fn key_visitor_pairs(
    sql: &mut Sql,
    site_id: i64,
    range: TimeRange,
    filters: &[Filter],
    condition: impl FnOnce(&mut Sql),
) {
    sql.push("SELECT DISTINCT j.key, m.visitor_id FROM (SELECT e.visitor_id, e.props");
    events_from(sql, site_id, range, filters);
    sql.push(" AND e.props IS NOT NULL");
    condition(sql);
    sql.push(") m, json_each(m.props) j");
}

impl RawTables<'_> {
    fn all<T>(
        &self,
        sql: &Sql,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&sql.text)?;
        let rows = stmt.query_map(sql.params(), row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl AfterSeam for RawTables<'_> {
    fn holds(&self, _: i64) -> bool {
        true
    }

    fn totals(&self, range: TimeRange, filters: &[Filter]) -> Result<Totals, StoreError> {
        raw::totals(self.conn, self.site_id, range, filters)
    }

    fn rows(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        limit: i64,
    ) -> Result<Vec<BreakdownRow>, StoreError> {
        raw::breakdown(self.conn, self.site_id, range, dimension, filters, limit, 0)
    }

    fn key_counts(
        &self,
        range: TimeRange,
        filters: &[Filter],
        limit: i64,
    ) -> Result<KeyVisitors, StoreError> {
        raw::prop_key_visitors(self.conn, self.site_id, range, filters, limit)
    }

    /// Read from the events after the seam (each joined to its visit), so
    /// it costs what the part after the seam holds, and a visit of any
    /// length is found.
    fn reach(&self, range: TimeRange, seam: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MIN(v.started_at) FROM events e CROSS JOIN visits v ON v.id = e.visit_id
                 WHERE e.site_id = ?1 AND e.ts >= ?2 AND e.ts < ?3 AND v.started_at < ?2",
            )?
            .query_row(
                rusqlite::params![self.site_id, seam, range.end + 86_400],
                |r| r.get(0),
            )?)
    }

    fn visitors_on_both_sides(&self, c: &Crossing, filters: &[Filter]) -> Result<i64, StoreError> {
        let mut sql = Sql::default();
        sql.push("SELECT DISTINCT e.visitor_id");
        events_from(&mut sql, self.site_id, c.after(), filters);
        started_before(&mut sql, self.site_id, c.earliest, c.seam);
        let ids: Vec<i64> = self.all(&sql, |r| r.get(0))?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut sql = Sql::default();
        sql.push("SELECT COUNT(DISTINCT e.visitor_id)");
        let before = c.before();
        events_from(&mut sql, self.site_id, before, filters);
        in_list(&mut sql, "e.visitor_id", &ids);
        Ok(self
            .conn
            .prepare_cached(&sql.text)?
            .query_row(sql.params(), |r| r.get(0))?)
    }

    fn visits_matched_after(
        &self,
        c: &Crossing,
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
        crossing_matched_only_after(&mut sql, self.site_id, c, filters);
        Ok(self
            .conn
            .prepare_cached(&sql.text)?
            .query_row(sql.params(), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
    }

    fn valued_events(
        &self,
        c: &Crossing,
        dimension: &Dimension,
        filters: &[Filter],
    ) -> Result<(Vec<ValuedEvent>, Vec<ValuedEvent>), StoreError> {
        let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
        let mut sql = Sql::default();
        valued_events(&mut sql, self.site_id, c.after(), dimension, filters);
        started_before(&mut sql, self.site_id, c.earliest, c.seam);
        let after: Vec<ValuedEvent> = self.all(&sql, read)?;
        if after.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids = distinct(after.iter().map(|e| e.1).collect());
        let mut sql = Sql::default();
        let before = c.before();
        valued_events(&mut sql, self.site_id, before, dimension, filters);
        in_list(&mut sql, "e.visitor_id", &ids);
        Ok((after, self.all(&sql, read)?))
    }

    fn visits_matched_after_by(
        &self,
        c: &Crossing,
        column: VisitColumn,
        filters: &[Filter],
    ) -> Result<(Vec<AddedVisit>, Vec<ValueVisitor>), StoreError> {
        if !has_event_filters(filters) {
            return Ok((Vec::new(), Vec::new()));
        }
        let name = column.name();
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT v.{name}, v.visitor_id, v.pageviews, v.events, v.is_bounce,
                v.last_seen_at - v.started_at"
        ));
        crossing_matched_only_after(&mut sql, self.site_id, c, filters);
        let added: Vec<AddedVisit> = self.all(&sql, |r| {
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
        })?;
        if added.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids = distinct(added.iter().map(|v| v.visitor_id).collect());
        let from = c.same_ids_from();
        let mut sql = Sql::default();
        sql.push(&format!("SELECT v.{name}, v.visitor_id"));
        let windows = [(from, c.seam, true)];
        visits_between(&mut sql, self.site_id, (from, c.seam), filters, &windows);
        in_list(&mut sql, "v.visitor_id", &ids);
        let counted = self.all(&sql, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((added, counted))
    }

    fn key_visitors(
        &self,
        c: &Crossing,
        filters: &[Filter],
    ) -> Result<(KeyVisitors, KeyVisitors), StoreError> {
        let read = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
        let mut sql = Sql::default();
        key_visitor_pairs(&mut sql, self.site_id, c.after(), filters, |sql| {
            started_before(sql, self.site_id, c.earliest, c.seam)
        });
        let after: KeyVisitors = self.all(&sql, read)?;
        if after.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let ids = distinct(after.iter().map(|e| e.1).collect());
        let mut sql = Sql::default();
        let before = c.before();
        key_visitor_pairs(&mut sql, self.site_id, before, filters, |sql| {
            in_list(sql, "e.visitor_id", &ids)
        });
        Ok((after, self.all(&sql, read)?))
    }
}
