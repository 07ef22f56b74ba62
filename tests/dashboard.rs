//! The dashboard's HTML side against the real binary: first-run setup,
//! sign-in, sessions, CSRF, rate limiting, who sees which site, share links,
//! the public toggle, security headers and escaping of tracked values.

mod common;

use common::client::{Client, field};
use common::{CHROME, Env, FIREFOX, PASSWORD, urlencode};

fn as_refs(f: &[(String, String)]) -> Vec<(&str, &str)> {
    f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The token of the share link a settings page shows just after creating it.
fn share_token(html: &str) -> String {
    let marker = "?auth=";
    let at = html.find(marker).expect("the new share link is shown") + marker.len();
    html[at..at + 64].to_string()
}

#[test]
fn first_run_setup_needs_the_token_from_the_log() {
    let env = Env::new("");
    env.add_site("example.com");
    let server = env.start();
    let mut c = Client::new(&server);
    let login = c.get("/login");
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location"), Some("/setup"));
    let page = c.get("/setup");
    assert_eq!(page.status, 200);
    let csrf = field(&page.body, "csrf");
    let token = server
        .log_lines()
        .iter()
        .find_map(|l| {
            l.split("setup_token=")
                .nth(1)
                .map(|t| t.split_whitespace().next().unwrap().to_string())
        })
        .expect("the setup token is logged");
    let form = |token: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("token".to_string(), token.to_string()),
            ("email".to_string(), "owner@example.com".to_string()),
            ("password".to_string(), PASSWORD.to_string()),
        ]
    };
    let wrong = c.post("/setup", &as_refs(&form("0000")));
    assert_eq!(wrong.status, 400);
    assert_eq!(env.count("SELECT count(*) FROM users"), 0);
    let ok = c.post("/setup", &as_refs(&form(&token)));
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(env.count("SELECT count(*) FROM users WHERE admin = 1"), 1);
    // Signed in at once, and the setup page is gone for good.
    let sites = c.get("/");
    assert_eq!(sites.status, 200);
    assert!(sites.body.contains("example.com"));
    assert_eq!(c.get("/setup").status, 404);
    // Replaying the form fails (its token was spent with the sign-in).
    let again = c.post("/setup", &as_refs(&form(&token)));
    assert!(matches!(again.status, 403 | 404), "{}", again.status);
    assert_eq!(env.count("SELECT count(*) FROM users"), 1);
    // Only a hash of the session token is stored.
    let cookie = c.cookies["tally_session"].clone();
    let stored: Vec<u8> = env
        .db()
        .query_row("SELECT token_hash FROM login_sessions", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, cookie.as_bytes());
}

