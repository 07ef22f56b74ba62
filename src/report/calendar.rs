//! Local time for a site: where its hours, days, weeks (from Monday) and
//! months begin.
//!
//! Everything is stored in Unix seconds (UTC); reports are cut in the site's
//! timezone. Rollup buckets and report periods use these same functions, so
//! a period's range always starts where one of its buckets does.

use chrono::{Datelike, NaiveDate, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;

/// The site's timezone, UTC when the stored name is not one.
pub fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(Tz::UTC)
}

/// Unix seconds of the local midnight that starts `day` in `tz`. A DST jump
/// can skip midnight; the earliest valid instant of that day is used then.
pub fn midnight(tz: Tz, day: NaiveDate) -> i64 {
    let naive = day.and_time(NaiveTime::MIN);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            let later = naive.checked_add_signed(chrono::Duration::hours(1))?;
            tz.from_local_datetime(&later).earliest()
        })
        .map(|t| t.timestamp())
        .unwrap_or_else(|| naive.and_utc().timestamp())
}

/// The local date at `ts`.
pub fn local_date(tz: Tz, ts: i64) -> NaiveDate {
    tz.timestamp_opt(ts, 0)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// Start of the local hour holding `ts`. Hours are whole hours of local
/// time, so in a zone offset by 30 or 45 minutes they start off the UTC hour;
/// the two local hours of a DST fall-back are two buckets.
pub fn hour_start(tz: Tz, ts: i64) -> i64 {
    let offset = offset_at(tz, ts);
    let local = ts + offset;
    let start = local - local.rem_euclid(3600) - offset;
    if offset_at(tz, start) == offset {
        return start;
    }
    // The offset changed within this local hour (Lord Howe moves by 30
    // minutes, so a local hour can begin at a transition): the hour began at
    // the change, found by halving on whole minutes.
    let (mut lo, mut hi) = (start.div_euclid(60), ts.div_euclid(60));
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if offset_at(tz, mid * 60) == offset {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi * 60
}

/// The earliest instant of local hour `hour` of `day`, if any of it exists:
/// its start, or the moment a DST change lands inside it.
pub fn first_instant_of_hour(tz: Tz, day: NaiveDate, hour: u32) -> Option<i64> {
    (0..60).find_map(|minute| {
        let naive = day.and_hms_opt(hour, minute, 0)?;
        tz.from_local_datetime(&naive)
            .earliest()
            .map(|t| t.timestamp())
    })
}

fn offset_at(tz: Tz, ts: i64) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&utc(ts))
            .fix()
            .local_minus_utc(),
    )
}

/// Start of the local day holding `ts`.
pub fn day_start(tz: Tz, ts: i64) -> i64 {
    midnight(tz, local_date(tz, ts))
}

/// Start of the local week (from Monday) holding `ts`.
pub fn week_start(tz: Tz, ts: i64) -> i64 {
    midnight(tz, monday_of(local_date(tz, ts)))
}

/// The Monday on or before `day` (`day` itself in the calendar's first
/// days, which have no Monday before them).
pub fn monday_of(day: NaiveDate) -> NaiveDate {
    day.checked_sub_days(chrono::Days::new(u64::from(
        day.weekday().num_days_from_monday(),
    )))
    .unwrap_or(day)
}

/// Start of the local month holding `ts`.
pub fn month_start(tz: Tz, ts: i64) -> i64 {
    midnight(tz, first_of_month(local_date(tz, ts)))
}

pub fn first_of_month(day: NaiveDate) -> NaiveDate {
    // Day 1 of a valid date's month always exists.
    day.with_day(1).unwrap_or(day)
}

fn utc(ts: i64) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .naive_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_buckets() {
        let kolkata = zone("Asia/Kolkata");
        // 2024-03-15 10:10 UTC is 15:40 in Kolkata: the hour began 15:00 local.
        let ts = 1_710_497_400;
        assert_eq!(hour_start(kolkata, ts), ts - 40 * 60);
        assert_eq!(hour_start(zone("UTC"), ts), ts - 10 * 60);
        // Berlin, 2024-10-27: 02:30 happens twice; each is its own hour.
        let berlin = zone("Europe/Berlin");
        let first = 1_729_989_000; // 00:30 UTC = 02:30 CEST
        let second = first + 3600; // 01:30 UTC = 02:30 CET
        assert_eq!(hour_start(berlin, second) - hour_start(berlin, first), 3600);
        assert_eq!(day_start(berlin, first), day_start(berlin, second));
        assert_eq!(
            day_start(berlin, first),
            midnight(berlin, NaiveDate::from_ymd_opt(2024, 10, 27).unwrap())
        );
        assert!(month_start(berlin, first) < day_start(berlin, first));
        // That Sunday's week began on Monday the 21st, local midnight.
        assert_eq!(
            week_start(berlin, first),
            midnight(berlin, NaiveDate::from_ymd_opt(2024, 10, 21).unwrap())
        );
        // Lord Howe, 2026-10-04: 02:00 (+10:30) jumps to 02:30 (+11). The
        // local hour 02 begins at the jump, as the report's hour bucket does.
        let howe = zone("Australia/Lord_Howe");
        let day = NaiveDate::from_ymd_opt(2026, 10, 4).unwrap();
        let jump = first_instant_of_hour(howe, day, 2).unwrap();
        assert_eq!(hour_start(howe, jump + 1200), jump);
        let one = first_instant_of_hour(howe, day, 1).unwrap();
        assert_eq!(hour_start(howe, jump - 60), one);
        assert_eq!(jump - one, 3600);
        // Berlin skips 02:00-03:00 entirely on 2024-03-31.
        let spring = NaiveDate::from_ymd_opt(2024, 3, 31).unwrap();
        assert_eq!(first_instant_of_hour(berlin, spring, 2), None);
        assert_eq!(zone("Not/AZone"), zone("UTC"));
    }
}
