//! Tests of the column store on rows made here: damaged files are errors,
//! never panics; appends out of order are refused and change nothing; a
//! removed site and dropped days are gone. (Its answers are held to the
//! raw tables' in `report::sqlite::columns_source`.)

use std::path::Path;

use super::*;
use crate::report::model::{FilterField, FilterOp};

pub(super) const DAY: i64 = 86_400;
pub(super) const D0: i64 = 20_000;

pub(super) fn visit(id: i64, visitor: i64, at: i64, source: Option<&str>) -> DayVisit {
    let mut v = DayVisit {
        id,
        visitor_id: visitor,
        started_at: at,
        last_seen_at: at + 120,
        pageviews: 2,
        events: 1,
        ..DayVisit::default()
    };
    v.values[0] = Some("/".into());
    v.values[1] = Some("/blog/a".into());
    v.values[VisitColumn::Source.index()] = source.map(str::to_string);
    v
}

pub(super) fn event(
    id: i64,
    visit: i64,
    visitor: i64,
    ts: i64,
    name: &str,
    path: &str,
) -> DayEvent {
    DayEvent {
        ts,
        id,
        visit_id: visit,
        visitor_id: visitor,
        name: name.into(),
        path: path.into(),
        props: (name != "pageview").then(|| r#"{"plan":"pro"}"#.to_string()),
        first_view: true,
    }
}

/// Day `d` (from D0): two visits, one past midnight, and their events.
fn rows(d: i64) -> DayRows {
    let t = (D0 + d) * DAY;
    let (a, b) = (d * 10 + 1, d * 10 + 2);
    DayRows {
        visits: vec![
            visit(a, a, t + 100, Some("Google")),
            visit(b, b, t + DAY - 60, None),
        ],
        events: vec![
            event(a * 10, a, a, t + 100, "pageview", "/"),
            event(a * 10 + 1, a, a, t + 150, "Signup", "/"),
            event(a * 10 + 2, a, a, t + 200, "pageview", "/blog/a"),
            event(b * 10, b, b, t + DAY - 60, "pageview", "/"),
        ],
    }
}

/// The next day's events of the visit past midnight.
fn with_late_event(d: i64, mut r: DayRows) -> DayRows {
    if d > 0 {
        let b = (d - 1) * 10 + 2;
        r.events.push(event(
            b * 10 + 1,
            b,
            b,
            (D0 + d) * DAY + 30,
            "pageview",
            "/blog/b",
        ));
    }
    r
}

pub(super) fn sealed(dir: &Path, days: i64) -> ColumnStore {
    let store = ColumnStore::open(dir).unwrap();
    for d in 0..days {
        store
            .append_day(1, D0 + d, with_late_event(d, rows(d)))
            .unwrap();
    }
    store
}

pub(super) fn all() -> TimeRange {
    TimeRange {
        start: D0 * DAY,
        end: (D0 + 3) * DAY,
    }
}

/// Every kind of report, as a result.
fn everything(dir: &Path) -> Result<(), ColumnError> {
    let store = ColumnStore::open(dir)?;
    let page = Filter {
        field: FilterField::Page,
        op: FilterOp::Is,
        values: vec![Some("/blog/**".into())],
    };
    let source = Filter {
        field: FilterField::Visit(VisitColumn::Source),
        op: FilterOp::Is,
        values: vec![Some("Google".into())],
    };
    let entry = Filter {
        field: FilterField::Visit(VisitColumn::EntryPage),
        op: FilterOp::Contains,
        values: vec![Some("/".into())],
    };
    for filters in [vec![], vec![page], vec![source, entry]] {
        store.totals(1, all(), &filters)?;
        let days: Vec<TimeRange> = (0..3)
            .map(|d| TimeRange {
                start: (D0 + d) * DAY + 3600,
                end: (D0 + d + 1) * DAY + 3600,
            })
            .collect();
        store.series(1, &days, &filters)?;
        for dim in [
            Dimension::Page,
            Dimension::EventName,
            Dimension::Prop("plan".into()),
            Dimension::Visit(VisitColumn::Source),
            Dimension::Visit(VisitColumn::ExitPage),
        ] {
            store.breakdown(1, all(), &dim, &filters, true, 10, 0)?;
        }
        store.prop_keys(1, all(), &filters, 10)?;
    }
    Ok(())
}

#[test]
fn answers_on_rows_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path(), 3);
    let t = store.totals(1, all(), &[]).unwrap();
    // Three days of two visits; the one past midnight of day 1 has its
    // event on day 2 (the last day's has none after midnight: not sealed).
    assert_eq!((t.visits, t.visitors, t.pageviews, t.events), (6, 6, 11, 3));
    let google = Filter {
        field: FilterField::Visit(VisitColumn::Source),
        op: FilterOp::Is,
        values: vec![None],
    };
    let blog_b = Filter {
        field: FilterField::Page,
        op: FilterOp::Is,
        values: vec![Some("/blog/b".into())],
    };
    let day0 = TimeRange {
        start: D0 * DAY,
        end: (D0 + 1) * DAY,
    };
    // The visit of day 0 with no source had its /blog/b view after midnight.
    let t = store.totals(1, day0, &[google, blog_b]).unwrap();
    assert_eq!((t.visits, t.pageviews, t.visitors), (1, 0, 0));
}