#[test]
fn sign_in_csrf_rate_limit_and_sign_out() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::new(&server);

    let home = c.get("/");
    assert_eq!(home.status, 303);
    assert_eq!(home.header("location"), Some("/login?next=%2F"));

    // Wrong password: the form again, with a 401.
    let bad = c.sign_in("admin@example.com", "not the password");
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("Wrong email or password"));

    // A sign-in form posted from elsewhere carries no matching token.
    let mut stranger = Client::new(&server);
    let forged = stranger.post(
        "/login",
        &[
            ("csrf", "x"),
            ("email", "admin@example.com"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(forged.status, 403);
    assert!(!stranger.cookies.contains_key("tally_session"));

    let ok = c.sign_in("admin@example.com", PASSWORD);
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), Some("/"));
    let cookie = ok
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("tally_session="))
        .map(|(_, v)| v.clone())
        .expect("session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(
        !cookie.contains("Secure"),
        "plain http without a trusted proxy"
    );
    assert_eq!(c.get("/").status, 200);
    assert_eq!(c.get("/example.com").status, 200);

    // A form without the session's token changes nothing.
    let no_token = c.post(
        "/sites",
        &[
            ("csrf", "nope"),
            ("domain", "new.example"),
            ("timezone", "UTC"),
        ],
    );
    assert_eq!(no_token.status, 403);
    assert_eq!(env.count("SELECT count(*) FROM sites"), 1);
    let csrf = c.csrf("/");
    let added = c.post(
        "/sites",
        &[
            ("csrf", &csrf),
            ("domain", "New.Example"),
            ("timezone", "Europe/Berlin"),
        ],
    );
    assert_eq!(added.status, 303);
    assert_eq!(added.header("location"), Some("/new.example/settings"));
    assert_eq!(
        env.count(
            "SELECT count(*) FROM sites WHERE domain = 'new.example' AND timezone = 'Europe/Berlin'"
        ),
        1
    );
    let settings = c.get("/new.example/settings");
    assert!(
        settings.body.contains("data-domain=&#34;new.example&#34;"),
        "{}",
        settings.body
    );

    // Signing out ends the session on the server, not just in the browser.
    let stolen = c.cookies["tally_session"].clone();
    let out = c.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    assert_eq!(c.get("/").status, 303);
    let mut thief = Client::new(&server);
    thief.cookies.insert("tally_session".into(), stolen);
    assert_eq!(thief.get("/").status, 303);

    // Five failures lock the account for a while, even with the right password.
    for _ in 0..5 {
        assert_eq!(
            c.sign_in("admin@example.com", "wrong password!").status,
            401
        );
    }
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 429);
}

#[test]
fn users_see_only_their_sites() {
    let env = Env::new("");
    env.add_site("a.example");
    env.add_site("b.example");
    env.add_user("member@example.com", &["b.example"]);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("member@example.com", PASSWORD).status, 303);
    let list = c.get("/");
    assert!(list.body.contains("b.example"));
    assert!(!list.body.contains("a.example"));
    assert_eq!(c.get("/b.example").status, 200);
    assert_eq!(c.get("/a.example").status, 404);
    assert_eq!(c.get("/a.example/settings").status, 404);
    assert_eq!(c.get("/nonexistent.example").status, 404);
    let csrf = c.csrf("/b.example/settings");
    let remove = c.post(
        "/a.example/settings",
        &[
            ("csrf", &csrf),
            ("action", "remove"),
            ("confirm", "a.example"),
        ],
    );
    assert_eq!(remove.status, 404);
    assert_eq!(env.count("SELECT count(*) FROM sites"), 2);
}

#[test]
fn share_links_public_toggle_and_headers() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut anon = Client::new(&server);
    // A private site sends strangers to sign in, as an unknown one does.
    let private = anon.get("/example.com");
    assert_eq!(private.status, 303);
    assert_eq!(anon.get("/nothing.example").status, 303);

    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let csrf = c.csrf("/example.com/settings");
    let made = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "share_add"),
            ("name", "Team wiki"),
        ],
    );
    // Shown whole on this answer only; stored as a hash.
    assert_eq!(made.status, 200);
    let token = share_token(&made.body);
    let id = env.count("SELECT id FROM share_links");
    let shared = anon.get(&format!("/share/example.com?auth={token}&period=7d"));
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert!(shared.body.contains("Unique visitors"));
    assert_eq!(shared.header("referrer-policy"), Some("no-referrer"));
    // Links on the shared page keep the token; settings are not offered.
    assert!(shared.body.contains(&format!("auth={token}")));
    assert!(!shared.body.contains("/example.com/settings"));
    assert_eq!(anon.get("/share/example.com?auth=wrong").status, 404);
    assert_eq!(anon.get("/share/example.com").status, 404);
    // The token opens this site only.
    env.add_site("other.example");
    assert_eq!(
        anon.get(&format!("/share/other.example?auth={token}"))
            .status,
        404
    );
    let revoked = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "share_remove"),
            ("id", &id.to_string()),
        ],
    );
    assert_eq!(revoked.status, 303);
    assert_eq!(
        anon.get(&format!("/share/example.com?auth={token}")).status,
        404
    );

    let public = c.post(
        "/example.com/settings",
        &[("csrf", &csrf), ("action", "public"), ("public", "1")],
    );
    assert_eq!(public.status, 303);
    let open = anon.get("/example.com?period=day");
    assert_eq!(open.status, 200);
    let csp = open.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(open.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(anon.get("/example.com/settings").status, 303);

    assert_eq!(anon.get("/favicon.ico").status, 204);
    assert!(anon.get("/robots.txt").body.contains("Disallow: /"));

    // Bad parameters are a 400 page, not a crash.
    let bad = c.get("/example.com?period=fortnight");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("fortnight"));
    assert_eq!(c.get("/example.com?filters=visit:password==x").status, 400);
}

