//! The Stats API and the CLI against the real binary.

mod common;

use common::*;

#[test]
fn aggregate_and_breakdown() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    let send = |ip: &str, ua: &str, body: String| {
        let r = s.event_from(ip, &body, ua);
        assert_eq!(r.status, 202, "{}", r.body);
    };
    // Visitor 1: two pages from Google. Visitor 2: one page, direct. Visitor 3: one page from HN, then a signup.
    send(
        "198.51.100.1",
        CHROME,
        r#"{"n":"pageview","u":"https://example.com/","r":"https://www.google.com/"}"#.into(),
    );
    send(
        "198.51.100.1",
        CHROME,
        pageview("https://example.com/pricing"),
    );
    send("198.51.100.2", FIREFOX, pageview("https://example.com/"));
    send("198.51.100.3", FIREFOX, r#"{"n":"pageview","u":"https://example.com/blog/<script>","r":"https://news.ycombinator.com/item?id=1"}"#.into());
    send(
        "198.51.100.3",
        FIREFOX,
        r#"{"n":"Signup","u":"https://example.com/blog/<script>","d":"example.com"}"#.into(),
    );

    // Visit totals (bounces) are written in batches every second.
    let query = "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=visitors,visits,pageviews,events,bounce_rate,views_per_visit";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let agg = loop {
        let agg = s.stats(&key, query);
        assert_eq!(agg.status, 200, "{}", agg.body);
        if agg.json()["results"]["bounce_rate"]["value"] == 33
            || std::time::Instant::now() > deadline
        {
            break agg;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let r = &agg.json()["results"];
    assert_eq!(r["visitors"]["value"], 3);
    assert_eq!(r["visits"]["value"], 3);
    assert_eq!(r["pageviews"]["value"], 4);
    assert_eq!(r["events"]["value"], 1);
    // Visitor 2 bounced; visitor 3's signup is interactive.
    assert_eq!(r["bounce_rate"]["value"], 33);
    assert_eq!(r["views_per_visit"]["value"], 1.33);

    let pages = s.stats(&key, "/api/v1/stats/breakdown?site_id=example.com&period=7d&property=event:page&metrics=visitors,pageviews&limit=2");
    assert_eq!(pages.status, 200, "{}", pages.body);
    assert_eq!(
        pages.json()["results"],
        serde_json::json!([{"page": "/", "visitors": 2, "pageviews": 2}, {"page": "/blog/%3Cscript%3E", "visitors": 1, "pageviews": 1}])
    );
    let sources = s.stats(&key, "/api/v1/stats/breakdown?site_id=example.com&period=30d&property=visit:source&metrics=visitors");
    let rows = sources.json()["results"].as_array().unwrap().clone();
    let mut names: Vec<&str> = rows.iter().map(|r| r["source"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["Direct / None", "Google", "Hacker News"]);
    let browsers = s.stats(
        &key,
        "/api/v1/stats/breakdown?site_id=example.com&period=day&property=visit:browser",
    );
    assert_eq!(
        browsers.json()["results"][0],
        serde_json::json!({"browser": "Firefox", "visitors": 2})
    );
    let goals = s.stats(&key, "/api/v1/stats/breakdown?site_id=example.com&period=day&property=event:name&metrics=visitors,events");
    assert_eq!(
        goals.json()["results"],
        serde_json::json!([{"name": "Signup", "visitors": 1, "events": 1}])
    );
    let cmp = s.stats(&key, "/api/v1/stats/aggregate?site_id=example.com&period=7d&metrics=visitors,bounce_rate&compare=previous_period");
    assert_eq!(
        cmp.json()["results"],
        // No visits before: the bounce rate was null, so is its change.
        serde_json::json!({"visitors": {"value": 3, "change": 100}, "bounce_rate": {"value": 33, "change": null}}),
        "growth from an empty previous week"
    );
    let bad = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&compare=last_year",
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("compare"));
    let series = s.stats(
        &key,
        "/api/v1/stats/timeseries?site_id=example.com&period=7d&metrics=visitors,pageviews",
    );
    assert_eq!(series.status, 200, "{}", series.body);
    let rows = series.json()["results"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 7, "every day, empty ones included");
    assert_eq!(rows[6]["visitors"], 3);
    assert_eq!(rows[6]["pageviews"], 4);
    assert!(rows[..6].iter().all(|r| r["visitors"] == 0));
    let hours = s.stats(
        &key,
        "/api/v1/stats/timeseries?site_id=example.com&period=day",
    );
    let hours = hours.json()["results"].as_array().unwrap().clone();
    assert_eq!(hours.len(), 24);
    assert!(hours[0]["date"].as_str().unwrap().ends_with(" 00:00:00"));
    assert_eq!(
        hours
            .iter()
            .map(|h| h["visitors"].as_i64().unwrap())
            .sum::<i64>(),
        3
    );
    let months = s.stats(
        &key,
        "/api/v1/stats/timeseries?site_id=example.com&period=12mo",
    );
    assert_eq!(months.json()["results"].as_array().unwrap().len(), 12);
    let bad = s.stats(
        &key,
        "/api/v1/stats/timeseries?site_id=example.com&period=12mo&interval=hour",
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("interval"));
    let now = s.stats(&key, "/api/v1/stats/realtime/visitors?site_id=example.com");
    assert_eq!(now.body.trim(), "3");
    let custom = s.stats(&key, "/api/v1/stats/aggregate?site_id=example.com&period=custom&date=2000-01-01,2000-01-31&metrics=visitors");
    assert_eq!(custom.json()["results"]["visitors"]["value"], 0);
}

#[test]
fn realtime_visitors_honour_filters() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    let send = |ip: &str, body: &str| {
        let r = s.event_from(ip, body, CHROME);
        assert_eq!(r.status, 202, "{}", r.body);
    };
    // Two visitors from Google, one direct, one from Hacker News; the direct
    // one also views the page the first Google visitor is on.
    send(
        "198.51.100.1",
        r#"{"n":"pageview","u":"https://example.com/from-google","d":"example.com","r":"https://www.google.com/"}"#,
    );
    send(
        "198.51.100.2",
        r#"{"n":"pageview","u":"https://example.com/pricing","d":"example.com","r":"https://www.google.com/"}"#,
    );
    send("198.51.100.3", &pageview("https://example.com/from-google"));
    send(
        "198.51.100.4",
        r#"{"n":"pageview","u":"https://example.com/hn","d":"example.com","r":"https://news.ycombinator.com/"}"#,
    );
    // Visit rows (what `visit:` filters look at) follow within a second.
    s.settle();
    let realtime = |filters: &str| {
        let r = s.stats(
            &key,
            &format!(
                "/api/v1/stats/realtime/visitors?site_id=example.com&filters={}",
                urlencode(filters)
            ),
        );
        assert_eq!(r.status, 200, "{filters}: {}", r.body);
        r.body.trim().to_string()
    };
    assert_eq!(
        s.stats(&key, "/api/v1/stats/realtime/visitors?site_id=example.com")
            .body
            .trim(),
        "4"
    );
    assert_eq!(realtime("visit:source==Google"), "2");
    assert_eq!(realtime("visit:source!=Google"), "2");
    assert_eq!(realtime("visit:source==Direct / None"), "1");
    assert_eq!(realtime("event:page==/from-google"), "2");
    assert_eq!(
        realtime("visit:source==Google;event:page==/from-google"),
        "1"
    );
    assert_eq!(realtime("visit:source==Bing"), "0");
    for bad in ["visit:password==x", "visit:source", "event:page=="] {
        let r = s.stats(
            &key,
            &format!(
                "/api/v1/stats/realtime/visitors?site_id=example.com&filters={}",
                urlencode(bad)
            ),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains("filters"), "{bad}: {msg}");
    }
}

#[test]
fn stats_api_refuses_bad_keys_and_params() {
    let env = Env::new("");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    let q = "/api/v1/stats/aggregate?site_id=example.com&period=day";
    assert_eq!(s.get(q, &[]).status, 401);
    assert_eq!(s.stats("tly_wrong", q).status, 401);
    assert_eq!(
        s.get(q, &[("Authorization", &format!("Basic {key}"))])
            .status,
        401
    );
    assert_eq!(s.stats(&key, q).status, 200);
    for (query, word) in [
        ("/api/v1/stats/aggregate?period=day", "site_id"),
        (
            "/api/v1/stats/aggregate?site_id=example.com&period=week",
            "period",
        ),
        (
            "/api/v1/stats/aggregate?site_id=example.com&period=day&date=yesterday",
            "date",
        ),
        (
            "/api/v1/stats/aggregate?site_id=example.com&period=custom&date=2024-02-01",
            "date",
        ),
        (
            "/api/v1/stats/aggregate?site_id=example.com&metrics=visitors,nonsense",
            "metrics",
        ),
        ("/api/v1/stats/breakdown?site_id=example.com", "property"),
        (
            "/api/v1/stats/breakdown?site_id=example.com&property=visit:password",
            "property",
        ),
        (
            "/api/v1/stats/breakdown?site_id=example.com&property=event:page&limit=0",
            "limit",
        ),
        (
            "/api/v1/stats/breakdown?site_id=example.com&property=event:page&metrics=bounce_rate",
            "metrics",
        ),
        (
            "/api/v1/stats/timeseries?site_id=example.com&metrics=conversion_rate",
            "metrics",
        ),
        (
            "/api/v1/stats/breakdown?site_id=example.com&property=visit:source&metrics=conversion_rate",
            "metrics",
        ),
    ] {
        let r = s.stats(&key, query);
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(word), "{query}: {msg}");
    }
    assert_eq!(
        s.stats(&key, "/api/v1/stats/aggregate?site_id=nope.org")
            .status,
        404
    );
}

