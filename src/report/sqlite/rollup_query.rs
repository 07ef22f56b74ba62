//! `RollupQuery`: reports without filters, read from the rollups.
//!
//! A range of whole local days is covered by month rows for the whole
//! months inside it, week rows (from Monday) for the whole weeks around
//! them and day rows for the rest ([`cover`]); hour rows serve hourly
//! series.
//! Visits still open are not in the rollups yet, so they are read from
//! `visits` (few rows, through a partial index) and added. Run every report
//! in one read transaction, so the rollups and the open visits are the same
//! instant's.
//!
//! Visitors come from merging the buckets' visitor sketches
//! ([`super::sketch::VisitorSketch`], kept in `rollup_sketches`): exact up to
//! [`super::sketch::SPARSE_MAX`] distinct visitors, within about 2% beyond.
//! A breakdown needs the sketches of the values it shows only: values are
//! ranked by an exact upper bound on their visitors (visits, pageviews or
//! events), and sketches are merged down that ranking until no value left
//! can overtake the last one shown.

use std::collections::HashMap;

use chrono::{Days, Months, NaiveDate};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::filter::glob_of;
use super::rollups::{Dim, Grain, PROP_SEP};
use super::sketch::VisitorUnion;
use super::sketch_cache::{RowKey, SketchCache};
use crate::report::calendar::{self, first_of_month, local_date, midnight, monday_of};
use crate::report::model::{
    BreakdownRow, Dimension, TimeRange, Totals, VisitColumn, count_leading,
};
use crate::store::StoreError;
use crate::store::sites::GoalKind;

/// One stretch of rows: a grain and a half-open range of bucket starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub grain: Grain,
    pub start: i64,
    pub end: i64,
}

/// The rows covering `range` (local midnights to local midnights): whole
/// local months as month rows, whole weeks (from Monday) around them as week
/// rows, the days left as day rows.
pub fn cover(tz: Tz, range: TimeRange) -> Vec<Segment> {
    if range.end <= range.start {
        return Vec::new();
    }
    let first = local_date(tz, range.start);
    let mut month = first_of_month(first);
    if midnight(tz, month) < range.start {
        month = month + Months::new(1);
    }
    let months = whole_units(tz, month, range.end, |d| d + Months::new(1));
    let mut out = Vec::new();
    match months {
        Some((from, to)) => {
            out.extend(weeks_and_days(tz, range.start, from));
            out.push(Segment {
                grain: Grain::Month,
                start: from,
                end: to,
            });
            out.extend(weeks_and_days(tz, to, range.end));
        }
        None => out.extend(weeks_and_days(tz, range.start, range.end)),
    }
    out
}

/// The stretch from the local midnight of `first` to the last of
/// `first`, `next(first)`, … at or before `end`; `None` when not even one
/// unit fits.
fn whole_units(
    tz: Tz,
    first: NaiveDate,
    end: i64,
    next: impl Fn(NaiveDate) -> NaiveDate,
) -> Option<(i64, i64)> {
    let from = midnight(tz, first);
    let (mut unit, mut to) = (first, from);
    loop {
        let after = midnight(tz, next(unit));
        if after > end {
            break;
        }
        to = after;
        unit = next(unit);
    }
    (to > from).then_some((from, to))
}

/// Week rows for the whole weeks in `[start, end)`, day rows around them.
fn weeks_and_days(tz: Tz, start: i64, end: i64) -> Vec<Segment> {
    if end <= start {
        return Vec::new();
    }
    let mut monday = monday_of(local_date(tz, start));
    if midnight(tz, monday) < start {
        monday = monday + Days::new(7);
    }
    let day = |start, end| Segment {
        grain: Grain::Day,
        start,
        end,
    };
    let Some((from, to)) = whole_units(tz, monday, end, |d| d + Days::new(7)) else {
        return vec![day(start, end)];
    };
    [
        day(start, from),
        Segment {
            grain: Grain::Week,
            start: from,
            end: to,
        },
        day(to, end),
    ]
    .into_iter()
    .filter(|s| s.start < s.end)
    .collect()
}

/// Counts of one value, summed over rows, with its visitors merged.
#[derive(Debug, Default, Clone)]
struct Sum {
    visits: i64,
    pageviews: i64,
    events: i64,
    bounces: i64,
    duration: i64,
    visitors: VisitorUnion,
    /// Rows summed, and the visitors stored with the last one: a sum of
    /// one row knows its visitors without reading a sketch.
    rows: u32,
    row_visitors: i64,
}

