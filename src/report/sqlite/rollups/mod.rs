//! The read model's write side: counts per site, local hour/day/week/month
//! and dimension value, kept up to date beside the raw tables so reports
//! read a few rows per day. Every writer of rollup rows is in this folder;
//! `super::rollup_query` reads them.
//!
//! How rows are kept:
//! - Grains ([`Grain`]): the site's local hour (totals only, for hourly
//!   series), local day, local week (from Monday) and local month. A bucket
//!   is the Unix second its hour, day, week or month starts at in the
//!   site's timezone.
//! - Dimensions ([`Dim`]): totals, page, custom event name, property
//!   (`key␟value`, see [`prop_value`]), and each visit attribute.
//! - Both are stored as integer codes ([`Grain::code`], [`Dim::code`]),
//!   which the database holds and so never change.
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

/// The span of time a rollup row counts: a local hour, day, week or month
/// of the site's timezone. Stored as its [`Grain::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grain {
    Hour,
    Day,
    /// Local weeks from Monday: a 30-day report reads four weeks and a few
    /// days rather than thirty days.
    Week,
    Month,
}

impl Grain {
    /// Every grain, shortest first. A timezone change's stored progress
    /// counts (grain, dimension) pairs in this order, so it stays as it is.
    pub const ALL: [Grain; 4] = [Grain::Hour, Grain::Day, Grain::Week, Grain::Month];

    /// The grain's code in the `grain` column. Weeks came after months,
    /// hence their code.
    pub const fn code(self) -> i64 {
        match self {
            Grain::Hour => 0,
            Grain::Day => 1,
            Grain::Month => 2,
            Grain::Week => 3,
        }
    }
}

/// The grains every dimension has rows of (hours keep totals only).
const DAY_AND_LONGER: [Grain; 3] = [Grain::Day, Grain::Week, Grain::Month];

/// What a rollup row's value is: nothing (totals), a page, a custom event
/// name, a property (`key␟value`, see [`prop_value`]) or a visit attribute.
/// Stored as its [`Dim::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dim {
    #[default]
    Totals,
    Page,
    EventName,
    Prop,
    Visit(VisitColumn),
}

/// The code of the first visit attribute's dimension; the others follow in
/// the order of [`VisitColumn::ALL`].
const VISIT_FIRST: i64 = 10;

impl Dim {
    /// Every dimension, visit attributes in the order of their codes. A
    /// timezone change's stored progress counts (grain, dimension) pairs in
    /// this order, so it stays as it is.
    pub fn all() -> impl Iterator<Item = Dim> + Clone {
        [Dim::Totals, Dim::Page, Dim::EventName, Dim::Prop]
            .into_iter()
            .chain(VisitColumn::ALL.into_iter().map(Dim::Visit))
    }

    /// The dimension's code in the `dim` column.
    pub fn code(self) -> i64 {
        match self {
            Dim::Totals => 0,
            Dim::Page => 1,
            Dim::EventName => 2,
            Dim::Prop => 3,
            Dim::Visit(column) => VISIT_FIRST + column.index() as i64,
        }
    }

    /// The dimension stored as `code`, if it is one.
    pub fn from_code(code: i64) -> Option<Dim> {
        match code {
            0 => Some(Dim::Totals),
            1 => Some(Dim::Page),
            2 => Some(Dim::EventName),
            3 => Some(Dim::Prop),
            _ => usize::try_from(code - VISIT_FIRST)
                .ok()
                .and_then(|i| VisitColumn::ALL.get(i).copied())
                .map(Dim::Visit),
        }
    }
}

/// Separates a property's key from its value in a [`Dim::Prop`] row.
/// Control characters are refused in keys at ingest, so the split is
/// unambiguous.
pub const PROP_SEP: char = '\u{1f}';

/// A visit is added to the rollups this long after its last event: the
/// 30-minute visit timeout plus a margin for events still in flight.
pub const VISIT_SETTLED_AFTER: i64 = 30 * 60 + 120;

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
        assert_eq!(Dim::Visit(VisitColumn::EntryPage).code(), VISIT_FIRST);
    }

    #[test]
    fn grains_and_dimensions_keep_their_stored_codes() {
        let grains: Vec<i64> = Grain::ALL.iter().map(|g| g.code()).collect();
        assert_eq!(grains, [0, 1, 3, 2]);
        let dims: Vec<i64> = Dim::all().map(Dim::code).collect();
        let expected: Vec<i64> = [0, 1, 2, 3].into_iter().chain(10..27).collect();
        assert_eq!(dims, expected);
        for dim in Dim::all() {
            assert_eq!(Dim::from_code(dim.code()), Some(dim));
        }
        for code in [-1, 4, 9, 27] {
            assert_eq!(Dim::from_code(code), None);
        }
    }
}
