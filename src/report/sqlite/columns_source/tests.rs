//! The column store against the raw tables: forty days of traffic in a
//! real store (visitor ids salted per day, visits across midnight, events
//! of no visit row), every day sealed, and many filter sets and ranges in
//! several timezones, so ranges cut UTC days: every answer must be the one
//! `raw.rs` gives. And sealing day by day with days sealed again and the
//! store reopened gives the same answers as sealing each day once.

use std::sync::Arc;

use chrono::NaiveDate;
use rusqlite::Connection;

use super::read_day;
use crate::report::calendar;
use crate::report::columns::ColumnStore;
use crate::report::model::{
    Dimension, Filter, FilterField, FilterOp, TimeRange, Totals, VisitColumn,
};
use crate::report::sqlite::raw;
use crate::store::events::insert_events;
use crate::store::sites::add_site;
use crate::store::{NewEvent, Store, VisitDims, VisitRecord, visits};

const DAY: i64 = 86_400;
/// 2024-03-01 00:00 UTC: New York's clocks change on the 10th.
const START: i64 = 1_709_251_200;
const DAYS: i64 = 40;

/// splitmix64: a seeded generator, so a failure can be run again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PATHS: &[&str] = &[
    "/",
    "/blog",
    "/blog/a",
    "/blog/a/b",
    "/Blog/A",
    "/docs/x",
    "/pricing",
];

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// Writes the traffic into a new store: site 1, in UTC.
fn traffic(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, 2).unwrap();
    let conn = store.write_connection().unwrap();
    add_site(&conn, "example.com", "UTC", false).unwrap();
    let mut rng = Rng(17);
    let mut events: Vec<NewEvent> = Vec::new();
    let mut visit_rows: Vec<VisitRecord> = Vec::new();
    let mut next_event = 1;
    let mut next_visit = 1_000;
    for day in 0..DAYS {
        for _ in 0..(30 + rng.below(30)) {
            let person = rng.below(60) as i64;
            // A visitor id lasts a UTC day (the daily salt); a visit keeps
            // the id it started with past midnight.
            let utc_day = START / DAY + day;
            let visitor_id = person * 100_000 + utc_day;
            let late = rng.chance(12);
            let started = START
                + day * DAY
                + if late {
                    DAY - 1 - rng.below(2400) as i64
                } else {
                    rng.below(DAY as u64) as i64
                };
            next_visit += 1;
            let visit_id = next_visit;
            let dims = VisitDims {
                source: rng.pick(&[None, s("Google"), s("Bing"), s("Twitter"), s("google")]),
                referrer: rng.pick(&[None, s("https://news.example/x")]),
                utm_campaign: rng.pick(&[None, None, s("spring")]),
                country: rng.pick(&[None, s("US"), s("DE"), s("FR")]),
                city: rng.pick(&[None, s("Berlin"), s("Paris")]),
                browser: rng.pick(&[s("Chrome"), s("Firefox"), s("Safari")]),
                browser_version: rng.pick(&[s("120"), s("121")]),
                os: rng.pick(&[s("Linux"), s("Mac"), s("iOS")]),
                device: rng.pick(&[s("Desktop"), s("Mobile")]),
                ..VisitDims::default()
            };
            let mut t = started;
            let (mut pageviews, mut custom) = (0, 0);
            let (mut entry, mut exit) = (None, None);
            let mut seen: Vec<(String, String)> = Vec::new();
            let mut last_seen = started;
            // Rare visits, held to the raw answers all the same: one whose
            // first event came before its start (clocks of concurrent
            // requests), one with an event a day and a half on.
            let odd = rng.below(100);
            for n in 0..(1 + rng.below(6)) {
                if n > 0 {
                    t += 30 + rng.below(if late { 1800 } else { 900 }) as i64;
                }
                let t = match (odd, n) {
                    // (Within its UTC day: one sealed before its visit
                    // started could not know the visit.)
                    (0..=2, 0) => (started - 600 - odd as i64 * 3600).max(started - started % DAY),
                    (3, 1) => t + 130_000,
                    _ => t,
                };
                let kind = rng.below(10);
                let (name, path) = match kind {
                    0 => ("Signup".to_string(), rng.pick(PATHS)),
                    1 => ("Download".to_string(), rng.pick(PATHS)),
                    2 => ("engagement".to_string(), rng.pick(PATHS)),
                    _ => ("pageview".to_string(), rng.pick(PATHS)),
                };
                let props = match kind {
                    0 | 1 => Some(
                        rng.pick(&[
                            r#"{"plan":"pro"}"#,
                            r#"{"plan":"free","ref":"mail"}"#,
                            r#"{"ref":"Mail"}"#,
                        ])
                        .to_string(),
                    ),
                    _ if rng.chance(15) => Some(r#"{"author":"ann","plan":"pro"}"#.to_string()),
                    _ => None,
                };
                if name == "pageview" {
                    pageviews += 1;
                    entry.get_or_insert(path.to_string());
                    exit = Some(path.to_string());
                } else if name != "engagement" {
                    custom += 1;
                }
                let key = (name.clone(), path.to_string());
                let first_view = !seen.contains(&key);
                seen.push(key);
                events.push(NewEvent {
                    id: next_event,
                    site_id: 1,
                    visitor_id,
                    ts: t,
                    name,
                    hostname: "example.com".into(),
                    path: path.to_string(),
                    props,
                    visit_id,
                    first_of_visit: None,
                    first_view,
                    ..NewEvent::test_pageview("/")
                });
                next_event += 1;
                last_seen = last_seen.max(t);
            }
            // A few visits never got their row: their events are orphans.
            if rng.chance(3) {
                continue;
            }
            visit_rows.push(VisitRecord {
                id: visit_id,
                site_id: 1,
                visitor_id,
                seq: 1,
                started_at: started,
                last_seen_at: last_seen,
                entry_page: entry,
                exit_page: exit,
                pageviews,
                events: custom,
                interactive: 1,
                is_bounce: pageviews + custom <= 1,
                dims: Arc::new(dims),
            });
        }
    }
    let tx = conn.unchecked_transaction().unwrap();
    insert_events(&tx, &events, false).unwrap();
    for v in &visit_rows {
        visits::upsert(&tx, v).unwrap();
    }
    tx.commit().unwrap();
    store
}