/// The same bytes with the container's checksum made right again: the
/// structural checks after it must catch what it no longer does.
fn with_checksum(mut b: Vec<u8>) -> Vec<u8> {
    if b.len() >= 32 {
        let crc = crc32fast::hash(&b[32..]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    drop(sealed(dir.path(), 3));
    everything(dir.path()).unwrap();
    let site = dir.path().join("1");
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "lock"))
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
    let restore = || {
        std::fs::create_dir_all(&site).unwrap();
        for (p, b) in &files {
            std::fs::write(p, b).unwrap();
        }
    };
    for (file, good) in &files {
        let mut cases: Vec<(String, Vec<u8>, bool)> = Vec::new();
        for cut in [0, 10, 31, 40, good.len() / 2, good.len() - 1] {
            cases.push((format!("cut at {cut}"), good[..cut].to_vec(), true));
        }
        for at in (0..good.len()).step_by(5) {
            for flip in [0x01u8, 0x80] {
                let mut b = good.clone();
                b[at] ^= flip;
                cases.push((format!("byte {at} ^ {flip:#x}"), b.clone(), true));
                if at >= 32 && at % 10 == 0 {
                    // May still be a valid file, of other numbers.
                    let what = format!("byte {at} ^ {flip:#x}, checksum right");
                    cases.push((what, with_checksum(b), false));
                }
            }
        }
        let site_file = file.ends_with(site::SITE_FILE);
        for (what, bytes, refused) in cases {
            std::fs::write(file, &bytes).unwrap();
            match std::panic::catch_unwind(|| everything(dir.path())) {
                // A damaged site file removes the site at open: it is sealed
                // again, and nothing is answered from it meanwhile.
                Ok(Ok(())) if site_file && refused => {
                    assert!(!site.exists(), "{what}: the site is still there")
                }
                Ok(Ok(())) if refused => panic!("{}: {what}: no error", file.display()),
                Ok(_) => {}
                Err(_) => panic!("{}: {what}: panicked", file.display()),
            }
            restore();
        }
    }
    everything(dir.path()).unwrap();
}

#[test]
fn appends_out_of_order_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path(), 4);
    let before = store.totals(1, all(), &[]).unwrap();
    // Two days before the newest.
    let old = store.append_day(1, D0 + 1, rows(1));
    assert!(matches!(old, Err(ColumnError::Order { .. })), "{old:?}");
    // The day before the newest, with a visit more: numbers the newest
    // day's events use would move.
    let mut more = with_late_event(2, rows(2));
    more.visits.push(visit(99, 99, (D0 + 2) * DAY + 5, None));
    let changed = store.append_day(1, D0 + 2, more);
    assert!(
        matches!(changed, Err(ColumnError::Order { .. })),
        "{changed:?}"
    );
    // Rows outside their day.
    let mut stray = rows(4);
    stray.events[0].ts -= DAY;
    let stray = store.append_day(1, D0 + 4, stray);
    assert!(matches!(stray, Err(ColumnError::Rows { .. })), "{stray:?}");
    assert_eq!(store.totals(1, all(), &[]).unwrap(), before);
    drop(store);
    let reopened = ColumnStore::open(dir.path()).unwrap();
    assert_eq!(reopened.totals(1, all(), &[]).unwrap(), before);
    assert_eq!(
        reopened.sealed_days(1).unwrap(),
        (D0..D0 + 4).collect::<Vec<_>>()
    );
}

