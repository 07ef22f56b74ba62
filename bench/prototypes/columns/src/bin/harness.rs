//! Builds a column store from a Tally database and measures the filtered
//! dashboard views against Tally's reference answers.
//!
//! ```text
//! harness build DB STORE            build STORE from DB (read-only)
//! harness query STORE REFDIR [--runs N] [--first VIEW] [--threads N] [--no-verify]
//! ```
//! `query` runs in a fresh process: it opens the store, answers the first
//! view (`--first`, default `12mo-f0`), then runs every view `--runs` times
//! (default 7), compares every answer of the first run with REFDIR's JSON,
//! and prints per-view and per-call medians, RssAnon after each call, and
//! the heap a view allocates. Its last line is `SUMMARY {json}`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use serde_json::{Map, Value, json};
use tally_columnar::model::{Dimension, Filter, TimeRange, Totals, VisitColumn, parse_filters};
use tally_columnar::store::Store;
use tally_columnar::{builder, query};

/// Counts heap bytes: live, peak live (resettable) and allocated in all.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        TOTAL.fetch_add(l.size(), Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(now, Relaxed);
        TOTAL.fetch_add(l.size(), Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let now = LIVE.fetch_add(new - l.size(), Relaxed) + new - l.size();
            PEAK.fetch_max(now, Relaxed);
            TOTAL.fetch_add(new - l.size(), Relaxed);
        } else {
            LIVE.fetch_sub(l.size() - new, Relaxed);
        }
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// kB fields of /proc/self/status.
fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn label(day: i64) -> String {
    let (y, m, d) = civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

struct Period {
    range: TimeRange,
    previous: TimeRange,
    buckets: Vec<(String, TimeRange)>,
}

fn range(first: i64, last: i64) -> TimeRange {
    TimeRange {
        start: first * 86_400,
        end: (last + 1) * 86_400,
    }
}

/// The brief's periods, in UTC, as Tally's `Period` resolves them.
fn period(name: &str) -> Period {
    let today = days(2026, 12, 7);
    let (first, last, buckets) = if name == "30d" {
        let first = today - 29;
        let b = (first..=today).map(|d| (label(d), range(d, d))).collect();
        (first, today, b)
    } else {
        let first = days(2026, 1, 1);
        let last = days(2026, 12, 31);
        let b = (1..=12)
            .map(|m| {
                let a = days(2026, m, 1);
                let z = if m == 12 {
                    days(2027, 1, 1)
                } else {
                    days(2026, m + 1, 1)
                };
                (label(a), range(a, z - 1))
            })
            .collect();
        (first, last, b)
    };
    let n = last - first + 1;
    Period {
        range: range(first, last),
        previous: range(first - n, first - 1),
        buckets,
    }
}

fn div_round(num: i64, den: i64) -> i64 {
    if den == 0 {
        return 0;
    }
    let (n, d) = (i128::from(num), i128::from(den));
    let q = (2 * n.abs() + d.abs()) / (2 * d.abs());
    (if (n < 0) != (d < 0) { -q } else { q }) as i64
}

fn metric(name: &str, t: &Totals) -> Value {
    if t.visits == 0 && ["views_per_visit", "bounce_rate", "visit_duration"].contains(&name) {
        return Value::Null;
    }
    match name {
        "visitors" => json!(t.visitors),
        "visits" => json!(t.visits),
        "pageviews" => json!(t.pageviews),
        "views_per_visit" => json!(div_round(t.pageviews * 100, t.visits) as f64 / 100.0),
        "bounce_rate" => json!(div_round(t.bounces * 100, t.visits)),
        "visit_duration" => json!(div_round(t.visit_duration_sum, t.visits)),
        _ => Value::Null,
    }
}

fn change(name: &str, now: &Value, before: &Value) -> Value {
    if now.is_null() || before.is_null() {
        return Value::Null;
    }
    let h = |v: &Value| (v.as_f64().unwrap_or(0.0) * 100.0).round() as i64;
    let (now, before) = (h(now), h(before));
    if name == "bounce_rate" {
        return json!(div_round(now - before, 100));
    }
    if before == 0 {
        return json!(if now > 0 { 100 } else { 0 });
    }
    json!(div_round((now - before) * 100, before))
}

const METRICS: [&str; 6] = [
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
];
const FILTERS: [&str; 3] = [
    "visit:source==Google",
    "visit:source==Google;visit:browser==Chrome",
    "event:page==/blog**",
];
const CALLS: [&str; 7] = [
    "aggregate",
    "timeseries",
    "breakdown-event_page",
    "breakdown-visit_source",
    "breakdown-visit_country",
    "breakdown-visit_browser",
    "breakdown-visit_device",
];

type Answer = Vec<(String, Value)>;

/// One call of a view: its answers (file name suffix, JSON).
fn call(store: &Store, p: &Period, filters: &[Filter], which: usize) -> Answer {
    let fail = |e: tally_columnar::format::Error| -> Answer {
        vec![("error".into(), json!(e.to_string()))]
    };
    match which {
        0 => {
            let (now, before) = match (
                query::totals(store, p.range, filters),
                query::totals(store, p.previous, filters),
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => return fail(e),
            };
            let mut agg = Map::new();
            let mut prev = Map::new();
            for m in METRICS {
                let (v, b) = (metric(m, &now), metric(m, &before));
                agg.insert(m.into(), json!({"value": v, "change": change(m, &v, &b)}));
                prev.insert(m.into(), json!({ "value": b }));
            }
            vec![
                ("aggregate".into(), json!({ "results": agg })),
                ("aggregate-previous".into(), json!({ "results": prev })),
            ]
        }
        1 => {
            let ranges: Vec<TimeRange> = p.buckets.iter().map(|b| b.1).collect();
            match query::series(store, &ranges, filters, false) {
                Ok(ts) => {
                    let rows: Vec<Value> = p
                        .buckets
                        .iter()
                        .zip(ts)
                        .map(|((l, _), t)| {
                            json!({"date": l, "visitors": t.visitors, "pageviews": t.pageviews})
                        })
                        .collect();
                    vec![("timeseries".into(), json!({ "results": rows }))]
                }
                Err(e) => fail(e),
            }
        }
        _ => {
            let (dim, key) = match which {
                2 => (Dimension::Page, "page"),
                3 => (Dimension::Visit(VisitColumn::Source), "source"),
                4 => (Dimension::Visit(VisitColumn::Country), "country"),
                5 => (Dimension::Visit(VisitColumn::Browser), "browser"),
                _ => (Dimension::Visit(VisitColumn::Device), "device"),
            };
            let none = if key == "source" {
                "Direct / None"
            } else {
                "(none)"
            };
            match query::breakdown(store, p.range, &dim, filters, 10, 0, false) {
                Ok(rows) => {
                    let rows: Vec<Value> = rows
                        .into_iter()
                        .map(|r| json!({key: r.value.unwrap_or_else(|| none.into()), "visitors": r.visitors}))
                        .collect();
                    vec![(CALLS[which].into(), json!({ "results": rows }))]
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of this thread, in ms (on a shared machine, wall time also
/// counts waiting for a core).
fn cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .map_or(0.0, |ns| ns / 1e6)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn build(db: &str, out: &str) {
    let s = builder::build(Path::new(db), 1, Path::new(out)).unwrap_or_else(|e| {
        eprintln!("build: {e}");
        std::process::exit(1)
    });
    let mut day_secs: Vec<f64> = s.days.iter().map(|d| d.seconds).collect();
    let max_day = s.days.iter().max_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let worst = max_day.map_or(0.0, |d| d.seconds);
    day_secs.sort_by(f64::total_cmp);
    let med = day_secs.get(day_secs.len() / 2).copied().unwrap_or(0.0);
    let bytes: u64 = walk(Path::new(out));
    println!(
        "built {} events, {} visits ({} orphan events) in {:.2} s: {:.0} events/s",
        s.events,
        s.visits,
        s.orphans,
        s.seconds,
        s.events as f64 / s.seconds
    );
    println!(
        "disk {} bytes ({:.1} MiB), {:.1} bytes/event; {} segments; seal of one day: median {:.3} s, max {:.3} s; build VmHWM {} MiB",
        bytes,
        bytes as f64 / 1048576.0,
        bytes as f64 / s.events as f64,
        s.days.len(),
        med,
        worst,
        status("VmHWM:") / 1024
    );
    println!(
        "SUMMARY {}",
        json!({"events": s.events, "seconds": s.seconds, "events_per_s": s.events as f64 / s.seconds,
               "bytes": bytes, "bytes_per_event": bytes as f64 / s.events as f64,
               "day_seal_median_s": med, "day_seal_max_s": worst, "vmhwm_kib": status("VmHWM:")})
    );
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("build") if args.len() == 4 => return build(&args[2], &args[3]),
        Some("query") if args.len() >= 4 => {}
        _ => {
            eprintln!(
                "usage: harness build DB STORE | harness query STORE REFDIR [--runs N] [--first VIEW] [--threads N] [--no-verify]"
            );
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let (dir, refdir) = (Path::new(&args[2]), Path::new(&args[3]));
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let runs: usize = opt("--runs").and_then(|s| s.parse().ok()).unwrap_or(7);
    let first = opt("--first").cloned().unwrap_or_else(|| "12mo-f0".into());
    let verify = !args.iter().any(|a| a == "--no-verify");
    let threads: usize = opt("--threads").and_then(|s| s.parse().ok()).unwrap_or(1);
    query::set_threads(threads);
    let views: Vec<(String, Period, Vec<Filter>)> = ["30d", "12mo"]
        .iter()
        .flat_map(|p| {
            FILTERS.iter().enumerate().map(move |(i, f)| {
                (
                    format!("{p}-f{i}"),
                    period(p),
                    parse_filters(f).unwrap_or_default(),
                )
            })
        })
        .collect();
    let rss_anon = std::cell::Cell::new(0u64);
    let sample = || rss_anon.set(rss_anon.get().max(status("RssAnon:")));
    // The first view after opening.
    let store = Store::open(dir, verify).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(1)
    });
    let opened = ms(started);
    let (fname, fp, ff) = views.iter().find(|v| v.0 == first).unwrap_or(&views[0]);
    let t = Instant::now();
    let _ = call(&store, fp, ff, 0);
    let first_call = ms(t) + opened;
    sample();
    for c in 1..CALLS.len() {
        let _ = call(&store, fp, ff, c);
        sample();
    }
    let first_view = ms(started);
    println!(
        "first view {fname}: open {opened:.1} ms, first answer after {first_call:.1} ms, whole view after {first_view:.1} ms (process start)"
    );
    let mut mismatches = 0;
    let mut summary = Map::new();
    for (name, p, filters) in &views {
        let mut view_times = Vec::new();
        let mut view_cpu = Vec::new();
        let mut call_times: Vec<Vec<f64>> = vec![Vec::new(); CALLS.len()];
        let mut heap_peak = 0usize;
        let mut heap_total = 0usize;
        for run in 0..runs {
            // Each view pays for its own derived sets (shared by its calls).
            store.forget_derived();
            let base_live = LIVE.load(Relaxed);
            PEAK.store(base_live, Relaxed);
            let total0 = TOTAL.load(Relaxed);
            let tv = Instant::now();
            let cpu0 = cpu_ms();
            for (c, times) in call_times.iter_mut().enumerate() {
                let t = Instant::now();
                let answers = call(&store, p, filters, c);
                times.push(ms(t));
                sample();
                if run == 0 {
                    for (suffix, got) in answers {
                        let file = refdir.join(format!("{name}-{suffix}.json"));
                        let want: Option<Value> = std::fs::read_to_string(&file)
                            .ok()
                            .and_then(|s| serde_json::from_str(&s).ok());
                        match want {
                            Some(w) if w == got => {}
                            Some(w) => {
                                mismatches += 1;
                                println!("MISMATCH {name}-{suffix}\n  want {w}\n  got  {got}");
                            }
                            None => println!("NO REFERENCE {} (got {got})", file.display()),
                        }
                    }
                }
            }
            view_times.push(ms(tv));
            view_cpu.push(cpu_ms() - cpu0);
            heap_peak = heap_peak.max(PEAK.load(Relaxed) - base_live);
            heap_total = heap_total.max(TOTAL.load(Relaxed) - total0);
        }
        let calls: Vec<f64> = call_times.into_iter().map(median).collect();
        let view = median(view_times);
        let cpu = median(view_cpu);
        let worst = calls.iter().copied().fold(0.0, f64::max);
        println!(
            "{name}: view {view:.1} ms (cpu {cpu:.1}); calls {}; worst {worst:.1} ms; heap peak {:.1} MiB, allocated {:.1} MiB per view",
            CALLS
                .iter()
                .zip(&calls)
                .map(|(c, t)| format!("{c} {t:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            heap_peak as f64 / 1048576.0,
            heap_total as f64 / 1048576.0
        );
        summary.insert(
            name.clone(),
            json!({"view_ms": view, "view_cpu_ms": cpu, "calls_ms": calls, "worst_call_ms": worst,
                   "heap_peak_bytes": heap_peak, "heap_allocated_bytes": heap_total}),
        );
    }
    let anon = rss_anon.get();
    println!(
        "peak RssAnon {} KiB ({:.1} MiB, sampled after each call); VmHWM {} KiB; RssFile now {} KiB; mismatches {mismatches}",
        anon,
        anon as f64 / 1024.0,
        status("VmHWM:"),
        status("RssFile:")
    );
    summary.insert("first_view".into(), json!(first));
    summary.insert("threads".into(), json!(threads));
    summary.insert("open_ms".into(), json!(opened));
    summary.insert("first_answer_ms".into(), json!(first_call));
    summary.insert("first_view_ms".into(), json!(first_view));
    summary.insert("peak_rss_anon_kib".into(), json!(anon));
    summary.insert("mismatches".into(), json!(mismatches));
    println!("SUMMARY {}", Value::Object(summary));
}
