//! Work a stranger can start is bounded: live streams per client and in
//! total, zip exports at once.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// Opens the live stream at `path` from `from` (a forwarded client
/// address, or the test's own), signed in with `cookie` if given; the
/// response is held open until dropped.
fn open_live(
    s: &Server,
    agent: &ureq::Agent,
    path: &str,
    from: Option<&str>,
    cookie: Option<&str>,
) -> Result<ureq::http::Response<ureq::Body>, Reply> {
    let mut req = agent.get(s.url(path));
    if let Some(ip) = from {
        req = req.header("X-Forwarded-For", ip);
    }
    if let Some(cookie) = cookie {
        req = req.header("Cookie", cookie);
    }
    let r = req.call().expect("request failed");
    if r.status() == 200 {
        Ok(r)
    } else {
        Err(reply(Ok(r)))
    }
}

/// A session of `email` (added with [`Env::add_user`]), written as a
/// sign-in writes it; the cookie that opens it.
fn session(env: &Env, email: &str) -> String {
    let token = format!("session-of-{email}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let added = env
        .db()
        .execute(
            "INSERT INTO login_sessions (token_hash, user_id, csrf_token, created_at, expires_at)
             SELECT ?1, id, 'csrf', ?2, ?2 + 3600 FROM users WHERE email = ?3",
            rusqlite::params![
                blake3::hash(token.as_bytes()).as_bytes().to_vec(),
                now,
                email
            ],
        )
        .unwrap();
    assert_eq!(added, 1, "no user {email}");
    format!("tally_session={token}")
}

#[test]
fn live_streams_are_capped_per_client_and_in_total() {
    let env = Env::new(
        "trusted_proxies = [\"127.0.0.1/32\"]\n\
         [dashboard]\nlive_streams_per_client = 8\nlive_streams_total = 10\n",
    );
    env.tally(&["site", "add", "example.com", "--public"]);
    env.add_user("admin@example.com", &[]);
    // Signed in: streams without an account have lower caps of their own.
    let cookie = session(&env, "admin@example.com");
    let s = env.start();
    let agent = agent();
    let open = |from| open_live(&s, &agent, "/example.com/live", from, Some(&cookie));

    let mut mine: Vec<_> = (0..8)
        .map(|i| open(None).unwrap_or_else(|r| panic!("stream {i}: {}", r.status)))
        .collect();
    let Err(refused) = open(None) else {
        panic!("a ninth stream was opened");
    };
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());

    // Other clients have their own count, up to the server's total.
    let _other: Vec<_> = ["198.51.100.1", "198.51.100.2"]
        .iter()
        .map(|ip| open(Some(ip)).unwrap_or_else(|r| panic!("{ip}: {}", r.status)))
        .collect();
    let Err(full) = open(Some("198.51.100.3")) else {
        panic!("a stream over the total was opened");
    };
    assert_eq!(full.status, 503);
    assert!(full.header("retry-after").is_some());

    // A closed stream gives its place back (once the server notices the
    // connection is gone: at its next write, a keep-alive at the latest).
    mine.pop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reopened = loop {
        match open(None) {
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
fn streams_without_an_account_leave_room_for_members() {
    let env = Env::new(
        "trusted_proxies = [\"127.0.0.1/32\"]\n\
         [dashboard]\nlive_streams_per_client = 8\nlive_streams_total = 8\n",
    );
    for site in ["a.example", "b.example", "c.example"] {
        env.tally(&["site", "add", site, "--public"]);
    }
    env.add_user("member@example.com", &["a.example"]);
    let cookie = session(&env, "member@example.com");
    let s = env.start();
    let agent = agent();
    let guest = |path, ip| open_live(&s, &agent, path, Some(ip), None);
    let refused = |r: Result<_, Reply>, what: &str| match r {
        Ok(_) => panic!("{what} was opened"),
        Err(r) => {
            assert_eq!(r.status, 503, "{what}: {}", r.body);
            assert!(r.header("retry-after").is_some());
        }
    };

    // Streams without a session, from many addresses: half the total (4)
    // at most, a quarter (2) per site.
    let mut guests: Vec<_> = ["198.51.100.1", "198.51.100.2"]
        .iter()
        .map(|ip| guest("/a.example/live", ip).unwrap_or_else(|r| panic!("{ip}: {}", r.status)))
        .collect();
    refused(
        guest("/a.example/live", "198.51.100.3"),
        "a third stream of a site without a session",
    );
    guests.extend(
        ["198.51.100.4", "198.51.100.5"].iter().map(|ip| {
            guest("/b.example/live", ip).unwrap_or_else(|r| panic!("{ip}: {}", r.status))
        }),
    );
    refused(
        guest("/c.example/live", "198.51.100.6"),
        "a fifth stream without a session",
    );

    // A member still gets theirs, up to the total.
    let _members: Vec<_> = (1..=4)
        .map(|i| {
            let ip = format!("203.0.113.{i}");
            open_live(&s, &agent, "/a.example/live", Some(&ip), Some(&cookie))
                .unwrap_or_else(|r| panic!("member stream {i}: {} {}", r.status, r.body))
        })
        .collect();
    refused(
        open_live(
            &s,
            &agent,
            "/a.example/live",
            Some("203.0.113.5"),
            Some(&cookie),
        ),
        "a stream over the total",
    );
    drop(guests);
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

#[test]
fn revoking_access_ends_open_live_streams() {
    let env = Env::new("");
    env.add_site("shared.example");
    env.tally(&["site", "add", "pub.example", "--public"]);
    env.add_site("team.example");
    env.add_user("admin@example.com", &[]);
    env.add_user("member@example.com", &["team.example"]);
    let token = "a-share-token-of-shared-example";
    env.db()
        .execute(
            "INSERT INTO share_links (site_id, name, token_hash, hint, created_at)
             SELECT id, 'Wiki', ?1, 'a-sh', 0 FROM sites WHERE domain = 'shared.example'",
            [blake3::hash(token.as_bytes()).as_bytes().to_vec()],
        )
        .unwrap();
    let member = session(&env, "member@example.com");
    let admin = session(&env, "admin@example.com");
    let s = env.start();

    // Each stream is read to its end on a thread of its own, which says
    // when it ended.
    let reader: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let (tx, rx) = std::sync::mpsc::channel();
    let streams = [
        (
            "share link",
            format!("/share/shared.example/live?auth={token}"),
            None,
        ),
        ("public site", "/pub.example/live".to_string(), None),
        ("member", "/team.example/live".to_string(), Some(member)),
        ("admin", "/team.example/live".to_string(), Some(admin)),
    ];
    for (name, path, cookie) in streams {
        let r = open_live(&s, &reader, &path, None, cookie.as_deref())
            .unwrap_or_else(|r| panic!("{name}: {} {}", r.status, r.body));
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r.into_body().into_reader(), &mut std::io::sink());
            let _ = tx.send(name);
        });
    }

    // Access goes away three ways while the streams are open.
    std::thread::sleep(Duration::from_secs(1));
    env.db().execute("DELETE FROM share_links", []).unwrap();
    env.db()
        .execute(
            "UPDATE sites SET public = 0 WHERE domain = 'pub.example'",
            [],
        )
        .unwrap();
    env.tally(&["user", "remove", "member@example.com"]);

    // Access is checked again every 15 s: each of those streams ends.
    let mut ended: Vec<_> = (0..3)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("a stream whose access was revoked stayed open")
        })
        .collect();
    ended.sort();
    assert_eq!(ended, ["member", "public site", "share link"]);
    // The admin's, still allowed, goes on.
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
}

