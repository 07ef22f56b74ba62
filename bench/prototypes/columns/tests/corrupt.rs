//! A store built from a small database answers; a truncated or damaged
//! file is an error when opened or queried, never a panic.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tally_columnar::model::{Dimension, TimeRange, VisitColumn, parse_filters};
use tally_columnar::store::Store;
use tally_columnar::{builder, query};

const DAY: i64 = 86_400;
const T0: i64 = 20_000 * DAY;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcf-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two days, three visits (one past midnight), five events.
fn database(dir: &Path) -> PathBuf {
    let db = dir.join("t.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE visits (id INTEGER PRIMARY KEY, site_id INT, visitor_id INT, seq INT,
           started_at INT, last_seen_at INT, entry_page TEXT, exit_page TEXT, pageviews INT,
           events INT, interactive INT, is_bounce INT, referrer TEXT, source TEXT,
           utm_medium TEXT, utm_source TEXT, utm_campaign TEXT, utm_term TEXT, utm_content TEXT,
           country TEXT, region TEXT, city TEXT, browser TEXT, browser_version TEXT, os TEXT,
           os_version TEXT, device TEXT);
         CREATE TABLE events (site_id INT, ts INT, id INT, visit_id INT, visitor_id INT,
           name TEXT, path TEXT, props TEXT, first_view INT, PRIMARY KEY (site_id, ts, id));",
    )
    .unwrap();
    let visit = |id: i64, visitor: i64, start: i64, end: i64, source: Option<&str>| {
        c.execute(
            "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
               entry_page, exit_page, pageviews, events, interactive, is_bounce, source, browser)
             VALUES (?1, 1, ?2, 1, ?3, ?4, '/', '/', 2, 2, 1, 0, ?5, 'Chrome')",
            rusqlite::params![id, visitor, start, end, source],
        )
        .unwrap();
    };
    visit(1, 10, T0 + 100, T0 + 200, Some("Google"));
    visit(2, 11, T0 + DAY - 60, T0 + DAY + 60, None);
    visit(3, 10, T0 + DAY + 500, T0 + DAY + 600, Some("Google"));
    let event = |ts: i64, id: i64, visit: i64, visitor: i64, path: &str| {
        c.execute(
            "INSERT INTO events VALUES (1, ?1, ?2, ?3, ?4, 'pageview', ?5, NULL, 1)",
            rusqlite::params![ts, id, visit, visitor, path],
        )
        .unwrap();
    };
    event(T0 + 100, 1, 1, 10, "/");
    event(T0 + 200, 2, 1, 10, "/blog/a");
    event(T0 + DAY - 60, 3, 2, 11, "/");
    event(T0 + DAY + 60, 4, 2, 11, "/blog/b");
    event(T0 + DAY + 500, 5, 3, 10, "/");
    c.execute(
        "INSERT INTO events VALUES (1, ?1, 6, 3, 10, 'Signup', '/', '{\"plan\":\"pro\"}', 0)",
        [T0 + DAY + 550],
    )
    .unwrap();
    db
}

fn built(name: &str) -> PathBuf {
    let dir = temp(name);
    let db = database(&dir);
    let store = dir.join("store");
    builder::build(&db, 1, &store).unwrap();
    store
}

