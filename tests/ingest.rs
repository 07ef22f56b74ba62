//! The tracking endpoint against the real binary and a real SQLite file.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn events(env: &Env) -> i64 {
    env.count("SELECT COUNT(*) FROM events")
}

#[test]
fn accepts_plausible_payloads_short_and_long() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    let r = s.event(r#"{"n":"pageview","u":"https://example.com/a?utm_source=hn","r":"https://news.ycombinator.com/","w":1300}"#, CHROME);
    assert_eq!((r.status, r.body.as_str()), (202, "ok"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // Long names, application/json, domain taken from the URL (without www.).
    let r = s.post(
        "/api/event",
        r#"{"name":"Signup","url":"https://www.example.com/b","props":{"plan":"pro","seats":3},"revenue":{"amount":"12.50","currency":"EUR"},"interactive":true}"#,
        &[("User-Agent", CHROME), ("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let r = s.event(
        r#"{"n":"engagement","u":"https://example.com/a","d":"example.com","sd":75,"e":5300}"#,
        CHROME,
    );
    assert_eq!(r.status, 202);
    // CORS preflight.
    let pre = reply_status(&s, "OPTIONS");
    assert_eq!(pre, 204);
    drop(s);
    let db = env.db();
    let (name, path, props, amount, currency): (String, String, String, String, String) = db
        .query_row(
            "SELECT name, path, props, revenue_amount, revenue_currency FROM events WHERE name = 'Signup'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((name.as_str(), path.as_str()), ("Signup", "/b"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&props).unwrap(),
        serde_json::json!({"plan":"pro","seats":"3"})
    );
    assert_eq!((amount.as_str(), currency.as_str()), ("12.50", "EUR"));
    let (sd, e): (i64, i64) = db
        .query_row(
            "SELECT scroll_depth, engaged_ms FROM events WHERE name = 'engagement'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((sd, e), (75, 5300));
    let (source, referrer, browser, device, utm): (String, String, String, String, String) = db
        .query_row(
            "SELECT source, referrer, browser, device, utm_source FROM visits",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(source, "Hacker News");
    assert_eq!(referrer, "news.ycombinator.com");
    assert_eq!(browser, "Chrome");
    assert_eq!(device, "Laptop");
    assert_eq!(utm, "hn");
}

fn reply_status(s: &Server, method: &str) -> u16 {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(s.url("/api/event"))
        .header("Origin", "https://example.com")
        .header("Access-Control-Request-Method", "POST")
        .body(())
        .unwrap();
    s.agent.run(req).unwrap().status().as_u16()
}

#[test]
fn bad_input_gets_4xx_and_stores_nothing() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    let long_name = format!(
        r#"{{"n":"{}","u":"https://example.com/"}}"#,
        "x".repeat(121)
    );
    let many_props = format!(
        r#"{{"n":"x","u":"https://example.com/","p":{{{}}}}}"#,
        (0..31)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let big_value = format!(
        r#"{{"n":"x","u":"https://example.com/","p":{{"k":"{}"}}}}"#,
        "v".repeat(2001)
    );
    let deep = format!(
        r#"{{"n":"x","u":"https://example.com/","p":{}1{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("empty body", String::new(), 400, "body"),
        ("not json", "hello".into(), 400, "body"),
        ("json array", "[1]".into(), 400, "body"),
        ("missing url", r#"{"n":"pageview"}"#.into(), 400, "url"),
        (
            "missing name",
            r#"{"u":"https://example.com/"}"#.into(),
            400,
            "name",
        ),
        (
            "non-http url",
            r#"{"n":"pageview","u":"javascript:alert(1)"}"#.into(),
            400,
            "url",
        ),
        (
            "file url",
            r#"{"n":"pageview","u":"file:///etc/passwd"}"#.into(),
            400,
            "url",
        ),
        (
            "control chars",
            "{\"n\":\"page\\u0007view\",\"u\":\"https://example.com/\"}".into(),
            400,
            "name",
        ),
        ("long name", long_name, 400, "name"),
        ("too many props", many_props, 400, "props"),
        ("long prop value", big_value, 400, "props"),
        (
            "nested prop",
            r#"{"n":"x","u":"https://example.com/","p":{"a":{"b":1}}}"#.into(),
            400,
            "props",
        ),
        ("deep nesting", deep, 400, "body"),
        (
            "bad revenue",
            r#"{"n":"x","u":"https://example.com/","$":{"amount":"1e999","currency":"EUR"}}"#
                .into(),
            400,
            "revenue",
        ),
        (
            "bad width",
            r#"{"n":"pageview","u":"https://example.com/","w":"wide"}"#.into(),
            400,
            "screen_width",
        ),
        (
            "unknown site",
            r#"{"n":"pageview","u":"https://example.org/"}"#.into(),
            404,
            "domain",
        ),
        (
            "one unknown of two",
            r#"{"n":"pageview","u":"https://example.com/","d":"example.com,nope.org"}"#.into(),
            404,
            "domain",
        ),
    ];
    for (what, body, status, field) in &cases {
        let r = s.event(body, CHROME);
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        assert!(r.json()["errors"][field].is_array(), "{what}: {}", r.body);
    }
    // Invalid UTF-8.
    let mut req = s
        .agent
        .post(s.url("/api/event"))
        .header("User-Agent", CHROME)
        .header("Content-Type", "text/plain");
    req = req.header("X-Test", "utf8");
    let r = req
        .send(&b"{\"n\":\"\xff\xfe\",\"u\":\"https://example.com/\"}"[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Wrong content type.
    let r = s.post(
        "/api/event",
        &pageview("https://example.com/"),
        &[("User-Agent", CHROME), ("Content-Type", "application/xml")],
    );
    assert_eq!(r.status, 415);
    // Over 64 KiB.
    let huge = format!(
        r#"{{"n":"pageview","u":"https://example.com/","p":{{"k":"{}"}}}}"#,
        "v".repeat(70_000)
    );
    assert_eq!(s.event(&huge, CHROME).status, 413);
    // A lying Content-Length is refused before any body is read.
    assert_eq!(
        raw_request(
            &s,
            "POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 999999999\r\n\r\n"
        ),
        413
    );
    assert!(
        s.get("/api/health", &[]).status == 200,
        "server still healthy"
    );
    drop(s);
    assert_eq!(events(&env), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM visits"), 0);
}

/// Sends raw bytes and returns the status code of the answer.
fn raw_request(s: &Server, request: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn trickling_client_times_out_without_blocking_others() {
    use std::io::Write;
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n{\"n\":").unwrap();
    // Others are served meanwhile.
    let started = Instant::now();
    assert_eq!(
        s.event(&pageview("https://example.com/fast"), CHROME)
            .status,
        202
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The trickler is cut off with 408 once the body deadline passes.
    use std::io::Read;
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.is_empty() || head.contains(" 408 "), "{head}");
}

#[test]
fn bots_are_acknowledged_but_not_stored() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    for ua in [
        "",
        "curl/8.4.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        "facebookexternalhit/1.1",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "python-requests/2.31",
    ] {
        let r = s.event(&pageview("https://example.com/"), ua);
        assert_eq!(r.status, 202, "{ua}");
        assert_eq!(r.header("x-tally-dropped"), Some("1"), "{ua}");
    }
    let r = s.event(&pageview("https://example.com/"), FIREFOX);
    assert_eq!(r.header("x-tally-dropped"), None);
    let counts = s.get("/api/health", &[]).json()["events"].clone();
    assert_eq!(counts["dropped_bot"], 7);
    assert_eq!(counts["accepted"], 1);
    drop(s);
    assert_eq!(events(&env), 1);
}

#[test]
fn respects_gpc_only_when_configured() {
    let env = Env::new("[privacy]\nrespect_gpc = true\n");
    env.add_site("example.com");
    let s = env.start();
    let body = pageview("https://example.com/");
    let r = s.post(
        "/api/event",
        &body,
        &[
            ("User-Agent", CHROME),
            ("Content-Type", "text/plain"),
            ("Sec-GPC", "1"),
        ],
    );
    assert_eq!((r.status, r.header("x-tally-dropped")), (202, Some("1")));
    let r = s.post(
        "/api/event",
        &body,
        &[
            ("User-Agent", CHROME),
            ("Content-Type", "text/plain"),
            ("DNT", "1"),
        ],
    );
    assert_eq!((r.status, r.header("x-tally-dropped")), (202, Some("1")));
    assert_eq!(s.event(&body, CHROME).status, 202);
    drop(s);
    assert_eq!(events(&env), 1);
}

#[test]
fn same_visitor_is_one_visitor_until_the_salt_changes() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    for p in ["/a", "/b", "/c"] {
        assert_eq!(
            s.event(&pageview(&format!("https://example.com{p}")), CHROME)
                .status,
            202
        );
    }
    // Another browser on the same IP is another visitor.
    assert_eq!(
        s.event(&pageview("https://example.com/a"), FIREFOX).status,
        202
    );
    assert_eq!(s.terminate(), 0);
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT visitor_id) FROM events"),
        2
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM visits"), 2);
    assert_eq!(
        env.count("SELECT pageviews FROM visits ORDER BY pageviews DESC LIMIT 1"),
        3
    );

    // A new random salt (as at midnight) makes a new visitor, and salts older
    // than 48 hours are deleted at start.
    let db = env.db();
    let today: i64 = db
        .query_row("SELECT MAX(day) FROM salts", [], |r| r.get(0))
        .unwrap();
    db.execute(
        "UPDATE salts SET salt = randomblob(32) WHERE day = ?1",
        [today],
    )
    .unwrap();
    db.execute(
        "INSERT INTO salts (day, salt) VALUES (?1, randomblob(32))",
        [today - 2],
    )
    .unwrap();
    drop(db);
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/d"), CHROME).status,
        202
    );
    assert_eq!(s.terminate(), 0);
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT visitor_id) FROM events"),
        3
    );
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM salts WHERE day < {}",
            today - 1
        )),
        0
    );
}

#[test]
fn visits_survive_restart_and_end_after_30_minutes() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/first"), CHROME)
            .status,
        202
    );
    assert_eq!(s.terminate(), 0);
    // Restart: the open visit continues.
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/second"), CHROME)
            .status,
        202
    );
    assert_eq!(s.terminate(), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM visits"), 1);
    let db = env.db();
    let (pv, entry, exit, bounce): (i64, String, String, bool) = db
        .query_row(
            "SELECT pageviews, entry_page, exit_page, is_bounce FROM visits",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (pv, entry.as_str(), exit.as_str(), bounce),
        (2, "/first", "/second", false)
    );
    // Move the visit 31 minutes into the past: the next event starts a new one.
    db.execute_batch(
        "UPDATE visits SET started_at = started_at - 1860, last_seen_at = last_seen_at - 1860;
         UPDATE events SET ts = ts - 1860;",
    )
    .unwrap();
    drop(db);
    let s = env.start();
    assert_eq!(
        s.event(&pageview("https://example.com/third"), CHROME)
            .status,
        202
    );
    // A non-interactive event does not clear the new visit's bounce.
    let r = s.event(
        r#"{"n":"Scrolled","u":"https://example.com/third","d":"example.com","i":false}"#,
        CHROME,
    );
    assert_eq!(r.status, 202);
    assert_eq!(s.terminate(), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM visits"), 2);
    assert_eq!(
        env.count("SELECT is_bounce FROM visits WHERE entry_page = '/third'"),
        1
    );
    assert_eq!(
        env.count("SELECT events FROM visits WHERE entry_page = '/third'"),
        1
    );
}

#[test]
fn forwarded_for_only_from_trusted_proxies() {
    for (trusted, expected_visitors) in [(true, 2), (false, 1)] {
        let extra = if trusted {
            "trusted_proxies = [\"127.0.0.1/32\"]"
        } else {
            ""
        };
        let env = Env::new(extra);
        env.add_site("example.com");
        let s = env.start();
        for ip in ["198.51.100.7", "203.0.113.9"] {
            let r = s.event_from(ip, &pageview("https://example.com/"), CHROME);
            assert_eq!(r.status, 202);
        }
        drop(s);
        assert_eq!(
            env.count("SELECT COUNT(DISTINCT visitor_id) FROM events"),
            expected_visitors,
            "trusted={trusted}"
        );
    }
}

#[test]
fn several_domains_in_one_event() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_site("rollup.example");
    let s = env.start();
    let r = s.event(
        r#"{"n":"pageview","u":"https://example.com/x","d":"example.com,rollup.example"}"#,
        CHROME,
    );
    assert_eq!(r.status, 202);
    drop(s);
    assert_eq!(env.count("SELECT COUNT(DISTINCT site_id) FROM events"), 2);
}

