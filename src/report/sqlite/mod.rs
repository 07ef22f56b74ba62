//! The read model over the embedded SQLite store: [`SqliteReports`], the
//! [`Reports`] of a server that keeps its events in `tally.db`.
//!
//! Which engine answers: the rollups ([`rollup_query`]) without filters;
//! with them (filters combine dimensions the rollups keep apart), the
//! column store ([`crate::report::columns`], kept by [`sealer`]) when the
//! range ends by the end of the site's newest sealed day, else recent
//! traffic in memory ([`recent`]) when it holds the site over the range,
//! else the raw tables ([`raw`]). A series is split: its buckets that end by
//! the sealed day come from the store in one scan (two halves side by
//! side over four days or more), the rest as above.
//! Totals, breakdowns and property keys over a range crossing the sealed
//! day's end are joined from the store's part and the rest, read from
//! recent traffic when it holds it, else the raw tables ([`seam`]). A
//! store that fails to answer is logged and the report read from the other
//! engines. Raw events are kept for a shorter time than rollups: a filtered
//! report reaching further back is refused rather than answered from
//! partial data. Every filtered engine matches filters by the rules of
//! [`filter`] and [`crate::report::matching`].
//!
//! The rollups are written by [`rollups`] (feed, deltas, ended visits,
//! imported aggregates, retention) and rebuilt by [`rollups::timezone`]
//! after a timezone change; unique visitors are [`sketch`]es, cached by
//! [`sketch_cache`].

pub mod columns_source;
pub mod filter;
pub mod follower;
pub mod raw;
pub mod recent;
pub mod rollup_query;
pub mod rollups;
pub mod sealer;
pub mod seam;
pub mod sketch;
pub mod sketch_cache;

use std::cell::{Cell, OnceCell};
use std::sync::Arc;

use chrono_tz::Tz;
use r2d2::PooledConnection;
use r2d2_sqlite::SqliteConnectionManager;

use super::calendar;
use super::model::{
    BreakdownRow, Dimension, Filter, FilterField, FilterOp, TimeRange, Totals, VisitColumn,
    has_event_filters,
};
use super::{ReportError, Reports, SiteReport};
use crate::report::columns::{ColumnError, SiteSnapshot};
use crate::store::sites::{self, Goal, GoalKind, Site};
use crate::store::{Store, StoreError};
use recent::RecentTraffic;
use rollup_query::RollupQuery;
use sealer::{SealedSite, Sealer};
use seam::crossing::RawTables;
use seam::{AfterSeam, Joined};
use sketch_cache::SketchCache;

/// Bytes of visitor sketches kept in memory for reports (2,048 dense ones;
/// a 30-day dashboard of a large site reads about 450).
const SKETCH_CACHE_BYTES: usize = 32 << 20;

/// The most values a breakdown's part after the seam (a day or two) may
/// have to be joined with the store's: they are held at once, up to about
/// 40 MiB at the longest values. Past it, the raw tables answer the whole
/// range.
const SEAM_VALUES: i64 = 20_000;

/// Reports from the embedded store.
pub struct SqliteReports {
    store: Store,
    /// Recent traffic in memory (a server's); commands read SQLite only.
    recent: Option<Arc<RecentTraffic>>,
    sketches: SketchCache,
    raw_events_days: u32,
    /// The column store's keeper (a server's); commands read SQLite only.
    sealer: Option<Arc<Sealer>>,
}

impl SqliteReports {
    /// Reports from `store`, where raw events are kept `raw_events_days`;
    /// filtered reports within `recent`'s window read it when given.
    pub fn new(
        store: Store,
        recent: Option<Arc<RecentTraffic>>,
        raw_events_days: u32,
    ) -> SqliteReports {
        SqliteReports {
            store,
            recent,
            sketches: SketchCache::new(SKETCH_CACHE_BYTES),
            raw_events_days,
            sealer: None,
        }
    }

    /// Filtered reports over days `sealer` has sealed read its store.
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> SqliteReports {
        self.sealer = Some(sealer);
        self
    }
}

