//! Retention runs at start and removes raw rows older than `raw_events_days`
//! and rollup rows older than `aggregates_days`.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn expired_rows_are_removed_at_start_and_logged() {
    let env = Env::new("[retention]\nraw_events_days = 30\naggregates_days = 60\n");
    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/recent"), CHROME)
            .status,
        202
    );
    assert_eq!(s.terminate(), 0);
    // Age a copy of the data 31 days and add 5000 more old events (several batches).
    let db = env.db();
    db.execute_batch(
        "INSERT INTO visits (id, site_id, visitor_id, seq, started_at, last_seen_at, entry_page, exit_page,
            pageviews, events, interactive, is_bounce)
         SELECT id + 1, site_id, visitor_id, seq, started_at - 31 * 86400, last_seen_at - 31 * 86400,
            entry_page, exit_page, pageviews, events, interactive, is_bounce FROM visits;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO events (site_id, id, visit_id, visitor_id, ts, name, hostname, path)
         SELECT site_id, i, visit_id + 1, visitor_id, ts - 31 * 86400 - i, name, hostname, '/old'
         FROM events, n;",
    )
    .unwrap();
    // Rollup rows of 61 and 59 days ago: 2500 of each, all grains, with
    // their visitor sketches.
    db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO rollups (site_id, grain, dim, bucket, value, pageviews)
         SELECT 1, i % 3, 1, unixepoch() - d * 86400, '/p' || i, 1
         FROM n, (SELECT 61 AS d UNION ALL SELECT 59);
         INSERT INTO rollup_sketches (site_id, grain, dim, bucket, value, version, visitors)
         SELECT site_id, grain, dim, bucket, value, 1, X'0201000000' FROM rollups
         WHERE value LIKE '/p%';",
    )
    .unwrap();
    drop(db);
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), 5001);
    let s = env.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logged = Vec::new();
    while !logged.iter().any(|l: &String| l.contains("retention pass")) {
        assert!(
            Instant::now() < deadline,
            "no retention log line: {logged:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        logged.extend(s.log_lines());
    }
    let line = logged
        .iter()
        .find(|l| l.contains("retention pass"))
        .unwrap();
    assert!(
        line.contains("events=5000")
            && line.contains("visits=1")
            && line.contains("rollup_rows=5000"),
        "{line}"
    );
    drop(s);
    assert_eq!(env.count("SELECT COUNT(*) FROM events"), 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE path = '/recent'"),
        1
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM visits"), 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM rollups WHERE bucket < unixepoch() - 60 * 86400"),
        0
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM rollups WHERE value LIKE '/p%'"),
        2500
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM rollup_sketches WHERE bucket < unixepoch() - 60 * 86400"),
        0
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM rollup_sketches WHERE value LIKE '/p%'"),
        2500
    );
}
