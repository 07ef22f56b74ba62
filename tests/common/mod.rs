//! Test fixture: the real `tally` binary on an ephemeral port, with its own
//! config and SQLite file in a temporary directory.
#![allow(dead_code)]

pub mod client;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
pub const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";

/// The password [`Env::add_user`] gives every user.
pub const PASSWORD: &str = "correct horse battery";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tally")
}

/// A temporary directory holding `tally.toml` and `data/`.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// `extra` is appended to a config that listens on an ephemeral port.
    pub fn new(extra: &str) -> Env {
        Env::with_storage(extra, "")
    }

    /// Like [`Env::new`], with `storage` added to the `[storage]` table.
    pub fn with_storage(extra: &str, storage: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{extra}\n[storage]\ndata_dir = {:?}\n{storage}\n",
            data.display().to_string()
        );
        std::fs::write(dir.path().join("tally.toml"), config).unwrap();
        Env { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("tally.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data_dir().join("tally.db")).unwrap()
    }

    /// Runs `tally --config … ARGS`, asserting success.
    pub fn tally(&self, args: &[&str]) -> String {
        let out = self.tally_raw(args);
        assert!(
            out.status.success(),
            "tally {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn tally_raw(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("TALLY_CONFIG")
            .output()
            .unwrap()
    }

    pub fn add_site(&self, domain: &str) {
        self.tally(&["site", "add", domain]);
    }

    /// Runs `tally user add EMAIL --password-stdin` with [`PASSWORD`]; no
    /// `sites` makes an admin, who sees every site.
    pub fn add_user(&self, email: &str, sites: &[&str]) {
        let mut args = vec!["user", "add", email, "--password-stdin"];
        for s in sites {
            args.extend(["--site", s]);
        }
        self.tally_with_password(&args);
    }

    /// `tally user add EMAIL --site DOMAIN --role ROLE`, with [`PASSWORD`].
    pub fn add_member(&self, email: &str, domain: &str, role: &str) {
        self.tally_with_password(&[
            "user",
            "add",
            email,
            "--site",
            domain,
            "--role",
            role,
            "--password-stdin",
        ]);
    }

    /// Runs `tally --config … ARGS` with [`PASSWORD`] on stdin, asserting
    /// success.
    fn tally_with_password(&self, args: &[&str]) {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("TALLY_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tally {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn api_key(&self) -> String {
        self.tally(&["api-key", "create", "test"])
            .lines()
            .last()
            .unwrap()
            .to_string()
    }

    /// Starts a server whose rollups need no rebuild: nothing may be
    /// rebuilding from its first answer on (a data directory the CLI wrote
    /// is whole), so an unwanted rebuild at start fails the test rather than
    /// being waited for.
    pub fn start(&self) -> Server {
        let server = Server::start(&self.config());
        let h = server.get("/api/health", &[]).json();
        assert_eq!(
            h["rollups"]["rebuilding_sites"], 0,
            "rollups rebuilding at start: {h}"
        );
        server
    }

    /// Starts a server on a data directory that asked for a rollup rebuild
    /// (`meta.rollups_rebuild`) and waits until it is done.
    pub fn start_rebuilding(&self) -> Server {
        let server = Server::start(&self.config());
        server.wait_rebuilt();
        server
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Adds example.com as a public site and an API key, starts the server
    /// and counts one pageview of `/` there; the server and the key.
    pub fn start_with_one_pageview(&self) -> (Server, String) {
        self.tally(&["site", "add", "example.com", "--public"]);
        let key = self.api_key();
        let s = self.start();
        assert_eq!(
            s.event(&pageview("https://example.com/"), CHROME).status,
            202
        );
        s.settle();
        (s, key)
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub agent: ureq::Agent,
    log: mpsc::Receiver<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.expect("request failed");
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Reply {
        status: r.status().as_u16(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
        headers,
    }
}

impl Server {
    pub fn start(config: &Path) -> Server {
        Server::start_with_env(config, &[])
    }

    /// Like [`Server::start`], with extra environment (`TALLY_LOG=info` unless set).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("TALLY_LOG", "info")
            .envs(env.iter().copied())
            .env_remove("TALLY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("server did not report its address");
            if let Some(i) = line.find("listening on http://") {
                // Text or JSON logs: the address ends at a space or a quote.
                let addr = line[i + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap();
                break addr.to_string();
            }
        };
        let server = Server {
            child,
            base,
            agent: agent(),
            log: rx,
        };
        // Ready when health answers.
        while server.get("/api/health", &[]).status != 200 {
            assert!(Instant::now() < deadline, "server never became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.call())
    }

    /// POSTs `body` to `/api/event` as the tracker does (text/plain).
    pub fn event(&self, body: &str, ua: &str) -> Reply {
        self.post(
            "/api/event",
            body,
            &[("User-Agent", ua), ("Content-Type", "text/plain")],
        )
    }

    /// Like [`Server::event`], as relayed by a proxy for client `ip`
    /// (counts only when the config trusts 127.0.0.1 as a proxy).
    pub fn event_from(&self, ip: &str, body: &str, ua: &str) -> Reply {
        self.post(
            "/api/event",
            body,
            &[
                ("User-Agent", ua),
                ("Content-Type", "text/plain"),
                ("X-Forwarded-For", ip),
            ],
        )
    }

    pub fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send(body))
    }

    pub fn stats(&self, key: &str, path_and_query: &str) -> Reply {
        self.get(
            path_and_query,
            &[("Authorization", &format!("Bearer {key}"))],
        )
    }

    /// Sends SIGTERM and waits; returns the exit code.
    /// Waits until every acknowledged event is in the rollups (they follow
    /// the raw tables within about a second).
    pub fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let h = self.get("/api/health", &[]).json();
            if h["rollups"]["pending_events"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "rollups did not catch up: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until no site's rollups are being rebuilt (after a timezone
    /// change or an upgrade).
    pub fn wait_rebuilt(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let h = self.get("/api/health", &[]).json();
            if h["rollups"]["rebuilding_sites"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "rollups were not rebuilt: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn terminate(mut self) -> i32 {
        signal(&self.child, "TERM");
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Log lines received so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

/// Dropping a server stops it as an operator would (SIGTERM), so tests can
/// read everything it wrote; `kill9` is there for crashes.
impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(&self.child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Headless Chromium as the tests run it: no sandbox, no GPU, no background
/// traffic, a fresh profile in `profile`, and `extra` flags.
pub fn launch_chromium(
    chromium: PathBuf,
    profile: &Path,
    extra: &[&str],
) -> headless_chrome::Browser {
    let mut flags = vec![
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
    ];
    flags.extend_from_slice(extra);
    headless_chrome::Browser::new(
        headless_chrome::LaunchOptions::default_builder()
            .path(Some(chromium))
            .headless(true)
            .sandbox(false) // --no-sandbox
            .window_size(Some((1280, 900)))
            .user_data_dir(Some(profile.to_path_buf()))
            .args(flags.iter().map(std::ffi::OsStr::new).collect())
            .idle_browser_timeout(Duration::from_secs(180))
            .build()
            .unwrap(),
    )
    .expect("launching Chromium")
}

/// Debian's `chromium`, or the binary `CHROMIUM` names. Under CI a missing
/// browser fails the test; locally the browser tests skip with a loud message.
pub fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("Chromium not found (apt-get install -y chromium): browser tests must run in CI");
    }
    eprintln!(
        "\n*** SKIPPED browser tests: Chromium not found (apt-get install -y chromium, or set CHROMIUM) ***\n"
    );
    None
}

/// `s` percent-encoded for a query string.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A pageview body for `url` on example.com.
pub fn pageview(url: &str) -> String {
    serde_json::json!({"n": "pageview", "u": url, "d": "example.com"}).to_string()
}

/// (day, pageviews, visitors) of example.com's last 30 days, from the rollups or,
/// with `filters`, from the raw events.
pub fn daily(server: &Server, key: &str, filters: Option<&str>) -> Vec<(String, i64, i64)> {
    let mut q = "/api/v1/stats/timeseries?site_id=example.com&period=30d&interval=date\
                 &metrics=pageviews,visitors"
        .to_string();
    if let Some(f) = filters {
        q.push_str(&format!("&filters={}", urlencode(f)));
    }
    let r = server.stats(key, &q);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["date"].as_str().unwrap().to_string(),
                d["pageviews"].as_i64().unwrap(),
                d["visitors"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Whether a visitor count from the rollups' sketches agrees with the exact
/// count from raw events. Up to 4,096 visitors a sketch keeps 32-bit hashes,
/// so two visitors sharing one (probability n²/2³³, 0.2% at 4,096) count
/// once: it may come out one short, never over. Beyond, it is an estimate
/// within 2%.
pub fn sketch_agrees(sketched: i64, exact: i64) -> bool {
    if exact <= 4096 {
        sketched == exact || sketched == exact - 1
    } else {
        (sketched - exact).abs() * 40 <= exact
    }
}

/// The days where rollups and raw events disagree, as readable lines: the
/// same pageviews, and visitors within the sketches' error.
pub fn days_that_differ(rollups: &[(String, i64, i64)], raw: &[(String, i64, i64)]) -> Vec<String> {
    assert_eq!(rollups.len(), raw.len());
    rollups
        .iter()
        .zip(raw)
        .filter(|(a, b)| a.0 != b.0 || a.1 != b.1 || !sketch_agrees(a.2, b.2))
        .map(|(a, b)| format!("{}: rollups {}/{}, raw {}/{}", a.0, a.1, a.2, b.1, b.2))
        .collect()
}

/// Today's pageviews of example.com's pages under `prefix`, from the
/// rollups (an unfiltered breakdown).
pub fn todays_pageviews_under(server: &Server, key: &str, prefix: &str) -> i64 {
    let r = server.stats(
        key,
        "/api/v1/stats/breakdown?site_id=example.com&period=day&property=event:page\
         &metrics=pageviews&limit=1000",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["page"].as_str().unwrap().starts_with(prefix))
        .map(|row| row["pageviews"].as_i64().unwrap())
        .sum()
}

/// `tally_column_answers_total` from `/metrics`: parts of filtered reports
/// the column store answered.
pub fn column_answers(server: &Server) -> u64 {
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("tally_column_answers_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no tally_column_answers_total in\n{}", r.body)) as u64
}

/// example.com's pageviews and visitors over `period` (with `filters`, from the raw
/// events).
pub fn aggregate(server: &Server, key: &str, period: &str, filters: Option<&str>) -> (i64, i64) {
    let mut q = format!(
        "/api/v1/stats/aggregate?site_id=example.com&period={period}&metrics=pageviews,visitors"
    );
    if let Some(f) = filters {
        q.push_str(&format!("&filters={}", urlencode(f)));
    }
    let r = server.stats(key, &q);
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    (
        j["results"]["pageviews"]["value"].as_i64().unwrap(),
        j["results"]["visitors"]["value"].as_i64().unwrap(),
    )
}
