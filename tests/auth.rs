//! Sign-in, proxies and sessions against the real binary: where a sign-in
//! may send the browser, how sign-in attempts are limited per account and
//! network, and the cookies, idle timeout and HSTS of sessions over https.

mod common;

use common::client::{Client, field};
use common::{Env, PASSWORD, Reply, urlencode};

/// `next` values a browser would follow to another host, or that are not
/// plain paths of this server.
const FOREIGN_NEXT: &[&str] = &[
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "/%09/evil.example",
    "/\\/evil.example",
    "/\\evil.example",
    "//evil.example",
    "https://evil.example",
    "https:evil.example",
    "/ /evil.example",
    "/..//evil.example",
];

#[test]
fn sign_in_only_returns_to_paths_of_this_server() {
    let env = Env::new("");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    for next in FOREIGN_NEXT {
        let mut c = Client::new(&server);
        // The form carries `/` instead.
        let page = c.get(&format!("/login?next={}", urlencode(next)));
        assert_eq!(page.status, 200);
        assert_eq!(field(&page.body, "next"), "/", "{next:?}");
        // A form posted with it anyway lands on `/`.
        let signed = c.sign_in_to("admin@example.com", PASSWORD, next);
        assert_eq!(signed.status, 303, "{next:?}");
        assert_eq!(signed.header("location"), Some("/"), "{next:?}");
    }
    // Signed in, the sign-in page sends straight on: still only to `/`.
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    for next in FOREIGN_NEXT {
        let r = c.get(&format!("/login?next={}", urlencode(next)));
        assert_eq!(r.status, 303, "{next:?}");
        assert_eq!(r.header("location"), Some("/"), "{next:?}");
    }
    let r = c.get("/login?next=%2Fexample.com%3Fperiod%3D7d");
    assert_eq!(r.header("location"), Some("/example.com?period=7d"));
}

#[test]
fn parallel_guesses_are_all_counted_and_do_not_lock_the_owner_out() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    // One form token for every guess, as a script would reuse it.
    let mut stranger = Client::new(&server);
    let csrf = stranger.login_csrf();
    let cookie = stranger.cookie_header();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf.as_str()),
            ("email", "admin@example.com"),
            ("password", "not the password"),
        ])
        .finish();
    let url = server.url("/login");
    let barrier = std::sync::Barrier::new(40);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let guesses: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    let agent = common::agent();
                    barrier.wait();
                    let r = agent
                        .post(&url)
                        .header("Cookie", &cookie)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .send(body.as_str());
                    common::reply(r).status
                })
            })
            .collect();
        guesses.into_iter().map(|g| g.join().unwrap()).collect()
    });
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 40, "{statuses:?}");
    assert_eq!(checked, 5, "passwords checked: {statuses:?}");
    // The strangers' network is done for a while, even with the password...
    assert_eq!(
        Client::new(&server)
            .sign_in("admin@example.com", PASSWORD)
            .status,
        429
    );
    // ...but the owner, from another network, signs in.
    let mut owner = Client::proxied(&server, "198.51.100.7", "http");
    let signed = owner.sign_in("admin@example.com", PASSWORD);
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(owner.get("/").status, 200);
}

/// Strangers guess at `email` from a new network each time (as with many
/// IPv6 /64s), polling every 50 ms, until the account's back-off before
/// the next attempt is `backoff_secs` long; returns when they have just
/// taken a slot.
fn take_backoff_slots(server: &common::Server, email: &str, backoff_secs: i64) {
    let mut stranger = Client::new(server);
    let csrf = stranger.login_csrf();
    let cookie = stranger.cookie_header();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", "not the password"),
        ])
        .finish();
    let agent = common::agent();
    // The free attempts, then one per slot with the delays doubling: 2, 4, 8...
    let wanted = 20 + (backoff_secs / 2).ilog2() as usize + 1;
    let (mut checked, mut n) = (0, 0u32);
    while checked < wanted {
        let r = agent
            .post(&server.url("/login"))
            .header("Cookie", &cookie)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Forwarded-For", &format!("10.{}.{}.1", n / 256, n % 256))
            .send(body.as_str());
        n += 1;
        match common::reply(r).status {
            401 => checked += 1,
            429 => std::thread::sleep(std::time::Duration::from_millis(50)),
            other => panic!("guess answered {other}"),
        }
        assert!(n < 10_000, "the slots never opened");
    }
}

