//! Periods (`period`, `date`) resolved to UTC ranges in the site's timezone.
//!
//! Dates come from requests, so every step of date arithmetic is checked:
//! a date outside [`FIRST_YEAR`]..=[`LAST_YEAR`] is refused naming `date`,
//! and a step that would still leave chrono's calendar is refused the same
//! way instead of panicking.

use chrono::{Datelike, Days, Months, NaiveDate};
use chrono_tz::Tz;

use super::{Params, QueryError, bad};
use crate::report::calendar::{first_instant_of_hour, first_of_month, local_date, midnight, zone};
use crate::report::model::TimeRange;

/// The first and last year a request may name. Nothing is stored before
/// Unix time began, and four-digit years keep every period (12 months back,
/// its previous period as long again) far inside chrono's calendar.
pub const FIRST_YEAR: i32 = 1970;
pub const LAST_YEAR: i32 = 9999;

#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// First and last day, inclusive, in the site's timezone.
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub range: TimeRange,
}

fn parse_date(s: &str) -> Result<NaiveDate, QueryError> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| bad(format!("date: `{s}` is not a date like 2024-01-31")))?;
    if !(FIRST_YEAR..=LAST_YEAR).contains(&date.year()) {
        return Err(bad(format!(
            "date: `{s}` is outside the years {FIRST_YEAR} to {LAST_YEAR}"
        )));
    }
    Ok(date)
}

/// A step of date arithmetic that left the calendar.
fn out_of_range() -> QueryError {
    bad(format!(
        "date: the period reaches outside the years Tally reports on ({FIRST_YEAR} to {LAST_YEAR})"
    ))
}

fn days_before(day: NaiveDate, n: u64) -> Result<NaiveDate, QueryError> {
    day.checked_sub_days(Days::new(n)).ok_or_else(out_of_range)
}

fn days_after(day: NaiveDate, n: u64) -> Result<NaiveDate, QueryError> {
    day.checked_add_days(Days::new(n)).ok_or_else(out_of_range)
}

/// The last day of the month holding `day`.
fn last_of_month(day: NaiveDate) -> Result<NaiveDate, QueryError> {
    let next = first_of_month(day)
        .checked_add_months(Months::new(1))
        .ok_or_else(out_of_range)?;
    days_before(next, 1)
}

/// The UTC range from the local midnight starting `first` to the one
/// ending `last`.
fn range_of(tz: Tz, first: NaiveDate, last: NaiveDate) -> Result<TimeRange, QueryError> {
    Ok(TimeRange {
        start: midnight(tz, first),
        end: midnight(tz, days_after(last, 1)?),
    })
}

impl Period {
    /// `today` is the current date in the site's timezone.
    pub fn from_params(
        params: &Params,
        timezone: &str,
        today: NaiveDate,
    ) -> Result<Period, QueryError> {
        let tz: Tz = zone(timezone);
        let period = params.get("period").map(String::as_str).unwrap_or("30d");
        let date = params.get("date").map(String::as_str);
        let anchor = match (period, date) {
            ("custom", _) | (_, None) => today,
            (_, Some(d)) => parse_date(d)?,
        };
        let (first, last) = match period {
            "day" => (anchor, anchor),
            "7d" => (days_before(anchor, 6)?, anchor),
            "30d" => (days_before(anchor, 29)?, anchor),
            "month" => (first_of_month(anchor), last_of_month(anchor)?),
            "6mo" | "12mo" => {
                let n = if period == "6mo" { 5 } else { 11 };
                let first = first_of_month(anchor)
                    .checked_sub_months(Months::new(n))
                    .ok_or_else(out_of_range)?;
                (first, last_of_month(anchor)?)
            }
            "custom" => {
                let d = date
                    .ok_or_else(|| bad("date: period=custom needs date=YYYY-MM-DD,YYYY-MM-DD"))?;
                let (a, b) = d
                    .split_once(',')
                    .ok_or_else(|| bad("date: period=custom needs date=YYYY-MM-DD,YYYY-MM-DD"))?;
                let (a, b) = (parse_date(a)?, parse_date(b)?);
                if b < a {
                    return Err(bad("date: the end of a custom range is before its start"));
                }
                (a, b)
            }
            other => {
                return Err(bad(format!(
                    "period: `{other}` is not one of day, 7d, 30d, month, 6mo, 12mo, custom"
                )));
            }
        };
        Ok(Period {
            first,
            last,
            range: range_of(tz, first, last)?,
        })
    }
}

