use super::*;
use crate::report::sqlite::raw;
use crate::store::{Store, sites};

const SEAM: i64 = 20_000 * 86_400;

/// A store with visits `(id, visitor, started)` and events `(visit,
/// visitor, ts, props)` of one site.
fn store_with(
    visits: &[(i64, i64, i64)],
    events: &[(i64, i64, i64, &str)],
) -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2).unwrap();
    let conn = store.write_connection().unwrap();
    let site = sites::add_site(&conn, "example.com", "UTC", false)
        .unwrap()
        .id;
    for &(id, visitor, started) in visits {
        conn.execute(
            "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at,
                entry_page, exit_page, pageviews, events, interactive, is_bounce)
             VALUES (?1, ?2, ?3, 1, ?4, ?4, '/', '/', 1, 1, 1, 0)",
            rusqlite::params![id, site, visitor, started],
        )
        .unwrap();
    }
    for (n, &(visit, visitor, ts, props)) in events.iter().enumerate() {
        conn.execute(
            "INSERT INTO events (site_id, ts, id, visit_id, visitor_id, name, hostname, path, props)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pageview', 'example.com', '/', ?6)",
            rusqlite::params![site, ts, 100 + n as i64, visit, visitor, props],
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
    let (_dir, store, site) = store_with(
        &[
            (1, 10, SEAM - 600),
            (2, 20, SEAM + 100),
            (3, 30, SEAM - 3600),
            (4, 40, SEAM - 7200),
        ],
        &[
            (1, 10, SEAM - 600, r#"{"plan":"pro","x":"1"}"#),
            (1, 10, SEAM + 600, r#"{"plan":"pro"}"#),
            (2, 20, SEAM + 100, r#"{"plan":"free"}"#),
            (3, 30, SEAM - 3600, r#"{"x":"2"}"#),
            (4, 40, SEAM - 7200, r#"{"x":"3"}"#),
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
    let joined = |limit| {
        join_prop_keys(
            &conn,
            site,
            range,
            SEAM,
            &[],
            (sealed.clone(), tail.clone()),
            limit,
        )
        .unwrap()
    };
    // plan: visitors 10 and 20, not 3; x leads.
    assert_eq!(joined(10), ["x", "plan"]);
    assert_eq!(joined(1), ["x"]);
    // As the raw tables count over the whole range.
    let whole: Vec<String> = raw::prop_keys(&conn, site, range, &[], 10).unwrap();
    assert_eq!(joined(10), whole);
}
