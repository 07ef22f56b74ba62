//! Tests of the timezone rebuild: rows kept where raw events are gone,
//! the rest rebuilt in the new timezone over steps that resume.

use super::*;
use crate::report::sqlite::rollups;
use crate::store::events::insert_events;
use crate::store::{NewEvent, Store};

const DAY: i64 = 86_400;
/// Monday 2024-01-01 00:00 UTC.
const START: i64 = 1_704_067_200;
const NEW_YORK: &str = "America/New_York";

/// A store with example.com (UTC) and `per_day` pageviews a day for `days`
/// days from [`START`], in rollups built from them.
fn site_with_traffic(days: i64, per_day: i64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1).unwrap();
    let conn = store.write_connection().unwrap();
    sites::add_site(&conn, "example.com", "UTC", false).unwrap();
    let mut events = Vec::new();
    for d in 0..days {
        for i in 0..per_day {
            let n = d * per_day + i;
            events.push(NewEvent {
                id: n + 1,
                ts: START + d * DAY + i * (DAY / per_day) + 7,
                visitor_id: n % 500,
                visit_id: n + 1,
                path: format!("/p{}", i % 5),
                ..NewEvent::test_pageview("/")
            });
        }
    }
    let tx = conn.unchecked_transaction().unwrap();
    insert_events(&tx, &events, false).unwrap();
    tx.commit().unwrap();
    rollups::rebuild(&conn, 1, START + days * DAY).unwrap();
    (dir, store)
}

/// (bucket, pageviews) of the totals rows of `grain`.
fn rows(conn: &Connection, grain: Grain) -> Vec<(i64, i64)> {
    let mut stmt = conn
        .prepare(
            "SELECT bucket, pageviews FROM rollups
             WHERE site_id = 1 AND grain = ?1 AND dim = ?2 ORDER BY bucket",
        )
        .unwrap();
    stmt.query_map(params![grain.code(), Dim::Totals.code()], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// What retention leaves: the raw events before `trimmed` deleted, and its
/// mark of where they are complete from.
fn trim_raw(conn: &Connection, trimmed: i64) {
    conn.execute("DELETE FROM events WHERE ts < ?1", [trimmed])
        .unwrap();
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('raw_trimmed_before', ?1)",
        [trimmed],
    )
    .unwrap();
}

/// A migration's request for a rebuild, started as the server starts it
/// and run to the end.
fn rebuild_as_a_migration_asks(conn: &Connection, now: i64) {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('rollups_rebuild', 'all')",
        [],
    )
    .unwrap();
    assert_eq!(start_asked(conn, now, true).unwrap(), 1);
    steps(conn, 100);
    assert_eq!(in_progress(conn).unwrap(), vec![]);
}

fn stored_events(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap()
}

fn total(conn: &Connection, grain: Grain) -> i64 {
    rows(conn, grain).iter().map(|r| r.1).sum()
}

fn change(conn: &Connection, now: i64, raw_from: i64) {
    let tx = conn.unchecked_transaction().unwrap();
    let c = Change {
        site_id: 1,
        timezone: NEW_YORK.into(),
        now,
        raw_from,
        cutoff: i64::MAX / 2,
    };
    assert!(change_timezone(&tx, &RollupFeed::default(), &c).unwrap());
    tx.commit().unwrap();
}

/// Runs up to `limit` steps, each in its own transaction; returns how many
/// ran before none was left.
fn steps(conn: &Connection, limit: usize) -> usize {
    for n in 0..limit {
        let tx = conn.unchecked_transaction().unwrap();
        let more = step(&tx, &RollupFeed::default()).unwrap();
        tx.commit().unwrap();
        if !more {
            return n;
        }
    }
    limit
}

#[test]
fn a_site_younger_than_its_raw_events_is_rebuilt_whole() {
    let (_dir, store) = site_with_traffic(20, 48);
    let conn = store.write_connection().unwrap();
    let before: Vec<i64> = Grain::ALL.iter().map(|g| total(&conn, *g)).collect();
    // Raw events kept from long before the site's first.
    let raw_from = START - 300 * DAY;
    assert_eq!(kept_from(&conn, 1, Tz::UTC, raw_from).unwrap(), None);
    change(&conn, START + 21 * DAY, raw_from);
    steps(&conn, 100);
    let tz: Tz = NEW_YORK.parse().unwrap();
    for (bucket, _) in rows(&conn, Grain::Day) {
        assert_eq!(
            bucket,
            calendar::day_start(tz, bucket),
            "a New York midnight"
        );
    }
    let after: Vec<i64> = Grain::ALL.iter().map(|g| total(&conn, *g)).collect();
    assert_eq!(after, before, "every event once in each grain");
    assert_eq!(in_progress(&conn).unwrap(), vec![]);
}