#[test]
fn dropped_days_and_removed_sites_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path(), 4);
    let files = |d: &Path| std::fs::read_dir(d).map_or(0, |r| r.count());
    assert_eq!(files(&dir.path().join("1")), 7);
    assert_eq!(store.drop_before(1, D0 + 2).unwrap(), 2);
    assert_eq!(store.sealed_days(1).unwrap(), vec![D0 + 2, D0 + 3]);
    assert_eq!(files(&dir.path().join("1")), 5);
    let t = store.totals(1, all(), &[]).unwrap();
    assert_eq!((t.visits, t.pageviews), (2, 4));
    // Days go on after a retention pass.
    store
        .append_day(1, D0 + 4, with_late_event(4, rows(4)))
        .unwrap();
    store.remove_site(1).unwrap();
    assert!(!dir.path().join("1").exists());
    assert_eq!(store.sealed_days(1).unwrap(), Vec::<i64>::new());
    assert_eq!(store.totals(1, all(), &[]).unwrap(), Totals::default());
}

// One visit and one pageview a day, for tests of commits, caching and
// damage rather than of the numbers.

pub(super) fn one_visit(id: i64, visitor: i64, at: i64) -> DayVisit {
    let mut v = visit(id, visitor, at, None);
    v.last_seen_at = at + 60;
    (v.pageviews, v.events, v.is_bounce) = (1, 0, true);
    v.values[1] = Some("/".into());
    v
}

/// One visit of `visitor` on day `d` (from D0), one pageview of `path`.
pub(super) fn small_day(d: i64, visitor: i64, path: &str) -> DayRows {
    let t = (D0 + d) * DAY + 100;
    let id = 1000 + d;
    DayRows {
        visits: vec![one_visit(id, visitor, t)],
        events: vec![event(id * 10, id, visitor, t, "pageview", path)],
    }
}

pub(super) fn days(n: i64) -> TimeRange {
    TimeRange {
        start: D0 * DAY,
        end: (D0 + n) * DAY,
    }
}

pub(super) fn pages(store: &ColumnStore, site: i64, n: i64) -> Vec<String> {
    let mut v: Vec<String> = store
        .breakdown(site, days(n), &Dimension::Page, &[], false, 100, 0)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.value)
        .collect();
    v.sort();
    v
}

/// Rows exactly on day and bucket edges belong to the range or bucket they
/// start: ranges include their start and exclude their end.
#[test]
fn rows_on_edges_fall_in_the_range_they_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = ColumnStore::open(dir.path()).unwrap();
    let (day0, hour) = (D0 * DAY, 3600);
    let at = |id: i64, t: i64, path: &str| {
        (
            one_visit(id, id, t),
            event(id * 10, id, id, t, "pageview", path),
        )
    };
    let mut first = DayRows::default();
    for (v, e) in [
        at(1, day0, "/start"),
        at(2, day0 + hour - 1, "/before"),
        at(3, day0 + hour, "/edge"),
    ] {
        first.visits.push(v);
        first.events.push(e);
    }
    store.append_day(1, D0, first).unwrap();
    let (v, e) = at(4, day0 + DAY, "/next");
    store
        .append_day(
            1,
            D0 + 1,
            DayRows {
                visits: vec![v],
                events: vec![e],
            },
        )
        .unwrap();
    let range = |start: i64, end: i64| TimeRange { start, end };
    let counts = |r: TimeRange| {
        let t = store.totals(1, r, &[]).unwrap();
        (t.visits, t.pageviews, t.visitors)
    };
    assert_eq!(counts(range(day0, day0 + hour)), (2, 2, 2));
    assert_eq!(counts(range(day0 + hour, day0 + DAY)), (1, 1, 1));
    assert_eq!(counts(range(day0, day0 + DAY)), (3, 3, 3));
    assert_eq!(counts(range(day0 + 1, day0 + DAY + 1)), (3, 3, 3));
    let buckets: Vec<TimeRange> = (0..25)
        .map(|h| range(day0 + h * hour, day0 + (h + 1) * hour))
        .collect();
    let series = store.series(1, &buckets, &[]).unwrap();
    let per_hour: Vec<i64> = series.iter().map(|t| t.visits).collect();
    let mut want = vec![0; 25];
    (want[0], want[1], want[24]) = (2, 1, 1);
    assert_eq!(per_hour, want);
    let pages_in = |r: TimeRange, filters: &[Filter]| -> Vec<String> {
        let rows = store.breakdown(1, r, &Dimension::Page, filters, false, 10, 0);
        let mut v: Vec<String> = rows.unwrap().into_iter().filter_map(|r| r.value).collect();
        v.sort();
        v
    };
    assert_eq!(
        pages_in(range(day0, day0 + hour), &[]),
        ["/before", "/start"]
    );
    assert_eq!(pages_in(range(day0 + hour, day0 + DAY), &[]), ["/edge"]);
    for column in [VisitColumn::Source, VisitColumn::EntryPage] {
        let dim = Dimension::Visit(column);
        let rows = store.breakdown(1, range(day0, day0 + hour), &dim, &[], false, 10, 0);
        let visits: Vec<i64> = rows.unwrap().iter().map(|r| r.visits).collect();
        assert_eq!(visits, [2], "{column:?}");
    }
    // Per row too (a filter judged per visit).
    let entry = Filter {
        field: FilterField::Visit(VisitColumn::EntryPage),
        op: FilterOp::Is,
        values: vec![Some("/".into())],
    };
    assert_eq!(
        pages_in(range(day0, day0 + hour), std::slice::from_ref(&entry)),
        ["/before", "/start"]
    );
    let t = store.totals(1, range(day0, day0 + hour), &[entry]).unwrap();
    assert_eq!((t.visits, t.pageviews), (2, 2));
}