impl Reports for SqliteReports {
    fn open(
        &self,
        site: &Site,
        filters: &[Filter],
        now: i64,
    ) -> Result<Box<dyn SiteReport + '_>, ReportError> {
        let conn = self.store.reader()?;
        // Outside any transaction: `Store::reader` ends one left behind.
        // One read transaction per report: rollups, open visits and raw rows
        // are the same instant's. Ended when the view is dropped.
        conn.execute_batch("BEGIN").map_err(StoreError::from)?;
        Ok(Box::new(SqliteSiteReport {
            conn,
            site_id: site.id,
            tz: calendar::zone(&site.timezone),
            filters: filters.to_vec(),
            raw_since: now - i64::from(self.raw_events_days) * 86_400,
            recent: self.recent.as_ref(),
            sketches: &self.sketches,
            now,
            sealer: self.sealer.as_deref(),
            sealed: OnceCell::new(),
            columns_failed: Cell::new(false),
        }))
    }
}

/// One report's view: a pooled connection inside a read transaction.
struct SqliteSiteReport<'a> {
    conn: PooledConnection<SqliteConnectionManager>,
    site_id: i64,
    tz: Tz,
    filters: Vec<Filter>,
    raw_since: i64,
    recent: Option<&'a Arc<RecentTraffic>>,
    sketches: &'a SketchCache,
    now: i64,
    sealer: Option<&'a Sealer>,
    /// What the column store holds of the site, looked up by the first
    /// report part that could read it.
    sealed: OnceCell<Option<SealedSite>>,
    /// Set when the store failed to answer a part of this report.
    columns_failed: Cell<bool>,
}

impl Drop for SqliteSiteReport<'_> {
    fn drop(&mut self) {
        // A read transaction changes nothing; ending it hands the pool a
        // connection outside any transaction. SQLite may have ended it
        // already (after some errors); then there is nothing to end.
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "ending a report's read transaction");
        }
    }
}