#[test]
fn noscript_pixel_records_a_pageview() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    let r = s.get(
        "/api/event?d=example.com&r=https%3A%2F%2Fduckduckgo.com%2F",
        &[
            ("User-Agent", FIREFOX),
            ("Referer", "https://example.com/no-js"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/gif"));
    let r = s.get("/api/event?d=example.com", &[("User-Agent", FIREFOX)]);
    assert_eq!(r.status, 400, "no url and no Referer");
    drop(s);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM events WHERE path = '/no-js' AND name = 'pageview'"),
        1
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM visits WHERE source = 'DuckDuckGo'"),
        1
    );
}

/// Fires events from `clients` threads until `stop`; returns the acknowledged paths.
fn burst(
    base: &str,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|c| {
            let base = base.to_string();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = format!("/c{c}/e{i}");
                    i += 1;
                    let r = agent
                        .post(format!("{base}/api/event"))
                        .header("User-Agent", CHROME)
                        .header("Content-Type", "text/plain")
                        .header("X-Forwarded-For", format!("10.{c}.{}.{}", i / 250, i % 250))
                        .send(pageview(&format!("https://example.com{path}")));
                    match r {
                        Ok(resp) if resp.status().as_u16() == 202 => acked.push(path),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect()
}

fn stored_paths(env: &Env) -> HashSet<String> {
    let db = env.db();
    let mut stmt = db.prepare("SELECT path FROM events").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn kill_9_loses_no_acknowledged_event() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let s = env.start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = burst(&s.base, 16, stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    s.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(acked.len() > 100, "burst too small: {}", acked.len());

    // The next start adds what only the journal held, then folds every
    // stored event into the rollups: none is missing and none counted twice.
    let key = env.api_key();
    let s = env.start();
    s.settle();
    let stored = stored_paths(&env);
    let lost: Vec<&String> = acked.iter().filter(|p| !stored.contains(*p)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let raw = env.count("SELECT COUNT(*) FROM events WHERE name = 'pageview'");
    let rolled = env.count("SELECT SUM(pageviews) FROM rollups WHERE grain = 1 AND dim = 0");
    assert_eq!(rolled, raw, "{:?}", s.log_lines());
    let r = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=7d&metrics=pageviews",
    );
    assert_eq!(r.json()["results"]["pageviews"]["value"], raw, "{}", r.body);
}

#[test]
fn visit_totals_are_rebuilt_after_kill_9() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    for p in ["/one", "/two", "/three"] {
        assert_eq!(
            s.event(&pageview(&format!("https://example.com{p}")), CHROME)
                .status,
            202
        );
    }
    // Killed before the visit's running totals were written.
    s.kill9();
    let s = env.start();
    let lines = s.log_lines();
    assert_eq!(s.terminate(), 0);
    let (pv, exit, bounce): (i64, String, bool) = env
        .db()
        .query_row(
            "SELECT pageviews, exit_page, is_bounce FROM visits",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (pv, exit.as_str(), bounce),
        (3, "/three", false),
        "{lines:?}"
    );
}

#[test]
fn full_queue_answers_503_and_stores_only_what_it_acknowledged() {
    let env = Env::with_storage("trusted_proxies = [\"127.0.0.1/32\"]", "queue_capacity = 1");
    env.add_site("example.com");
    let s = env.start();
    let results: Vec<(u16, Option<String>, String)> = (0..32)
        .map(|c| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let agent = agent();
                (0..40)
                    .map(|i| {
                        let path = format!("/q{c}/{i}");
                        let mut r = agent
                            .post(format!("{base}/api/event"))
                            .header("User-Agent", CHROME)
                            .header("Content-Type", "text/plain")
                            .header("X-Forwarded-For", format!("10.9.{c}.{i}"))
                            .send(pageview(&format!("https://example.com{path}")))
                            .unwrap();
                        let retry = r
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_string());
                        let _ = r.body_mut().read_to_string();
                        (r.status().as_u16(), retry, path)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    drop(s);
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(
        !refused.is_empty(),
        "a queue of one never filled under 32 concurrent clients"
    );
    assert!(
        refused.iter().all(|r| r.1.as_deref() == Some("1")),
        "503 carries Retry-After"
    );
    assert!(results.iter().all(|r| r.0 == 202 || r.0 == 503));
    let stored = stored_paths(&env);
    let acked: HashSet<&String> = results
        .iter()
        .filter(|r| r.0 == 202)
        .map(|r| &r.2)
        .collect();
    assert_eq!(
        stored.len(),
        acked.len(),
        "stored exactly what was acknowledged"
    );
    assert!(acked.iter().all(|p| stored.contains(*p)));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let s = env.start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = burst(&s.base, 16, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let code = s.terminate();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(code, 0);
    let stored = stored_paths(&env);
    assert!(
        acked.iter().all(|p| stored.contains(p)),
        "an acknowledged event was lost"
    );
}

#[test]
fn no_ip_or_user_agent_on_disk() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let ua =
        "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0 UniqueMarkerUA";
    let s = env.start();
    for ip in ["198.51.100.77", "2001:db8::1234"] {
        let r = s.event_from(ip, &pageview("https://example.com/private"), ua);
        assert_eq!(r.status, 202);
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    assert_eq!(s_terminate_collect(s, &logs), 0);
    let needles: Vec<Vec<u8>> = vec![
        ua.as_bytes().to_vec(),
        b"UniqueMarkerUA".to_vec(),
        b"198.51.100.77".to_vec(),
        b"2001:db8::1234".to_vec(),
        vec![198, 51, 100, 77],
    ];
    for entry in walk(&env.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} contains {:?}",
                entry.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
    for line in logs.lock().unwrap().iter() {
        assert!(
            !line.contains("198.51.100.77") && !line.contains("UniqueMarkerUA"),
            "log line leaks: {line}"
        );
    }
}

fn s_terminate_collect(s: Server, logs: &Arc<Mutex<Vec<String>>>) -> i32 {
    let lines = s.log_lines();
    let code = s.terminate();
    logs.lock().unwrap().extend(lines);
    code
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
