//! Compares two Rust implementations of uap-core on the same rules and the
//! same User-Agents: `ua-parser` (what Tally uses) and `uaparser`.
//!
//! Both load uap-core's `regexes.yaml` and `tests/test_ua.yaml` from the
//! `ua-parser` package (found with `cargo metadata`, or given with
//! `--uap-core DIR`). Each measurement runs in a fresh child process, so that
//! peak RSS (VmHWM) belongs to one parser only; runs alternate between the
//! parsers and the driver prints the median of each figure.
//!
//! ```text
//! ua-compare [--uap-core DIR] [--runs N] [--passes N] [--chrome-iters N]
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

/// A typical desktop Chrome User-Agent (reduced UA string, as Chrome sends).
const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The parsers compared: the one Tally uses, then `uaparser` with its default
/// (Unicode-aware) regexes, which the ratios are taken against, then
/// `uaparser` with Unicode support off, as its documentation suggests.
const PARSERS: &[&str] = &["ua-parser", "uaparser", "uaparser-nounicode"];
const BASELINE: &str = "uaparser";

/// Figures each child reports, in print order, with their unit.
const FIGURES: &[(&str, &str)] = &[
    ("build_ms", "ms"),
    ("cold_pass_us_per_ua", "µs"),
    ("parse_us_per_ua", "µs"),
    ("chrome_ns", "ns"),
    ("rss_base_mib", "MiB"),
    ("rss_built_mib", "MiB"),
    ("rss_peak_mib", "MiB"),
];

struct Options {
    uap_core: Option<PathBuf>,
    runs: usize,
    passes: usize,
    chrome_iters: usize,
    child: Option<String>,
}

fn parse_args() -> Options {
    let mut o = Options {
        uap_core: None,
        runs: 3,
        passes: 5,
        chrome_iters: 2_000,
        child: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--uap-core" => o.uap_core = Some(PathBuf::from(value())),
            "--runs" => o.runs = value().parse().unwrap_or_else(|_| die("bad --runs")),
            "--passes" => o.passes = value().parse().unwrap_or_else(|_| die("bad --passes")),
            "--chrome-iters" => {
                o.chrome_iters = value()
                    .parse()
                    .unwrap_or_else(|_| die("bad --chrome-iters"))
            }
            "--child" => o.child = Some(value()),
            "-h" | "--help" => {
                println!(
                    "usage: ua-compare [--uap-core DIR] [--runs N] [--passes N] [--chrome-iters N]"
                );
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument {a}")),
        }
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("ua-compare: {msg}");
    std::process::exit(2)
}

fn main() {
    let o = parse_args();
    let uap_core = o.uap_core.clone().unwrap_or_else(locate_uap_core);
    match &o.child {
        Some(parser) => child(parser, &uap_core, o.passes, o.chrome_iters),
        None => driver(&o, &uap_core),
    }
}

/// The `uap-core/` directory of the `ua-parser` package this project resolved.
fn locate_uap_core() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| die(&format!("running cargo metadata: {e}")));
    if !out.status.success() {
        die(&format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| die(&format!("cargo metadata: {e}")));
    let manifest_path = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "ua-parser")
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| die("ua-parser not in cargo metadata; pass --uap-core DIR"));
    let dir = Path::new(manifest_path).parent().unwrap().join("uap-core");
    if !dir.join("regexes.yaml").is_file() {
        die(&format!("no regexes.yaml in {}", dir.display()));
    }
    dir
}

// ---------------------------------------------------------------------------
// Driver

fn driver(o: &Options, uap_core: &Path) {
    let exe = std::env::current_exe().expect("current executable");
    let ua_parser_version = package_version(uap_core);
    println!("uap-core rules and test UAs from ua-parser {ua_parser_version}");
    println!(
        "runs: {}, passes over test_ua.yaml per run: {}, Chrome iterations: {}",
        o.runs, o.passes, o.chrome_iters
    );
    println!("Chrome UA: {CHROME_UA}");
    println!();

    let mut results: BTreeMap<&str, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for run in 1..=o.runs {
        for &parser in PARSERS {
            let out = Command::new(&exe)
                .arg("--child")
                .arg(parser)
                .arg("--uap-core")
                .arg(uap_core)
                .args(["--passes", &o.passes.to_string()])
                .args(["--chrome-iters", &o.chrome_iters.to_string()])
                .output()
                .expect("running child");
            if !out.status.success() {
                die(&format!(
                    "{parser} child failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("run {run} {parser:<20} {line}");
            let mut figures = BTreeMap::new();
            for kv in line.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("key=value");
                let n = v.parse::<f64>().expect("numeric figure");
                figures.insert(k.to_string(), n);
            }
            results.entry(parser).or_default().push(figures);
        }
    }

    let medians: BTreeMap<&str, BTreeMap<&str, f64>> = results
        .iter()
        .map(|(&parser, runs)| {
            let m = FIGURES
                .iter()
                .map(|&(k, _)| {
                    let mut v: Vec<f64> = runs.iter().map(|r| r[k]).collect();
                    (k, median(&mut v))
                })
                .collect();
            (parser, m)
        })
        .collect();

    println!();
    println!("Medians of {} runs:", o.runs);
    println!();
    print!("| figure |");
    for p in PARSERS {
        print!(" {p} |");
    }
    println!(" {BASELINE} ÷ ua-parser |");
    print!("|---|");
    for _ in PARSERS {
        print!("---:|");
    }
    println!("---:|");
    for &(k, unit) in FIGURES {
        print!("| {k} ({unit}) |");
        for p in PARSERS {
            print!(" {} |", fmt(medians[p][k]));
        }
        if k == "rss_base_mib" {
            println!(" |");
        } else {
            println!(
                " {}× |",
                fmt(medians[BASELINE][k] / medians["ua-parser"][k])
            );
        }
    }
    print!("| test_ua exact (family, major, minor, patch) |");
    for p in PARSERS {
        let last = results[p].last().unwrap();
        print!(
            " {}/{} |",
            last["test_ua_exact"] as u64, last["test_ua_total"] as u64
        );
    }
    println!("  |");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `ua-parser-X.Y.Z` from the package directory's name, when it has one.
fn package_version(uap_core: &Path) -> String {
    uap_core
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("ua-parser-"))
        .unwrap_or("(unknown version)")
        .to_string()
}

// ---------------------------------------------------------------------------
// Child: one parser, one process

#[derive(Deserialize)]
struct TestFile {
    test_cases: Vec<TestCase>,
}

#[derive(Deserialize)]
struct TestCase {
    user_agent_string: String,
    family: String,
    major: Option<String>,
    minor: Option<String>,
    patch: Option<String>,
}

type Expected = (String, Option<String>, Option<String>, Option<String>);

/// Browser family and versions, as uap-core's test files state them.
type Browser<'a> = (
    Cow<'a, str>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
);

/// A parser under test: full extraction (browser, OS, device) of one UA.
trait Subject {
    fn extract_all(&self, ua: &str);
    fn browser<'a>(&'a self, ua: &'a str) -> Browser<'a>;
}

impl Subject for ua_parser::Extractor<'static> {
    fn extract_all(&self, ua: &str) {
        black_box(self.extract(black_box(ua)));
    }
    fn browser<'a>(&'a self, ua: &'a str) -> Browser<'a> {
        match self.ua.extract(ua) {
            Some(v) => (
                v.family,
                v.major.map(Cow::Borrowed),
                v.minor.map(Cow::Borrowed),
                v.patch.map(Cow::Borrowed),
            ),
            None => ("Other".into(), None, None, None),
        }
    }
}

