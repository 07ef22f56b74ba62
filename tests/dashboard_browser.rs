//! The dashboard in a real browser: headless Chromium signs in through the
//! form, filters by clicking rows, goes back, removes chips, changes the
//! period, watches the realtime view update over Server-Sent Events, is fed
//! hostile tracked values, and photographs the main views at desktop and
//! phone widths in light and dark.
//!
//! Needs Debian's `chromium` (or a binary named by `CHROMIUM`): see
//! `common::chromium`. Screenshots go to `target/screenshots/`.
//!
//! Every call into the browser costs about 0.1 s (headless_chrome polls its
//! socket), so the helpers do their work in one script where they can.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::*;
use headless_chrome::browser::tab::point::Point;
use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::{Browser, Tab};
use serde_json::{Value, json};

const SITE: &str = "demo.test";
const XSS_SITE: &str = "xss.test";
const EMAIL: &str = "admin@example.com";

/// Counts the page's Server-Sent Events, so tests can wait for a live update
/// instead of sleeping, and keeps the number of current visitors the server
/// rendered. Installed before any page script runs; it only observes.
const LIVE_PROBE: &str = r#"
(() => {
  window.__live = { messages: 0, rendered: null };
  document.addEventListener("DOMContentLoaded", () => {
    const n = document.getElementById("current-visitors");
    window.__live.rendered = n ? n.textContent.trim() : null;
  });
  const Native = window.EventSource;
  if (!Native) return;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", () => { window.__live.messages += 1; });
    }
  };
})();
"#;

/// The period picker's links, in order.
const PERIODS: [&str; 9] = [
    "Realtime",
    "Today",
    "Yesterday",
    "7 days",
    "30 days",
    "This month",
    "Last month",
    "6 months",
    "12 months",
];

const SUMMARY: &str = "demo.test, week of 16–22 November 2026\n\n\
    120 visitors came, up 20% from 100 the week before.\n\n\
    Top pages: / (80), /pricing (20).\n";
const XSS_PAGE: &str = "/<img src=x onerror=window.__xss=9>";

/// Elements that would mean a tracked value became markup.
const INJECTED: &str = r#"img[src="x"], svg[onload], script:not([src]), [onerror], [onload]"#;

struct Ui {
    // Dropped in this order: the browser before the server, the server
    // before its data directory.
    browser: Browser,
    server: Server,
    _env: Env,
    _profile: tempfile::TempDir,
}

impl Ui {
    fn new(chromium: PathBuf) -> Ui {
        let env = Env::new("");
        env.add_site(SITE);
        env.add_site(XSS_SITE);
        let out = env.tally(&["demo", "--site", SITE, "--events", "3000", "--days", "30"]);
        assert!(out.contains("Wrote 3000 pageviews"), "{out}");
        env.add_user(EMAIL, &[]);
        // A weekly summary each; the second names a page that is markup.
        let db = env.db();
        for (site, body) in [
            (SITE, SUMMARY.to_string()),
            (XSS_SITE, SUMMARY.replace("/pricing", XSS_PAGE)),
        ] {
            db.execute(
                "INSERT INTO summaries (site_id, week_start, body, created_at)
                 SELECT id, '2026-11-16', ?1, 0 FROM sites WHERE domain = ?2",
                rusqlite::params![body, site],
            )
            .unwrap();
        }
        drop(db);
        let server = env.start();
        let profile = tempfile::tempdir().unwrap();
        let browser = common::launch_chromium(chromium, profile.path(), &[]);
        Ui {
            browser,
            server,
            _env: env,
            _profile: profile,
        }
    }

    /// A new tab in the signed-in profile.
    fn tab(&self) -> Arc<Tab> {
        prepare(self.browser.new_tab().unwrap())
    }

    /// Loads `path` of the server in `tab` and waits until it has loaded.
    fn open(&self, tab: &Arc<Tab>, path: &str) {
        let url = self.server.url(path);
        let navigator = tab.clone();
        let to = url.clone();
        navigating(tab, &url, move || {
            // Answered once the page commits, which may take long.
            std::thread::spawn(move || navigator.navigate_to(&to).map(|_| ()));
        });
    }

    /// Sends a pageview as visitor `ua`; a UA string not used before is a
    /// new visitor.
    fn visit(&self, ua: &str, domain: &str, url: &str, referrer: Option<&str>) {
        let mut body = json!({"n": "pageview", "u": url, "d": domain});
        if let Some(r) = referrer {
            body["r"] = json!(r);
        }
        let r = self.server.event(&body.to_string(), ua);
        assert_eq!(r.status, 202, "{url}: {}", r.body);
    }
}