#[test]
fn health_reports_version_database_and_queue() {
    let env = Env::new("");
    let s = env.start();
    let h = s.get("/api/health", &[]).json();
    assert_eq!(h["database"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["writer_queue_depth"].is_u64());
}

#[test]
fn config_errors_exit_2_naming_the_key() {
    let env = Env::new("");
    for (config, expect) in [
        ("[server]\nlisten = \"not an address\"\n", "server.listen"),
        ("[server]\nlistn = \"127.0.0.1:1\"\n", "listn"),
        (
            "[retention]\nraw_events_days = 0\n",
            "retention.raw_events_days",
        ),
        (
            "[geoip]\ndatabase = \"/nonexistent/x.mmdb\"\n",
            "geoip.database",
        ),
        ("[server\n", "tally.toml:1"),
    ] {
        std::fs::write(env.config(), config).unwrap();
        let out = env.tally_raw(&["site", "list"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {err}");
        assert!(err.contains(expect), "{config}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = std::process::Command::new(bin())
        .args(["site", "list"])
        .env("TALLY_CONFIG", env.config())
        .env("TALLY_SERVER_LISTEN", "nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(bin())
        .args(["--config", "/nonexistent/tally.toml", "site", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn site_commands() {
    let env = Env::new("");
    env.add_site(
        "https://www.Example.com/"
            .trim_start_matches("https://")
            .trim_end_matches('/'),
    );
    assert!(
        env.tally(&["site", "list"])
            .contains("example.com\tUTC\tprivate")
    );
    assert_eq!(
        env.tally_raw(&["site", "add", "example.com"]).status.code(),
        Some(2),
        "duplicate"
    );
    assert_eq!(
        env.tally_raw(&["site", "add", "https://x.com/path"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        env.tally_raw(&["site", "add", "x.com", "--timezone", "Mars/Olympus"])
            .status
            .code(),
        Some(2)
    );
    env.tally(&[
        "site",
        "add",
        "b.example",
        "--timezone",
        "Europe/Berlin",
        "--public",
    ]);
    assert!(
        env.tally(&["site", "list"])
            .contains("b.example\tEurope/Berlin\tpublic")
    );
    // Without --yes, removal needs the domain typed back.
    let mut child = std::process::Command::new(bin())
        .args([
            "--config",
            env.config().to_str().unwrap(),
            "site",
            "remove",
            "b.example",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(2));
    assert!(env.tally(&["site", "list"]).contains("b.example"));
    env.tally(&["site", "remove", "b.example", "--yes"]);
    assert!(!env.tally(&["site", "list"]).contains("b.example"));
    // API keys: shown once, stored only as a hash.
    let key = env.api_key();
    assert!(key.starts_with("tly_") && key.len() > 40);
    let stored: i64 = env
        .db()
        .query_row(
            "SELECT COUNT(*) FROM api_keys WHERE key_hash = ?1 OR prefix = ?1",
            [&key],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 0);
}

#[test]
fn database_from_a_newer_binary_is_refused() {
    let env = Env::new("");
    env.tally(&["site", "list"]);
    env.db().pragma_update(None, "user_version", 999).unwrap();
    let out = env.tally_raw(&["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("newer than this binary"), "{err}");
}

#[test]
fn goals_and_conversion_rate() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.tally(&["goal", "add", "example.com", "--event", "Signup"]);
    env.tally(&["goal", "add", "example.com", "--page", "/thanks*"]);
    assert!(
        env.tally(&["goal", "list", "example.com"])
            .contains("Visit /thanks*")
    );
    assert_eq!(
        env.tally_raw(&["goal", "add", "example.com"]).status.code(),
        Some(2)
    );
    assert_eq!(
        env.tally_raw(&["goal", "add", "nope.example", "--event", "X"])
            .status
            .code(),
        Some(2)
    );
    let key = env.api_key();
    let s = env.start();
    // Four visitors: one signs up, one reaches /thanks/pro, two only browse.
    s.event_from("198.51.100.1", &pageview("https://example.com/"), CHROME);
    s.event_from(
        "198.51.100.1",
        r#"{"n":"Signup","u":"https://example.com/","d":"example.com"}"#,
        CHROME,
    );
    s.event_from(
        "198.51.100.1",
        r#"{"n":"Signup","u":"https://example.com/","d":"example.com"}"#,
        CHROME,
    );
    s.event_from(
        "198.51.100.2",
        &pageview("https://example.com/thanks/pro"),
        CHROME,
    );
    s.event_from("198.51.100.3", &pageview("https://example.com/"), CHROME);
    s.event_from(
        "198.51.100.4",
        &pageview("https://example.com/thank"),
        CHROME,
    );
    s.settle();
    let agg = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=visitors,conversion_rate",
    );
    assert_eq!(
        agg.json()["results"]["conversion_rate"]["value"],
        50.0,
        "{}",
        agg.body
    );
    let goals = s.stats(&key, "/api/v1/stats/breakdown?site_id=example.com&period=day&property=event:goal&metrics=visitors,events,conversion_rate");
    assert_eq!(
        goals.json()["results"],
        serde_json::json!([
            {"goal": "Signup", "visitors": 1, "events": 2, "conversion_rate": 25.0},
            {"goal": "Visit /thanks*", "visitors": 1, "events": 1, "conversion_rate": 25.0},
        ])
    );
}

#[test]
fn filters_narrow_every_report() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let key = env.api_key();
    let s = env.start();
    let from_google =
        r#"{"n":"pageview","u":"https://example.com/blog/a","r":"https://www.google.com/"}"#;
    // Visitor 1 from Google reads two blog posts; visitor 2 (direct) reads the
    // home page and a post; visitor 3 from HN reads the pricing page and signs up.
    s.event_from("198.51.100.1", from_google, CHROME);
    s.event_from(
        "198.51.100.1",
        &pageview("https://example.com/blog/b"),
        CHROME,
    );
    s.event_from("198.51.100.2", &pageview("https://example.com/"), FIREFOX);
    s.event_from(
        "198.51.100.2",
        &pageview("https://example.com/blog/a"),
        FIREFOX,
    );
    s.event_from(
        "198.51.100.3",
        r#"{"n":"pageview","u":"https://example.com/pricing","r":"https://news.ycombinator.com/"}"#,
        FIREFOX,
    );
    s.event_from(
        "198.51.100.3",
        r#"{"n":"Signup","u":"https://example.com/pricing","d":"example.com","p":{"plan":"pro"}}"#,
        FIREFOX,
    );
    // Visit rows are written once a second.
    let q = |query: &str| {
        let r = s.stats(&key, query);
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.json()["results"].clone()
    };
    let visits_query = "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=visits";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while q(visits_query)["visits"]["value"] != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "visits never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let agg = |filters: &str| {
        q(&format!(
            "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=visitors,pageviews,visits&filters={filters}"
        ))
    };
    let r = agg("visit:source==Google");
    assert_eq!(
        (
            r["visitors"]["value"].clone(),
            r["pageviews"]["value"].clone(),
            r["visits"]["value"].clone()
        ),
        (1.into(), 2.into(), 1.into())
    );
    let r = agg("event:page==/blog/**");
    assert_eq!(
        (
            r["visitors"]["value"].clone(),
            r["pageviews"]["value"].clone(),
            r["visits"]["value"].clone()
        ),
        (2.into(), 3.into(), 2.into())
    );
    let r = agg("visit:source==Direct%20/%20None|Hacker%20News");
    assert_eq!(r["visitors"]["value"], 2);
    let r = agg("visit:source!=Google");
    assert_eq!(r["visitors"]["value"], 2);
    let r = agg("visit:browser~fox;event:page==/blog/a");
    assert_eq!(
        (
            r["visitors"]["value"].clone(),
            r["pageviews"]["value"].clone()
        ),
        (1.into(), 1.into())
    );
    // Pages of visitors who came from Google.
    let pages = q(
        "/api/v1/stats/breakdown?site_id=example.com&period=day&property=event:page&metrics=pageviews&filters=visit:source==Google",
    );
    assert_eq!(
        pages,
        serde_json::json!([{"page": "/blog/a", "pageviews": 1}, {"page": "/blog/b", "pageviews": 1}])
    );
    // Sources of visits that read the blog.
    let sources = q(
        "/api/v1/stats/breakdown?site_id=example.com&period=day&property=visit:source&filters=event:page==/blog/**",
    );
    assert_eq!(sources.as_array().unwrap().len(), 2);
    let plans = q(
        "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=events&filters=event:props:plan==pro",
    );
    assert_eq!(plans["events"]["value"], 1);
    let series = q(
        "/api/v1/stats/timeseries?site_id=example.com&period=7d&metrics=visitors&filters=visit:source==Google",
    );
    assert_eq!(series.as_array().unwrap()[6]["visitors"], 1);
    let bad = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&filters=visit:nope==1",
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("visit:nope"));
}
