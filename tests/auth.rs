//! Sign-in, proxies and sessions against the real binary: where a sign-in
//! may send the browser, how sign-in attempts are limited per account and
//! network, and the cookies, idle timeout and HSTS of sessions over https.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Env, PASSWORD, Reply, Server};

/// A browser-like client: keeps cookies, does not follow redirects, and
/// sends `headers` with every request (as a proxy in front would add them).
struct Client<'a> {
    server: &'a Server,
    agent: ureq::Agent,
    cookies: HashMap<String, String>,
    headers: Vec<(String, String)>,
}

impl<'a> Client<'a> {
    fn new(server: &'a Server) -> Client<'a> {
        Client {
            server,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
            cookies: HashMap::new(),
            headers: Vec::new(),
        }
    }

    /// Like [`Client::new`], as relayed by a trusted proxy for `ip` over
    /// `proto`.
    fn proxied(server: &'a Server, ip: &str, proto: &str) -> Client<'a> {
        let mut c = Client::new(server);
        c.headers = vec![
            ("X-Forwarded-For".into(), ip.into()),
            ("X-Forwarded-Proto".into(), proto.into()),
        ];
        c
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn finish(&mut self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let r = r.expect("request failed");
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        common::reply(Ok(r))
    }

    fn get(&mut self, path: &str) -> Reply {
        let mut req = self
            .agent
            .get(self.server.url(path))
            .header("Cookie", &self.cookie_header());
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.call();
        self.finish(r)
    }

    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .agent
            .post(self.server.url(path))
            .header("Cookie", &self.cookie_header())
            .header("Content-Type", "application/x-www-form-urlencoded");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let r = req.send(body.as_str());
        self.finish(r)
    }

    /// The sign-in form's CSRF token (and its cookie, kept).
    fn login_csrf(&mut self) -> String {
        let page = self.get("/login");
        assert_eq!(page.status, 200, "{}", page.body);
        field(&page.body, "csrf")
    }

    /// Signs in through the form, asking to go to `next`.
    fn sign_in_to(&mut self, email: &str, password: &str, next: &str) -> Reply {
        let csrf = self.login_csrf();
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", next),
            ],
        )
    }

    fn sign_in(&mut self, email: &str, password: &str) -> Reply {
        self.sign_in_to(email, password, "/")
    }
}

/// The value of the first input named `name`.
fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

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
