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

/// One pass on a clock the test sets: raw rows older than `raw_events_days`
/// and rollups older than `aggregates_days` go, salts older than 48 hours
/// go, everything younger stays; moving the clock moves the window.
#[test]
fn a_pass_keeps_exactly_the_window_of_its_clock() {
    use tally::ingest::enrich::GeoLookup;
    use tally::ingest::payload::parse_body;
    use tally::ingest::{IngestOptions, Ingestor, Outcome, RequestMeta};
    use tally::jobs::retention_pass as run_pass;
    use tally::report::sqlite::follower::Follower;
    use tally::report::sqlite::rollups::{Grain, RollupFeed};
    use tally::store::retention::{RetentionPolicy, RetentionStats};
    use tally::store::{Store, sites};

    const DAY: i64 = 86_400;
    // Noon UTC on a fixed day, far from any real clock.
    let t0 = 1_750_000_000 / DAY * DAY + DAY / 2;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 2).unwrap();
    sites::add_site(
        &store.write_connection().unwrap(),
        "example.com",
        "UTC",
        false,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ages = [50, 40, 31, 29, 10, 0];
    let feed = std::sync::Arc::new(RollupFeed::default());
    let (ingestor, writer) = Ingestor::start(
        store.clone(),
        store.write_connection().unwrap(),
        GeoLookup::disabled(),
        IngestOptions {
            queue_capacity: 100,
            respect_opt_out: false,
            recover_visits: true,
            journal: true,
        },
        t0 - 50 * DAY,
        feed.clone(),
    )
    .unwrap();
    let follower = Follower::new(
        store.clone(),
        ingestor.writer().clone(),
        feed,
        true,
        None,
        t0 - 50 * DAY,
    )
    .unwrap();
    let conn = store.write_connection().unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    runtime.block_on(async {
        for (i, age) in ages.iter().enumerate() {
            let payload =
                parse_body(pageview(&format!("https://example.com/age{age}")).as_bytes()).unwrap();
            let meta = RequestMeta {
                ip: format!("10.0.0.{i}").parse().unwrap(),
                user_agent: CHROME,
                opted_out: false,
                now: t0 - age * DAY,
            };
            assert_eq!(
                ingestor.ingest(payload, meta).await.unwrap(),
                Outcome::Stored
            );
        }
        follower.pass(ingestor.write_visit_snapshots()).await;
        follower.roll_ended_visits(t0 + 3600, 100).await;
    });
    // Salts of the last six days, as if the server had been down at midnight.
    let today = t0 / DAY;
    for day in today - 5..=today {
        conn.execute(
            "INSERT OR IGNORE INTO salts (day, salt) VALUES (?1, zeroblob(32))",
            [day],
        )
        .unwrap();
    }
    assert_eq!(count("SELECT COUNT(*) FROM events"), 6);
    assert_eq!(count("SELECT COUNT(*) FROM visits"), 6);
    let (hour, month) = (Grain::Hour.code(), Grain::Month.code());
    let rollup_days = |table: &str| -> String {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT DISTINCT ({t0} - bucket) / {DAY} FROM {table}
                 WHERE grain NOT IN ({hour}, {month}) AND dim = 0 ORDER BY 1 DESC"
            ))
            .unwrap();
        let ages: Vec<String> = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|a| a.unwrap().to_string())
            .collect();
        ages.join(" ")
    };
    // Day and week rows reach back to the oldest event.
    assert!(
        rollup_days("rollups").starts_with("5"),
        "{}",
        rollup_days("rollups")
    );
    let policy = RetentionPolicy {
        raw_events_days: 30,
        aggregates_days: 45,
    };
    let stats = RetentionStats::default();
    let pass = |now: i64| {
        runtime
            .block_on(run_pass(ingestor.writer(), policy, now, &stats, None))
            .unwrap()
    };
    let removed = pass(t0);
    assert_eq!((removed.events, removed.visits), (3, 3));
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE path IN ('/age29', '/age10', '/age0')"),
        3
    );
    assert_eq!(count("SELECT COUNT(*) FROM events"), 3);
    assert_eq!(count("SELECT COUNT(*) FROM visits"), 3);
    // Rollups: nothing older than 45 days (by bucket start) is left, the
    // 40-day-old day is; months go whole once they began before the cutoff.
    for table in ["rollups", "rollup_sketches"] {
        let left = count(&format!(
            "SELECT COUNT(*) FROM {table} WHERE bucket < {}",
            t0 - 45 * DAY
        ));
        assert_eq!(left, 0, "{table}");
    }
    assert!(
        rollup_days("rollups").contains("40"),
        "{}",
        rollup_days("rollups")
    );
    assert!(removed.rollup_rows > 0);
    // Salts: today's and yesterday's only.
    assert_eq!(count("SELECT COUNT(*) FROM salts"), 2);
    assert_eq!(count("SELECT MIN(day) FROM salts"), today - 1);
    assert_eq!(removed.salts, 4);
    assert_eq!(stats.removed.get("events"), 3);
    assert_eq!(stats.runs.get("ok"), 1);
    assert_eq!(
        stats
            .last_success
            .load(std::sync::atomic::Ordering::Relaxed),
        t0
    );

    // Two days later the 29-day-old event has aged out too; a pass with
    // nothing left to remove removes nothing.
    let later = pass(t0 + 2 * DAY);
    assert_eq!((later.events, later.visits), (1, 1));
    assert_eq!(pass(t0 + 2 * DAY), Default::default());
    assert_eq!(stats.removed.get("events"), 4);
    assert_eq!(stats.runs.get("ok"), 3);
    drop(ingestor);
    writer.shutdown();
}