#[test]
fn tracked_values_are_escaped() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let xss = "<script>alert(1)</script>";
    let body = serde_json::json!({
        "n": "pageview",
        "u": format!("https://example.com/x?utm_source={}&utm_campaign=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E", urlencode(xss)),
        "d": "example.com",
        "r": "javascript:alert(3)//",
    })
    .to_string();
    assert_eq!(server.event(&body, CHROME).status, 202);
    let custom = serde_json::json!({
        "n": "<img src=x onerror=alert(4)>",
        "u": "https://example.com/",
        "d": "example.com",
        "p": {"plan": "<b>bold</b>"},
    })
    .to_string();
    assert_eq!(server.event(&custom, CHROME).status, 202);
    server.settle();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    for path in [
        "/example.com?period=day&sources=utm_source",
        "/example.com?period=day&sources=utm_campaign",
        "/example.com?period=day&sources=referrers",
        "/example.com?period=day&goals=events",
        "/example.com?period=realtime",
    ] {
        let page = c.get(path);
        assert_eq!(page.status, 200, "{path}");
        for raw in [
            "<script>alert",
            "<img src=x",
            "onerror=alert(2)>",
            "href=\"javascript:",
        ] {
            assert!(!page.body.contains(raw), "{path} shows {raw} unescaped");
        }
    }
    let campaign = c.get("/example.com?period=day&sources=utm_source");
    assert!(
        campaign
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        campaign.body
    );
    // A value the filters syntax cannot express is shown, not linked.
    let piped = common::pageview("https://example.com/?utm_medium=a%7Cb");
    assert_eq!(server.event(&piped, FIREFOX).status, 202);
    server.settle();
    let medium = c.get("/example.com?period=day&sources=utm_medium");
    assert!(
        medium
            .body
            .contains("<span class=\"label\" title=\"a|b\">a|b</span>"),
        "{}",
        medium.body
    );
    let events = c.get("/example.com?period=day&goals=events");
    assert!(events.body.contains("&#60;img src=x onerror=alert(4)&#62;"));
}

