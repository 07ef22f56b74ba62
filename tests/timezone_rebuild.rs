//! Changing a site's timezone through the settings page: its rollups are
//! rebuilt in the background in the new timezone, and unfiltered reports
//! (rollups) then agree with filtered ones (raw events) day by day.

mod common;

use std::time::{Duration, Instant};

use common::client::Client;
use common::{
    CHROME, Env, PASSWORD, Server, aggregate, daily, days_that_differ, sketch_agrees,
    todays_pageviews_under,
};

/// Matches every event, so the report reads raw events instead of rollups.
const EVERYTHING: &str = "event:page!=/nonexistent";

/// Changes the site's timezone through its settings form.
fn set_timezone(c: &mut Client, domain: &str, tz: &str) {
    let csrf = c.csrf(&format!("/{domain}/settings"));
    let r = c.settings(domain, &csrf, "timezone", &[("timezone", tz)]);
    assert!(
        r.status == 303 || r.status == 200,
        "{}: {}",
        r.status,
        r.body
    );
}

/// Waits until no site's rollups are being rebuilt.
fn wait_rebuilt(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = server.get("/api/health", &[]).json();
        if h["rollups"]["rebuilding_sites"].as_u64().unwrap_or(0) == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "rollups were not rebuilt: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unfiltered (rollup) and filtered (raw) reports agree, day by day and
/// over weeks and months.
fn assert_rollups_match_raw(server: &Server, key: &str) {
    let rollups = daily(server, key, None);
    let raw = daily(server, key, Some(EVERYTHING));
    let differ = days_that_differ(&rollups, &raw);
    assert!(differ.is_empty(), "days that differ: {differ:#?}");
    assert!(raw.iter().filter(|d| d.1 > 0).count() >= 8, "{raw:?}");
    for period in ["7d", "30d", "month"] {
        let (pageviews, visitors) = aggregate(server, key, period, None);
        let (raw_pageviews, raw_visitors) = aggregate(server, key, period, Some(EVERYTHING));
        assert_eq!(pageviews, raw_pageviews, "{period}");
        assert!(
            sketch_agrees(visitors, raw_visitors),
            "{period}: {visitors} vs {raw_visitors}"
        );
    }
}

/// An environment with ten days of traffic on example.com in UTC, an
/// admin and an API key.
fn ten_days(events: &str) -> (Env, String) {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let key = env.api_key();
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        events,
        "--days",
        "10",
        "--seed",
        "11",
    ]);
    (env, key)
}

#[test]
fn a_timezone_change_rebuilds_the_rollups_in_the_new_timezone() {
    let (env, key) = ten_days("3000");
    let server = env.start();
    server.settle();
    assert_rollups_match_raw(&server, &key);

    let mut c = Client::new(&server);
    let r = c.sign_in("admin@example.com", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);
    set_timezone(&mut c, "example.com", "America/Los_Angeles");
    wait_rebuilt(&server);
    server.settle();
    assert_eq!(
        env.count("SELECT COUNT(*) FROM sites WHERE timezone = 'America/Los_Angeles'"),
        1
    );
    assert_rollups_match_raw(&server, &key);

    // And back, across a restart: the rollups stay consistent.
    set_timezone(&mut c, "example.com", "Asia/Kolkata");
    drop(c);
    assert_eq!(server.terminate(), 0);
    // The rebuild the change began goes on after the restart.
    let server = env.start_rebuilding();
    server.settle();
    assert_rollups_match_raw(&server, &key);
    assert_eq!(env.count("SELECT COUNT(*) FROM rollup_rebuilds"), 0);
}

#[test]
fn events_sent_during_the_rebuild_are_counted_once() {
    let (env, key) = ten_days("20000");
    let server = env.start();
    server.settle();
    let mut c = Client::new(&server);
    let r = c.sign_in("admin@example.com", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);

    // Pageviews keep coming from before the change until its rebuild is
    // over, so some arrive while it runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = server.base.clone();
    let sender = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let agent = common::agent();
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || sent < 100 {
                let body = common::pageview(&format!("https://example.com/live/{}", sent % 7));
                let r = agent
                    .post(format!("{base}/api/event"))
                    .header("User-Agent", CHROME)
                    .header("Content-Type", "text/plain")
                    .send(body.as_str());
                assert_eq!(common::reply(r).status, 202);
                sent += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    set_timezone(&mut c, "example.com", "Pacific/Auckland");
    wait_rebuilt(&server);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: i64 = sender.join().unwrap();
    server.settle();

    assert_rollups_match_raw(&server, &key);
    let stored =
        env.count("SELECT COUNT(*) FROM events WHERE name = 'pageview' AND path LIKE '/live/%'");
    assert_eq!(stored, sent);
    let live = todays_pageviews_under(&server, &key, "/live/");
    assert_eq!(live, sent, "live pageviews in today's rollups");
}
