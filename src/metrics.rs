//! Counters and histograms that the hot paths update without locks, and their
//! rendering in the Prometheus text format (`GET /metrics`).
//!
//! A leaf module: every layer may keep its own counters here and the HTTP
//! layer renders them. Label sets are fixed when a metric is made, so a
//! scrape never grows with traffic and an update is one atomic add.

use crate::sync::ReadWrite;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds (seconds) for request and query latencies: 100 µs to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bounds for counts of things per operation (events per commit).
pub const SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Sums are kept in millionths, so they add atomically as integers.
const SUM_SCALE: f64 = 1e6;

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters under one name, one per label value fixed at construction.
#[derive(Debug)]
pub struct CounterSet {
    labels: &'static [&'static str],
    counts: Box<[Counter]>,
}

impl CounterSet {
    pub fn new(labels: &'static [&'static str]) -> CounterSet {
        CounterSet {
            labels,
            counts: labels.iter().map(|_| Counter::default()).collect(),
        }
    }

    /// Adds to the counter of `label`; a label outside the set is a bug
    /// caught by tests, and counts under the last label rather than panic.
    pub fn add(&self, label: &str, n: u64) {
        let i = self.labels.iter().position(|l| *l == label);
        debug_assert!(i.is_some(), "unknown metric label {label}");
        self.counts[i.unwrap_or(self.labels.len() - 1)].add(n);
    }

    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }

    pub fn get(&self, label: &str) -> u64 {
        self.labels
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.counts[i].get())
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(Counter::get).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels
            .iter()
            .copied()
            .zip(self.counts.iter().map(Counter::get))
    }
}

/// A distribution over fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for values above every bound.
    buckets: Box<[AtomicU64]>,
    sum_scaled: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_scaled: AtomicU64::new(0),
        }
    }

    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS)
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_scaled
            .fetch_add((value * SUM_SCALE).round() as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum_scaled.load(Ordering::Relaxed) as f64 / SUM_SCALE
    }
}

/// Histograms under one name keyed by a label whose values are learned as
/// they come (route patterns). Callers must only pass a bounded set.
#[derive(Debug)]
pub struct HistogramFamily {
    bounds: &'static [f64],
    members: RwLock<Vec<(String, std::sync::Arc<Histogram>)>>,
}

impl HistogramFamily {
    pub fn new(bounds: &'static [f64]) -> HistogramFamily {
        HistogramFamily {
            bounds,
            members: RwLock::new(Vec::new()),
        }
    }

    pub fn get(&self, label: &str) -> std::sync::Arc<Histogram> {
        if let Some((_, h)) = self.members.reading().iter().find(|(l, _)| l == label) {
            return h.clone();
        }
        let mut members = self.members.writing();
        if let Some((_, h)) = members.iter().find(|(l, _)| l == label) {
            return h.clone();
        }
        let h = std::sync::Arc::new(Histogram::new(self.bounds));
        members.push((label.to_string(), h.clone()));
        h
    }

    fn snapshot(&self) -> Vec<(String, std::sync::Arc<Histogram>)> {
        let mut v = self.members.reading().clone();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Builds a scrape in the Prometheus text exposition format (0.0.4).
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// `(label name, value)` pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, extra: Option<(&str, &str)>, value: f64) {
        self.out.push_str(name);
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_some() {
            self.out.push('{');
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], None, value as f64);
    }

    /// One counter family from a [`CounterSet`], labelled `label`.
    pub fn counter_set(&mut self, name: &str, help: &str, label: &str, set: &CounterSet) {
        self.header(name, help, "counter");
        for (value, n) in set.iter() {
            self.sample(name, &[(label, value)], None, n as f64);
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], None, value);
    }

    pub fn gauge_labelled(&mut self, name: &str, help: &str, samples: &[(Labels<'_>, f64)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, None, *value);
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, &[], h);
    }

    pub fn histogram_family(&mut self, name: &str, help: &str, label: &str, f: &HistogramFamily) {
        self.header(name, help, "histogram");
        for (value, h) in f.snapshot() {
            self.histogram_samples(name, &[(label, &value)], &h);
        }
    }

    fn histogram_samples(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        // Counts are read once each, so `+Inf` equals `_count` even while
        // observations arrive during the scrape.
        let counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += counts[i];
            let le = format_value(*bound);
            self.sample(&bucket, labels, Some(("le", &le)), cumulative as f64);
        }
        cumulative += counts[h.bounds.len()];
        self.sample(&bucket, labels, Some(("le", "+Inf")), cumulative as f64);
        self.sample(&format!("{name}_sum"), labels, None, h.sum());
        self.sample(&format!("{name}_count"), labels, None, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 1.0, 3.0, 7.0, 9.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.histogram("x", "An example.", &h);
        let text = e.finish();
        assert!(text.contains("x_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("x_bucket{le=\"5\"} 3\n"), "{text}");
        assert!(text.contains("x_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("x_sum 20.5\n"), "{text}");
        assert!(text.contains("x_count 5\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.gauge_labelled("g", "G.", &[(&[("k", "a\"b\\c\nd")], 1.0)]);
        assert!(e.finish().contains(r#"g{k="a\"b\\c\nd"} 1"#));
    }

    #[test]
    fn counter_sets_count_per_label() {
        let set = CounterSet::new(&["a", "b"]);
        set.inc("b");
        set.add("b", 2);
        assert_eq!((set.get("a"), set.get("b"), set.total()), (0, 3, 3));
    }
}
