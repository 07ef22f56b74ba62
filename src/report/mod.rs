//! The read model: how reports are answered.
//!
//! The query layer asks one interface, [`Reports`], for a site's numbers:
//! totals, series, breakdowns and goal conversions over time ranges,
//! narrowed by filters. It never learns where they come from. [`sqlite`]
//! answers from the embedded store (rollups, recent traffic in memory and
//! the raw tables, kept current by its follower); another event store would
//! sit beside it as a second implementation.
//!
//! [`Upkeep`] is what the server's pages and health see of keeping it
//! current.
//!
//! [`model`] holds what a report asks and gets back; [`calendar`] the local
//! hours, days, weeks and months of a site's timezone that periods and
//! rollup buckets share; [`matching`] whether a value passes a filter, in
//! memory. [`columns`] is the column store for filtered reports, not read
//! by any report yet.

pub mod calendar;
pub mod columns;
pub mod matching;
pub mod model;
pub mod sqlite;

use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::store::sites::{Goal, GoalKind, Site};
use crate::store::{StoreError, WriteError};
use model::{BreakdownRow, Dimension, Filter, TimeRange, Totals, VisitColumn};

/// Why a report could not be answered.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The report needs raw events from before the oldest one kept;
    /// `param` is the request parameter that made it need them.
    #[error(
        "{param}: raw events before {kept} are no longer kept, so {what} cannot reach before \
         that day; only unfiltered reports cover older periods"
    )]
    NotKept {
        param: &'static str,
        kept: chrono::NaiveDate,
        what: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What answers reports. One per server (or command), shared by every
/// request.
pub trait Reports: Send + Sync {
    /// The numbers of `site` narrowed by `filters`, as of one instant: every
    /// answer of the returned view comes from the same state of the data.
    /// `now` is the report's clock (Unix seconds).
    fn open(
        &self,
        site: &Site,
        filters: &[Filter],
        now: i64,
    ) -> Result<Box<dyn SiteReport + '_>, ReportError>;
}

/// What keeps a read model current, as the server's pages, health and
/// metrics see it.
pub trait Upkeep: Send + Sync {
    /// Sets a site's timezone and has the read model follow it (the rollups
    /// are rebuilt in the background); raw events are kept
    /// `raw_events_days`. False when the timezone was already that one.
    fn change_timezone(
        &self,
        site_id: i64,
        timezone: String,
        raw_events_days: u32,
    ) -> BoxFuture<'_, Result<bool, WriteError>>;

    /// Sites whose reports may be incomplete while the read model rebuilds
    /// them.
    fn rebuilding_sites(&self) -> Vec<i64>;

    /// A site was removed: the read model forgets what it holds of it in
    /// memory (its rows in the database are deleted by the store).
    fn site_removed(&self, site_id: i64);

    /// Acknowledged events not yet in the read model's aggregates.
    fn pending(&self) -> u64;

    /// Sites whose recent traffic is held in memory, and those loading.
    fn recent_sites(&self) -> (usize, usize);

    /// The column store's days, every site together; `None` where nothing
    /// seals days, or before the first look after start.
    fn column_days(&self) -> Option<ColumnDays> {
        None
    }

    /// Failures to open the column store or to seal a site's day since
    /// start (each is tried again later).
    fn column_seal_errors(&self) -> u64 {
        0
    }

    /// Filtered report parts the column store answered since start, and
    /// those it failed to answer (read from the raw tables instead).
    fn column_answers(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// The days of the column store, as health and metrics show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDays {
    /// Days sealed.
    pub sealed_days: u64,
    /// Complete days with raw events not sealed yet.
    pub pending_days: u64,
    /// Sites that stopped sealing at a day holding more events than the
    /// sealer may hold in memory (`[columns] seal_max_events_per_day`):
    /// that day and every later one stay in the raw tables only.
    pub oversized_sites: u64,
}

/// One site's numbers at one instant, narrowed by the filters it was opened
/// with. Event counts cover events in a range; visit counts cover visits
/// that started in it.
pub trait SiteReport {
    /// Totals over `range`.
    fn totals(&self, range: TimeRange) -> Result<Totals, ReportError>;

    /// Totals of each bucket (consecutive ranges, whole local hours when
    /// `hourly`, whole local days otherwise; with filters, ranges of any
    /// length, such as the realtime view's minutes).
    fn series(&self, buckets: &[TimeRange], hourly: bool) -> Result<Vec<Totals>, ReportError>;

    /// Rows `offset..offset + limit` of `dimension` over `range`, most
    /// visitors first. `need_visits`: the rows must carry `visits` also for
    /// a custom property (which rollups keep no visits for).
    fn breakdown(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        need_visits: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BreakdownRow>, ReportError>;

    /// Visitors who completed any of `goals` over `range`, and the
    /// completions.
    fn goals(&self, range: TimeRange, goals: &[GoalKind]) -> Result<(i64, i64), ReportError>;

    /// The site's goals, as of the same instant.
    fn goal_list(&self) -> Result<Vec<Goal>, ReportError>;

    /// Up to `max` custom property keys of the events over `range` (clipped
    /// to the raw events kept), most visitors first.
    fn prop_keys(&self, range: TimeRange, max: i64) -> Result<Vec<String>, ReportError>;

    /// Distinct visitors over a short `range` ending now, exact and current
    /// (not trailing by the rollups' second), narrowed by the filters as
    /// every other report is: visitors with an event in `range` that
    /// matches the event filters, in a visit that matches the visit filters.
    fn current_visitors(&self, range: TimeRange) -> Result<i64, ReportError>;

    /// The visitors [`SiteReport::current_visitors`] counts, by the value of
    /// their visit's `column`, most first, at most `limit` values (`None`:
    /// no value). Unlike a breakdown of visits, which counts visits that
    /// started in the range, this counts visitors by their events in it, so
    /// a visit that started an hour ago and is still going counts.
    fn current_breakdown(
        &self,
        range: TimeRange,
        column: VisitColumn,
        limit: i64,
    ) -> Result<Vec<(Option<String>, i64)>, ReportError>;
}