fn days() -> std::ops::Range<i64> {
    START / DAY..START / DAY + DAYS + 1
}

/// Every day sealed once, in order.
fn sealed(conn: &Connection, dir: &std::path::Path) -> ColumnStore {
    let columns = ColumnStore::open(dir).unwrap();
    for day in days() {
        columns
            .append_day(1, day, read_day(conn, 1, day).unwrap())
            .unwrap();
    }
    columns
}

fn filter(field: FilterField, op: FilterOp, values: &[Option<&str>]) -> Filter {
    Filter {
        field,
        op,
        values: values.iter().map(|v| v.map(str::to_string)).collect(),
    }
}

/// A random set of up to three filters of every kind.
fn filters(rng: &mut Rng) -> Vec<Filter> {
    use FilterOp::{Contains, Is, IsNot};
    let visit = FilterField::Visit;
    let choices: Vec<Filter> = vec![
        filter(visit(VisitColumn::Source), Is, &[Some("Google")]),
        filter(visit(VisitColumn::Source), IsNot, &[Some("Google"), None]),
        filter(visit(VisitColumn::Source), Contains, &[Some("GOO")]),
        filter(visit(VisitColumn::Source), Is, &[None]),
        filter(visit(VisitColumn::Country), IsNot, &[None]),
        filter(visit(VisitColumn::Country), Is, &[Some("DE"), None]),
        filter(visit(VisitColumn::Browser), Is, &[Some("Chrome")]),
        filter(visit(VisitColumn::EntryPage), Is, &[Some("/blog")]),
        filter(visit(VisitColumn::ExitPage), Contains, &[Some("blog")]),
        filter(visit(VisitColumn::EntryPage), Is, &[None]),
        filter(FilterField::Page, Is, &[Some("/blog/**")]),
        filter(FilterField::Page, Is, &[Some("/blog*")]),
        filter(FilterField::Page, IsNot, &[Some("/")]),
        filter(FilterField::Page, Contains, &[Some("BLOG")]),
        filter(FilterField::EventName, Is, &[Some("Signup")]),
        filter(FilterField::EventName, IsNot, &[Some("pageview")]),
        filter(FilterField::Prop("plan".into()), Is, &[Some("pro")]),
        filter(FilterField::Prop("plan".into()), IsNot, &[Some("pro")]),
        filter(FilterField::Prop("ref".into()), Contains, &[Some("mail")]),
        filter(FilterField::Prop("author".into()), Is, &[None]),
    ];
    (0..rng.below(4)).map(|_| rng.pick(&choices)).collect()
}

const ZONES: &[&str] = &["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"];

/// `n` local days from a random date, in a random timezone.
fn local_days(rng: &mut Rng, n: i64) -> Vec<TimeRange> {
    let tz = calendar::zone(rng.pick(ZONES));
    let first = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
        + chrono::Duration::days(rng.below((DAYS - n).max(1) as u64) as i64);
    (0..n)
        .map(|k| TimeRange {
            start: calendar::midnight(tz, first + chrono::Duration::days(k)),
            end: calendar::midnight(tz, first + chrono::Duration::days(k + 1)),
        })
        .collect()
}

fn dimensions() -> Vec<Dimension> {
    vec![
        Dimension::Page,
        Dimension::EventName,
        Dimension::Prop("plan".into()),
        Dimension::Prop("ref".into()),
        Dimension::Visit(VisitColumn::Source),
        Dimension::Visit(VisitColumn::EntryPage),
        Dimension::Visit(VisitColumn::ExitPage),
        Dimension::Visit(VisitColumn::Country),
        Dimension::Visit(VisitColumn::City),
    ]
}