impl SqliteSiteReport<'_> {
    fn rollups(&self) -> RollupQuery<'_> {
        RollupQuery {
            conn: &self.conn,
            cache: self.sketches,
            tz: self.tz,
            site_id: self.site_id,
        }
    }

    /// Recent traffic, if it holds this site over `range`.
    fn recent(&self, range: TimeRange) -> Option<&RecentTraffic> {
        self.recent
            .filter(|r| r.ready(self.site_id, range, self.now))
            .map(|r| &**r)
    }

    fn raw(&self) -> bool {
        !self.filters.is_empty()
    }

    /// The column store, if it holds every event of ranges ending by `end`
    /// and has not failed this report.
    fn sealed(&self, end: i64) -> Option<&SealedSite> {
        self.sealed_site().filter(|s| s.covers(end))
    }

    /// What the column store holds of the site, unless it failed this
    /// report.
    fn sealed_site(&self) -> Option<&SealedSite> {
        let sealer = self.sealer?;
        if self.columns_failed.get() {
            return None;
        }
        self.sealed
            .get_or_init(|| sealer.sealed_site(&self.conn, self.site_id))
            .as_ref()
    }

    /// Filtered totals over a range that reaches past the store's newest
    /// sealed day (the seam): the part before it from the store, the part
    /// after from recent traffic or the raw tables ([`Self::after_seam`]),
    /// joined as one range would count (see [`seam`]). `None` when the
    /// range does not cross the seam or the store cannot answer.
    fn seam_totals(
        &self,
        range: TimeRange,
        filters: &[Filter],
        visits: bool,
    ) -> Result<Option<Totals>, ReportError> {
        let Some(seam) = self.seam_of(range) else {
            return Ok(None);
        };
        let (before, _) = seam::split(range, seam);
        let Some(sealed) = self.columns_answer(seam, |s| s.snapshot.totals(before, filters)) else {
            return Ok(None);
        };
        self.after_seam(range, seam, |side| {
            seam::join_totals(side, range, seam, filters, sealed.clone(), visits)
        })
    }

    /// `join` with the part after `seam` and the visits that crossed it
    /// read from recent traffic when it holds them all (memory), else from
    /// the raw tables. `None` when the join has too many values to hold.
    fn after_seam<T>(
        &self,
        range: TimeRange,
        seam: i64,
        join: impl Fn(&dyn AfterSeam) -> Result<Joined<T>, StoreError>,
    ) -> Result<Option<T>, ReportError> {
        let after = TimeRange {
            start: seam,
            end: range.end,
        };
        if let Some(recent) = self.recent(after)
            && let Some(joined) = recent.after_seam(self.site_id, self.now, &join)
        {
            match joined? {
                Joined::Answer(t) => return Ok(Some(t)),
                // The raw tables have as many values: not read again.
                Joined::TooMany => return Ok(None),
                Joined::NotHeld => {}
            }
        }
        let raw = RawTables {
            conn: &self.conn,
            site_id: self.site_id,
        };
        Ok(join(&raw)?.answer())
    }

    /// A filtered breakdown over a range that reaches past the seam (see
    /// [`Self::seam_totals`]): the store ranks its part's rows with the
    /// rest's added by value (see [`seam::rows_to_add`]). `None` when the
    /// range does not cross the seam, the store cannot answer, or the part
    /// after the seam has too many values to hold.
    fn seam_breakdown(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        need_visits: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Option<Vec<BreakdownRow>>, ReportError> {
        let Some(seam) = self.seam_of(range) else {
            return Ok(None);
        };
        // The store must hold the part before the seam before the rest is
        // read.
        if self.sealed(seam).is_none() {
            return Ok(None);
        }
        let (before, _) = seam::split(range, seam);
        let filters = &self.filters;
        let Some(extra) = self.after_seam(range, seam, |side| {
            seam::rows_to_add(side, range, seam, dimension, filters, SEAM_VALUES)
        })?
        else {
            return Ok(None);
        };
        Ok(self.columns_answer(seam, |s| {
            s.snapshot.breakdown_with(
                before,
                dimension,
                filters,
                need_visits,
                limit,
                offset,
                &extra,
            )
        }))
    }

    /// Property keys over a range that reaches past the seam: every key of
    /// the store's part and of the rest, joined (see
    /// [`seam::join_prop_keys`]). `None` as [`Self::seam_breakdown`].
    fn seam_prop_keys(
        &self,
        range: TimeRange,
        max: i64,
    ) -> Result<Option<Vec<String>>, ReportError> {
        let Some(seam) = self.seam_of(range) else {
            return Ok(None);
        };
        let (before, _) = seam::split(range, seam);
        let filters = &self.filters;
        let Some(sealed) =
            self.columns_answer(seam, |s| s.snapshot.prop_key_visitors(before, filters))
        else {
            return Ok(None);
        };
        self.after_seam(range, seam, |side| {
            let limits = (max, SEAM_VALUES);
            seam::join_prop_keys(side, range, seam, filters, sealed.clone(), limits)
        })
    }

    /// The seam a filtered report over `range` is joined at: the end of the
    /// store's newest sealed day, when the range starts before it and does
    /// not end before it (a range ending on it still needs the events after
    /// it for its visits, under an event filter).
    fn seam_of(&self, range: TimeRange) -> Option<i64> {
        let seam = self.sealed_site()?.end;
        (range.start < seam && seam <= range.end).then_some(seam)
    }

    /// How far past a range's end its visit metrics look: with an event
    /// filter, a visit started in the range counts if it has a matching
    /// event up to a day past the end (see `raw::visits_from`), so the
    /// store must hold that day too.
    fn visit_reach(&self, end: i64) -> i64 {
        if has_event_filters(&self.filters) {
            end + 86_400
        } else {
            end
        }
    }

    /// The column store's answer over ranges ending by `end`, or `None` when
    /// it does not hold them or fails (logged; the caller reads the other
    /// engines).
    fn columns_answer<T>(
        &self,
        end: i64,
        answer: impl FnOnce(&SealedSite) -> Result<T, ColumnError>,
    ) -> Option<T> {
        let sealed = self.sealed(end)?;
        let sealer = self.sealer?;
        match answer(sealed) {
            Ok(t) => {
                sealer.answered();
                Some(t)
            }
            Err(e) => {
                tracing::warn!(site_id = self.site_id, error = %e, "column store: a report is read from the raw tables instead");
                sealer.failed_to_answer(self.site_id, &e);
                // Once per report: its other parts read the raw tables too.
                self.columns_failed.set(true);
                None
            }
        }
    }

    /// Refuses a raw report over a range whose raw events are gone; `param`
    /// is the parameter that made the report need them.
    fn check(&self, range: TimeRange, raw: bool, param: &'static str) -> Result<(), ReportError> {
        if raw && range.start < self.raw_since {
            return Err(ReportError::NotKept {
                param,
                kept: calendar::local_date(self.tz, self.raw_since),
                what: if param == "filters" {
                    "filtered reports"
                } else {
                    "visits of event:props"
                },
            });
        }
        Ok(())
    }
}