impl Sum {
    /// Adds a row's visits, pageviews, events, bounces, duration and
    /// visitors, read from columns `first..first + 6`.
    fn add_counts(&mut self, r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<()> {
        self.visits += r.get::<_, i64>(first)?;
        self.pageviews += r.get::<_, i64>(first + 1)?;
        self.events += r.get::<_, i64>(first + 2)?;
        self.bounces += r.get::<_, i64>(first + 3)?;
        self.duration += r.get::<_, i64>(first + 4)?;
        self.row_visitors = r.get(first + 5)?;
        self.rows += 1;
        Ok(())
    }

    /// The visitors of a sum of one row, as stored with it.
    fn single_row_visitors(&self) -> Option<i64> {
        (self.rows == 1).then_some(self.row_visitors)
    }

    fn totals(&mut self) -> Totals {
        Totals {
            // An estimate can overshoot; every visitor sent an event.
            visitors: self
                .single_row_visitors()
                .unwrap_or_else(|| self.visitors.count())
                .min(self.pageviews + self.events),
            pageviews: self.pageviews,
            events: self.events,
            visits: self.visits,
            bounces: self.bounces,
            visit_duration_sum: self.duration,
        }
    }
}

/// Open visits started in `range`, per value of `column` (or all together
/// for `None`): (value, visitor, pageviews, events, bounce, duration).
type OpenVisit = (Option<String>, i64, i64, i64, i64, i64);

fn open_visits(
    conn: &Connection,
    site_id: i64,
    range: TimeRange,
    column: Option<VisitColumn>,
) -> Result<Vec<OpenVisit>, StoreError> {
    let value = column.map_or("NULL", VisitColumn::name);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {value}, visitor_id, pageviews, events, is_bounce, last_seen_at - started_at
         FROM visits
         WHERE site_id = ?1 AND rolled = 0 AND started_at >= ?2 AND started_at < ?3"
    ))?;
    let rows = stmt.query_map(params![site_id, range.start, range.end], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds an open visit to a sum: its visits, bounces and duration, and for an
/// attribute's rows (which count whole visits) its pageviews and events.
fn add_open(sum: &mut Sum, v: &OpenVisit, whole_visit: bool) {
    sum.visits += 1;
    sum.bounces += v.4;
    sum.duration += v.5;
    if whole_visit {
        sum.pageviews += v.2;
        sum.events += v.3;
    }
}

/// The reports of one site without filters, read from the rollups within
/// the caller's read transaction.
#[derive(Clone, Copy)]
pub struct RollupQuery<'a> {
    pub conn: &'a Connection,
    pub cache: &'a SketchCache,
    pub tz: Tz,
    pub site_id: i64,
}