#[test]
fn realtime_pages_share_one_computation_a_second() {
    let env = Env::new("");
    env.tally(&["site", "add", "pub.example", "--public"]);
    let s = env.start();
    let before = gauge(&s, "tally_live_snapshots_total");
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let page = s.get("/pub.example?period=realtime", &[]);
        assert_eq!(page.status, 200);
    }
    // Each computation scans every live visitor of the site: anonymous page
    // views of a public site get the copy of the current second.
    let seconds = started.elapsed().as_secs_f64().ceil();
    let computed = gauge(&s, "tally_live_snapshots_total") - before;
    assert!(
        computed >= 1.0 && computed <= seconds + 1.0,
        "{computed} computations in {seconds} s"
    );
}

#[test]
fn filtered_live_views_are_bounded() {
    // Room for 32 streams of guests of one site: the filtered views' bound
    // is met first.
    let env = Env::new("[dashboard]\nlive_streams_per_client = 64\nlive_streams_total = 128\n");
    env.tally(&["site", "add", "example.com", "--public"]);
    let s = env.start();
    let agent = agent();
    let filtered = |n: usize| format!("/example.com/live?filters=event:page%3D%3D/p{n}");
    let open = |path: &str| open_live(&s, &agent, path, None, None);

    // Each filtered view is queried every second while watched: at most
    // 16 at once, however many streams and pages watch them.
    let mut watched: Vec<_> = (0..16)
        .map(|n| open(&filtered(n)).unwrap_or_else(|r| panic!("view {n}: {}", r.status)))
        .collect();
    let Err(refused) = open(&filtered(16)) else {
        panic!("a 17th filtered view was opened");
    };
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("filtered"), "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    let page = s.get(
        "/example.com?period=realtime&filters=event:page%3D%3D/p16",
        &[],
    );
    assert_eq!(page.status, 503);
    // Views already watched, and views without filters, are still served.
    let _again = open(&filtered(3)).unwrap_or_else(|r| panic!("a watched view: {}", r.status));
    let _all = open("/example.com/live").unwrap_or_else(|r| panic!("no filters: {}", r.status));
    let page = s.get(
        "/example.com?period=realtime&filters=event:page%3D%3D/p3",
        &[],
    );
    assert_eq!(page.status, 200);

    // A view no longer watched makes room within seconds.
    watched.remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let _new = loop {
        match open(&filtered(16)) {
            Ok(r) => break r,
            Err(r) => {
                assert_eq!(r.status, 503, "{}", r.body);
                assert!(Instant::now() < deadline, "no room was made");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
}