impl SiteReport for SqliteSiteReport<'_> {
    fn totals(&self, range: TimeRange) -> Result<Totals, ReportError> {
        self.check(range, self.raw(), "filters")?;
        Ok(if self.raw() {
            let columns = || {
                self.columns_answer(self.visit_reach(range.end), |s| {
                    s.snapshot.totals(range, &self.filters)
                })
            };
            // Recent traffic, when it holds the range, answers from memory
            // before the seam's join reads the raw tables around the seam.
            let held = || {
                self.recent(range)
                    .and_then(|r| r.totals(self.site_id, range, &self.filters))
            };
            let answer = match columns().or_else(held) {
                Some(t) => Some(t),
                None => self.seam_totals(range, &self.filters, true)?,
            };
            match answer {
                Some(t) => t,
                None => raw::totals(&self.conn, self.site_id, range, &self.filters)?,
            }
        } else {
            self.rollups().totals(range)?
        })
    }

    fn series(&self, buckets: &[TimeRange], hourly: bool) -> Result<Vec<Totals>, ReportError> {
        if self.raw() {
            // Buckets ascend: those the store holds are a leading run.
            let held = match buckets
                .iter()
                .position(|b| self.sealed(self.visit_reach(b.end)).is_none())
            {
                Some(n) => n,
                None => buckets.len(),
            };
            let mut out = if held == 0 {
                Vec::new()
            } else {
                let (held, end) = (&buckets[..held], self.visit_reach(buckets[held - 1].end));
                self.check(held[0], true, "filters")?;
                self.columns_answer(end, |s| series_in_halves(&s.snapshot, held, &self.filters))
                    .unwrap_or_default()
            };
            for b in &buckets[out.len()..] {
                out.push(self.totals(*b)?);
            }
            return Ok(out);
        }
        Ok(self.rollups().series(buckets, hourly)?)
    }

    fn breakdown(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        need_visits: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BreakdownRow>, ReportError> {
        // Rollups of properties keep no visit counts.
        let needs_raw = need_visits && matches!(dimension, Dimension::Prop(_));
        self.check(range, self.raw(), "filters")?;
        self.check(range, needs_raw, "metrics")?;
        let raw = self.raw() || needs_raw;
        // Visit attributes count visits, which look past the range's end.
        let reach = match dimension {
            Dimension::Visit(_) => self.visit_reach(range.end),
            _ => range.end,
        };
        let columns = || {
            self.columns_answer(reach, |s| {
                s.snapshot
                    .breakdown(range, dimension, &self.filters, need_visits, limit, offset)
            })
        };
        if let Some(rows) = raw.then(columns).flatten() {
            return Ok(rows);
        }
        // Only a raw report asks: asking starts loading the site.
        let recent = raw.then(|| self.recent(range)).flatten();
        if let Some(rows) = recent
            .and_then(|r| r.breakdown(self.site_id, range, dimension, &self.filters, limit, offset))
        {
            return Ok(rows);
        }
        if raw
            && let Some(rows) = self.seam_breakdown(range, dimension, need_visits, limit, offset)?
        {
            return Ok(rows);
        }
        Ok(if raw {
            raw::breakdown(
                &self.conn,
                self.site_id,
                range,
                dimension,
                &self.filters,
                limit,
                offset,
            )?
        } else {
            self.rollups().breakdown(range, dimension, limit, offset)?
        })
    }

    fn goals(&self, range: TimeRange, goals: &[GoalKind]) -> Result<(i64, i64), ReportError> {
        self.check(range, self.raw(), "filters")?;
        // One goal is its filters added to the report's; visitors of any of
        // several goals are not a sum, and are read from the other engines.
        let held = || {
            let recent = self.raw().then(|| self.recent(range)).flatten();
            recent.and_then(|r| r.goals(self.site_id, range, goals, &self.filters))
        };
        if let ([goal], true) = (goals, self.raw()) {
            let mut filters = self.filters.clone();
            filters.extend(goal_filters(goal));
            if let Some(t) = self.columns_answer(range.end, |s| s.snapshot.totals(range, &filters))
            {
                // Only the goal's events match: pageviews or custom events.
                return Ok((t.visitors, t.pageviews + t.events));
            }
            // Recent traffic from memory first, then the seam's join.
            if let Some(answer) = held() {
                return Ok(answer);
            }
            if let Some(t) = self.seam_totals(range, &filters, false)? {
                return Ok((t.visitors, t.pageviews + t.events));
            }
        }
        if let Some(answer) = held() {
            return Ok(answer);
        }
        if self.raw() {
            let mut events = 0;
            for g in goals {
                events +=
                    raw::goal_conversions(&self.conn, self.site_id, range, g, &self.filters)?.1;
            }
            let visitors =
                raw::converted_visitors(&self.conn, self.site_id, range, goals, &self.filters)?;
            return Ok((visitors, events));
        }
        Ok(self.rollups().goal_visitors(range, goals)?)
    }

    fn goal_list(&self) -> Result<Vec<Goal>, ReportError> {
        Ok(sites::list_goals(&self.conn, self.site_id)?)
    }

    fn prop_keys(&self, range: TimeRange, max: i64) -> Result<Vec<String>, ReportError> {
        let range = TimeRange {
            start: range.start.max(self.raw_since),
            end: range.end,
        };
        if let Some(keys) = self.columns_answer(range.end, |s| {
            s.snapshot.prop_keys(range, &self.filters, max)
        }) {
            return Ok(keys);
        }
        if let Some(keys) = self.seam_prop_keys(range, max)? {
            return Ok(keys);
        }
        Ok(raw::prop_keys(
            &self.conn,
            self.site_id,
            range,
            &self.filters,
            max,
        )?)
    }

    fn current_visitors(&self, range: TimeRange) -> Result<i64, ReportError> {
        // The raw tables, not recent traffic: they are exact to the last
        // commit, and a few minutes of a site are a short clustered range.
        Ok(raw::totals(&self.conn, self.site_id, range, &self.filters)?.visitors)
    }

    fn current_breakdown(
        &self,
        range: TimeRange,
        column: VisitColumn,
        limit: i64,
    ) -> Result<Vec<(Option<String>, i64)>, ReportError> {
        Ok(raw::visitors_by_visit(
            &self.conn,
            self.site_id,
            range,
            column,
            &self.filters,
            limit,
        )?)
    }
}