impl RollupQuery<'_> {
    /// Totals of `range` with no filter.
    pub fn totals(&self, range: TimeRange) -> Result<Totals, StoreError> {
        let RollupQuery {
            conn, tz, site_id, ..
        } = *self;
        let mut sum = Sum::default();
        let segments = cover(tz, range);
        for seg in &segments {
            let mut stmt = conn.prepare_cached(
                "SELECT visits, pageviews, events, bounces, duration, visitors FROM rollups
                 WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket >= ?4 AND bucket < ?5",
            )?;
            let mut rows = stmt.query(params![
                site_id,
                seg.grain.code(),
                Dim::Totals.code(),
                seg.start,
                seg.end
            ])?;
            while let Some(r) = rows.next()? {
                sum.add_counts(r, 0)?;
            }
        }
        if sum.single_row_visitors().is_none() {
            self.merge_sketches(Dim::Totals, &segments, "", &mut sum.visitors)?;
        }
        for v in open_visits(conn, site_id, range, None)? {
            add_open(&mut sum, &v, false);
        }
        Ok(sum.totals())
    }

    /// Totals per bucket of a series: `grain` rows (hour or day) assigned to the
    /// bucket holding their start. `buckets` are in order and contiguous.
    pub fn series(&self, buckets: &[TimeRange], hourly: bool) -> Result<Vec<Totals>, StoreError> {
        let RollupQuery { conn, site_id, .. } = *self;
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return Ok(Vec::new());
        };
        if !hourly && buckets.iter().any(|b| b.end - b.start > 2 * 86_400) {
            // Months: each bucket is a range of its own.
            return buckets.iter().map(|b| self.totals(*b)).collect();
        }
        let grain = if hourly { Grain::Hour } else { Grain::Day };
        let mut sums = vec![Sum::default(); buckets.len()];
        let index_of = |ts: i64| {
            buckets
                .partition_point(|b| b.end <= ts)
                .min(buckets.len() - 1)
        };
        let mut stmt = conn.prepare_cached(
            "SELECT bucket, visits, pageviews, events, bounces, duration, visitors FROM rollups
             WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket >= ?4 AND bucket < ?5",
        )?;
        let mut rows = stmt.query(params![
            site_id,
            grain.code(),
            Dim::Totals.code(),
            first.start,
            last.end
        ])?;
        while let Some(r) = rows.next()? {
            sums[index_of(r.get(0)?)].add_counts(r, 1)?;
        }
        // A bucket is one row, whose visitors are stored with it, except
        // around a DST change, where two rows share one.
        for (sum, b) in sums.iter_mut().zip(buckets) {
            if sum.rows > 1 {
                let seg = Segment {
                    grain,
                    start: b.start,
                    end: b.end,
                };
                self.merge_sketches(Dim::Totals, &[seg], "", &mut sum.visitors)?;
            }
        }
        let whole = TimeRange {
            start: first.start,
            end: last.end,
        };
        let mut stmt = conn.prepare_cached(
            "SELECT started_at, is_bounce, last_seen_at - started_at FROM visits
             WHERE site_id = ?1 AND rolled = 0 AND started_at >= ?2 AND started_at < ?3",
        )?;
        let mut rows = stmt.query(params![site_id, whole.start, whole.end])?;
        while let Some(r) = rows.next()? {
            let sum = &mut sums[index_of(r.get(0)?)];
            sum.visits += 1;
            sum.bounces += r.get::<_, i64>(1)?;
            sum.duration += r.get::<_, i64>(2)?;
        }
        Ok(sums.iter_mut().map(Sum::totals).collect())
    }

    /// Rows ordered by visitors (then value), `limit` rows after `offset`.
    pub fn breakdown(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BreakdownRow>, StoreError> {
        let RollupQuery {
            conn, tz, site_id, ..
        } = *self;
        let (dim, prefix) = dim_of(dimension);
        let (low, high) = prefix
            .as_deref()
            .map(prefix_bounds)
            .unwrap_or_else(|| (String::new(), "\u{10FFFF}".to_string()));
        let segments = cover(tz, range);
        // Pass 1: exact counts of every value; sketches stay on disk.
        let mut sums: HashMap<String, Sum> = HashMap::new();
        for seg in &segments {
            // Summed here rather than with GROUP BY, which sorts the rows first.
            let mut stmt = conn.prepare_cached(
                "SELECT value, visits, pageviews, events, bounces, duration, visitors
                 FROM rollups
                 WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND bucket >= ?4 AND bucket < ?5
                    AND value >= ?6 AND value < ?7",
            )?;
            let mut rows = stmt.query(params![
                site_id,
                seg.grain.code(),
                dim.code(),
                seg.start,
                seg.end,
                low,
                high
            ])?;
            while let Some(r) = rows.next()? {
                let value = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                match sums.get_mut(value) {
                    Some(sum) => sum.add_counts(r, 1)?,
                    None => sums
                        .entry(value.to_string())
                        .or_default()
                        .add_counts(r, 1)?,
                }
            }
        }
        // Open visits, for a visit attribute.
        let mut open_ids: HashMap<String, Vec<i64>> = HashMap::new();
        if let Dimension::Visit(column) = dimension {
            for v in open_visits(conn, site_id, range, Some(*column))? {
                let value = v.0.clone().unwrap_or_default();
                add_open(sums.entry(value.clone()).or_default(), &v, true);
                open_ids.entry(value).or_default().push(v.1);
            }
        }
        // A value's visitors never exceed this.
        let bound = |s: &Sum| match dimension {
            Dimension::Visit(_) => s.visits,
            Dimension::Page => s.pageviews,
            Dimension::EventName => s.events,
            Dimension::Prop(_) => s.pageviews + s.events,
        };
        let mut ranked: Vec<(String, Sum)> = sums.into_iter().collect();
        ranked.sort_by(|a, b| bound(&b.1).cmp(&bound(&a.1)).then_with(|| a.0.cmp(&b.0)));
        // Pass 2: visitors of the leading values, widening until settled.
        let bounds: Vec<i64> = ranked.iter().map(|(_, s)| bound(s)).collect();
        let need = (offset + limit).max(0) as usize;
        // A value held in one row (a whole month or week, a single day)
        // needs no sketch, unless open visits add visitors to it.
        let stored = |value: &String, sum: &Sum| {
            sum.single_row_visitors()
                .filter(|_| !open_ids.contains_key(value))
        };
        let visitors = count_leading(&bounds, need, |ranks| {
            let leading = &ranked[ranks];
            let wanted: Vec<&str> = leading
                .iter()
                .filter(|(v, s)| stored(v, s).is_none())
                .map(|(v, _)| v.as_str())
                .collect();
            let mut sketches = self.sketches_of(dim, &segments, &wanted)?;
            Ok::<_, StoreError>(
                leading
                    .iter()
                    .map(|(value, sum)| {
                        if let Some(n) = stored(value, sum) {
                            return n.min(bound(sum));
                        }
                        let mut s = sketches.remove(value).unwrap_or_default();
                        if let Some(ids) = open_ids.get(value) {
                            s.add_ids(ids);
                        }
                        // An estimate can overshoot; the bound is exact.
                        s.count().min(bound(sum))
                    })
                    .collect(),
            )
        })?;
        let mut rows: Vec<BreakdownRow> = ranked
            .into_iter()
            .zip(visitors)
            .map(|((value, s), visitors)| BreakdownRow {
                visitors,
                value: decode_value(dimension, value),
                visits: s.visits,
                pageviews: s.pageviews,
                events: s.events,
                bounces: s.bounces,
                visit_duration_sum: s.duration,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.visitors
                .cmp(&a.visitors)
                .then_with(|| a.value.cmp(&b.value))
        });
        Ok(rows
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect())
    }

    /// Visitors who completed any of `goals` in `range`, and how many events
    /// (or pageviews, for page goals) did. A page goal's `*` matches any run of
    /// characters.
    pub fn goal_visitors(
        &self,
        range: TimeRange,
        goals: &[GoalKind],
    ) -> Result<(i64, i64), StoreError> {
        let RollupQuery {
            conn, tz, site_id, ..
        } = *self;
        let mut union = VisitorUnion::default();
        let mut count = 0;
        let segments = cover(tz, range);
        for goal in goals {
            let (dim, pattern) = match goal {
                GoalKind::Event(name) => (Dim::EventName, glob_literal(name)),
                GoalKind::Page(path) => (Dim::Page, glob_of(path)),
            };
            for seg in &segments {
                let mut stmt = conn.prepare_cached(
                    "SELECT r.pageviews + r.events, s.visitors
                     FROM rollups r LEFT JOIN rollup_sketches s USING (site_id, grain, dim, bucket, value)
                     WHERE r.site_id = ?1 AND r.grain = ?2 AND r.dim = ?3
                        AND r.bucket >= ?4 AND r.bucket < ?5 AND r.value GLOB ?6",
                )?;
                let mut rows = stmt.query(params![
                    site_id,
                    seg.grain.code(),
                    dim.code(),
                    seg.start,
                    seg.end,
                    pattern
                ])?;
                while let Some(r) = rows.next()? {
                    count += r.get::<_, i64>(0)?;
                    if let Some(bytes) = r.get_ref(1)?.as_blob_or_null().ok().flatten() {
                        union.add_bytes(bytes);
                    }
                }
            }
        }
        Ok((union.count(), count))
    }

    /// The merged sketch of each of `values` over `segments`.
    fn sketches_of(
        &self,
        dim: Dim,
        segments: &[Segment],
        values: &[&str],
    ) -> Result<HashMap<String, VisitorUnion>, StoreError> {
        let mut out: HashMap<String, VisitorUnion> = HashMap::new();
        for &value in values {
            let union = out.entry(value.to_string()).or_default();
            self.merge_sketches(dim, segments, value, union)?;
        }
        Ok(out)
    }

    /// Merges into `union` the sketches of `value` over `segments`: from the
    /// cache when it holds the row's current version, else read (and cached).
    /// The index on sketches puts value before bucket, so one seek per segment
    /// finds a value's rows side by side; their versions are read without
    /// touching the sketches' overflow pages.
    fn merge_sketches(
        &self,
        dim: Dim,
        segments: &[Segment],
        value: &str,
        union: &mut VisitorUnion,
    ) -> Result<(), StoreError> {
        let RollupQuery {
            conn,
            cache,
            site_id,
            ..
        } = *self;
        let mut versions = conn.prepare_cached(
            "SELECT bucket, version, rowid FROM rollup_sketches
             WHERE site_id = ?1 AND grain = ?2 AND dim = ?3 AND value = ?4
                AND bucket >= ?5 AND bucket < ?6",
        )?;
        let mut sketch =
            conn.prepare_cached("SELECT visitors FROM rollup_sketches WHERE rowid = ?1")?;
        for seg in segments {
            let mut rows = versions.query(params![
                site_id,
                seg.grain.code(),
                dim.code(),
                value,
                seg.start,
                seg.end
            ])?;
            while let Some(r) = rows.next()? {
                let (bucket, version, rowid): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let key: RowKey = (site_id, seg.grain, dim, bucket, value.into());
                if let Some(bytes) = cache.get(&key, version) {
                    union.add_bytes(&bytes);
                    continue;
                }
                let bytes: Option<Vec<u8>> = sketch.query_row([rowid], |r| r.get(0)).optional()?;
                if let Some(bytes) = bytes {
                    union.add_bytes(&bytes);
                    cache.put(key, version, bytes.into());
                }
            }
        }
        Ok(())
    }
}