#[test]
fn details_pages_csv_and_event_properties() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    for i in 0..105 {
        let body = common::pageview(&format!("https://example.com/p/{i}"));
        assert_eq!(server.event(&body, CHROME).status, 202);
    }
    let formula = serde_json::json!({
        "n": "=HYPERLINK(\"http://evil.example\")",
        "u": "https://example.com/",
        "d": "example.com",
    });
    assert_eq!(server.event(&formula.to_string(), CHROME).status, 202);
    let signup = serde_json::json!({
        "n": "Signup", "u": "https://example.com/", "d": "example.com", "p": {"plan": "pro"},
    });
    assert_eq!(server.event(&signup.to_string(), CHROME).status, 202);
    server.settle();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);

    let dash = c.get("/example.com?period=day");
    assert!(dash.body.contains("/example.com/details/pages?period=day"));
    let first = c.get("/example.com/details/pages?period=day");
    assert_eq!(first.status, 200);
    assert_eq!(first.body.matches("<tr><td class=\"label\">").count(), 100);
    assert!(first.body.contains("rel=\"next\""));
    let second = c.get("/example.com/details/pages?period=day&page=2");
    assert_eq!(
        second.body.matches("<tr><td class=\"label\">").count(),
        5,
        "105 pages (custom events are not pageviews)"
    );
    assert!(!second.body.contains("rel=\"next\""));
    assert!(second.body.contains("rel=\"prev\""));
    assert_eq!(c.get("/example.com/details/pages?page=0").status, 400);
    assert_eq!(c.get("/example.com/details/nonsense").status, 404);

    let csv = c.get("/example.com/details/pages?period=day&format=csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .contains("example.com-pages.csv")
    );
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines[0], "Page,visitors,visits,pageviews");
    assert_eq!(lines.len(), 1 + 105);
    let events = c.get("/example.com/details/events?period=day&format=csv");
    assert!(
        events
            .body
            .contains("\"'=HYPERLINK(\"\"http://evil.example\"\")\""),
        "a formula is defused: {}",
        events.body
    );

    // Choosing one event offers its properties as tabs.
    let chosen = c.get("/example.com?period=day&filters=event%3Aname%3D%3DSignup");
    assert!(chosen.body.contains("Property: plan"));
    let plan = c.get("/example.com?period=day&filters=event%3Aname%3D%3DSignup&goals=prop%3Aplan");
    assert!(plan.body.contains(">pro</a>"), "{}", plan.body);
    assert_eq!(
        c.get("/example.com/details/prop:plan?period=day&filters=event%3Aname%3D%3DSignup")
            .status,
        200
    );
}