#[test]
fn every_answer_is_the_raw_tables_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = traffic(dir.path());
    let conn = store.reader().unwrap();
    let columns = sealed(&conn, &dir.path().join("columns"));
    let mut rng = Rng(29);
    let mut compared = 0;
    for round in 0..160 {
        let filters = filters(&mut rng);
        let n = rng.pick(&[1, 2, 7, 30]);
        let buckets = if round % 5 == 0 {
            // Hours of one local day.
            let day = local_days(&mut rng, 1)[0];
            (0..24)
                .map(|h| TimeRange {
                    start: day.start + h * 3600,
                    end: (day.start + (h + 1) * 3600).min(day.end),
                })
                .collect()
        } else {
            local_days(&mut rng, n)
        };
        let range = TimeRange {
            start: buckets[0].start,
            end: buckets[buckets.len() - 1].end,
        };
        let what = format!("round {round}: {filters:?} over {range:?}");
        let expected = raw::totals(&conn, 1, range, &filters).unwrap();
        assert_eq!(
            columns.totals(1, range, &filters).unwrap(),
            expected,
            "{what}"
        );
        let expected: Vec<Totals> = buckets
            .iter()
            .map(|b| raw::totals(&conn, 1, *b, &filters).unwrap())
            .collect();
        assert_eq!(
            columns.series(1, &buckets, &filters).unwrap(),
            expected,
            "{what}"
        );
        for dimension in dimensions() {
            let (limit, offset) = (rng.pick(&[1, 3, 9, 100]), rng.pick(&[0, 0, 2]));
            let expected =
                raw::breakdown(&conn, 1, range, &dimension, &filters, limit, offset).unwrap();
            let got = columns
                .breakdown(1, range, &dimension, &filters, true, limit, offset)
                .unwrap();
            assert_eq!(got, expected, "{what}: {dimension:?} {limit} from {offset}");
            compared += expected.len();
        }
        let limit = rng.pick(&[1, 10]);
        assert_eq!(
            columns.prop_keys(1, range, &filters, limit).unwrap(),
            raw::prop_keys(&conn, 1, range, &filters, limit).unwrap(),
            "{what}"
        );
    }
    // The rounds did compare rows, not empty lists.
    assert!(compared > 2_000, "{compared} rows compared");
}

/// Answers of two stores over a sample of filters and ranges.
fn assert_same(a: &ColumnStore, b: &ColumnStore) {
    let mut rng = Rng(41);
    for _ in 0..40 {
        let filters = filters(&mut rng);
        let n = rng.pick(&[1, 7, 30]);
        let buckets = local_days(&mut rng, n);
        let range = TimeRange {
            start: buckets[0].start,
            end: buckets[buckets.len() - 1].end,
        };
        assert_eq!(
            a.series(1, &buckets, &filters).unwrap(),
            b.series(1, &buckets, &filters).unwrap()
        );
        for dimension in dimensions() {
            assert_eq!(
                a.breakdown(1, range, &dimension, &filters, true, 9, 0)
                    .unwrap(),
                b.breakdown(1, range, &dimension, &filters, true, 9, 0)
                    .unwrap(),
                "{dimension:?} {filters:?}"
            );
        }
    }
}

#[test]
fn sealing_again_and_reopening_change_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = traffic(dir.path());
    let conn = store.reader().unwrap();
    let once = sealed(&conn, &dir.path().join("once"));
    let path = dir.path().join("again");
    let mut again = ColumnStore::open(&path).unwrap();
    for (k, day) in days().enumerate() {
        let rows = read_day(&conn, 1, day).unwrap();
        // The day as it stood at noon, then whole: the newest day sealed
        // again with more visits.
        let noon = day * DAY + DAY / 2;
        let mut morning = rows.clone();
        morning.events.retain(|e| e.ts < noon);
        morning.visits.retain(|v| v.started_at < noon);
        again.append_day(1, day, morning).unwrap();
        again.append_day(1, day, rows).unwrap();
        if k % 3 == 1 {
            // The day before, sealed again with a visit changed since: the
            // same visits, so their numbers stay.
            let mut changed = read_day(&conn, 1, day - 1).unwrap();
            if let Some(v) = changed.visits.last_mut() {
                v.pageviews += 5;
                v.last_seen_at += 60;
            }
            again.append_day(1, day - 1, changed).unwrap();
            again
                .append_day(1, day - 1, read_day(&conn, 1, day - 1).unwrap())
                .unwrap();
        }
        if k % 5 == 4 {
            drop(again);
            again = ColumnStore::open(&path).unwrap();
        }
    }
    assert_eq!(again.sealed_days(1).unwrap(), days().collect::<Vec<_>>());
    assert_same(&once, &again);
}