/// The rollup dimension and value filter of a breakdown.
fn dim_of(dimension: &Dimension) -> (Dim, Option<String>) {
    match dimension {
        Dimension::Page => (Dim::Page, None),
        Dimension::EventName => (Dim::EventName, None),
        Dimension::Prop(key) => (Dim::Prop, Some(format!("{key}{PROP_SEP}"))),
        Dimension::Visit(column) => (Dim::Visit(*column), None),
    }
}

/// `value >= prefix AND value < prefix-with-last-char-bumped`: one property's rows.
fn prefix_bounds(prefix: &str) -> (String, String) {
    let upper = prefix.trim_end_matches(PROP_SEP).to_string() + "\u{20}";
    (prefix.to_string(), upper)
}

/// The shown value of a stored one: a property's value without its key, and
/// `None` for a missing attribute.
fn decode_value(dimension: &Dimension, value: String) -> Option<String> {
    match dimension {
        Dimension::Prop(_) => value.split_once(PROP_SEP).map(|(_, v)| v.to_string()),
        Dimension::Visit(_) if value.is_empty() => None,
        _ => Some(value),
    }
}

/// A GLOB pattern matching exactly `s`.
fn glob_literal(s: &str) -> String {
    s.replace('[', "[[]")
        .replace('*', "[*]")
        .replace('?', "[?]")
}

