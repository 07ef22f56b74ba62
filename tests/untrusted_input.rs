//! Input from strangers against the real binary: refused with a 4xx naming
//! the field, without panicking a worker or stalling the server.

mod common;

use common::*;

/// Dates at the ends of chrono's calendar, or outside the years reports
/// cover, as the dashboard and the Stats API receive them.
const FAR_DATES: &[&str] = &["%2B262142-12-31", "-262143-01-01", "0000-01-01"];

#[test]
fn far_dates_are_a_400_naming_date_on_the_dashboard_and_the_stats_api() {
    let env = Env::new("");
    let (s, key) = env.start_with_one_pageview();
    for date in FAR_DATES {
        for period in ["day", "7d", "30d", "month", "6mo", "12mo"] {
            for compare in ["", "&compare=previous_period"] {
                let page = s.get(
                    &format!("/example.com?period={period}&date={date}{compare}"),
                    &[],
                );
                assert_eq!(page.status, 400, "{period} {date}: {}", page.body);
                assert!(page.body.contains("date:"), "{}", page.body);
                for report in ["aggregate", "timeseries"] {
                    let api = s.stats(
                        &key,
                        &format!(
                            "/api/v1/stats/{report}?site_id=example.com&period={period}&date={date}{compare}"
                        ),
                    );
                    assert_eq!(api.status, 400, "{report} {period} {date}: {}", api.body);
                    assert!(api.json()["error"].as_str().unwrap().starts_with("date:"));
                }
            }
        }
        let custom = s.stats(
            &key,
            &format!(
                "/api/v1/stats/breakdown?site_id=example.com&property=event:page&period=custom&date=2024-01-01,{date}"
            ),
        );
        assert_eq!(custom.status, 400, "{}", custom.body);
        assert!(custom.body.contains("date:"), "{}", custom.body);
    }
    // The ends of the window are answered, and the server still serves.
    for date in ["1970-01-01", "9999-12-31"] {
        let page = s.get(
            &format!("/example.com?period=12mo&date={date}&compare=previous_period"),
            &[],
        );
        assert_eq!(page.status, 200, "{date}: {}", page.body);
    }
    // So is the widest range, with its previous period as long again.
    let widest = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=custom&date=1970-01-01,9999-12-31&compare=previous_period&metrics=pageviews,bounce_rate",
    );
    assert_eq!(widest.status, 200, "{}", widest.body);
    assert_eq!(widest.json()["results"]["pageviews"]["value"], 1);
    let today = s.stats(
        &key,
        "/api/v1/stats/aggregate?site_id=example.com&period=day&metrics=pageviews",
    );
    assert_eq!(today.status, 200, "{}", today.body);
    assert_eq!(today.json()["results"]["pageviews"]["value"], 1);
    assert_eq!(s.get("/example.com", &[]).status, 200);
}

#[test]
fn an_event_for_ten_thousand_domains_is_a_400_naming_domain() {
    let env = Env::new("");
    env.add_site("example.com");
    let s = env.start();
    // Short names, so 10,000 of them fit in the 64 KiB body limit.
    let names: Vec<String> = (0..10_000)
        .map(|i: u32| format!("{}{}", char::from(b'a' + (i % 26) as u8), i / 26))
        .collect();
    let body = serde_json::json!({
        "n": "pageview",
        "u": "https://example.com/",
        "d": format!("example.com,{}", names.join(",")),
    })
    .to_string();
    assert!(body.len() < 64 * 1024);
    let r = s.event(&body, CHROME);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["errors"]["domain"].is_array(), "{}", r.body);
    // Ten are fine, and nothing was stored for the refused one.
    let ten: Vec<&str> = std::iter::once("example.com")
        .chain(names.iter().take(9).map(String::as_str))
        .collect();
    let body = serde_json::json!({
        "n": "pageview",
        "u": "https://example.com/",
        "d": ten.join(","),
    })
    .to_string();
    let r = s.event(&body, CHROME);
    assert_eq!(r.status, 404, "an unknown site among ten: {}", r.body);
    assert_eq!(
        s.event(&pageview("https://example.com/"), CHROME).status,
        202
    );
    drop(s);
    assert_eq!(env.count("SELECT count(*) FROM events"), 1);
}

#[test]
fn events_refused_under_overload_are_not_counted_in_their_visit() {
    // A queue of one submission: concurrent events of one visitor keep
    // finding it full, and some find it full only once their visit was
    // looked up, which used to count them in the visit anyway.
    let env = Env::with_storage("", "queue_capacity = 1");
    env.add_site("example.com");
    let s = env.start();
    let (mut stored, mut refused) = (0, 0);
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..16)
            .map(|t| {
                let url = s.url("/api/event");
                scope.spawn(move || {
                    let agent = agent();
                    let mut codes = Vec::new();
                    for i in 0..40 {
                        let body = pageview(&format!("https://example.com/{t}/{i}"));
                        let r = agent
                            .post(&url)
                            .header("User-Agent", CHROME)
                            .header("Content-Type", "text/plain")
                            .send(&body);
                        codes.push(reply(r).status);
                    }
                    codes
                })
            })
            .collect();
        for sender in senders {
            for code in sender.join().unwrap() {
                match code {
                    202 => stored += 1,
                    503 => refused += 1,
                    other => panic!("status {other}"),
                }
            }
        }
    });
    assert!(refused > 0, "the queue never filled");
    s.settle();
    // Visit snapshots are written every second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(s);
    assert_eq!(env.count("SELECT count(*) FROM events"), stored);
    assert_eq!(env.count("SELECT count(*) FROM visits"), 1);
    assert_eq!(
        env.count("SELECT pageviews FROM visits"),
        stored,
        "{refused} refused"
    );
}

/// POSTs a pageview by hand with `forwarded_for` as raw bytes (HTTP clients
/// refuse header bytes that are not text; nginx passes them on).
fn raw_event_forwarded_for(s: &Server, forwarded_for: &[u8]) -> String {
    use std::io::{Read, Write};
    let body = pageview("https://example.com/");
    let mut request = format!(
        "POST /api/event HTTP/1.1\r\nHost: x\r\nUser-Agent: {CHROME}\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\
         X-Forwarded-For: ",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(forwarded_for);
    request.extend_from_slice(format!("\r\n\r\n{body}").as_bytes());
    let mut stream = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    stream.write_all(&request).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_client_header_that_is_not_text_does_not_hide_the_address_the_proxy_appended() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    let s = env.start();
    // Two clients behind nginx, each sending a header of its own that is not
    // text, to which the proxy appended their real addresses.
    for line in [&b"caf\xe9, 203.0.113.5"[..], b"\xff, 198.51.100.9"] {
        let status = raw_event_forwarded_for(&s, line);
        assert!(status.contains(" 202 "), "{status}");
    }
    drop(s);
    // Two visitors, not one standing for everyone behind the proxy.
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT visitor_id) FROM events"),
        2
    );
}
