//! `GET /metrics`: Prometheus text that a Prometheus parser reads, counting
//! what really happened, served only to allowed addresses; request logs at
//! debug level without addresses.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

type Scrape = MetricsExposition<PrometheusType, PrometheusValue>;

fn scrape(s: &Server) -> Scrape {
    let r = s.get("/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    openmetrics_parser::prometheus::parse_prometheus(&r.body)
        .unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{}", r.body))
}

/// The label values of `label` over the samples of `name`.
fn label_values(scrape: &Scrape, name: &str, label: &str) -> HashSet<String> {
    scrape.families[name]
        .iter_samples()
        .filter_map(|s| Some(s.get_labelset().ok()?.get_label_value(label)?.to_string()))
        .collect()
}

/// The value of the sample `name` whose labels include `labels`; a
/// histogram's count.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = scrape
        .families
        .get(name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let found: Vec<&PrometheusValue> = family
        .iter_samples()
        .filter(|s| {
            let set = s.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .map(|s| &s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {} samples", found.len());
    match found[0] {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        PrometheusValue::Summary(_) => panic!("no summaries here"),
    }
}

#[test]
fn metrics_count_what_happened_and_parse_as_prometheus_text() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    for path in ["/a", "/b", "/c"] {
        let r = s.event(&pageview(&format!("https://example.com{path}")), CHROME);
        assert_eq!(r.status, 202);
    }
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    assert_eq!(s.event(&pageview("https://example.com/"), bot).status, 202);
    assert_eq!(s.event("not json", CHROME).status, 400);
    assert_eq!(
        s.event(r#"{"n":"pageview","u":"https://unknown.example/"}"#, CHROME)
            .status,
        404
    );
    // Retention runs at start; wait for its first pass to be counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = scrape(&s);
        if value(&m, "tally_retention_runs_total", &[("result", "ok")]) >= 1.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "no retention pass counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(value(&m, "tally_events_accepted_total", &[]), 3.0);
    assert_eq!(
        value(&m, "tally_events_rejected_total", &[("reason", "invalid")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "tally_events_rejected_total",
            &[("reason", "unknown_site")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "tally_events_dropped_total", &[("reason", "crawler")]),
        1.0
    );
    assert_eq!(value(&m, "tally_events_dropped_bot_total", &[]), 1.0);
    // Six tracking requests, each timed under its route, not its raw path.
    assert_eq!(
        value(
            &m,
            "tally_http_request_duration_seconds",
            &[("route", "/api/event")]
        ),
        6.0
    );
    assert!(value(&m, "tally_writer_commits_total", &[]) >= 1.0);
    assert!(value(&m, "tally_writer_batch_events", &[]) >= 1.0);
    assert!(value(&m, "tally_writer_commit_duration_seconds", &[]) >= 1.0);
    assert_eq!(value(&m, "tally_writer_queue_depth", &[]), 0.0);
    assert!(value(&m, "tally_database_size_bytes", &[]) > 4096.0);
    assert_eq!(value(&m, "tally_live_visitors", &[]), 1.0);
    assert!(value(&m, "tally_retention_last_success_timestamp_seconds", &[]) > 1.7e9);
    for table in ["events", "visits", "rollups", "salts"] {
        value(
            &m,
            "tally_retention_rows_removed_total",
            &[("table", table)],
        );
    }
    // A Stats API call and a dashboard page are timed under their patterns.
    let key = env.api_key();
    assert_eq!(
        s.stats(&key, "/api/v1/stats/aggregate?site_id=example.com")
            .status,
        200
    );
    // Not signed in: redirected to the sign-in page, still timed as /{domain}.
    assert_eq!(s.get("/example.com", &[]).status, 200);
    let m = scrape(&s);
    let routes = label_values(&m, "tally_http_request_duration_seconds", "route");
    assert!(routes.contains("/api/v1/stats/aggregate"), "{routes:?}");
    assert!(routes.contains("/{domain}"), "{routes:?}");
    assert!(!routes.contains("/example.com"), "{routes:?}");
}

#[test]
fn metrics_are_refused_to_addresses_not_allowed() {
    // Loopback is allowed by default, but not what a reverse proxy relays.
    let env = Env::new("");
    let s = env.start();
    assert_eq!(s.get("/metrics", &[]).status, 200);
    let r = s.get("/metrics", &[("X-Forwarded-For", "203.0.113.9")]);
    assert_eq!(r.status, 403);
    assert!(!r.body.contains("tally_"), "{}", r.body);
    drop(s);

    // Behind a trusted proxy the client's address decides.
    let env =
        Env::new("trusted_proxies = [\"127.0.0.1/32\"]\n[metrics]\nallow = [\"10.1.0.0/16\"]\n");
    let s = env.start();
    assert_eq!(s.get("/metrics", &[]).status, 403);
    assert_eq!(
        s.get("/metrics", &[("X-Forwarded-For", "203.0.113.9")])
            .status,
        403
    );
    assert_eq!(
        s.get("/metrics", &[("X-Forwarded-For", "10.1.2.3")]).status,
        200
    );
}

#[test]
fn a_client_behind_a_trusted_proxy_cannot_pose_as_loopback() {
    // The proxy on loopback is trusted, and loopback may read the metrics:
    // only the proxy's own requests may, not a client it relays.
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]\n");
    let s = env.start();
    assert_eq!(s.get("/metrics", &[]).status, 200);
    let xff = "X-Forwarded-For";
    // A proxy that adds its own header line keeps the client's line before
    // it: every line is read, in order.
    let two_lines = s.get("/metrics", &[(xff, "127.0.0.1"), (xff, "203.0.113.9")]);
    assert_eq!(two_lines.status, 403, "{}", two_lines.body);
    // A proxy that writes the client's port: the hop is still the client.
    for forwarded in [
        "127.0.0.1, 203.0.113.9:5555",
        "127.0.0.1, [2001:db8::9]:443",
        "127.0.0.1:1234, 203.0.113.9",
        // A hop that is no address ends the walk; it is not skipped.
        "127.0.0.1, unknown",
        "127.0.0.1, 203.0.113.9:99999",
        "127.0.0.1, _hidden",
    ] {
        let r = s.get("/metrics", &[(xff, forwarded)]);
        assert_eq!(r.status, 403, "{forwarded}: {}", r.body);
    }
    // The proxy relaying a client on loopback, port or not.
    assert_eq!(s.get("/metrics", &[(xff, "127.0.0.1:1234")]).status, 200);
    assert_eq!(
        s.get("/metrics", &[(xff, "127.0.0.1"), (xff, "127.0.0.1")])
            .status,
        200
    );
}

#[test]
fn debug_logs_one_line_per_request_without_addresses() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]\n[log]\nformat = \"json\"\n");
    env.add_site("example.com");
    let s = Server::start_with_env(&env.config(), &[("TALLY_LOG", "debug")]);
    let r = s.event_from(
        "198.51.100.77",
        &pageview("https://example.com/x?q=1"),
        CHROME,
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        s.get("/share/example.com?auth=secret-token-123", &[])
            .status,
        404
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains("\"request\""))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no request lines: {lines:#?}");
        std::thread::sleep(Duration::from_millis(50));
        lines.extend(s.log_lines());
    }
    let requests: Vec<serde_json::Value> = lines
        .iter()
        .filter(|l| l.contains("\"request\""))
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    let event = requests
        .iter()
        .find(|r| r["fields"]["route"] == "/api/event")
        .expect("a line for the event");
    assert_eq!(event["fields"]["status"], 202);
    assert_eq!(event["fields"]["method"], "POST");
    assert!(event["level"] == "DEBUG", "{event}");
    drop(s);
    for line in &lines {
        assert!(!line.contains("198.51.100.77"), "address logged: {line}");
        assert!(!line.contains("secret-token-123"), "token logged: {line}");
    }
}