#[test]
fn settings_exclusions_goals_and_api_keys() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_site("other.example");
    env.add_user("admin@example.com", &[]);
    env.add_user("member@example.com", &["example.com"]);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let csrf = c.csrf("/example.com/settings");

    // Exclusions are validated, then applied at ingest.
    let bad = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "exclusions"),
            ("excluded_ips", "not-an-ip"),
            ("excluded_paths", ""),
        ],
    );
    assert!(
        bad.body.contains("not-an-ip is not an IP address"),
        "{}",
        bad.body
    );
    assert_eq!(
        env.count("SELECT count(*) FROM sites WHERE excluded_ips <> ''"),
        0
    );
    // Path patterns are bounded in length and number.
    let long = format!("/{}", "*a".repeat(100));
    let many: Vec<String> = (0..101).map(|i| format!("/p{i}/*")).collect();
    for (paths, says) in [
        (long, "Paths: a pattern is longer than 200 characters"),
        (many.join("\n"), "Paths: at most 100 patterns"),
    ] {
        let refused = c.post(
            "/example.com/settings",
            &[
                ("csrf", &csrf),
                ("action", "exclusions"),
                ("excluded_ips", ""),
                ("excluded_paths", &paths),
            ],
        );
        assert!(refused.body.contains(says), "{}", refused.body);
    }
    assert_eq!(
        env.count("SELECT count(*) FROM sites WHERE excluded_paths <> ''"),
        0
    );
    let saved = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "exclusions"),
            ("excluded_ips", ""),
            ("excluded_paths", " /admin/** \n\n"),
        ],
    );
    assert_eq!(saved.status, 303);
    let other = c.post(
        "/other.example/settings",
        &[
            ("csrf", &csrf),
            ("action", "exclusions"),
            ("excluded_ips", "127.0.0.0/8"),
            ("excluded_paths", ""),
        ],
    );
    assert_eq!(other.status, 303);
    let admin_page = serde_json::json!({"n": "pageview", "u": "https://example.com/admin/users/1", "d": "example.com"});
    let dropped = server.event(&admin_page.to_string(), CHROME);
    assert_eq!(
        (dropped.status, dropped.header("x-tally-dropped")),
        (202, Some("1"))
    );
    assert_eq!(
        server
            .event(&common::pageview("https://example.com/ok"), CHROME)
            .status,
        202
    );
    let from_here =
        serde_json::json!({"n": "pageview", "u": "https://other.example/", "d": "other.example"});
    assert_eq!(
        server
            .event(&from_here.to_string(), CHROME)
            .header("x-tally-dropped"),
        Some("1")
    );
    assert_eq!(env.count("SELECT count(*) FROM events"), 1);
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE path = '/ok'"),
        1
    );

    // Goals: add, then remove.
    let goal = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "goal_add"),
            ("event", "Signup"),
            ("page", ""),
        ],
    );
    assert_eq!(goal.status, 303);
    let goal_id = env.count("SELECT id FROM goals WHERE event_name = 'Signup'");
    let removed = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "goal_remove"),
            ("id", &goal_id.to_string()),
        ],
    );
    assert_eq!(removed.status, 303);
    assert_eq!(env.count("SELECT count(*) FROM goals"), 0);

    // API keys: shown once, usable, revocable; admins only.
    let made = c.post(
        "/example.com/settings",
        &[("csrf", &csrf), ("action", "key_add"), ("name", "grafana")],
    );
    assert_eq!(made.status, 200);
    let at = made.body.find("tly_").expect("the new key is shown");
    let key = made.body[at..at + 68].to_string();
    let query = "/api/v1/stats/aggregate?site_id=example.com&period=day";
    assert_eq!(server.stats(&key, query).status, 200);
    let key_id = env.count("SELECT id FROM api_keys");
    assert!(
        !c.get("/example.com/settings").body.contains(&key),
        "shown only once"
    );
    let revoked = c.post(
        "/example.com/settings",
        &[
            ("csrf", &csrf),
            ("action", "key_remove"),
            ("id", &key_id.to_string()),
        ],
    );
    assert_eq!(revoked.status, 303);
    assert_eq!(server.stats(&key, query).status, 401);

    let mut m = Client::new(&server);
    assert_eq!(m.sign_in("member@example.com", PASSWORD).status, 303);
    let page = m.get("/example.com/settings");
    assert!(!page.body.contains("Stats API keys"));
    let member_csrf = field(&page.body, "csrf");
    let refused = m.post(
        "/example.com/settings",
        &[
            ("csrf", &member_csrf),
            ("action", "key_add"),
            ("name", "mine"),
        ],
    );
    assert_eq!(refused.status, 403);
    assert_eq!(env.count("SELECT count(*) FROM api_keys"), 0);
}

