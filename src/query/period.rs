//! Periods (`period`, `date`) resolved to UTC ranges in the site's timezone.

use chrono::{Datelike, Days, Months, NaiveDate, TimeZone};
use chrono_tz::Tz;

use super::{Params, QueryError, bad};
use crate::store::stats::TimeRange;

#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// First and last day, inclusive, in the site's timezone.
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub range: TimeRange,
}

fn parse_date(s: &str) -> Result<NaiveDate, QueryError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| bad(format!("date: `{s}` is not a date like 2024-01-31")))
}

/// Unix seconds of local midnight starting `day` in `tz`.
fn midnight(tz: Tz, day: NaiveDate) -> i64 {
    let naive = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A DST jump can skip midnight; the earliest valid instant that day is used.
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.timestamp())
        .unwrap_or_else(|| naive.and_utc().timestamp())
}

impl Period {
    /// `today` is the current date in the site's timezone.
    pub fn from_params(
        params: &Params,
        timezone: &str,
        today: NaiveDate,
    ) -> Result<Period, QueryError> {
        let tz: Tz = timezone.parse().unwrap_or(Tz::UTC);
        let period = params.get("period").map(String::as_str).unwrap_or("30d");
        let date = params.get("date").map(String::as_str);
        let anchor = match (period, date) {
            ("custom", _) | (_, None) => today,
            (_, Some(d)) => parse_date(d)?,
        };
        let (first, last) = match period {
            "day" => (anchor, anchor),
            "7d" => (anchor - Days::new(6), anchor),
            "30d" => (anchor - Days::new(29), anchor),
            "month" => {
                let first = anchor.with_day(1).expect("day 1");
                (first, first + Months::new(1) - Days::new(1))
            }
            "6mo" | "12mo" => {
                let n = if period == "6mo" { 5 } else { 11 };
                let first = anchor.with_day(1).expect("day 1") - Months::new(n);
                let last = anchor.with_day(1).expect("day 1") + Months::new(1) - Days::new(1);
                (first, last)
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
            range: TimeRange {
                start: midnight(tz, first),
                end: midnight(tz, last + Days::new(1)),
            },
        })
    }
}

/// Today's date in `timezone` at `now` (Unix seconds).
pub fn today_in(timezone: &str, now: i64) -> NaiveDate {
    let tz: Tz = timezone.parse().unwrap_or(Tz::UTC);
    tz.timestamp_opt(now, 0)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default()
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
}
