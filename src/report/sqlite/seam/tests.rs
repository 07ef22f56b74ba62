use super::*;
use crate::report::sqlite::raw;
use crate::store::{Store, sites};

pub const SEAM: i64 = 20_000 * 86_400;

/// A visit: id, visitor, started, last seen, source.
pub type Visit<'a> = (i64, i64, i64, i64, Option<&'a str>);
/// An event: visit, visitor, time, path, properties, name.
pub type Event<'a> = (i64, i64, i64, &'a str, Option<&'a str>, &'a str);

/// A store with `visits` and `events` of one site, written straight to the
/// raw tables.
pub fn store_with(visits: &[Visit<'_>], events: &[Event<'_>]) -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2).unwrap();
    let conn = store.write_connection().unwrap();
    let site = sites::add_site(&conn, "example.com", "UTC", false)
        .unwrap()
        .id;
    for &(id, visitor, started, last, source) in visits {
        let of = |f: fn(&&Event<'_>) -> bool| {
            events.iter().filter(|e| e.0 == id).filter(f).count() as i64
        };
        let (pageviews, all) = (of(|e| e.5 == "pageview"), of(|_| true));
        conn.execute(
            "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                entry_page, exit_page, pageviews, events, interactive, is_bounce, source)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, '/a', '/b', ?6, ?7, 1, ?8, ?9)",
            rusqlite::params![
                id,
                site,
                visitor,
                started,
                last,
                pageviews,
                all,
                all == 1,
                source
            ],
        )
        .unwrap();
    }
    for (n, &(visit, visitor, ts, path, props, name)) in events.iter().enumerate() {
        conn.execute(
            "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name, hostname, path, props)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'example.com', ?7, ?8)",
            rusqlite::params![site, ts, 100 + n as i64, visit, visitor, name, path, props],
        )
        .unwrap();
    }
    drop(conn);
    (dir, store, site)
}

/// A visitor whose visit crosses the seam with a key on both sides counts
/// once for it: that changes which key leads.
#[test]
fn property_keys_joined_at_the_seam_count_a_crossing_visitor_once() {
    let p = "pageview";
    let (_dir, store, site) = store_with(
        &[
            (1, 10, SEAM - 600, SEAM + 600, None),
            (2, 20, SEAM + 100, SEAM + 100, None),
            (3, 30, SEAM - 3600, SEAM - 3600, None),
            (4, 40, SEAM - 7200, SEAM - 7200, None),
        ],
        &[
            (1, 10, SEAM - 600, "/", Some(r#"{"plan":"pro","x":"1"}"#), p),
            (1, 10, SEAM + 600, "/", Some(r#"{"plan":"pro"}"#), p),
            (2, 20, SEAM + 100, "/", Some(r#"{"plan":"free"}"#), p),
            (3, 30, SEAM - 3600, "/", Some(r#"{"x":"2"}"#), p),
            (4, 40, SEAM - 7200, "/", Some(r#"{"x":"3"}"#), p),
        ],
    );
    let conn = store.reader().unwrap();
    let range = TimeRange {
        start: SEAM - 86_400,
        end: SEAM + 86_400,
    };
    let (before, after) = split(range, SEAM);
    let keys = |r| raw::prop_key_visitors(&conn, site, r, &[], 100).unwrap();
    let (sealed, tail) = (keys(before), keys(after));
    assert_eq!(sealed, [("x".to_string(), 3), ("plan".to_string(), 1)]);
    assert_eq!(tail, [("plan".to_string(), 2)]);
    let side = crossing::RawTables {
        conn: &conn,
        site_id: site,
    };
    let joined = |limit| {
        join_prop_keys(&side, range, SEAM, &[], sealed.clone(), (limit, 100))
            .unwrap()
            .answer()
            .unwrap()
    };
    // plan: visitors 10 and 20, not 3; x leads.
    assert_eq!(joined(10), ["x", "plan"]);
    assert_eq!(joined(1), ["x"]);
    // As the raw tables count over the whole range.
    let whole: Vec<String> = raw::prop_keys(&conn, site, range, &[], 10).unwrap();
    assert_eq!(joined(10), whole);
}