fn prepare(tab: Arc<Tab>) -> Arc<Tab> {
    tab.set_default_timeout(Duration::from_secs(20));
    tab.call_method(Page::AddScriptToEvaluateOnNewDocument {
        source: LIVE_PROBE.to_string(),
        world_name: None,
        include_command_line_api: None,
        run_immediately: None,
    })
    .unwrap();
    tab
}

/// A normal desktop Chrome, different on every call: a new visitor.
fn fresh_ua() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.{n}.0 Safari/537.36"
    )
}

/// `expr`'s value, through JSON; `None` while the page is being replaced.
fn try_js(tab: &Tab, expr: &str) -> Option<Value> {
    let r = tab
        .evaluate(&format!("JSON.stringify({expr})"), false)
        .ok()?;
    match r.value {
        Some(Value::String(s)) => serde_json::from_str(&s).ok(),
        _ => Some(Value::Null),
    }
}

fn js(tab: &Tab, expr: &str) -> Value {
    try_js(tab, expr).unwrap_or_else(|| panic!("could not evaluate {expr} on {}", tab.get_url()))
}

fn js_str(tab: &Tab, expr: &str) -> String {
    match js(tab, expr) {
        Value::String(s) => s,
        other => panic!("{expr} is {other}, not a string"),
    }
}