#[test]
fn rows_older_than_the_raw_events_are_kept_and_the_rest_rebuilt() {
    // Over 10,000 events: the rebuild folds them in more than one step.
    let days = 90;
    let (_dir, store) = site_with_traffic(days, 150);
    let conn = store.write_connection().unwrap();
    let before: Vec<i64> = Grain::ALL.iter().map(|g| total(&conn, *g)).collect();
    // Retention deleted the raw events before midday of day 40.
    let trimmed = START + 40 * DAY + DAY / 2;
    trim_raw(&conn, trimmed);
    let old_days: Vec<(i64, i64)> = rows(&conn, Grain::Day)
        .into_iter()
        .filter(|r| r.0 < START + 41 * DAY)
        .collect();
    assert_eq!(old_days.len(), 41);
    // The configuration's cutoff is older (`raw_events_days` was raised):
    // what retention applied counts.
    let raw_from = START - DAY;
    assert_eq!(
        kept_from(&conn, 1, Tz::UTC, raw_from).unwrap(),
        Some(trimmed)
    );

    change(&conn, START + days * DAY + 3600, raw_from);
    // A stop part-way: the progress is in the database, and a new
    // connection (a restarted server) goes on from it.
    assert_eq!(steps(&conn, 2), 2);
    drop(conn);
    let conn = store.write_connection().unwrap();
    assert!(steps(&conn, 100) > 0);
    assert_eq!(in_progress(&conn).unwrap(), vec![]);

    // Days before the first UTC midnight of complete raw events are as they
    // were, cut at UTC midnights.
    let kept: Vec<(i64, i64)> = rows(&conn, Grain::Day)
        .into_iter()
        .filter(|r| r.0 % DAY == 0 && r.0 < START + 41 * DAY)
        .collect();
    assert_eq!(kept, old_days);
    // The later ones are New York days, each with its events.
    let tz: Tz = NEW_YORK.parse().unwrap();
    let count = |from: i64, to: i64| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM events WHERE site_id = 1 AND ts >= ?1 AND ts < ?2",
            params![from.max(START + 41 * DAY), to],
            |r| r.get(0),
        )
        .unwrap()
    };
    let new_days: Vec<(i64, i64)> = rows(&conn, Grain::Day)
        .into_iter()
        .filter(|r| r.0 % DAY != 0)
        .collect();
    assert!(new_days.len() >= 49, "{new_days:?}");
    for (bucket, pageviews) in new_days {
        assert_eq!(bucket, calendar::day_start(tz, bucket));
        // (March 10th, when clocks go forward, has 23 hours.)
        let next = calendar::midnight(tz, calendar::local_date(tz, bucket) + chrono::Days::new(1));
        assert_eq!(pageviews, count(bucket, next), "day at {bucket}");
    }
    // Every event is in exactly one row of each grain: the kept rows hold
    // those retention deleted, the rebuilt ones the rest.
    let after: Vec<i64> = Grain::ALL.iter().map(|g| total(&conn, *g)).collect();
    assert_eq!(after, before);
}

#[test]
fn kept_rows_end_at_the_old_timezone_boundaries() {
    let kept = Kept::new(Tz::UTC, Some(START + 40 * DAY + 3));
    assert_eq!(kept.before(Grain::Hour), START + 40 * DAY + 3600);
    assert_eq!(kept.before(Grain::Day), START + 41 * DAY);
    // 2024-02-12 is the Monday after 2024-02-10; March begins on day 60.
    assert_eq!(kept.before(Grain::Week), START + 42 * DAY);
    assert_eq!(kept.before(Grain::Month), START + 60 * DAY);
    assert_eq!(kept.grains_at(START + 41 * DAY), 0b0011);
    assert_eq!(Kept::new(Tz::UTC, None).grains_at(0), apply::ALL_GRAINS);
}

/// A migration's rebuild (`start_asked`) rebuilds whole: rows older than
/// the raw events are in the format before the migration (no week rows,
/// no visitors column, as migration 4 left them) and cannot be completed,
/// so they go, as the blocking rebuild of earlier versions dropped them.
/// Everything the raw events hold is rebuilt, in the site's own timezone.
#[test]
fn a_migration_rebuild_drops_the_rows_older_than_the_raw_events() {
    let days = 30;
    let (_dir, store) = site_with_traffic(days, 48);
    let conn = store.write_connection().unwrap();
    let trimmed = START + 10 * DAY;
    trim_raw(&conn, trimmed);
    // An old row's format: week rows of the kept days are missing.
    conn.execute(
        "DELETE FROM rollups WHERE grain = ?1 AND bucket < ?2",
        params![Grain::Week.code(), trimmed],
    )
    .unwrap();
    assert_eq!(kept_from(&conn, 1, Tz::UTC, START).unwrap(), Some(trimmed));
    let now = START + days * DAY + 3600;
    rebuild_as_a_migration_asks(&conn, now);
    let stored = stored_events(&conn);
    for grain in Grain::ALL {
        let rows = rows(&conn, grain);
        assert_eq!(
            rows.iter().map(|r| r.1).sum::<i64>(),
            stored,
            "{grain:?}: the raw events, each once"
        );
        // Nothing before the bucket of the first kept event.
        let first = rows.first().map(|r| r.0).unwrap();
        assert_eq!(first, bucket_start(Tz::UTC, grain, trimmed), "{grain:?}");
    }
}

/// A migration's rebuild that starts while a timezone change's rebuild
/// runs (a server stopped part-way, then upgraded) drops the old rows too:
/// the running rebuild's record of what it keeps is replaced.
#[test]
fn a_migration_rebuild_during_a_timezone_change_drops_the_old_rows_too() {
    let days = 30;
    let (_dir, store) = site_with_traffic(days, 48);
    let conn = store.write_connection().unwrap();
    let trimmed = START + 10 * DAY;
    trim_raw(&conn, trimmed);
    let now = START + days * DAY + 3600;
    change(&conn, now, START);
    assert_eq!(steps(&conn, 1), 1, "the change's rebuild is under way");
    rebuild_as_a_migration_asks(&conn, now);
    let stored = stored_events(&conn);
    for grain in Grain::ALL {
        assert_eq!(total(&conn, grain), stored, "{grain:?}");
    }
}
