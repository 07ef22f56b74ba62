//! `tally demo` writes realistic traffic through the real ingest path.

mod common;

use common::*;

#[test]
fn demo_fills_a_site_with_realistic_traffic() {
    let env = Env::new("");
    env.add_site("example.com");
    let out = env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "3000",
        "--days",
        "10",
        "--seed",
        "7",
    ]);
    assert!(out.contains("Wrote 3000 pageviews"), "{out}");

    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE name = 'pageview'"),
        3000
    );
    assert!(
        env.count("SELECT COUNT(*) FROM events WHERE name <> 'pageview'") > 50,
        "custom events on top"
    );
    // Every visit has its row, and the rows add up to the events.
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT visit_id) FROM events"),
        env.count("SELECT COUNT(*) FROM visits")
    );
    assert_eq!(env.count("SELECT SUM(pageviews) FROM visits"), 3000);
    // Spread over the days, with sessions of several pages and bounces.
    assert!(env.count("SELECT COUNT(DISTINCT ts / 86400) FROM events") >= 8);
    let visits = env.count("SELECT COUNT(*) FROM visits");
    let bounces = env.count("SELECT SUM(is_bounce) FROM visits");
    assert!((800..2500).contains(&visits), "{visits} visits");
    let rate = bounces as f64 / visits as f64;
    assert!((0.3..0.6).contains(&rate), "bounce rate {rate}");
    assert!(env.count("SELECT COUNT(DISTINCT source) FROM visits") >= 6);
    assert!(env.count("SELECT COUNT(DISTINCT device) FROM visits") >= 3);
    assert!(env.count("SELECT COUNT(*) FROM visits WHERE utm_campaign IS NOT NULL") > 0);
    // A long tail: the home page leads, yet dozens of pages are read.
    assert!(env.count("SELECT COUNT(DISTINCT path) FROM events") > 40);

    // The Stats API sees it.
    let key = env.api_key();
    let s = env.start();
    let r = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=30d&metrics=pageviews,visitors",
    );
    assert_eq!(
        r.json()["results"]["pageviews"]["value"],
        3000,
        "{}",
        r.body
    );
    let top = s.stats(
        &key,
        "/api/v1/stats/breakdown?site_id=example.com&period=30d&property=event:page&limit=1",
    );
    assert_eq!(top.json()["results"][0]["page"], "/");
}

#[test]
fn demo_needs_an_existing_site() {
    let env = Env::new("");
    let out = env.tally_raw(&["demo", "--site", "nope.example", "--events", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tally site add nope.example"));
}

#[test]
fn demo_beside_a_running_server_reaches_filtered_reports() {
    // Recent traffic holds the whole 7-day range.
    let env = Env::with_storage("", "recent_days = 8");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    let query = |filters: &str| {
        let r = s.stats(
            &key,
            &format!(
                "/api/v1/stats/aggregate?site_id=example.com&period=7d&metrics=pageviews,visits{filters}"
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["results"].clone()
    };
    // `log_lines` hands out each line once: keep them all.
    let lines = std::cell::RefCell::new(Vec::<String>::new());
    let logged = |what: &str| {
        let mut lines = lines.borrow_mut();
        lines.extend(s.log_lines());
        lines.iter().filter(|l| l.contains(what)).count()
    };
    // A filter every visit passes. The first filtered report starts loading
    // the site's recent traffic into memory.
    let all = "&filters=visit:browser!=NoSuchBrowser";
    query(all);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while logged("loaded recent traffic") == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", lines.borrow());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Then another process writes events beside the server.
    env.tally(&[
        "demo",
        "--site",
        "example.com",
        "--events",
        "2000",
        "--days",
        "7",
    ]);
    let unfiltered = query("");
    assert_eq!(unfiltered["pageviews"]["value"], 2000);
    // The held traffic is reloaded (once or twice: the demo bumps the
    // counter before its first write and after its last, and the follower
    // may see both bumps at once); answers from memory equal the rollups'.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let filtered = query(all);
        let (loaded, reloading) = (
            logged("loaded recent traffic"),
            logged("reloading recent traffic"),
        );
        if filtered == unfiltered && reloading >= 1 && loaded == reloading + 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "filtered {filtered} != unfiltered {unfiltered}: {:?}",
            lines.borrow()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!((1..=2).contains(&logged("reloading recent traffic")));
}
