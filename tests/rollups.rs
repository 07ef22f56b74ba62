//! The rollups a server keeps up to date equal the ones rebuilt from the raw
//! tables (what a migration or a timezone change asks for).

mod common;

use common::*;

/// A rollup row: key (site, grain, dim, bucket, value), counts, sketch.
type RollupRow = (i64, i64, i64, i64, String, [i64; 6], Option<Vec<u8>>);

/// Every rollup row, in key order, sketches included.
fn rollup_rows(env: &Env) -> Vec<RollupRow> {
    let db = env.db();
    let mut stmt = db
        .prepare(
            "SELECT site_id, grain, dim, bucket, value, visits, pageviews, events, bounces,
                duration, r.visitors, s.visitors
             FROM rollups r LEFT JOIN rollup_sketches s USING (site_id, grain, dim, bucket, value)
             ORDER BY site_id, grain, dim, bucket, value",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            [
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ],
            r.get(11)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn rebuilt_rollups_equal_the_maintained_ones() {
    let env = Env::new("");
    env.tally(&["site", "add", "example.com", "--timezone", "Europe/Berlin"]);
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "3000",
        "--days",
        "40",
        "--seed",
        "5",
    ]);
    // A server start rolls the visits that have ended since the demo, so
    // the rebuild below sees the same ended visits: unless one ends (its last
    // event 32 minutes old) between the two starts. Wait until none is about
    // to, so a slow machine cannot make the two differ.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while env.count(
        "SELECT COUNT(*) FROM visits
         WHERE last_seen_at + 1920 BETWEEN CAST(strftime('%s', 'now') AS INTEGER) - 5
                                       AND CAST(strftime('%s', 'now') AS INTEGER) + 120",
    ) > 0
    {
        assert!(std::time::Instant::now() < deadline, "visits keep ending");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let s = env.start();
    s.settle();
    assert_eq!(s.terminate(), 0);
    let maintained = rollup_rows(&env);
    assert!(maintained.len() > 1000, "{} rows", maintained.len());

    // Forget them and ask for a rebuild, as a migration does.
    env.db()
        .execute_batch(
            "DELETE FROM rollups;
             DELETE FROM rollup_sketches;
             UPDATE visits SET rolled = 0;
             INSERT INTO meta (key, value) VALUES ('rollups_rebuild', 'all');",
        )
        .unwrap();
    // Rebuilt in the background, while the server listens (`start_rebuilding`
    // waits for it); the ended visits a migration left unrolled are rolled once
    // it is done (reports count them from `visits` meanwhile).
    let s = env.start_rebuilding();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.count(
        "SELECT COUNT(*) FROM visits
         WHERE rolled = 0 AND last_seen_at < CAST(strftime('%s', 'now') AS INTEGER) - 1920",
    ) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ended visits not rolled"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(s.terminate(), 0);
    let rebuilt = rollup_rows(&env);
    assert_eq!(rebuilt.len(), maintained.len());
    for (a, b) in maintained.iter().zip(&rebuilt) {
        assert_eq!(a, b);
    }
    assert_eq!(
        env.count("SELECT COUNT(*) FROM meta WHERE key = 'rollups_rebuild'"),
        0
    );
}