impl Period {
    /// The period of as many days that ends the day before this one starts.
    pub fn previous(&self, timezone: &str) -> Result<Period, QueryError> {
        let tz: Tz = zone(timezone);
        let days = (self.last - self.first).num_days().unsigned_abs() + 1;
        let last = days_before(self.first, 1)?;
        let first = days_before(self.first, days)?;
        Ok(Period {
            first,
            last,
            range: range_of(tz, first, last)?,
        })
    }
}

/// Today's date in `timezone` at `now` (Unix seconds).
pub fn today_in(timezone: &str, now: i64) -> NaiveDate {
    local_date(zone(timezone), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)], tz: &str) -> Result<Period, QueryError> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Period::from_params(&params, tz, NaiveDate::from_ymd_opt(2024, 3, 15).unwrap())
    }

    #[test]
    fn periods() {
        let day = p(&[("period", "day")], "UTC").unwrap();
        assert_eq!(day.range.end - day.range.start, 86_400);
        let berlin = p(&[("period", "day")], "Europe/Berlin").unwrap();
        assert_eq!(day.range.start - berlin.range.start, 3600);
        let week = p(&[("period", "7d"), ("date", "2024-03-10")], "UTC").unwrap();
        assert_eq!(week.first, NaiveDate::from_ymd_opt(2024, 3, 4).unwrap());
        let month = p(&[("period", "month")], "UTC").unwrap();
        assert_eq!(month.last, NaiveDate::from_ymd_opt(2024, 3, 31).unwrap());
        let custom = p(
            &[("period", "custom"), ("date", "2024-01-01,2024-01-31")],
            "UTC",
        )
        .unwrap();
        assert_eq!(custom.range.end - custom.range.start, 31 * 86_400);
        assert!(p(&[("period", "week")], "UTC").is_err());
        assert!(p(&[("period", "custom")], "UTC").is_err());
        assert!(p(&[("period", "day"), ("date", "2024-13-01")], "UTC").is_err());
    }

    fn message(e: QueryError) -> String {
        match e {
            QueryError::BadParam(m) => m,
            other => panic!("not a parameter error: {other}"),
        }
    }

    const PERIODS: &[&str] = &["day", "7d", "30d", "month", "6mo", "12mo"];
    const ZONES: &[&str] = &["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"];

    #[test]
    fn dates_outside_the_window_are_refused_naming_date() {
        let edges = [
            "+262142-12-31",
            "-262143-01-01",
            "0000-01-01",
            "1969-12-31",
            "+10000-01-01",
        ];
        for tz in ZONES {
            for date in edges {
                for period in PERIODS {
                    let e = p(&[("period", period), ("date", date)], tz).unwrap_err();
                    assert!(message(e).starts_with("date:"), "{period} {date} {tz}");
                }
                for range in [format!("{date},2024-01-01"), format!("2024-01-01,{date}")] {
                    let e = p(&[("period", "custom"), ("date", &range)], tz).unwrap_err();
                    assert!(message(e).starts_with("date:"), "custom {range} {tz}");
                }
            }
        }
    }

    #[test]
    fn the_ends_of_the_window_resolve_with_their_previous_period_and_buckets() {
        let mut cases: Vec<(String, String)> = Vec::new();
        for date in ["1970-01-01", "9999-12-31"] {
            for period in PERIODS {
                cases.push((period.to_string(), date.to_string()));
            }
        }
        cases.push(("custom".into(), "1970-01-01,9999-12-31".into()));
        cases.push(("custom".into(), "9999-12-31,9999-12-31".into()));
        for tz in ZONES {
            for (period, date) in &cases {
                let got = p(&[("period", period), ("date", date)], tz).unwrap();
                assert!(got.range.start < got.range.end, "{period} {date} {tz}");
                let before = got.previous(tz).unwrap();
                assert_eq!(before.range.end, got.range.start, "{period} {date} {tz}");
                for interval in [Interval::Hour, Interval::Date, Interval::Month] {
                    // Too many buckets is a refusal; either way, no panic.
                    if let Ok(b) = got.buckets(interval, tz) {
                        assert_eq!(b.last().unwrap().range.end, got.range.end);
                    }
                    let _ = before.buckets(interval, tz);
                }
            }
        }
    }
}

/// How a timeseries is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Date,
    Month,
}