fn everything(store: &Path) -> Result<(), String> {
    let s = Store::open(store, true).map_err(|e| e.to_string())?;
    let range = TimeRange {
        start: T0,
        end: T0 + 2 * DAY,
    };
    for f in ["", "visit:source==Google", "event:page==/blog**"] {
        let filters = parse_filters(f).unwrap();
        query::totals(&s, range, &filters).map_err(|e| e.to_string())?;
        for dim in [Dimension::Page, Dimension::Visit(VisitColumn::Source)] {
            query::breakdown(&s, range, &dim, &filters, 10, 0, true).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[test]
fn answers_as_the_raw_tables_would() {
    let store = built("answers");
    let s = Store::open(&store, true).unwrap();
    let range = TimeRange {
        start: T0,
        end: T0 + 2 * DAY,
    };
    let t = query::totals(&s, range, &parse_filters("visit:source==Google").unwrap()).unwrap();
    assert_eq!(
        (t.visitors, t.pageviews, t.visits, t.visit_duration_sum),
        (1, 3, 2, 200)
    );
    // The visit past midnight: its blog event is on day 2, its start on day 1.
    let day1 = TimeRange {
        start: T0,
        end: T0 + DAY,
    };
    let t = query::totals(&s, day1, &parse_filters("event:page==/blog**").unwrap()).unwrap();
    assert_eq!((t.visitors, t.pageviews, t.visits), (1, 1, 2));
    let rows = query::breakdown(
        &s,
        range,
        &Dimension::Visit(VisitColumn::Source),
        &[],
        10,
        0,
        true,
    )
    .unwrap();
    let got: Vec<(Option<String>, i64)> = rows.into_iter().map(|r| (r.value, r.visitors)).collect();
    // Ties by value, the missing value first (SQLite sorts NULL first).
    assert_eq!(got, vec![(None, 1), (Some("Google".into()), 1)]);
    // A property filter, judged per row.
    let t = query::totals(&s, range, &parse_filters("event:props:plan==pro").unwrap()).unwrap();
    assert_eq!((t.visitors, t.events, t.pageviews, t.visits), (1, 1, 0, 1));
    let t = query::totals(&s, range, &parse_filters("event:name==Signup").unwrap()).unwrap();
    assert_eq!((t.visitors, t.events, t.visits), (1, 1, 1));
    // Part of a day (a timezone's): bounded by time within the segment.
    let late = TimeRange {
        start: T0 + 150,
        end: T0 + DAY + 100,
    };
    let t = query::totals(&s, late, &[]).unwrap();
    assert_eq!((t.pageviews, t.visitors, t.visits), (3, 2, 1));
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let store = built("damage");
    everything(&store).unwrap();
    let seg = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let good = std::fs::read(&seg).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 10, 31, 40, good.len() / 2, good.len() - 1] {
        cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for at in (0..good.len()).step_by(7) {
        let mut b = good.clone();
        b[at] ^= 0x5a;
        cases.push((format!("byte {at} flipped"), b));
    }
    for (what, bytes) in cases {
        std::fs::write(&seg, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| everything(&store));
        match result {
            Ok(Err(_)) => {}
            Ok(Ok(())) => panic!("{what}: no error"),
            Err(_) => panic!("{what}: panicked"),
        }
    }
    std::fs::write(&seg, &good).unwrap();
    everything(&store).unwrap();
}

#[test]
fn without_checksums_damaged_ids_still_do_not_panic() {
    let store = built("nocrc");
    let seg = Store::segment_path(&store, 20_000);
    let good = std::fs::read(&seg).unwrap();
    for at in (32..good.len()).step_by(3) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= flip;
            std::fs::write(&seg, &b).unwrap();
            let r = std::panic::catch_unwind(|| {
                let Ok(s) = Store::open(&store, false) else {
                    return;
                };
                let range = TimeRange {
                    start: T0,
                    end: T0 + 2 * DAY,
                };
                for f in ["", "visit:source==Google", "event:page==/blog**"] {
                    let filters = parse_filters(f).unwrap();
                    let _ = query::totals(&s, range, &filters);
                    let _ = query::series(&s, &[range], &filters, true);
                    for dim in [
                        Dimension::Page,
                        Dimension::Visit(VisitColumn::Source),
                        Dimension::Visit(VisitColumn::EntryPage),
                    ] {
                        let _ = query::breakdown(&s, range, &dim, &filters, 10, 0, true);
                    }
                }
            });
            assert!(r.is_ok(), "byte {at} ^ {flip:#x}: panicked");
        }
    }
}