/// Limit 0 shows no row; a property's rows without their visits are
/// otherwise the rows with them.
#[test]
fn limit_zero_and_rows_without_visits() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path(), 3);
    let plan = Dimension::Prop("plan".into());
    for dim in [Dimension::Page, plan.clone()] {
        assert_eq!(
            store.breakdown(1, all(), &dim, &[], true, 0, 0).unwrap(),
            []
        );
        assert_eq!(
            store.breakdown(1, all(), &dim, &[], true, 0, 1).unwrap(),
            []
        );
    }
    let with = store.breakdown(1, all(), &plan, &[], true, 10, 0).unwrap();
    let without = store.breakdown(1, all(), &plan, &[], false, 10, 0).unwrap();
    assert_eq!(with.len(), 1);
    assert_eq!(
        (with[0].visits, with[0].events, with[0].visitors),
        (3, 3, 3)
    );
    let strip = |rows: Vec<BreakdownRow>| -> Vec<BreakdownRow> {
        rows.into_iter()
            .map(|r| BreakdownRow { visits: 0, ..r })
            .collect()
    };
    assert_eq!(strip(with), strip(without));
}

/// A site's dictionary grows with everything sealed; a query's tables of
/// answers are sized by the query once the dictionary is large next to
/// it, and answer the same either way.
#[test]
fn answers_are_kept_in_a_map_when_the_dictionary_is_large_and_agree() {
    assert!(scan::dense(1000, 10));
    assert!(!scan::dense(10_000_000, 50_000));
    assert!(scan::dense(10_000_000, 20_000_000));
    let dir = tempfile::tempdir().unwrap();
    let store = sealed(dir.path(), 3);
    let page = Filter {
        field: FilterField::Page,
        op: FilterOp::Is,
        values: vec![Some("/blog/**".into())],
    };
    let source = Filter {
        field: FilterField::Visit(VisitColumn::Source),
        op: FilterOp::IsNot,
        values: vec![Some("Google".into())],
    };
    let plan = Filter {
        field: FilterField::Prop("plan".into()),
        op: FilterOp::Is,
        values: vec![Some("pro".into())],
    };
    let answers = || {
        let mut out = Vec::new();
        for filters in [
            vec![],
            vec![page.clone()],
            vec![source.clone()],
            vec![plan.clone()],
        ] {
            let t = store.totals(1, all(), &filters).unwrap();
            out.push(format!("{t:?}"));
            for dim in [
                Dimension::Page,
                Dimension::EventName,
                Dimension::Prop("plan".into()),
                Dimension::Visit(VisitColumn::Source),
                Dimension::Visit(VisitColumn::EntryPage),
            ] {
                let rows = store.breakdown(1, all(), &dim, &filters, true, 10, 0);
                out.push(format!("{:?}", rows.unwrap()));
            }
            out.push(format!("{:?}", store.prop_keys(1, all(), &filters, 10)));
        }
        out
    };
    let dense = answers();
    scan::SPARSE.with(|s| s.set(true));
    let sparse = answers();
    scan::SPARSE.with(|s| s.set(false));
    assert_eq!(dense, sparse);
    assert!(dense.iter().any(|a| a.contains("/blog/b")), "{dense:?}");
}