impl Interval {
    /// `interval`, or Plausible's default for the period: hours for a day,
    /// months for 6mo and 12mo, dates otherwise.
    pub fn from_params(params: &Params) -> Result<Interval, QueryError> {
        match params.get("interval").map(String::as_str) {
            Some("hour") => Ok(Interval::Hour),
            Some("date") | Some("day") => Ok(Interval::Date),
            Some("month") => Ok(Interval::Month),
            Some(other) => Err(bad(format!(
                "interval: `{other}` is not one of hour, date, month"
            ))),
            None => Ok(match params.get("period").map(String::as_str) {
                Some("day") => Interval::Hour,
                Some("6mo") | Some("12mo") => Interval::Month,
                _ => Interval::Date,
            }),
        }
    }
}

/// One slice of a timeseries: its label as Plausible writes it, and its range.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub label: String,
    pub range: TimeRange,
}

/// Buckets beyond this are refused rather than computed (8 days of hours
/// already make 192; a year of hours would be 8,760 queries).
const MAX_BUCKETS: usize = 800;

impl Period {
    /// Every bucket of the period, in order, including empty ones. Hours are
    /// local hours: a day with a DST jump has 23 or 25 of them.
    pub fn buckets(&self, interval: Interval, timezone: &str) -> Result<Vec<Bucket>, QueryError> {
        let tz: Tz = zone(timezone);
        let mut starts: Vec<(String, i64)> = Vec::new();
        let mut day = self.first;
        match interval {
            Interval::Hour => {
                while day <= self.last {
                    for h in 0..24 {
                        // A local hour skipped by DST has no bucket; one that
                        // DST enters halfway begins at the change.
                        if let Some(t) = first_instant_of_hour(tz, day, h) {
                            let label = format!("{} {h:02}:00:00", day.format("%Y-%m-%d"));
                            starts.push((label, t));
                        }
                    }
                    match day.succ_opt() {
                        Some(next) if starts.len() <= MAX_BUCKETS => day = next,
                        _ => break,
                    }
                }
            }
            Interval::Date => {
                while day <= self.last && starts.len() <= MAX_BUCKETS {
                    starts.push((day.format("%Y-%m-%d").to_string(), midnight(tz, day)));
                    let Some(next) = day.succ_opt() else { break };
                    day = next;
                }
            }
            Interval::Month => {
                let mut month = first_of_month(self.first);
                while month <= self.last && starts.len() <= MAX_BUCKETS {
                    let start = midnight(tz, month).max(self.range.start);
                    starts.push((month.format("%Y-%m-%d").to_string(), start));
                    let Some(next) = month.checked_add_months(Months::new(1)) else {
                        break;
                    };
                    month = next;
                }
            }
        }
        if starts.len() > MAX_BUCKETS {
            return Err(bad(format!(
                "interval: too many buckets for this period (at most {MAX_BUCKETS}); use a coarser interval"
            )));
        }
        let ends: Vec<i64> = starts
            .iter()
            .skip(1)
            .map(|s| s.1)
            .chain(std::iter::once(self.range.end))
            .collect();
        Ok(starts
            .into_iter()
            .zip(ends)
            .map(|((label, start), end)| Bucket {
                label,
                range: TimeRange { start, end },
            })
            .collect())
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    fn period(pairs: &[(&str, &str)], tz: &str) -> Period {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Period::from_params(&params, tz, NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()).unwrap()
    }

    #[test]
    fn buckets_cover_the_period_without_gaps() {
        let p = period(&[("period", "7d")], "Europe/Berlin");
        let b = p.buckets(Interval::Date, "Europe/Berlin").unwrap();
        assert_eq!(b.len(), 7);
        assert_eq!(b[0].range.start, p.range.start);
        assert_eq!(b.last().unwrap().range.end, p.range.end);
        assert!(b.windows(2).all(|w| w[0].range.end == w[1].range.start));
        // 2024-03-31 lost an hour in Berlin.
        let day = period(&[("period", "day")], "Europe/Berlin");
        let hours = day.buckets(Interval::Hour, "Europe/Berlin").unwrap();
        assert_eq!(hours.len(), 23);
        assert_eq!(hours[0].label, "2024-03-31 00:00:00");
        let year = period(&[("period", "12mo")], "UTC");
        let months = year.buckets(Interval::Month, "UTC").unwrap();
        assert_eq!(months.len(), 12);
        assert_eq!(months[0].label, "2023-04-01");
        assert!(year.buckets(Interval::Hour, "UTC").is_err());
        let prev = p.previous("Europe/Berlin").unwrap();
        assert_eq!(prev.range.end, p.range.start);
        assert_eq!((prev.last - prev.first).num_days(), 6);
    }
}
