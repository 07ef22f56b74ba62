//! The read model's write side: counts per site, local hour/day/week/month
//! and dimension value, kept up to date beside the raw tables so reports
//! read a few rows per day. Every writer of rollup rows is in this folder;
//! `super::rollup_query` reads them.
//!
//! How rows are kept:
//! - Grains: the site's local hour (totals only, for hourly series), local
//!   day, local week (from Monday) and local month. A bucket is the Unix
//!   second its hour, day, week or month starts at in the site's timezone.
//! - Dimensions: totals, page, custom event name, property (`key␟value`,
//!   see [`prop_value`]), and each visit attribute.
//! - What counts where: pageviews, events and visitors at the event's time,
//!   from the feed; visits, bounces and duration at the visit's start, once
//!   the visit has ended. A visit attribute's rows count whole visits (their
//!   pageviews and visitors too); a page's (or event name's) visits count
//!   first views. Visitors are a sketch per row, stored apart.
//!
//! Two feeds keep the rows current, both applied by the single writer:
//! - events: after each commit the writer hands the committed events to a
//!   [`RollupFeed`] ([`feed`]), which folds them into [`Deltas`]
//!   ([`deltas`]); once a second the follower adds them to the rollups
//!   ([`flush_events`], in [`apply`]), then records the newest event id
//!   folded in (`rollups_through`). After an unclean stop the events past
//!   that id are folded in at start ([`recover()`], in [`recover`]).
//! - visits: a visit still changes while it is open, so it is added once it
//!   has ended ([`roll_ended_visits`]), in the same transaction that marks
//!   its row `rolled`. Reports read open visits from the `visits` table.
//!
//! So at any instant: rollups = events up to `rollups_through` + rolled
//! visits, and nothing is counted twice. [`rebuild`] recomputes a site's
//! rollups from the raw tables in one transaction (at start, or by the
//! CLI); after a timezone change the server rebuilds them in the background
//! instead ([`timezone`]). Imported aggregates are in [`imported`];
//! retention of old rows in [`retention`].

mod apply;
mod deltas;
mod feed;
mod imported;
mod recover;
pub mod retention;
pub mod timezone;

use std::collections::HashMap;

use chrono_tz::Tz;
use rusqlite::Connection;

use crate::report::calendar;
use crate::report::model::VisitColumn;
use crate::store::StoreError;

pub use apply::{flush_events, roll_ended_visits};
pub use deltas::Deltas;
pub use feed::{FedBatch, FedEvent, FedEvents, RollupFeed};
pub use imported::{ImportedRow, fold_imported, import_aggregates, imported_rows};
pub use recover::{ensure_mark, import_visits, rebuild, rebuild_if_asked, recover};

pub const GRAIN_HOUR: i64 = 0;
pub const GRAIN_DAY: i64 = 1;
pub const GRAIN_MONTH: i64 = 2;
/// Local weeks from Monday: a 30-day report reads four weeks and a few days
/// rather than thirty days.
pub const GRAIN_WEEK: i64 = 3;

/// The grains every dimension has rows of (hours keep totals only).
const DAY_AND_LONGER: [i64; 3] = [GRAIN_DAY, GRAIN_WEEK, GRAIN_MONTH];

pub const DIM_TOTALS: i64 = 0;
pub const DIM_PAGE: i64 = 1;
pub const DIM_NAME: i64 = 2;
pub const DIM_PROP: i64 = 3;
const DIM_VISIT_FIRST: i64 = 10;

/// Separates a property's key from its value in a `DIM_PROP` row. Control
/// characters are refused in keys at ingest, so the split is unambiguous.
pub const PROP_SEP: char = '\u{1f}';

/// A visit is added to the rollups this long after its last event: the
/// 30-minute visit timeout plus a margin for events still in flight.
pub const VISIT_SETTLED_AFTER: i64 = 30 * 60 + 120;

/// The dimension code of a visit attribute.
pub fn visit_dim(column: VisitColumn) -> i64 {
    DIM_VISIT_FIRST + column.index() as i64
}

/// The rollup value of a property.
pub fn prop_value(key: &str, value: &str) -> String {
    format!("{key}{PROP_SEP}{value}")
}

/// Every site's timezone.
pub fn zones(conn: &Connection) -> Result<HashMap<i64, Tz>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, timezone FROM sites")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, calendar::zone(&r.get::<_, String>(1)?)))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn zone_of(zones: &HashMap<i64, Tz>, site_id: i64) -> Tz {
    zones.get(&site_id).copied().unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prop_rows_split_on_the_separator() {
        let v = prop_value("plan", "pro");
        assert_eq!(v.split_once(PROP_SEP), Some(("plan", "pro")));
        assert_eq!(visit_dim(VisitColumn::EntryPage), DIM_VISIT_FIRST);
    }
}