#[test]
fn a_browser_that_signed_in_before_gets_in_through_an_attack_and_a_restart() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    env.add_user("bob@example.com", &["example.com"]);
    let device = "__Host-tally_device";
    let server = env.start();
    // The owner signs in once, from home, and the browser gets a device
    // cookie; so does Bob's, for his own account.
    let mut owner = Client::proxied(&server, "192.0.2.50", "https");
    let signed = owner.sign_in("admin@example.com", PASSWORD);
    assert_eq!(signed.status, 303, "{}", signed.body);
    let set = set_cookie(&signed, device).expect("a device cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=15552000",
    ] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    let owner_device = owner.cookies[device].clone();
    let mut bob = Client::proxied(&server, "192.0.2.60", "https");
    assert_eq!(bob.sign_in("bob@example.com", PASSWORD).status, 303);
    let bob_device = bob.cookies[device].clone();
    assert_ne!(owner_device, bob_device);
    // The exemption is kept in the database, not only in memory.
    assert_eq!(server.terminate(), 0);
    let server = env.start();
    take_backoff_slots(&server, "admin@example.com", 16);
    // A browser that never signed in, on a network never seen, competes
    // with the strangers and loses...
    let mut new_browser = Client::proxied(&server, "198.51.100.7", "https");
    let r = new_browser.sign_in("admin@example.com", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    // ...as does Bob's browser: his device token is for his account only...
    let mut bobs = Client::proxied(&server, "198.51.101.7", "https");
    bobs.cookies.insert(device.into(), bob_device);
    let r = bobs.sign_in("admin@example.com", PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    // ...but the owner's browser, on another new network, gets in.
    let mut owner = Client::proxied(&server, "198.51.102.7", "https");
    owner.cookies.insert(device.into(), owner_device.clone());
    let r = owner.sign_in("admin@example.com", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(owner.get("/").status, 200);
    // Signing in keeps the same device token.
    assert_eq!(owner.cookies[device], owner_device);
    // Removing a user ends their device tokens.
    assert_eq!(env.count("SELECT count(*) FROM device_tokens"), 2);
    env.tally(&["user", "remove", "bob@example.com"]);
    assert_eq!(env.count("SELECT count(*) FROM device_tokens"), 1);
}

/// The `Set-Cookie` header of `reply` for cookie `name`.
fn set_cookie<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with(&format!("{name}=")))
        .map(|(_, v)| v.as_str())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const HSTS: &str = "strict-transport-security";

#[test]
fn https_sessions_use_host_cookies_and_hsts() {
    let env = Env::new("trusted_proxies = [\"127.0.0.1/32\"]");
    env.add_site("example.com");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::proxied(&server, "198.51.100.7", "https");
    let page = c.get("/login");
    assert_eq!(page.header(HSTS), Some("max-age=31536000"));
    let form = set_cookie(&page, "__Host-tally_form").expect("form cookie");
    for attr in ["; Path=/", "; Secure", "; HttpOnly"] {
        assert!(form.contains(attr), "{form}");
    }
    assert!(!form.to_ascii_lowercase().contains("domain="), "{form}");
    assert!(set_cookie(&page, "tally_form").is_none());
    let signed = c.sign_in("admin@example.com", PASSWORD);
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.header(HSTS), Some("max-age=31536000"));
    let session = set_cookie(&signed, "__Host-tally_session").expect("session cookie");
    for attr in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(
        !session.to_ascii_lowercase().contains("domain="),
        "{session}"
    );
    assert!(set_cookie(&signed, "tally_session").is_none());
    let home = c.get("/");
    assert_eq!(home.status, 200);
    assert_eq!(home.header(HSTS), Some("max-age=31536000"));
    // Every response over https, not only pages.
    assert_eq!(c.get("/api/health").header(HSTS), Some("max-age=31536000"));
    let token = c.cookies["__Host-tally_session"].clone();

    // Over https, only the `__Host-` name opens the session: a plain-name
    // cookie may have been planted by a sibling domain or over plain http.
    let mut planted = Client::proxied(&server, "198.51.100.7", "https");
    planted
        .cookies
        .insert("tally_session".into(), token.clone());
    assert_eq!(planted.get("/").status, 303);
    // A plain-name form cookie does not sign in over https either.
    let mut planted_form = Client::proxied(&server, "198.51.100.7", "https");
    let csrf = planted_form.login_csrf();
    let form_token = planted_form.cookies.remove("__Host-tally_form").unwrap();
    planted_form.cookies.insert("tally_form".into(), form_token);
    let r = planted_form.post(
        "/login",
        &[
            ("csrf", &csrf),
            ("email", "admin@example.com"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, 403);
    // Over plain http the `__Host-` cookie is not read, and nothing says
    // Strict-Transport-Security.
    let mut plain = Client::new(&server);
    plain
        .cookies
        .insert("__Host-tally_session".into(), token.clone());
    let r = plain.get("/");
    assert_eq!(r.status, 303);
    assert_eq!(r.header(HSTS), None);
    assert_eq!(Client::new(&server).get("/login").header(HSTS), None);

    // Signing out over https expires the `__Host-` cookie.
    let csrf = field(&c.get("/").body, "csrf");
    let out = c.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(out.status, 303);
    let gone = set_cookie(&out, "__Host-tally_session").expect("expired cookie");
    assert!(
        gone.contains("Max-Age=0") && gone.contains("; Secure"),
        "{gone}"
    );
    assert_eq!(c.get("/").status, 303);
    drop(server);

    // A client that is not a trusted proxy cannot ask for https.
    let env = Env::new("");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut direct = Client::new(&server).with_header("X-Forwarded-Proto", "https");
    let page = direct.get("/login");
    assert_eq!(page.header(HSTS), None);
    assert!(set_cookie(&page, "tally_form").is_some());
    let signed = direct.sign_in("admin@example.com", PASSWORD);
    let session = set_cookie(&signed, "tally_session").expect("plain session cookie");
    assert!(!session.contains("Secure"), "{session}");
}

#[test]
fn sessions_end_when_idle_and_slide_with_use() {
    let env = Env::new("[dashboard]\nsession_idle_minutes = 60");
    env.add_user("admin@example.com", &[]);
    let server = env.start();
    let mut c = Client::new(&server);
    assert_eq!(c.sign_in("admin@example.com", PASSWORD).status, 303);
    let db = env.db();
    let row = || -> (i64, i64) {
        db.query_row(
            "SELECT created_at, expires_at FROM login_sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let set = |created: i64, expires: i64| {
        db.execute(
            "UPDATE login_sessions SET created_at = ?1, expires_at = ?2",
            [created, expires],
        )
        .unwrap();
    };
    // A new session lasts the idle time, not the absolute 30 days.
    let (created, expires) = row();
    assert!(
        (3595..=3605).contains(&(expires - created)),
        "{created} {expires}"
    );

    // Used after 59 idle minutes: still open, and the hour starts again.
    let t = now();
    set(t - 3540, t + 60);
    assert_eq!(c.get("/").status, 200);
    let (_, expires) = row();
    assert!(expires >= t + 3590, "slid to {expires}, now {t}");
    // Used again a minute later: no write (the expiry moves at most once
    // every few minutes).
    set(t - 3540, t + 3540);
    assert_eq!(c.get("/").status, 200);
    assert_eq!(row().1, t + 3540);
    // Idle for the hour: over.
    set(t - 7200, t - 1);
    assert_eq!(c.get("/").status, 303);
    // An expiry further out than the idle time allows (set under a longer
    // setting) is not believed.
    set(t - 60, t + 7200);
    assert_eq!(c.get("/").status, 303);
    // However active, a session ends 30 days after sign-in: sliding stops
    // there...
    let month = 30 * 86_400;
    set(t - month + 600, t + 10);
    assert_eq!(c.get("/").status, 200);
    assert_eq!(row().1, t + 600);
    // ...and is checked on its own.
    set(t - month - 1, t + 100);
    assert_eq!(c.get("/").status, 303);
}
