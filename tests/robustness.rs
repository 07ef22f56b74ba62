//! Work a stranger can start is bounded: live streams per client and in
//! total, zip exports at once.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// Opens `/example.com/live` from `from` (a forwarded client address, or
/// the test's own); the response is held open until dropped.
fn open_live(
    s: &Server,
    agent: &ureq::Agent,
    from: Option<&str>,
) -> Result<ureq::http::Response<ureq::Body>, Reply> {
    let mut req = agent.get(s.url("/example.com/live"));
    if let Some(ip) = from {
        req = req.header("X-Forwarded-For", ip);
    }
    let r = req.call().expect("request failed");
    if r.status() == 200 {
        Ok(r)
    } else {
        Err(reply(Ok(r)))
    }
}

#[test]
fn live_streams_are_capped_per_client_and_in_total() {
    let env = Env::new(
        "trusted_proxies = [\"127.0.0.1/32\"]\n\
         [dashboard]\nlive_streams_per_client = 8\nlive_streams_total = 10\n",
    );
    env.tally(&["site", "add", "example.com", "--public"]);
    let s = env.start();
    let agent = agent();

    let mut mine: Vec<_> = (0..8)
        .map(|i| open_live(&s, &agent, None).unwrap_or_else(|r| panic!("stream {i}: {}", r.status)))
        .collect();
    let Err(refused) = open_live(&s, &agent, None) else {
        panic!("a ninth stream was opened");
    };
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());

    // Other clients have their own count, up to the server's total.
    let _other: Vec<_> = ["198.51.100.1", "198.51.100.2"]
        .iter()
        .map(|ip| open_live(&s, &agent, Some(ip)).unwrap_or_else(|r| panic!("{ip}: {}", r.status)))
        .collect();
    let Err(full) = open_live(&s, &agent, Some("198.51.100.3")) else {
        panic!("a stream over the total was opened");
    };
    assert_eq!(full.status, 503);
    assert!(full.header("retry-after").is_some());

    // A closed stream gives its place back (once the server notices the
    // connection is gone: at its next write, a keep-alive at the latest).
    mine.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reopened = loop {
        match open_live(&s, &agent, None) {
            Ok(r) => break r,
            Err(r) => {
                assert!(
                    [429, 503].contains(&r.status),
                    "unexpected {}: {}",
                    r.status,
                    r.body
                );
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's place came back"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    drop(reopened);
}

#[test]
fn exports_beyond_the_cap_are_refused_while_two_are_built() {
    let env = Env::new("");
    env.tally(&["site", "add", "example.com", "--public"]);
    let s = env.start();

    // Another process holds the write lock, so an export waits for the
    // writer to commit the event below (every read first sees every
    // answered event) and holds its place until the lock is released.
    let blocker = env.db();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert_eq!(
        s.event(&pageview("https://example.com/"), FIREFOX).status,
        202
    );

    let url = s.url("/example.com/export?period=30d");
    let (tx, rx) = std::sync::mpsc::channel();
    let exports: Vec<_> = (0..4)
        .map(|_| {
            let (url, tx) = (url.clone(), tx.clone());
            std::thread::spawn(move || {
                let r = reply(agent().get(&url).call());
                tx.send((r.status, r.header("retry-after").map(String::from)))
                    .unwrap();
            })
        })
        .collect();
    // Two are refused at once; two wait for the writer.
    for _ in 0..2 {
        let (status, retry_after) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, 503);
        assert!(retry_after.is_some());
    }
    assert!(rx.try_recv().is_err(), "only two refused");

    blocker.execute_batch("COMMIT").unwrap();
    for _ in 0..2 {
        let (status, _) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(status, 200);
    }
    for e in exports {
        e.join().unwrap();
    }
    // Places are given back: the next export is built.
    assert_eq!(s.get("/example.com/export?period=30d", &[]).status, 200);
}

/// The value of an unlabelled gauge in `/metrics`.
fn gauge(s: &Server, name: &str) -> f64 {
    let body = s.get("/metrics", &[]).body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn an_export_keeps_its_place_until_built_when_its_client_hangs_up() {
    let env = Env::new("");
    env.tally(&["site", "add", "pub.example", "--public"]);
    // Enough traffic that a filtered export over a year takes a while: it
    // reads every raw event of the year for each panel.
    env.tally(&[
        "demo",
        "--site",
        "pub.example",
        "--events",
        "50000",
        "--days",
        "365",
    ]);
    let s = env.start();
    let path = "/pub.example/export?period=12mo&filters=event%3Apage%21%3D%2Fnone";
    let addr = s.base.trim_start_matches("http://").to_string();

    // Clients that ask for an export and hang up before it is built.
    let sockets: Vec<_> = (0..4)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    drop(sockets);
    std::thread::sleep(Duration::from_millis(300));

    // The two being built still hold their places: the next is refused.
    assert_eq!(gauge(&s, "tally_exports_running"), 2.0);
    let refused = s.get(path, &[]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());

    // Once they are built, the places come back.
    let deadline = Instant::now() + Duration::from_secs(120);
    while gauge(&s, "tally_exports_running") > 0.0 {
        assert!(Instant::now() < deadline, "the exports never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.get(path, &[]).status, 200);
}