fn js_strings(tab: &Tab, expr: &str) -> Vec<String> {
    serde_json::from_value(js(tab, expr)).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// Polls `f` until it succeeds; fails with its last complaint at the
/// deadline, and also when the success itself came too late (a call into
/// the browser can block).
fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        match f() {
            // Allow for the round trip of the last check.
            Ok(v) if Instant::now() <= deadline + Duration::from_millis(300) => return v,
            Ok(_) => panic!(
                "{what}: took {:.1} s, more than {timeout:?}",
                started.elapsed().as_secs_f64()
            ),
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs `act` and waits until a new document has replaced this one and
/// finished loading.
fn navigating(tab: &Arc<Tab>, what: &str, act: impl FnOnce()) {
    navigating_within(tab, what, Duration::from_secs(15), act);
}

/// Like [`navigating`], with its own deadline. The browser is asked from
/// another thread: while a navigation is stuck, so are questions to the page.
fn navigating_within(tab: &Arc<Tab>, what: &str, timeout: Duration, act: impl FnOnce()) {
    js(tab, "window.__old_page = true");
    let started = Instant::now();
    act();
    let (tx, rx) = mpsc::channel();
    let watcher = tab.clone();
    std::thread::spawn(move || {
        loop {
            let v = try_js(
                &watcher,
                "[window.__old_page === undefined && document.readyState === 'complete', location.href]",
            );
            let done = matches!(&v, Some(v) if v[0] == json!(true));
            if tx.send((done, v)).is_err() || done {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let deadline = started + timeout;
    let mut last = None;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((true, _)) => return,
            Ok((false, v)) => last = v,
            Err(_) => match &last {
                Some(v) => panic!("{what}: not loaded within {timeout:?}; last seen: {v}"),
                None => panic!(
                    "{what}: not loaded within {timeout:?}, and the tab did not answer at all"
                ),
            },
        }
    }
}

/// Clicks the middle of the `n`th (from 0) element matching `selector` with
/// the mouse, after checking nothing covers it there.
fn click_nth(tab: &Tab, selector: &str, n: usize) {
    let at = js(
        tab,
        &format!(
            "(() => {{ const e = document.querySelectorAll({sel})[{n}]; \
             if (!e) return 'missing'; \
             e.scrollIntoView({{block: 'center', inline: 'center', behavior: 'instant'}}); \
             const r = e.getBoundingClientRect(); const x = r.x + r.width / 2, y = r.y + r.height / 2; \
             const hit = document.elementFromPoint(x, y); \
             return e.contains(hit) ? [x, y] : 'covered by ' + (hit ? hit.outerHTML.slice(0, 200) : 'nothing'); }})()",
            sel = json!(selector)
        ),
    );
    let (x, y) = match (&at[0], &at[1]) {
        (Value::Number(x), Value::Number(y)) => (x.as_f64().unwrap(), y.as_f64().unwrap()),
        _ => panic!("cannot click {selector} #{n}: {at}"),
    };
    tab.click_point(Point { x, y })
        .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// Clicks the element matching `selector` whose text is `text`, and waits
/// for the page it leads to.
fn follow(tab: &Arc<Tab>, selector: &str, text: &str) {
    let texts = js_strings(
        tab,
        &format!(
            "Array.from(document.querySelectorAll({})).map(e => e.textContent.trim())",
            json!(selector)
        ),
    );
    let n = texts
        .iter()
        .position(|t| t == text)
        .unwrap_or_else(|| panic!("no {selector} reading {text:?} among {texts:?}"));
    navigating(tab, &format!("following {text:?}"), || {
        click_nth(tab, selector, n)
    });
}

fn query_param(tab: &Tab, name: &str) -> Option<String> {
    match js(
        tab,
        &format!("new URLSearchParams(location.search).get({})", json!(name)),
    ) {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// What the dashboard shows, read in one go.
#[derive(Debug)]
struct Dash {
    /// Top stats, label → shown value.
    stats: Vec<(String, String)>,
    chips: Vec<String>,
    /// Panel key → rows (label, shown number).
    panels: serde_json::Map<String, Value>,
    filters: Option<String>,
    period: Option<String>,
}

impl Dash {
    fn read(tab: &Tab) -> Dash {
        let v = js(
            tab,
            "(() => { const text = e => e ? e.textContent.trim() : null; const q = new URLSearchParams(location.search); \
             const panels = {}; for (const p of document.querySelectorAll('section[id^=\"panel-\"]')) \
               panels[p.id.slice(6)] = Array.from(p.querySelectorAll('ol.rows li')).map(li => [li.querySelector('a').textContent, text(li.querySelector('span.num'))]); \
             return { stats: Array.from(document.querySelectorAll('ul.top-stats li a')).map(a => [text(a.querySelector('.label')), text(a.querySelector('strong.value'))]), \
               chips: Array.from(document.querySelectorAll('ul.chips li.chip span')).map(s => s.textContent), \
               panels, filters: q.get('filters'), period: q.get('period') }; })()",
        );
        Dash {
            stats: serde_json::from_value(v["stats"].clone()).unwrap(),
            chips: serde_json::from_value(v["chips"].clone()).unwrap(),
            panels: v["panels"].as_object().cloned().unwrap_or_default(),
            filters: v["filters"].as_str().map(String::from),
            period: v["period"].as_str().map(String::from),
        }
    }

    fn visitors(&self) -> &str {
        self.stats
            .iter()
            .find(|(label, _)| label == "Unique visitors")
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no Unique visitors box in {:?}", self.stats))
    }

    fn rows(&self, panel: &str) -> Vec<(String, String)> {
        serde_json::from_value(self.panels.get(panel).cloned().unwrap_or(json!([])))
            .unwrap_or_else(|e| panic!("panel {panel}: {e}"))
    }
}

/// "950", "1.2k", "3.4M" back to a number.
fn shown_number(s: &str) -> f64 {
    let (digits, scale) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    digits
        .parse::<f64>()
        .unwrap_or_else(|e| panic!("{s:?} is not a shown number: {e}"))
        * scale
}

fn live_messages(tab: &Tab) -> i64 {
    try_js(tab, "window.__live ? window.__live.messages : -1")
        .and_then(|v| v.as_i64())
        .unwrap_or(-1)
}

/// Waits until the page's EventSource has delivered more than `seen` messages.
fn wait_live(tab: &Tab, seen: i64) {
    poll(
        "a live update over the EventSource",
        Duration::from_secs(10),
        || match live_messages(tab) {
            n if n > seen => Ok(()),
            n => Err(format!("{n} messages")),
        },
    );
}

fn current_visitors(tab: &Tab) -> Result<i64, String> {
    let text = try_js(
        tab,
        "document.getElementById('current-visitors').textContent.trim()",
    );
    match &text {
        Some(Value::String(s)) => s.parse().map_err(|e| format!("{s:?}: {e}")),
        other => Err(format!("{other:?}")),
    }
}

const ACTIVE_PERIOD: &str = "Array.from(document.querySelectorAll('nav.periods a[aria-current=\"page\"]')).map(a => a.textContent.trim())";

#[test]
fn dashboard_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let started = Instant::now();
    let ui = Ui::new(chromium);
    eprintln!("setup: {:.1} s", started.elapsed().as_secs_f64());
    type Scenario = (&'static str, fn(&Ui, &Arc<Tab>));
    let scenarios: Vec<Scenario> = vec![
        ("sign in through the form", sign_in),
        ("filter by clicking a source, back, remove a chip", filters),
        ("change the period", period),
        ("realtime updates", realtime),
        ("tracked values stay text", tracked_values_stay_text),
        ("leaving a live page frees its connection", many_live_pages),
        ("weekly summary and export", summary_and_export),
        ("screenshots", screenshots),
    ];
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        let t = Instant::now();
        eprintln!("dashboard scenario: {name}");
        // A tab each, closed afterwards, so one scenario's pages do not hold
        // connections another one needs.
        let tab = ui.tab();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&ui, &tab)));
        let _ = tab.close(false);
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
        eprintln!("  {:.1} s", t.elapsed().as_secs_f64());
    }
    eprintln!("total: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}

fn sign_in(ui: &Ui, tab: &Arc<Tab>) {
    // Strangers are sent to the form, which brings them back afterwards.
    ui.open(tab, "/");
    assert_eq!(js_str(tab, "location.pathname"), "/login");
    for (field, value) in [("email", EMAIL), ("password", PASSWORD)] {
        click_nth(tab, &format!("input[name={field}]"), 0);
        // One input event for the whole value (typing key by key costs a
        // round trip per key).
        tab.send_character(value).unwrap();
    }
    assert_eq!(
        js(
            tab,
            "[document.activeElement.name, document.querySelector('input[name=email]').value]"
        ),
        json!(["password", EMAIL])
    );
    navigating(tab, "signing in", || {
        click_nth(tab, "button[type=submit]", 0)
    });
    assert_eq!(
        js_str(tab, "location.pathname"),
        "/",
        "lands on the site list"
    );
    let names = js_strings(
        tab,
        "Array.from(document.querySelectorAll('ul.site-grid li.site a.site-link .site-name')).map(e => e.textContent.trim())",
    );
    assert!(
        names.contains(&SITE.to_string()) && names.contains(&XSS_SITE.to_string()),
        "site cards: {names:?}"
    );
    // The card opens the site's dashboard.
    follow(tab, "ul.site-grid li.site a.site-link .site-name", SITE);
    assert_eq!(
        js(
            tab,
            "[location.pathname, document.querySelector('h1.site-title').textContent.trim()]"
        ),
        json!([format!("/{SITE}"), SITE])
    );
}

fn filters(ui: &Ui, tab: &Arc<Tab>) {
    ui.open(tab, &format!("/{SITE}?period=30d"));
    let plain_url = js_str(tab, "location.href");
    let all = Dash::read(tab);
    let total = all.visitors().to_string();
    assert!(shown_number(&total) > 0.0, "visitors {total}");
    assert!(all.chips.is_empty(), "no filter yet: {:?}", all.chips);
    let sources = all.rows("sources");
    let google = sources
        .iter()
        .find(|(label, _)| label == "Google")
        .unwrap_or_else(|| panic!("no Google in the sources: {sources:?}"))
        .1
        .clone();

    follow(tab, "#panel-sources ol.rows li a", "Google");
    let d = Dash::read(tab);
    assert_eq!(d.chips, vec!["Source is Google"]);
    assert_eq!(d.filters.as_deref(), Some("visit:source==Google"));
    assert_eq!(d.period.as_deref(), Some("30d"));
    let filtered = d.visitors().to_string();
    assert!(
        shown_number(&filtered) < shown_number(&total),
        "Google's visitors {filtered} should be fewer than all {total}"
    );
    // The filtered total is the number the row showed, and only Google is
    // left among the sources.
    assert_eq!(filtered, google, "the Google row said {google}");
    assert_eq!(
        d.rows("sources"),
        vec![("Google".to_string(), google.clone())]
    );

    // The back button undoes the filter, forward brings it back.
    let filtered_url = js_str(tab, "location.href");
    for (step, url, chips) in [
        ("history.back()", &plain_url, vec![]),
        ("history.forward()", &filtered_url, vec!["Source is Google"]),
    ] {
        js(tab, step);
        poll(step, Duration::from_secs(15), || {
            match try_js(tab, "[location.href, document.readyState]") {
                Some(v) if v[0] == json!(url) && v[1] == json!("complete") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        assert_eq!(Dash::read(tab).chips, chips, "after {step}");
    }
    assert_eq!(Dash::read(tab).visitors(), filtered);

    // A second filter from another panel, then remove the first by its ×.
    let browser = Dash::read(tab)
        .rows("devices")
        .first()
        .unwrap_or_else(|| panic!("no browsers among Google's visitors"))
        .0
        .clone();
    follow(tab, "#panel-devices ol.rows li a", &browser);
    let browser_chip = format!("Browser is {browser}");
    let d = Dash::read(tab);
    assert_eq!(
        d.chips,
        vec!["Source is Google".to_string(), browser_chip.clone()]
    );
    assert_eq!(
        d.filters,
        Some(format!("visit:source==Google;visit:browser=={browser}"))
    );
    assert!(
        shown_number(d.visitors()) <= shown_number(&filtered),
        "{} > {filtered}",
        d.visitors()
    );
    let n = d
        .chips
        .iter()
        .position(|c| c == "Source is Google")
        .unwrap();
    navigating(tab, "removing the Google chip", || {
        click_nth(tab, "ul.chips li.chip a", n)
    });
    let d = Dash::read(tab);
    assert_eq!(d.chips, vec![browser_chip]);
    assert_eq!(d.filters, Some(format!("visit:browser=={browser}")));
    // And the last one: no chips, no filter, the full numbers again.
    navigating(tab, "removing the browser chip", || {
        click_nth(tab, "ul.chips li.chip a", 0)
    });
    let d = Dash::read(tab);
    assert!(d.chips.is_empty(), "{:?}", d.chips);
    assert_eq!(
        js(tab, "document.querySelectorAll('ul.chips').length"),
        json!(0)
    );
    assert_eq!(d.filters, None);
    assert_eq!(d.visitors(), total);
}

fn period(ui: &Ui, tab: &Arc<Tab>) {
    ui.open(tab, &format!("/{SITE}?period=30d"));
    assert_eq!(js_strings(tab, ACTIVE_PERIOD), vec!["30 days"]);
    let label = js_str(
        tab,
        "document.querySelector('p.period-label').textContent.trim()",
    );
    assert!(label.starts_with("Last 30 days · "), "{label}");
    let month = Dash::read(tab).visitors().to_string();
    let links = js_strings(
        tab,
        "Array.from(document.querySelectorAll('nav.periods a')).map(a => a.textContent.trim())",
    );
    assert_eq!(links, PERIODS);

    follow(tab, "nav.periods a", "7 days");
    assert_eq!(query_param(tab, "period").as_deref(), Some("7d"));
    let label = js_str(
        tab,
        "document.querySelector('p.period-label').textContent.trim()",
    );
    assert!(label.starts_with("Last 7 days"), "{label}");
    assert_eq!(js_strings(tab, ACTIVE_PERIOD), vec!["7 days"]);
    // A quarter of the days, so fewer visitors.
    let week = Dash::read(tab).visitors().to_string();
    assert!(
        shown_number(&week) < shown_number(&month),
        "7 days: {week}, 30 days: {month}"
    );
}

fn realtime(ui: &Ui, tab: &Arc<Tab>) {
    ui.open(tab, &format!("/{SITE}?period=realtime"));
    assert_eq!(js_strings(tab, ACTIVE_PERIOD), vec!["Realtime"]);
    // Once a message has arrived the stream is open and the page current.
    wait_live(tab, 0);
    assert_eq!(
        js_str(tab, "document.getElementById('live-status').textContent"),
        "Live: updates every second."
    );
    let before = current_visitors(tab).unwrap();
    let path = "/live/just-now-4b1d";
    ui.visit(
        &fresh_ua(),
        SITE,
        &format!("https://{SITE}{path}"),
        Some("https://news.ycombinator.com/"),
    );
    let lists = "(() => { const o = {}; for (const k of ['pages', 'sources', 'countries']) \
        o[k] = Array.from(document.querySelectorAll(`ol.rows[data-list=\"${k}\"] li`)).map(li => \
        [li.querySelector('span.label').textContent, li.querySelector('span.num').textContent]); return o; })()";
    poll(
        "the new visitor on the realtime page",
        Duration::from_secs(2),
        || {
            let now = current_visitors(tab)?;
            let l = try_js(tab, lists).ok_or("no lists")?;
            let has_page = l["pages"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0] == json!(path)));
            if now == before + 1 && has_page {
                Ok(())
            } else {
                Err(format!("{now} current visitors (was {before}), lists {l}"))
            }
        },
    );
    let l = js(tab, lists);
    assert!(
        l["sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == json!("Hacker News")),
        "sources: {}",
        l["sources"]
    );

    // The dashboard's counter is live too, and starts where the server left it.
    ui.open(tab, &format!("/{SITE}?period=30d"));
    wait_live(tab, 0);
    let rendered = js(tab, "window.__live.rendered");
    let live_now = current_visitors(tab).unwrap();
    assert_eq!(
        rendered,
        json!(live_now.to_string()),
        "the dashboard rendered one number of current visitors and its first live update another"
    );
    one_more_visitor(ui, tab, "/live/second", live_now, Duration::from_secs(2));

    // Back to this page from another view, it is still live.
    let here = js_str(tab, "location.href");
    follow(tab, "nav.periods a", "7 days");
    js(tab, "history.back()");
    poll("history back", Duration::from_secs(15), || {
        match try_js(tab, "[location.href, document.readyState]") {
            Some(v) if v[0] == json!(here) && v[1] == json!("complete") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let before = current_visitors(tab).unwrap();
    one_more_visitor(ui, tab, "/live/third", before, Duration::from_secs(3));
}

/// Sends a pageview of `path` from a new visitor and waits up to `within`
/// for the page's live count to go from `before` to one more.
fn one_more_visitor(ui: &Ui, tab: &Tab, path: &str, before: i64, within: Duration) {
    ui.visit(&fresh_ua(), SITE, &format!("https://{SITE}{path}"), None);
    poll(
        &format!("current visitors after a visit to {path}"),
        within,
        || match current_visitors(tab)? {
            n if n == before + 1 => Ok(()),
            n => Err(format!("{n} (was {before})")),
        },
    );
}

/// Payloads in every tracked field a dashboard shows.
const IMG: &str = "<img src=x onerror=window.__xss=4>";
const SVG: &str = "<svg onload=window.__xss=5>";

fn tracked_values_stay_text(ui: &Ui, tab: &Arc<Tab>) {
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let base = format!("https://{XSS_SITE}");
    ui.visit(
        &fresh_ua(),
        XSS_SITE,
        &format!("{base}/<script>window.__xss=1</script>"),
        Some("javascript:window.__xss=3"),
    );
    ui.visit(
        &fresh_ua(),
        XSS_SITE,
        &format!("{base}/\"><img src=x onerror=\"window.__xss=2\">"),
        Some("https://news.ycombinator.com/"),
    );
    // One visitor arrives through a tagged link and triggers a custom event.
    let tagged = fresh_ua();
    ui.visit(
        &tagged,
        XSS_SITE,
        &format!(
            "{base}/landing?utm_source={i}&utm_medium={i}&utm_campaign={i}&utm_term={i}&utm_content={i}",
            i = enc(IMG)
        ),
        None,
    );
    let custom = json!({
        "n": SVG,
        "u": format!("{base}/landing"),
        "d": XSS_SITE,
        "p": {"plan": "<script>window.__xss=6</script>", "note": IMG},
    });
    let r = ui.server.event(&custom.to_string(), &tagged);
    assert_eq!(r.status, 202, "{}", r.body);
    ui.server.settle();

    let check = |tab: &Tab, what: &str, visible: &[&str]| {
        let found = js(
            tab,
            &format!(
                "({{ xss: typeof window.__xss, injected: Array.from(document.querySelectorAll({})).map(e => e.outerHTML), \
                 js_links: Array.from(document.querySelectorAll('a[href^=\"javascript:\" i]')).map(a => a.outerHTML), \
                 text: document.body.innerText }})",
                json!(INJECTED)
            ),
        );
        assert_eq!(found["xss"], json!("undefined"), "{what}: a payload ran");
        assert_eq!(
            found["injected"],
            json!([]),
            "{what}: markup from tracked values"
        );
        assert_eq!(found["js_links"], json!([]), "{what}: javascript: links");
        let text = found["text"].as_str().unwrap_or_default();
        for v in visible {
            assert!(
                text.contains(v),
                "{what}: {v:?} is not shown as text in:\n{text}"
            );
        }
    };
    let dash = |query: &str| format!("/{XSS_SITE}?period=day&{query}");
    // Paths arrive as URLs, so their brackets come percent-encoded.
    let script_path = "/%3Cscript%3Ewindow.__xss=1%3C/script%3E";
    for (query, visible) in [
        ("sources=utm_source", vec![IMG]),
        ("sources=utm_medium", vec![IMG]),
        ("sources=utm_campaign", vec![IMG]),
        ("sources=referrers", vec!["news.ycombinator.com"]),
        ("pages=pages", vec![script_path]),
        ("pages=entry", vec![script_path]),
        ("goals=events", vec![SVG]),
    ] {
        // A tab per view: each view is a live page (see `many_live_pages`).
        let view = ui.tab();
        let path = dash(query);
        ui.open(&view, &path);
        check(&view, &path, &visible);
        view.close(false).unwrap();
    }
    // Payload rows become filters.
    ui.open(tab, &dash("sources=utm_source&goals=events"));
    follow(tab, "#panel-sources ol.rows li a", IMG);
    assert_eq!(Dash::read(tab).chips, vec![format!("UTM source is {IMG}")]);
    check(tab, "a UTM source filter", &[IMG]);
    follow(tab, "#panel-goals ol.rows li a", SVG);
    assert_eq!(
        Dash::read(tab).chips,
        vec![format!("UTM source is {IMG}"), format!("Event is {SVG}")]
    );
    check(tab, "a custom event filter", &[IMG, SVG]);
    // The remove links carry the payloads in their URLs, not as markup.
    navigating(tab, "removing the event chip", || {
        click_nth(tab, "ul.chips li.chip a", 1)
    });
    assert_eq!(Dash::read(tab).chips, vec![format!("UTM source is {IMG}")]);
    check(tab, "after removing a payload chip", &[IMG]);

    // Realtime: server-rendered rows, then rows written by app.js.
    let live = ui.tab();
    ui.open(&live, &format!("/{XSS_SITE}?period=realtime"));
    check(&live, "realtime as rendered", &[script_path, "/landing"]);
    wait_live(&live, 0);
    check(
        &live,
        "realtime after a live update",
        &[script_path, "/landing"],
    );
    // A live update that brings a payload page with it.
    let seen = live_messages(&live);
    ui.visit(
        &fresh_ua(),
        XSS_SITE,
        &format!("{base}/<svg onload=window.__xss=7>"),
        None,
    );
    wait_live(&live, seen);
    check(
        &live,
        "realtime after a live payload",
        &["/%3Csvg%20onload=window.__xss=7%3E"],
    );
    live.close(false).unwrap();
}

/// The newest weekly summary folds out above the chart, a page named in it
/// stays text, and the export link downloads a zip.
fn summary_and_export(ui: &Ui, tab: &Arc<Tab>) {
    ui.open(tab, &format!("/{SITE}?period=30d"));
    assert_eq!(
        js_str(
            tab,
            "document.querySelector('details.summary > summary').textContent"
        ),
        "Weekly summary: demo.test, week of 16–22 November 2026"
    );
    assert_eq!(
        js(tab, "document.querySelector('details.summary').open"),
        json!(false)
    );
    tab.find_element("details.summary > summary")
        .unwrap()
        .click()
        .unwrap();
    poll("the summary to open", Duration::from_secs(5), || {
        let lines = js_strings(
            tab,
            "[...document.querySelectorAll('details.summary p')].map(p => p.innerText)",
        );
        (lines
            == [
                "120 visitors came, up 20% from 100 the week before.",
                "Top pages: / (80), /pricing (20).",
            ])
        .then_some(())
        .ok_or(format!("{lines:?}"))
    });
    let download = tab
        .evaluate(
            "fetch(document.querySelector('a.export-link').href).then(r => r.arrayBuffer()
               .then(b => r.headers.get('content-type') + ' ' + new Uint8Array(b).slice(0, 2).join(',')))",
            true,
        )
        .unwrap()
        .value
        .unwrap();
    assert_eq!(download, json!("application/zip 80,75"), "a zip (PK…)");

    ui.open(tab, &format!("/{XSS_SITE}?period=30d"));
    tab.find_element("details.summary > summary")
        .unwrap()
        .click()
        .unwrap();
    let text = js_str(tab, "document.querySelector('details.summary').innerText");
    assert!(text.contains(XSS_PAGE), "{text}");
    assert_eq!(
        js(
            tab,
            &format!(
                "document.querySelectorAll('{}').length",
                INJECTED.replace('\'', "\\'")
            )
        ),
        json!(0)
    );
    assert_eq!(js(tab, "window.__xss === undefined"), json!(true));
}

/// Every view of the dashboard is a page with its own EventSource. Leaving
/// one must not keep its stream open: over HTTP/1.1 a browser has six
/// connections per server, and a page kept in the back/forward cache with a
/// stream still open holds one of them until the cache lets it go.
fn many_live_pages(ui: &Ui, tab: &Arc<Tab>) {
    ui.open(tab, &format!("/{SITE}?period=30d"));
    for (i, period) in PERIODS[1..].iter().copied().enumerate() {
        let n = js_strings(
            tab,
            "Array.from(document.querySelectorAll('nav.periods a')).map(a => a.textContent.trim())",
        )
        .iter()
        .position(|t| t == period)
        .unwrap();
        navigating_within(
            tab,
            &format!(
                "dashboard view {} ({period}) after {} live pages in this tab",
                i + 2,
                i + 1
            ),
            Duration::from_secs(5),
            || click_nth(tab, "nav.periods a", n),
        );
        assert_eq!(js_strings(tab, ACTIVE_PERIOD), vec![period]);
    }
}

/// Full-page PNGs of the main views at two widths in both themes.
fn screenshots(ui: &Ui, _: &Arc<Tab>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    // Signed out, for the sign-in page.
    let stranger = ui.browser.new_context().unwrap();
    let filter = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("period", "30d")
        .append_pair("filters", "visit:source==Google")
        .finish();
    let views: Vec<(&str, bool, String, &str)> = vec![
        ("sites", true, "/".into(), "ul.site-grid li.site"),
        (
            "dashboard",
            true,
            format!("/{SITE}?period=30d"),
            "#panel-goals ol.rows li",
        ),
        (
            "dashboard-filtered",
            true,
            format!("/{SITE}?{filter}"),
            "ul.chips li.chip",
        ),
        (
            "realtime",
            true,
            format!("/{SITE}?period=realtime"),
            "ol.rows[data-list=pages] li",
        ),
        (
            "settings",
            true,
            format!("/{SITE}/settings"),
            "#snippet-code",
        ),
        ("login", false, "/login".into(), "input[name=password]"),
    ];
    let mut written = 0;
    for (size, width, height, scale, mobile) in [
        ("desktop", 1280, 900, 1.0, false),
        ("phone", 390, 844, 2.0, true),
    ] {
        for (name, signed_in, path, marker) in &views {
            let tab = if *signed_in {
                ui.tab()
            } else {
                prepare(stranger.new_tab().unwrap())
            };
            set_viewport(&tab, width, height, scale, mobile);
            ui.open(&tab, path);
            let page = js(
                &tab,
                &format!(
                    "[location.pathname, !!document.querySelector({}), window.innerWidth, \
                     document.documentElement.scrollWidth, document.documentElement.scrollHeight]",
                    json!(marker)
                ),
            );
            assert_eq!(
                page[1],
                json!(true),
                "{name} {size}: no {marker} at {}",
                page[0]
            );
            assert_eq!(page[2], json!(width), "{name} {size}: window width");
            assert!(
                page[3].as_u64().unwrap() <= u64::from(width),
                "{name} {size}: the page is {} px wide in a {width} px window",
                page[3]
            );
            // A viewport as tall as the page, so the picture is all of it.
            let full = page[4].as_u64().unwrap() as u32;
            set_viewport(&tab, width, full.max(height), scale, mobile);
            let mut backgrounds = Vec::new();
            for theme in ["light", "dark"] {
                tab.call_method(Emulation::SetEmulatedMedia {
                    media: None,
                    features: Some(vec![Emulation::MediaFeature {
                        name: "prefers-color-scheme".into(),
                        value: theme.into(),
                    }]),
                })
                .unwrap();
                // Two frames, so the new colours are painted.
                let bg = tab
                    .evaluate(
                        "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))\
                         .then(() => getComputedStyle(document.body).backgroundColor)",
                        true,
                    )
                    .unwrap()
                    .value;
                backgrounds.push(bg);
                let png = tab
                    .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
                    .unwrap();
                assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
                std::fs::write(dir.join(format!("{name}-{size}-{theme}.png")), png).unwrap();
                written += 1;
            }
            assert_ne!(
                backgrounds[0], backgrounds[1],
                "{name} {size}: dark mode changes nothing"
            );
            let _ = tab.close(false);
        }
    }
    eprintln!("  {written} screenshots in {}", dir.display());
}

fn set_viewport(tab: &Tab, width: u32, height: u32, scale: f64, mobile: bool) {
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: scale,
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .unwrap();
}