/// The first local day whose rollups may lack raw detail: before it, raw
/// events are gone and only unfiltered reports can be answered.
pub fn raw_kept_since(tz: Tz, now: i64, raw_days: i64) -> i64 {
    let cutoff = now - raw_days * 86_400;
    let day = local_date(tz, cutoff) + Days::new(1);
    calendar::midnight(tz, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_months_and_weeks_use_their_rows() {
        let tz = calendar::zone("Europe/Berlin");
        let d = |y, m, d| midnight(tz, chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let seg = |grain, start, end| Segment { grain, start, end };
        // 2024-01-15 is a Monday; 2024-01-29 too, and its week runs into
        // February, so it stays days.
        let range = TimeRange {
            start: d(2024, 1, 15),
            end: d(2024, 4, 3),
        };
        assert_eq!(
            cover(tz, range),
            vec![
                seg(Grain::Week, d(2024, 1, 15), d(2024, 1, 29)),
                seg(Grain::Day, d(2024, 1, 29), d(2024, 2, 1)),
                seg(Grain::Month, d(2024, 2, 1), d(2024, 4, 1)),
                seg(Grain::Day, d(2024, 4, 1), d(2024, 4, 3)),
            ]
        );
        // Saturday 2 March to Sunday 31 March (DST began that day): days to
        // Monday the 4th, three weeks, then days.
        let days = TimeRange {
            start: d(2024, 3, 2),
            end: d(2024, 3, 31),
        };
        assert_eq!(
            cover(tz, days),
            vec![
                seg(Grain::Day, d(2024, 3, 2), d(2024, 3, 4)),
                seg(Grain::Week, d(2024, 3, 4), d(2024, 3, 25)),
                seg(Grain::Day, d(2024, 3, 25), d(2024, 3, 31)),
            ]
        );
        let month = TimeRange {
            start: d(2024, 3, 1),
            end: d(2024, 4, 1),
        };
        assert_eq!(
            cover(tz, month),
            vec![seg(Grain::Month, d(2024, 3, 1), d(2024, 4, 1))]
        );
        let short = TimeRange {
            start: d(2024, 3, 5),
            end: d(2024, 3, 9),
        };
        assert_eq!(
            cover(tz, short),
            vec![seg(Grain::Day, d(2024, 3, 5), d(2024, 3, 9))]
        );
    }
}