impl Subject for uaparser::UserAgentParser {
    fn extract_all(&self, ua: &str) {
        black_box(uaparser::Parser::parse(self, black_box(ua)));
    }
    fn browser<'a>(&'a self, ua: &'a str) -> Browser<'a> {
        let v = uaparser::Parser::parse_user_agent(self, ua);
        (v.family, v.major, v.minor, v.patch)
    }
}

fn child(parser: &str, uap_core: &Path, passes: usize, chrome_iters: usize) {
    let rules = std::fs::read(uap_core.join("regexes.yaml")).expect("reading regexes.yaml");
    let tests = std::fs::read(uap_core.join("tests/test_ua.yaml")).expect("reading test_ua.yaml");
    let cases = serde_yaml::from_slice::<TestFile>(&tests)
        .expect("parsing test_ua.yaml")
        .test_cases;
    drop(tests);
    let uas: Vec<&str> = cases.iter().map(|c| c.user_agent_string.as_str()).collect();
    let expected: Vec<Expected> = cases
        .iter()
        .map(|c| {
            let v = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
            (c.family.clone(), v(&c.major), v(&c.minor), v(&c.patch))
        })
        .collect();
    let rss_base = vm_hwm_kib();

    // Build time includes deserialising the YAML rules for both crates.
    let start = Instant::now();
    let subject: Box<dyn Subject> = match parser {
        "ua-parser" => {
            let regexes: ua_parser::Regexes<'static> =
                serde_yaml::from_slice(&rules).expect("ua-parser: deserialising regexes.yaml");
            Box::new(ua_parser::Extractor::try_from(regexes).expect("ua-parser: building"))
        }
        "uaparser" => Box::new(
            uaparser::UserAgentParser::builder()
                .build_from_bytes(&rules)
                .expect("uaparser: building"),
        ),
        "uaparser-nounicode" => Box::new(
            uaparser::UserAgentParser::builder()
                .with_unicode_support(false)
                .build_from_bytes(&rules)
                .expect("uaparser: building"),
        ),
        other => die(&format!("unknown parser {other}")),
    };
    let build = start.elapsed();
    let rss_built = vm_hwm_kib();

    // The first pass also fills the regex engines' lazy caches.
    let start = Instant::now();
    for ua in &uas {
        subject.extract_all(ua);
    }
    let cold = start.elapsed();

    let start = Instant::now();
    for _ in 0..passes {
        for ua in &uas {
            subject.extract_all(ua);
        }
    }
    let warm = start.elapsed();

    for _ in 0..100 {
        subject.extract_all(CHROME_UA);
    }
    let start = Instant::now();
    for _ in 0..chrome_iters {
        subject.extract_all(CHROME_UA);
    }
    let chrome = start.elapsed();
    let rss_peak = vm_hwm_kib();

    let exact = uas
        .iter()
        .zip(&expected)
        .filter(|(ua, (family, major, minor, patch))| {
            let (f, ma, mi, pa) = subject.browser(ua);
            f == family.as_str()
                && ma.as_deref() == major.as_deref()
                && mi.as_deref() == minor.as_deref()
                && pa.as_deref() == patch.as_deref()
        })
        .count();

    let n = uas.len() as f64;
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    println!(
        "build_ms={:.1} cold_pass_us_per_ua={:.2} parse_us_per_ua={:.2} chrome_ns={:.0} \
         rss_base_mib={} rss_built_mib={} rss_peak_mib={} test_ua_exact={} test_ua_total={}",
        build.as_secs_f64() * 1e3,
        cold.as_secs_f64() * 1e6 / n,
        warm.as_secs_f64() * 1e6 / (n * passes as f64),
        chrome.as_secs_f64() * 1e9 / chrome_iters as f64,
        mib(rss_base),
        mib(rss_built),
        mib(rss_peak),
        exact,
        uas.len(),
    );
}

/// Peak resident set size of this process so far, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}