/// The span from which a series from the column store is split in two,
/// each half scanned on its own thread: a month of days is, a day of
/// hours is not (its scan is short next to starting a thread).
const SPLIT_SPAN: i64 = 4 * 86_400;

/// The store's series over `buckets`, a long one in two halves side by
/// side: a bucket's totals read only its own days (and, for its visits,
/// a day past its end), so halves answer as the whole would.
fn series_in_halves(
    snapshot: &SiteSnapshot,
    buckets: &[TimeRange],
    filters: &[Filter],
) -> Result<Vec<Totals>, ColumnError> {
    let span = match (buckets.first(), buckets.last()) {
        (Some(a), Some(b)) => b.end - a.start,
        _ => 0,
    };
    if buckets.len() < 2 || span < SPLIT_SPAN {
        return snapshot.series(buckets, filters);
    }
    let (early, late) = buckets.split_at(buckets.len() / 2);
    let (early, late) = crate::parallel::join(
        || snapshot.series(early, filters),
        || snapshot.series(late, filters),
    );
    let mut out = early?;
    out.extend(late?);
    Ok(out)
}

/// A goal as filters: a custom event by its exact name, a page goal's
/// pageviews by path (`*` a wildcard).
fn goal_filters(goal: &GoalKind) -> Vec<Filter> {
    let is = |field, value: &str| Filter {
        field,
        op: FilterOp::Is,
        values: vec![Some(value.to_string())],
    };
    match goal {
        GoalKind::Event(name) => vec![is(FilterField::EventName, name)],
        GoalKind::Page(path) => vec![
            is(FilterField::EventName, "pageview"),
            is(FilterField::Page, path),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A visit: id, visitor, source, start, its events' times, their page.
    type Visit<'a> = (i64, i64, Option<&'a str>, i64, &'a [i64], &'a str);

    /// Current visitors and their sources follow the filters, and count a
    /// visitor by their events in the window, whenever their visit started.
    #[test]
    fn current_visitors_are_narrowed_by_filters() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 2).unwrap();
        let now = 1_700_000_000;
        let site = {
            let conn = store.write_connection().unwrap();
            let site = sites::add_site(&conn, "example.com", "UTC", false).unwrap();
            // (visit, visitor, source, started, events at these times, on this page)
            let visits: [Visit<'_>; 4] = [
                (
                    1,
                    10,
                    Some("Google"),
                    now - 3_600,
                    &[now - 3_600, now - 60],
                    "/a",
                ),
                (2, 20, Some("Google"), now - 120, &[now - 120], "/b"),
                (3, 30, None, now - 100, &[now - 100, now - 50], "/a"),
                // Left before the window.
                (4, 40, Some("Google"), now - 900, &[now - 900], "/a"),
            ];
            for (id, visitor, source, started, events, path) in visits {
                conn.execute(
                    "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                        entry_page, exit_page, pageviews, events, interactive, is_bounce, source)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?6, ?7, ?7, 1, 0, ?8)",
                    rusqlite::params![
                        id,
                        site.id,
                        visitor,
                        started,
                        events[events.len() - 1],
                        path,
                        events.len() as i64,
                        source
                    ],
                )
                .unwrap();
                for (n, ts) in events.iter().enumerate() {
                    conn.execute(
                        "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name,
                            hostname, path)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'pageview', 'example.com', ?6)",
                        rusqlite::params![site.id, ts, id * 10 + n as i64, id, visitor, path],
                    )
                    .unwrap();
                }
            }
            site
        };
        let reports = SqliteReports::new(store, None, 30);
        let window = TimeRange {
            start: now - 300,
            end: now + 1,
        };
        let current = |filters: &[(FilterField, FilterOp, &str)]| {
            let filters: Vec<Filter> = filters
                .iter()
                .map(|(field, op, value)| Filter {
                    field: field.clone(),
                    op: *op,
                    values: vec![Some(value.to_string())],
                })
                .collect();
            let report = reports.open(&site, &filters, now).unwrap();
            (
                report.current_visitors(window).unwrap(),
                report
                    .current_breakdown(window, VisitColumn::Source, 10)
                    .unwrap(),
            )
        };
        let google = || Some("Google".to_string());
        let source = FilterField::Visit(VisitColumn::Source);
        assert_eq!(current(&[]), (3, vec![(google(), 2), (None, 1)]));
        assert_eq!(
            current(&[(source.clone(), FilterOp::Is, "Google")]),
            (2, vec![(google(), 2)])
        );
        assert_eq!(
            current(&[(source.clone(), FilterOp::IsNot, "Google")]),
            (1, vec![(None, 1)])
        );
        assert_eq!(
            current(&[(FilterField::Page, FilterOp::Is, "/a")]),
            (2, vec![(None, 1), (google(), 1)])
        );
        assert_eq!(current(&[(source, FilterOp::Is, "Bing")]), (0, vec![]));
    }

    #[test]
    fn a_reader_returned_inside_a_transaction_does_not_spoil_reports() {
        let dir = tempfile::tempdir().unwrap();
        // One reader, so the report gets the connection left behind.
        let store = Store::open(dir.path(), 1).unwrap();
        let site = sites::add_site(
            &store.write_connection().unwrap(),
            "example.com",
            "UTC",
            false,
        )
        .unwrap();
        {
            let conn = store.reader().unwrap();
            conn.execute_batch("BEGIN").unwrap();
            conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
                .unwrap();
        }
        // Whoever takes the reader next reads the present, not that instant.
        sites::add_site(
            &store.write_connection().unwrap(),
            "new.example",
            "UTC",
            false,
        )
        .unwrap();
        assert!(
            sites::find_site(&store.reader().unwrap(), "new.example")
                .unwrap()
                .is_some()
        );
        let reports = SqliteReports::new(store.clone(), None, 30);
        let now = crate::store::now_unix();
        let report = reports.open(&site, &[], now).unwrap();
        let range = TimeRange {
            start: now - 3600,
            end: now,
        };
        assert_eq!(report.totals(range).unwrap(), Totals::default());
        drop(report);
        assert!(store.reader().unwrap().is_autocommit());
    }
}
