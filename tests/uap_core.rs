//! Runs uap-core's own test cases (shipped in the `ua-parser` package, next to
//! the rules that build.rs embeds) through `UaParser`, comparing only what
//! Tally keeps: browser family and major version, OS family and major
//! version, device family.
//!
//! Run with `cargo test --test uap_core -- --nocapture` to see the pass
//! rates. Each file has a floor a little under today's rate: a drop below it
//! means the embedded rules or the way Tally calls the crate regressed.

use std::path::PathBuf;

use serde::Deserialize;
use tally::ingest::enrich::UaParser;

/// Failing cases printed per file.
const SHOWN_FAILURES: usize = 5;

#[derive(Deserialize)]
struct TestFile<T> {
    test_cases: Vec<T>,
}

#[derive(Deserialize)]
struct VersionedCase {
    user_agent_string: String,
    family: String,
    #[serde(default)]
    major: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
struct DeviceCase {
    user_agent_string: String,
    family: String,
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path: PathBuf = [env!("TALLY_UAP_CORE_DIR"), "tests", name].iter().collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str::<TestFile<T>>(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
        .test_cases
}

/// uap-core writes versions as quoted strings and a missing one as null or
/// an empty string; an unquoted number is accepted too.
fn version(v: &Option<serde_yaml::Value>) -> Option<String> {
    match v {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(s)) if s.is_empty() => None,
        Some(serde_yaml::Value::String(s)) => Some(s.clone()),
        Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
        Some(other) => panic!("unexpected version value {other:?}"),
    }
}

struct Tally {
    file: &'static str,
    total: usize,
    passed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn new(file: &'static str) -> Tally {
        Tally {
            file,
            total: 0,
            passed: 0,
            failures: Vec::new(),
        }
    }

    fn check<T: PartialEq + std::fmt::Debug>(&mut self, ua: &str, expected: T, got: T) {
        self.total += 1;
        if expected == got {
            self.passed += 1;
        } else if self.failures.len() < SHOWN_FAILURES {
            self.failures.push(format!(
                "  {ua}\n    expected {expected:?}\n    got      {got:?}"
            ));
        }
    }

    fn rate(&self) -> f64 {
        100.0 * self.passed as f64 / self.total as f64
    }

    /// Prints the rate and the first failures, then asserts the floor.
    fn report(&self, floor_percent: f64) {
        println!(
            "{}: {}/{} ({:.2}%)",
            self.file,
            self.passed,
            self.total,
            self.rate()
        );
        for f in &self.failures {
            println!("{f}");
        }
        assert!(self.total > 0, "{}: no test cases", self.file);
        assert!(
            self.rate() >= floor_percent,
            "{}: pass rate {:.2}% is below the floor of {floor_percent}%",
            self.file,
            self.rate()
        );
    }
}

#[test]
fn test_ua() {
    let parser = UaParser::new();
    let mut tally = Tally::new("test_ua");
    for case in load::<VersionedCase>("test_ua.yaml") {
        let info = parser.parse(&case.user_agent_string);
        tally.check(
            &case.user_agent_string,
            (case.family.as_str(), version(&case.major)),
            (info.browser.as_str(), info.browser_version.clone()),
        );
    }
    tally.report(99.0);
}

#[test]
fn test_os() {
    let parser = UaParser::new();
    let mut tally = Tally::new("test_os");
    for case in load::<VersionedCase>("test_os.yaml") {
        let info = parser.parse(&case.user_agent_string);
        tally.check(
            &case.user_agent_string,
            (case.family.as_str(), version(&case.major)),
            (info.os.as_str(), info.os_version.clone()),
        );
    }
    tally.report(99.0);
}

#[test]
fn test_device() {
    let parser = UaParser::new();
    let mut tally = Tally::new("test_device");
    for case in load::<DeviceCase>("test_device.yaml") {
        let info = parser.parse(&case.user_agent_string);
        tally.check(
            &case.user_agent_string,
            case.family.as_str(),
            info.device_family.as_str(),
        );
    }
    tally.report(99.0);
}
