//! An upgrade whose migration asks to rebuild the rollups
//! (`meta.rollups_rebuild`): the server listens and stores events from its
//! first second while the rollups are rebuilt in the background, says so in
//! `/api/health`, and once done the unfiltered reports (rollups) agree with
//! filtered ones (raw events).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{
    CHROME, Env, Server, aggregate, daily, days_that_differ, sketch_agrees, todays_pageviews_under,
};

/// Matches every event, so the report reads raw events instead of rollups.
const EVERYTHING: &str = "event:page!=/nonexistent";

/// Copies every event and visit `copies` times over, as other visitors
/// (new event, visit and visitor ids, the same times and pages): a database
/// large enough that a rebuild takes seconds, without generating each event.
fn multiply(env: &Env, copies: i64) {
    let db = env.db();
    let columns = |table: &str| -> Vec<String> {
        let mut stmt = db.prepare(&format!("PRAGMA table_info({table})")).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    // Event ids are microseconds of the clock: a copy's are a day per copy
    // earlier, still below every id to come. Visit and visitor ids move far
    // past the others.
    let shifted = |table: &str, column: &str| -> String {
        match (table, column) {
            ("events", "id") => "id - k.i * 86400000000".into(),
            ("events", "visit_id") | ("visits", "id") => {
                format!("{column} + k.i * 1000000000000000")
            }
            (_, "visitor_id") => "visitor_id + k.i * 1000000007".into(),
            _ => column.to_string(),
        }
    };
    for table in ["events", "visits"] {
        let cols = columns(table);
        let select: Vec<String> = cols.iter().map(|c| shifted(table, c)).collect();
        db.execute(
            &format!(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
                 INSERT INTO {table} ({}) SELECT {} FROM {table}, k",
                cols.join(", "),
                select.join(", ")
            ),
            [copies],
        )
        .unwrap();
    }
}

fn rebuilding(server: &Server) -> u64 {
    server.get("/api/health", &[]).json()["rollups"]["rebuilding_sites"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_upgrade_rebuilds_the_rollups_while_events_are_stored() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "20000",
        "--days",
        "60",
        "--seed",
        "17",
    ]);
    multiply(&env, 9);
    let events = env.count("SELECT COUNT(*) FROM events");
    assert!(events >= 200_000, "{events} events");
    // As a migration that changes the read model does.
    env.db()
        .execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollups_rebuild', 'all')",
            [],
        )
        .unwrap();

    // Not `Env::start`, which asserts that nothing is rebuilding.
    let server = Server::start(&env.config());
    // Listening, and the rebuild has only begun.
    assert_eq!(rebuilding(&server), 1);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM meta WHERE key = 'rollups_rebuild'"),
        0
    );

    // Pageviews from the first second until the rebuild is over.
    let stop = Arc::new(AtomicBool::new(false));
    let base = server.base.clone();
    let sender = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let agent = common::agent();
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) || sent < 50 {
                let body = common::pageview(&format!("https://example.com/during/{}", sent % 5));
                let r = agent
                    .post(format!("{base}/api/event"))
                    .header("User-Agent", CHROME)
                    .header("Content-Type", "text/plain")
                    .send(body.as_str());
                assert_eq!(common::reply(r).status, 202, "event {sent}");
                sent += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        }
    });
    // Some arrive while it runs: health still counts the site after a
    // while of sending.
    std::thread::sleep(Duration::from_millis(300));
    let during = rebuilding(&server);
    server.wait_rebuilt();
    stop.store(true, Ordering::Relaxed);
    let sent: i64 = sender.join().unwrap();
    assert_eq!(during, 1, "the rebuild was over before events were sent");
    server.settle();

    let stored = env.count("SELECT COUNT(*) FROM events WHERE path LIKE '/during/%'");
    assert_eq!(stored, sent);
    assert_eq!(env.count("SELECT COUNT(*) FROM rollup_rebuilds"), 0);

    // Rollups equal the raw events, day by day and over weeks and months.
    let rollups = daily(&server, &key, None);
    let raw = daily(&server, &key, Some(EVERYTHING));
    let differ = days_that_differ(&rollups, &raw);
    assert!(differ.is_empty(), "days that differ: {differ:#?}");
    assert!(raw.iter().filter(|d| d.1 > 0).count() >= 20, "{raw:?}");
    for period in ["7d", "30d", "month", "12mo"] {
        let (pageviews, visitors) = aggregate(&server, &key, period, None);
        let (raw_pageviews, raw_visitors) = aggregate(&server, &key, period, Some(EVERYTHING));
        assert_eq!(pageviews, raw_pageviews, "{period}");
        assert!(
            sketch_agrees(visitors, raw_visitors),
            "{period}: {visitors} vs {raw_visitors}"
        );
    }
    // Today's live pageviews are in the rollups once.
    let live = todays_pageviews_under(&server, &key, "/during/");
    assert_eq!(live, sent);
}

/// A new data directory the CLI writes before the first start (a site, an
/// import) has nothing to rebuild: the first migrations' request goes with
/// them, and the first start rebuilds nothing.
#[test]
fn a_new_data_dir_imported_before_its_first_start_rebuilds_nothing() {
    let env = Env::new("");
    env.add_site("example.com");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/goatcounter-export.csv"
    );
    let out = env.tally(&[
        "import",
        "--format",
        "goatcounter-csv",
        "--site",
        "example.com",
        fixture,
    ]);
    assert!(out.contains("Imported 5 events"), "{out}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM meta WHERE key = 'rollups_rebuild'"),
        0
    );
    let server = Server::start(&env.config());
    assert_eq!(rebuilding(&server), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM rollup_rebuilds"), 0);
}