#[test]
fn live_view_survives_a_restart() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    assert_eq!(
        server
            .event(&common::pageview("https://example.com/still-here"), CHROME)
            .status,
        202
    );
    server.settle();
    assert_eq!(server.terminate(), 0);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let page = c.get("/example.com?period=realtime");
    assert!(
        page.body.contains("id=\"current-visitors\">1</strong>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("/still-here"));
}

#[test]
fn realtime_view_and_live_stream_honour_filters() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let send = |ip: &str, path: &str, referrer: Option<&str>| {
        let mut body = serde_json::json!({
            "n": "pageview",
            "u": format!("https://example.com{path}"),
            "d": "example.com",
        });
        if let Some(r) = referrer {
            body["r"] = r.into();
        }
        let r = server.event_from(ip, &body.to_string(), CHROME);
        assert_eq!(r.status, 202, "{}", r.body);
    };
    send(
        "198.51.100.1",
        "/from-google",
        Some("https://www.google.com/"),
    );
    send("198.51.100.2", "/direct-page", None);
    send(
        "198.51.100.3",
        "/from-hn",
        Some("https://news.ycombinator.com/"),
    );
    server.settle();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);

    let all = c.get("/example.com?period=realtime");
    assert!(
        all.body.contains("id=\"current-visitors\">3</strong>"),
        "{}",
        all.body
    );
    assert!(all.body.contains("/direct-page"));

    let filters = urlencode("visit:source==Google");
    let page = c.get(&format!("/example.com?period=realtime&filters={filters}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("id=\"current-visitors\">1</strong>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("/from-google"));
    for other in ["/direct-page", "/from-hn", "Hacker News"] {
        assert!(!page.body.contains(other), "{other} shown: {}", page.body);
    }
    // The filter is shown, and the page's stream is the filtered one.
    assert!(page.body.contains("Source is Google"), "{}", page.body);
    let live = format!("/example.com/live?filters={filters}");
    assert!(
        page.body.contains(&format!("data-live=\"{live}\"")),
        "{}",
        page.body
    );
    let bad = c.get("/example.com?period=realtime&filters=visit:password==x");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("filters"), "{}", bad.body);
    assert_eq!(
        c.get("/example.com/live?filters=visit:password==x").status,
        400
    );

    // The stream of the filtered view sends the filtered numbers, and
    // follows new visitors that match.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let r = agent
        .get(server.url(&live))
        .header("Cookie", &c.cookie_header())
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(r.into_body().into_reader()));
    let mut next = || loop {
        let line = lines.next().expect("the stream ended").unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str::<serde_json::Value>(data).unwrap();
        }
    };
    let first = next();
    assert_eq!(first["visitors"], 1, "{first}");
    assert_eq!(first["pages"], serde_json::json!([["/from-google", 1]]));
    assert_eq!(first["sources"], serde_json::json!([["Google", 1]]));
    let per_minute = first["pageviews_per_minute"].as_array().unwrap();
    assert_eq!(per_minute.len(), 30);
    assert_eq!(
        per_minute.iter().map(|v| v.as_i64().unwrap()).sum::<i64>(),
        1
    );
    send("198.51.100.4", "/direct-too", None);
    send(
        "198.51.100.5",
        "/also-google",
        Some("https://www.google.com/"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let m = next();
        let text = m.to_string();
        assert!(!text.contains("direct"), "{text}");
        if m["visitors"] == 2 {
            assert_eq!(m["sources"], serde_json::json!([["Google", 2]]), "{text}");
            assert!(text.contains("/also-google"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
    }
}

#[test]
fn cookies_are_secure_behind_an_https_proxy() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::new(&server).with_header("X-Forwarded-Proto", "https");
    let signed = c.sign_in("admin@example.com", PASSWORD);
    assert_eq!(signed.status, 303);
    let cookie = signed
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("__Host-tally_session="))
        .map(|(_, v)| v.clone())
        .expect("session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // A client that is not the proxy cannot claim https for itself.
    let env2 = Env::new("");
    env2.add_site("example.com");
    env2.add_user("admin@example.com", &[]);
    let direct = env2.start();
    let mut d = Client::new(&direct).with_header("X-Forwarded-Proto", "https");
    let plain = d.sign_in("admin@example.com", PASSWORD);
    assert!(plain.headers.iter().any(|(k, v)| k == "set-cookie"
        && v.starts_with("tally_session=")
        && !v.contains("Secure")));
}

#[test]
fn share_links_can_be_embedded_when_configured() {
    let env = Env::new("[dashboard]\nembed_share_links = true");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let csrf = c.csrf("/example.com/settings");
    let made = c.post(
        "/example.com/settings",
        &[("csrf", &csrf), ("action", "share_add"), ("name", "Wiki")],
    );
    let token = share_token(&made.body);
    let shared = Client::new(&server).get(&format!("/share/example.com?auth={token}"));
    assert_eq!(shared.status, 200);
    let csp = shared.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors *"), "{csp}");
    assert!(!csp.contains("unsafe-inline"));
    // Everything else still refuses to be framed.
    let own = c.get("/example.com");
    assert!(
        own.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[test]
fn export_is_a_zip_of_every_panel_for_the_view() {
    use std::io::Read;
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    // Two visitors: one from Google who reads /a twice, one direct on /b.
    let other = format!("{CHROME} Other");
    for (path, referrer, ua) in [
        ("/a", "https://www.google.com/", CHROME),
        ("/b", "", other.as_str()),
        ("/a", "", CHROME),
    ] {
        let body = serde_json::json!({
            "n": "pageview", "u": format!("https://example.com{path}"), "d": "example.com",
            "r": referrer,
        });
        assert_eq!(server.event(&body.to_string(), ua).status, 202);
    }
    let signup = serde_json::json!({
        "n": "Signup", "u": "https://example.com/", "d": "example.com", "p": {"plan": "=pro"},
    });
    assert_eq!(server.event(&signup.to_string(), FIREFOX).status, 202);
    server.settle();
    let mut c = Client::new(&server);
    // Not signed in: no data, a redirect to sign in.
    let (status, _, _) = c.get_bytes("/example.com/export?period=day");
    assert_eq!(status, 303);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let dash = c.get("/example.com?period=day");
    assert!(
        dash.body.contains("/example.com/export?period=day"),
        "{}",
        dash.body
    );

    let (status, kind, body) = c.get_bytes("/example.com/export?period=day");
    assert_eq!(status, 200);
    assert_eq!(kind, "application/zip");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).expect("a zip");
    let mut files = std::collections::HashMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        files.insert(f.name().unwrap().to_string(), text);
    }
    for name in [
        "visitors.csv",
        "sources.csv",
        "referrers.csv",
        "pages.csv",
        "entry_pages.csv",
        "exit_pages.csv",
        "countries.csv",
        "regions.csv",
        "cities.csv",
        "browsers.csv",
        "operating_systems.csv",
        "devices.csv",
        "utm_campaigns.csv",
        "conversions.csv",
        "custom_events.csv",
        "custom_props.csv",
    ] {
        assert!(
            files.contains_key(name),
            "{name} missing: {:?}",
            files.keys()
        );
    }
    assert!(files["pages.csv"].starts_with("Page,visitors,visits,pageviews\r\n"));
    assert!(
        files["pages.csv"].contains("/a,1,1,2\r\n"),
        "{}",
        files["pages.csv"]
    );
    assert!(
        files["sources.csv"].contains("Google,1"),
        "{}",
        files["sources.csv"]
    );
    assert!(
        files["custom_props.csv"].contains("plan,'=pro,1,1"),
        "{}",
        files["custom_props.csv"]
    );
    let hours = files["visitors.csv"].lines().count();
    assert_eq!(hours, 1 + 24, "a header and the day's hours");

    // The filters of the view apply to every file.
    let (_, _, body) =
        c.get_bytes("/example.com/export?period=day&filters=visit%3Asource%3D%3DGoogle");
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body)).unwrap();
    let mut pages = String::new();
    zip.by_name("pages.csv")
        .unwrap()
        .read_to_string(&mut pages)
        .unwrap();
    assert!(!pages.contains("/b,"), "{pages}");
    assert_eq!(c.get("/example.com/export?period=realtime").status, 400);
}

#[test]
fn a_user_turns_weekly_emails_off_and_on() {
    let env = Env::new("");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let home = c.get("/");
    assert!(
        home.body.contains("Stop the e-mails"),
        "{} {}",
        home.status,
        home.body
    );
    let csrf = c.csrf("/");
    assert_eq!(
        c.post("/account/summary", &[("csrf", "wrong"), ("on", "0")])
            .status,
        403
    );
    assert_eq!(env.count("SELECT weekly_summary FROM users"), 1);
    let r = c.post("/account/summary", &[("csrf", &csrf), ("on", "0")]);
    assert_eq!(r.status, 303);
    assert_eq!(env.count("SELECT weekly_summary FROM users"), 0);
    assert!(c.get("/").body.contains("E-mail me weekly"));
    c.post("/account/summary", &[("csrf", &csrf), ("on", "1")]);
    assert_eq!(env.count("SELECT weekly_summary FROM users"), 1);
}
