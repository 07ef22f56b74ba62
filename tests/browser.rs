//! The tracking script in a real browser: headless Chromium loads pages from
//! a second HTTP server (so the script is cross-origin, as on a real site)
//! and every check reads the result back through the Stats API.
//!
//! Needs Debian's `chromium` (or a binary named by `CHROMIUM`). Under CI a
//! missing browser fails; locally these tests skip with a loud message.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::{Browser, Tab};
use serde_json::{Value, json};

/// Not "HeadlessChrome": Tally drops headless browsers as bots.
const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

const SITES: &[&str] = &[
    "plain.test",
    "spa.test",
    "hash.test",
    "custom.test",
    "links.test",
    "excluded.test",
    "ignored.test",
    "noscript.test",
    "engaged.test",
];

/// Serves test pages. The first path segment picks the site and the script
/// attributes, so each scenario has its own site in Tally.
struct PageServer {
    port: u16,
}

impl PageServer {
    fn start(tally: String) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tally = Arc::new(tally);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tally = tally.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let path = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .to_string();
                    let (ctype, body) = page(&tally, port, &path);
                    let mut stream = stream;
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                });
            }
        });
        PageServer { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn page(tally: &str, port: u16, path: &str) -> (&'static str, Vec<u8>) {
    if path.ends_with(".pdf") {
        return ("application/pdf", b"%PDF-1.4\n%%EOF\n".to_vec());
    }
    let scenario = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let (site, attrs, body) = match scenario {
        "plain" => ("plain.test", "", String::new()),
        "spa" => ("spa.test", "", String::new()),
        "hash" => ("hash.test", "data-hash-mode", String::new()),
        "custom" => (
            "custom.test",
            "",
            // The documented snippet: calls made before the script loads are queued.
            "<script>window.tally=window.tally||function(){(window.tally.q=window.tally.q||[]).push(arguments)};tally('Queued',{props:{early:'yes'}})</script>".to_string(),
        ),
        "links" => (
            "links.test",
            "data-outbound-links data-file-downloads",
            format!(
                "<a id=out href=\"http://localhost:{port}/landing\">out</a> <a id=dl href=\"/links/files/report.pdf\">report</a> <a id=in href=\"/links/inside\">in</a>"
            ),
        ),
        // The last pattern made a backtracking matcher take minutes on a long path.
        "excluded" => ("excluded.test", "data-exclude=\"/excluded/admin/*, /excluded/private/**, /excluded/*a*a*a*a*a*a*a*a*a*a*a*b\"", String::new()),
        "ignored" => ("ignored.test", "", String::new()),
        "engaged" => ("engaged.test", "", String::new()),
        "noscript" => (
            "noscript.test",
            "",
            format!(
                "<noscript><img src=\"{tally}/api/event?d=noscript.test\" referrerpolicy=\"no-referrer-when-downgrade\" alt=\"\"></noscript>"
            ),
        ),
        _ => return ("text/html", b"<!doctype html><title>landing</title><p>elsewhere</p>".to_vec()),
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>{path}</title>\
         <script defer data-domain=\"{site}\" data-include-localhost data-include-automation {attrs} src=\"{tally}/js/script.js\"></script>\
         </head><body><h1>{path}</h1>{body}<div style=\"height:3000px\"></div></body></html>"
    );
    ("text/html; charset=utf-8", html.into_bytes())
}

struct Harness {
    env: Env,
    server: Server,
    key: String,
    pages: PageServer,
    browser: Browser,
    _profile: tempfile::TempDir,
}

impl Harness {
    fn new(chromium: PathBuf) -> Harness {
        let env = Env::new("");
        for site in SITES {
            env.add_site(site);
        }
        let key = env.api_key();
        let server = env.start();
        let pages = PageServer::start(server.base.clone());
        let profile = tempfile::tempdir().unwrap();
        let ua_arg = format!("--user-agent={BROWSER_UA}");
        let browser = common::launch_chromium(
            chromium,
            profile.path(),
            &["--disable-quic", "--disable-sync", &ua_arg],
        );
        Harness {
            env,
            server,
            key,
            pages,
            browser,
            _profile: profile,
        }
    }

    fn tab(&self) -> Arc<Tab> {
        let tab = self.browser.new_tab().unwrap();
        tab.set_default_timeout(Duration::from_secs(20));
        tab
    }

    fn open(&self, tab: &Tab, path: &str) {
        tab.navigate_to(&self.pages.url(path))
            .unwrap()
            .wait_until_navigated()
            .unwrap();
        // The script is deferred; it has run once `window.tally` is the real function.
        wait_until(|| {
            tab.evaluate(
                "typeof window.tally === 'function' && !window.tally.q",
                false,
            )
            .ok()
            .and_then(|r| r.value)
                == Some(Value::Bool(true))
        });
    }

    fn stats(&self, query: &str) -> Value {
        let r = self.server.stats(&self.key, query);
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        r.json()["results"].clone()
    }

    fn pages_of(&self, site: &str) -> HashMap<String, i64> {
        self.stats(&format!(
            "/api/v1/stats/breakdown?site_id={site}&period=day&property=event:page&metrics=pageviews"
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["page"].as_str().unwrap().to_string(), r["pageviews"].as_i64().unwrap()))
        .collect()
    }

    fn pageviews(&self, site: &str) -> i64 {
        self.stats(&format!(
            "/api/v1/stats/aggregate?site_id={site}&period=day&metrics=pageviews"
        ))["pageviews"]["value"]
            .as_i64()
            .unwrap()
    }

    fn events_named(&self, site: &str) -> HashMap<String, i64> {
        self.stats(&format!(
            "/api/v1/stats/breakdown?site_id={site}&period=day&property=event:name&metrics=events"
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect()
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 15 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tracker_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let h = Harness::new(chromium);
    type Scenario = (&'static str, fn(&Harness));
    let scenarios: Vec<Scenario> = vec![
        ("plain page load", plain_page_load),
        ("single-page app", single_page_app),
        ("hash mode", hash_mode),
        ("custom event", custom_event),
        ("outbound link and download", outbound_and_download),
        ("excluded paths and tally_ignore", excluded_and_ignored),
        ("noscript pixel", noscript_pixel),
        ("engagement", engagement),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        eprintln!("browser scenario: {name}");
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&h))) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}

fn plain_page_load(h: &Harness) {
    let tab = h.tab();
    // Arrive from Hacker News, as a visitor clicking a link there would.
    tab.call_method(Page::Navigate {
        url: h.pages.url("/plain/article"),
        // An https referrer would be dropped on the way to this http page.
        referrer: Some("http://news.ycombinator.com/item?id=1".into()),
        transition_Type: None,
        frame_id: None,
        referrer_policy: None,
    })
    .unwrap();
    tab.wait_until_navigated().unwrap();
    wait_until(|| h.pageviews("plain.test") == 1);
    assert_eq!(
        h.pages_of("plain.test"),
        HashMap::from([("/plain/article".to_string(), 1)])
    );
    // Visit rows are written once a second.
    let source_query =
        "/api/v1/stats/breakdown?site_id=plain.test&period=day&property=visit:source";
    wait_until(|| !h.stats(source_query).as_array().unwrap().is_empty());
    let sources = h.stats(source_query);
    assert_eq!(sources[0]["source"], "Hacker News", "{sources}");
    let referrers =
        h.stats("/api/v1/stats/breakdown?site_id=plain.test&period=day&property=visit:referrer");
    // Browsers send only the origin across sites (strict-origin-when-cross-origin).
    assert_eq!(
        referrers[0]["referrer"], "news.ycombinator.com",
        "{referrers}"
    );
    // A 1280 px wide window is a laptop screen (desktop from 1440 px).
    let devices =
        h.stats("/api/v1/stats/breakdown?site_id=plain.test&period=day&property=visit:device");
    assert_eq!(devices[0]["device"], "Laptop", "{devices}");
    let width = tab
        .evaluate("window.innerWidth", false)
        .unwrap()
        .value
        .unwrap();
    assert_eq!(width, json!(1280));
    // No cookies and no storage writes on the tracked site.
    let storage = tab
        .evaluate(
            "document.cookie + '|' + localStorage.length + '|' + sessionStorage.length",
            false,
        )
        .unwrap()
        .value
        .unwrap();
    assert_eq!(storage, json!("|0|0"));
    tab.close(false).unwrap();
}

fn single_page_app(h: &Harness) {
    let tab = h.tab();
    h.open(&tab, "/spa/home");
    wait_until(|| h.pageviews("spa.test") == 1);
    tab.evaluate(
        "history.pushState({}, '', '/spa/a'); history.pushState({}, '', '/spa/b'); \
         history.pushState({}, '', '/spa/c'); history.replaceState({}, '', '/spa/c'); \
         history.replaceState({ x: 1 }, '', '/spa/c'); true",
        false,
    )
    .unwrap();
    wait_until(|| h.pageviews("spa.test") >= 4);
    // Back to /spa/b through popstate counts as a view of /spa/b.
    tab.evaluate("history.back(); true", false).unwrap();
    wait_until(|| h.pageviews("spa.test") >= 5);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        h.pages_of("spa.test"),
        HashMap::from([
            ("/spa/home".to_string(), 1),
            ("/spa/a".to_string(), 1),
            ("/spa/b".to_string(), 2),
            ("/spa/c".to_string(), 1),
        ])
    );
    tab.close(false).unwrap();
}

fn hash_mode(h: &Harness) {
    let tab = h.tab();
    h.open(&tab, "/hash/app");
    tab.evaluate("location.hash = '#/one'; true", false)
        .unwrap();
    wait_until(|| h.pageviews("hash.test") >= 2);
    tab.evaluate("location.hash = '#/two'; true", false)
        .unwrap();
    wait_until(|| h.pageviews("hash.test") >= 3);
    assert_eq!(
        h.pages_of("hash.test"),
        HashMap::from([
            ("/hash/app".to_string(), 1),
            ("/hash/app#/one".to_string(), 1),
            ("/hash/app#/two".to_string(), 1),
        ])
    );
    tab.close(false).unwrap();
}

fn custom_event(h: &Harness) {
    let tab = h.tab();
    h.open(&tab, "/custom/pricing");
    let done = tab
        .evaluate(
            "new Promise(resolve => tally('Signup', {props: {plan: 'pro', seats: 3}, \
             revenue: {amount: '9.99', currency: 'EUR'}, callback: resolve})).then(r => r.status)",
            true,
        )
        .unwrap()
        .value
        .unwrap();
    assert_eq!(done, json!(202), "the callback reports the server's answer");
    wait_until(|| h.events_named("custom.test").len() == 2);
    assert_eq!(
        h.events_named("custom.test"),
        HashMap::from([("Signup".to_string(), 1), ("Queued".to_string(), 1)])
    );
    let plans = h.stats("/api/v1/stats/breakdown?site_id=custom.test&period=day&property=event:props:plan&metrics=events");
    assert_eq!(plans, json!([{"plan": "pro", "events": 1}]));
    let early = h.stats("/api/v1/stats/breakdown?site_id=custom.test&period=day&property=event:props:early&metrics=events");
    assert_eq!(early, json!([{"early": "yes", "events": 1}]));
    let (amount, currency): (String, String) = h
        .env
        .db()
        .query_row(
            "SELECT revenue_amount, revenue_currency FROM events WHERE name = 'Signup'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((amount.as_str(), currency.as_str()), ("9.99", "EUR"));
    tab.close(false).unwrap();
}

fn outbound_and_download(h: &Harness) {
    let tab = h.tab();
    h.open(&tab, "/links/start");
    tab.find_element("#dl").unwrap().click().unwrap();
    wait_until(|| h.events_named("links.test").contains_key("File Download"));
    // The PDF replaced the page; come back for the outbound link.
    h.open(&tab, "/links/start");
    tab.find_element("#out").unwrap().click().unwrap();
    // Navigation is not held back: the browser lands on the other site.
    wait_until(|| {
        tab.get_url()
            .starts_with(&format!("http://localhost:{}/landing", h.pages.port))
    });
    wait_until(|| {
        h.events_named("links.test")
            .contains_key("Outbound Link: Click")
    });
    let urls = h.stats("/api/v1/stats/breakdown?site_id=links.test&period=day&property=event:props:url&metrics=events");
    let mut urls: Vec<String> = urls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["url"].as_str().unwrap().to_string())
        .collect();
    urls.sort();
    assert_eq!(
        urls,
        vec![
            h.pages.url("/links/files/report.pdf"),
            format!("http://localhost:{}/landing", h.pages.port),
        ]
    );
    tab.close(false).unwrap();
}

fn excluded_and_ignored(h: &Harness) {
    let tab = h.tab();
    let long = format!("/excluded/{}", "a".repeat(60));
    let starry = format!("/excluded/{}b", "a".repeat(11));
    for path in ["/excluded/admin/users", "/excluded/private/a/b", &starry] {
        h.open(&tab, path);
    }
    // Not excluded (no b at the end), and matched at once all the same.
    h.open(&tab, &long);
    // A page that counts, loaded last: once it arrives, the excluded ones would have too.
    h.open(&tab, "/excluded/public");
    wait_until(|| h.pageviews("excluded.test") >= 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        h.pages_of("excluded.test"),
        HashMap::from([("/excluded/public".to_string(), 1), (long, 1)])
    );

    // The site owner's opt-out in this browser.
    h.open(&tab, "/ignored/first");
    wait_until(|| h.pageviews("ignored.test") == 1);
    tab.evaluate("localStorage.tally_ignore = 'true'; true", false)
        .unwrap();
    h.open(&tab, "/ignored/while-ignoring");
    let answer = tab
        .evaluate(
            "new Promise(r => tally('Ping', {callback: r})).then(x => x.ignored)",
            true,
        )
        .unwrap()
        .value
        .unwrap();
    assert_eq!(answer, json!("tally_ignore"));
    tab.evaluate("localStorage.removeItem('tally_ignore'); true", false)
        .unwrap();
    h.open(&tab, "/ignored/after");
    wait_until(|| h.pageviews("ignored.test") >= 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        h.pages_of("ignored.test"),
        HashMap::from([
            ("/ignored/first".to_string(), 1),
            ("/ignored/after".to_string(), 1)
        ])
    );
    tab.close(false).unwrap();
}

fn noscript_pixel(h: &Harness) {
    let tab = h.tab();
    tab.call_method(Emulation::SetScriptExecutionDisabled { value: true })
        .unwrap();
    tab.navigate_to(&h.pages.url("/noscript/plain-html"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    wait_until(|| h.pageviews("noscript.test") == 1);
    assert_eq!(
        h.pages_of("noscript.test"),
        HashMap::from([("/noscript/plain-html".to_string(), 1)])
    );
    tab.close(false).unwrap();
}

fn engagement(h: &Harness) {
    let tab = h.tab();
    // Headless windows never have focus unless it is emulated.
    tab.call_method(Emulation::SetFocusEmulationEnabled { enabled: true })
        .unwrap();
    h.open(&tab, "/engaged/long-read");
    tab.evaluate(
        "window.scrollTo(0, document.documentElement.scrollHeight); true",
        false,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // Leaving the page sends one engagement report for it.
    h.open(&tab, "/engaged/next");
    let engagements = "SELECT COUNT(*) FROM events WHERE name = 'engagement' \
        AND site_id = (SELECT id FROM sites WHERE domain = 'engaged.test')";
    wait_until(|| h.env.count(engagements) >= 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.env.count(engagements), 1, "one report per page left");
    let (path, depth, ms): (String, i64, i64) = h
        .env
        .db()
        .query_row(
            "SELECT path, scroll_depth, engaged_ms FROM events WHERE name = 'engagement' \
             AND site_id = (SELECT id FROM sites WHERE domain = 'engaged.test')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(path, "/engaged/long-read");
    assert_eq!(depth, 100);
    assert!((1000..60_000).contains(&ms), "engaged {ms} ms");
    // Engagement reports are neither pageviews nor custom events.
    assert_eq!(h.pageviews("engaged.test"), 2);
    assert!(h.events_named("engaged.test").is_empty());
    tab.close(false).unwrap();
}
