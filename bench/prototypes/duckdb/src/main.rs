//! Prototype: DuckDB as the read model of Tally's filtered reports.
//!
//! `proto-duckdb build SQLITE_DB OUT.duckdb [--layout wide|narrow]`
//!     copies events and visits hour by hour through DuckDB's Appender.
//! `proto-duckdb query OUT.duckdb REF_DIR [--layout wide|narrow] [--approx]
//!     [--threads N] [--memory-limit 256MB] [--runs 7]`
//!     answers the 6 dashboard views (7 calls each), checks every answer
//!     against Tally's reference JSON, and prints timings and memory.
//!
//! Layouts: `wide` copies the visit attributes that are fixed when a visit
//! starts (source, utm, device, browser, os, geo, entry page) onto each
//! event, so event metrics with visit filters need no join; `narrow` keeps
//! events lean and joins `visits` like Tally's SQLite SQL does.

use std::collections::HashMap;
use std::time::Instant;

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, UInt8Builder,
    UInt32Builder,
};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{AccessMode, Config, Connection, appender_params_from_iter};
use serde_json::{Map, Value, json};

/// Visit attributes fixed at the visit's start: copied onto events (wide).
const EVENT_VISIT_COLS: &[&str] = &[
    "entry_page",
    "source",
    "referrer",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "country",
    "region",
    "city",
];

const VISIT_COLS: &[&str] = &[
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "utm_medium",
    "utm_source",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "country",
    "region",
    "city",
];

const SITE: i64 = 1;
const DAY: i64 = 86_400;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Wide,
    Narrow,
}

fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn layout_of(args: &[String]) -> Layout {
    match arg_value(args, "--layout").as_deref() {
        Some("narrow") => Layout::Narrow,
        _ => Layout::Wide,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("build") => build(&args[2], &args[3], layout_of(&args)),
        Some("query") => query_main(&args),
        Some("sql") => sql_main(&args),
        _ => {
            eprintln!("usage: proto-duckdb build SQLITE OUT [--layout wide|narrow] | query DB REF_DIR [...]");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------- memory

fn status_kb(key: &str) -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- build

fn to_duck(v: rusqlite::types::Value) -> duckdb::types::Value {
    use duckdb::types::Value as D;
    use rusqlite::types::Value as S;
    match v {
        S::Null => D::Null,
        S::Integer(i) => D::BigInt(i),
        S::Real(f) => D::Double(f),
        S::Text(t) => D::Text(t),
        S::Blob(b) => D::Blob(b),
    }
}

/// Column kinds of the DuckDB tables, in order, for the Arrow appender.
#[derive(Clone, Copy)]
enum Kind {
    U32,
    I64,
    I32,
    U8,
    Bool,
    Str,
}

enum Builder {
    U32(UInt32Builder),
    I64(Int64Builder),
    I32(Int32Builder),
    U8(UInt8Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
}

/// The rows of one query as an Arrow batch, column `i` of kind `kinds[i]`.
fn batch_of(stmt: &mut rusqlite::Statement, params: impl rusqlite::Params, kinds: &[Kind]) -> RecordBatch {
    let mut cols: Vec<Builder> = kinds
        .iter()
        .map(|k| match k {
            Kind::U32 => Builder::U32(UInt32Builder::new()),
            Kind::I64 => Builder::I64(Int64Builder::new()),
            Kind::I32 => Builder::I32(Int32Builder::new()),
            Kind::U8 => Builder::U8(UInt8Builder::new()),
            Kind::Bool => Builder::Bool(BooleanBuilder::new()),
            Kind::Str => Builder::Str(StringBuilder::new()),
        })
        .collect();
    let mut rows = stmt.query(params).unwrap();
    while let Some(r) = rows.next().unwrap() {
        for (i, c) in cols.iter_mut().enumerate() {
            let v = r.get_ref(i).unwrap();
            use rusqlite::types::ValueRef as V;
            match (c, v) {
                (Builder::Str(b), V::Null) => b.append_null(),
                (Builder::Str(b), V::Text(t)) => b.append_value(std::str::from_utf8(t).unwrap()),
                (Builder::U32(b), V::Integer(x)) => b.append_value(x as u32),
                (Builder::I64(b), V::Integer(x)) => b.append_value(x),
                (Builder::I32(b), V::Integer(x)) => b.append_value(x as i32),
                (Builder::U8(b), V::Integer(x)) => b.append_value(x as u8),
                (Builder::Bool(b), V::Integer(x)) => b.append_value(x != 0),
                (_, v) => panic!("column {i}: unexpected {v:?}"),
            }
        }
    }
    let arrays: Vec<(String, ArrayRef)> = cols
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let a: ArrayRef = match c {
                Builder::U32(mut b) => Arc::new(b.finish()),
                Builder::I64(mut b) => Arc::new(b.finish()),
                Builder::I32(mut b) => Arc::new(b.finish()),
                Builder::U8(mut b) => Arc::new(b.finish()),
                Builder::Bool(mut b) => Arc::new(b.finish()),
                Builder::Str(mut b) => Arc::new(b.finish()),
            };
            (format!("c{i}"), a)
        })
        .collect();
    RecordBatch::try_from_iter(arrays).unwrap()
}

fn build(sqlite: &str, out: &str, layout: Layout) {
    let row_appender = std::env::args().any(|a| a == "--row-appender");
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(format!("{out}.wal"));
    let src = rusqlite::Connection::open_with_flags(
        sqlite,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let db = Connection::open(out).unwrap();
    db.execute_batch("SET threads = 2;").unwrap();
    let dims = |cols: &[&str]| -> String {
        cols.iter()
            .map(|c| format!(", {c} VARCHAR"))
            .collect::<String>()
    };
    let ev_dims = if layout == Layout::Wide {
        format!(", visit_start BIGINT NOT NULL{}", dims(EVENT_VISIT_COLS))
    } else {
        String::new()
    };
    db.execute_batch(&format!(
        "CREATE TABLE events (site_id UINTEGER NOT NULL, ts BIGINT NOT NULL,
            visit_id BIGINT NOT NULL, visitor_id BIGINT NOT NULL, name VARCHAR NOT NULL,
            path VARCHAR NOT NULL, first_view BOOLEAN NOT NULL{ev_dims});
         CREATE TABLE visits (site_id UINTEGER NOT NULL, id BIGINT NOT NULL,
            visitor_id BIGINT NOT NULL, started_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL,
            pageviews INTEGER NOT NULL, events INTEGER NOT NULL, is_bounce UTINYINT NOT NULL{});",
        dims(VISIT_COLS)
    ))
    .unwrap();

    let (min_ts, max_ts): (i64, i64) = src
        .query_row(
            "SELECT MIN(ts), MAX(ts) FROM events WHERE site_id = ?1",
            [SITE],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let ev_sql = if layout == Layout::Wide {
        format!(
            "SELECT e.site_id, e.ts, e.visit_id, e.visitor_id, e.name, e.path, e.first_view, v.started_at{}
             FROM events e JOIN visits v ON v.id = e.visit_id
             WHERE e.site_id = ?1 AND e.ts >= ?2 AND e.ts < ?3 ORDER BY e.ts, e.id",
            EVENT_VISIT_COLS
                .iter()
                .map(|c| format!(", v.{c}"))
                .collect::<String>()
        )
    } else {
        "SELECT e.site_id, e.ts, e.visit_id, e.visitor_id, e.name, e.path, e.first_view
         FROM events e WHERE e.site_id = ?1 AND e.ts >= ?2 AND e.ts < ?3 ORDER BY e.ts, e.id"
            .to_string()
    };
    let vi_sql = format!(
        "SELECT site_id, id, visitor_id, started_at, last_seen_at, pageviews, events, is_bounce{}
         FROM visits WHERE site_id = ?1 AND started_at >= ?2 AND started_at < ?3 ORDER BY id",
        VISIT_COLS
            .iter()
            .map(|c| format!(", {c}"))
            .collect::<String>()
    );
    let mut ev_stmt = src.prepare(&ev_sql).unwrap();
    let mut vi_stmt = src.prepare(&vi_sql).unwrap();
    let ev_cols = ev_stmt.column_count();
    let vi_cols = vi_stmt.column_count();

    let mut ev_kinds = vec![Kind::U32, Kind::I64, Kind::I64, Kind::I64, Kind::Str, Kind::Str, Kind::Bool];
    if layout == Layout::Wide {
        ev_kinds.push(Kind::I64);
        ev_kinds.extend(EVENT_VISIT_COLS.iter().map(|_| Kind::Str));
    }
    let mut vi_kinds = vec![Kind::U32, Kind::I64, Kind::I64, Kind::I64, Kind::I64, Kind::I32, Kind::I32, Kind::U8];
    vi_kinds.extend(VISIT_COLS.iter().map(|_| Kind::Str));
    assert_eq!(ev_kinds.len(), ev_cols);
    assert_eq!(vi_kinds.len(), vi_cols);
    let tx_hours: i64 = arg_value(&std::env::args().collect::<Vec<_>>(), "--tx-hours")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let mut in_tx = false;
    let (mut append_secs, mut commit_secs) = (0.0, 0.0);
    let t0 = Instant::now();
    let (mut n_events, mut n_visits) = (0u64, 0u64);
    let mut read_secs = 0.0;
    let mut hour = min_ts - min_ts.rem_euclid(3600);
    while hour <= max_ts {
        let end = hour + 3600;
        // One hour closes: its events, and the visits that started in it
        // (settled: the prototype loads ended visits only).
        if !row_appender {
            let tr = Instant::now();
            let ev = batch_of(&mut ev_stmt, rusqlite::params![SITE, hour, end], &ev_kinds);
            let vi = batch_of(&mut vi_stmt, rusqlite::params![SITE, hour, end], &vi_kinds);
            read_secs += tr.elapsed().as_secs_f64();
            n_events += ev.num_rows() as u64;
            n_visits += vi.num_rows() as u64;
            let ta = Instant::now();
            if tx_hours > 1 && (hour / 3600) % tx_hours == 0 {
                db.execute_batch("BEGIN").unwrap();
                in_tx = true;
            }
            {
                let mut app = db.appender("events").unwrap();
                app.append_record_batch(ev).unwrap();
                app.flush().unwrap();
                let mut app = db.appender("visits").unwrap();
                app.append_record_batch(vi).unwrap();
                app.flush().unwrap();
            }
            append_secs += ta.elapsed().as_secs_f64();
            let tc = Instant::now();
            if in_tx && (end / 3600) % tx_hours == 0 {
                db.execute_batch("COMMIT").unwrap();
                in_tx = false;
            }
            commit_secs += tc.elapsed().as_secs_f64();
            hour = end;
            continue;
        }
        let tr = Instant::now();
        let mut ev_rows: Vec<Vec<duckdb::types::Value>> = Vec::new();
        let mut rows = ev_stmt.query(rusqlite::params![SITE, hour, end]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            ev_rows.push(
                (0..ev_cols)
                    .map(|i| to_duck(r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect(),
            );
        }
        let mut vi_rows: Vec<Vec<duckdb::types::Value>> = Vec::new();
        let mut rows = vi_stmt.query(rusqlite::params![SITE, hour, end]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            vi_rows.push(
                (0..vi_cols)
                    .map(|i| to_duck(r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect(),
            );
        }
        read_secs += tr.elapsed().as_secs_f64();
        n_events += ev_rows.len() as u64;
        n_visits += vi_rows.len() as u64;
        {
            let mut app = db.appender("events").unwrap();
            for row in &ev_rows {
                app.append_row(appender_params_from_iter(row.iter()))
                    .unwrap();
            }
            app.flush().unwrap();
            let mut app = db.appender("visits").unwrap();
            for row in &vi_rows {
                app.append_row(appender_params_from_iter(row.iter()))
                    .unwrap();
            }
            app.flush().unwrap();
        }
        hour = end;
    }
    if in_tx {
        db.execute_batch("COMMIT").unwrap();
    }
    let tc = Instant::now();
    db.execute_batch("CHECKPOINT;").unwrap();
    let checkpoint_secs = tc.elapsed().as_secs_f64();
    let secs = t0.elapsed().as_secs_f64();
    drop(db);
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(format!("{out}.wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    let out_json = json!({
        "layout": if layout == Layout::Wide {"wide"} else {"narrow"},
        "appender": if row_appender {"rows"} else {"arrow"},
        "events": n_events, "visits": n_visits, "secs": secs,
        "sqlite_read_secs": read_secs, "append_secs": append_secs,
        "commit_secs": commit_secs, "checkpoint_secs": checkpoint_secs, "tx_hours": tx_hours,
        "events_per_sec": n_events as f64 / secs,
        "bytes": bytes, "bytes_per_event": bytes as f64 / n_events as f64,
        "peak_rss_kb": status_kb("VmHWM:"),
    });
    println!("BUILD {out_json}");
}

// ---------------------------------------------------------------- filters

#[derive(Clone, Debug)]
enum Field {
    Page,
    Visit(&'static str),
}

#[derive(Clone, Debug)]
struct Filter {
    field: Field,
    negate: bool,
    values: Vec<Option<String>>,
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
            out.push(h);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn parse_filters(s: &str) -> Vec<Filter> {
    s.split(';')
        .filter(|c| !c.is_empty())
        .map(|c| {
            let (at, negate, len) = match (c.find("=="), c.find("!=")) {
                (Some(a), _) => (a, false, 2),
                (None, Some(a)) => (a, true, 2),
                _ => panic!("unsupported filter {c}"),
            };
            let prop = &c[..at];
            let field = if prop == "event:page" {
                Field::Page
            } else {
                let col = prop.strip_prefix("visit:").expect("visit: or event:page");
                Field::Visit(*VISIT_COLS.iter().find(|x| **x == col).expect("column"))
            };
            let values = c[at + len..]
                .split('|')
                .map(|v| match v {
                    "Direct / None" | "(none)" => None,
                    v => Some(v.to_string()),
                })
                .collect();
            Filter {
                field,
                negate,
                values,
            }
        })
        .collect()
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// ` AND (…)` for one filter; `col` is the SQL of the field.
fn filter_sql(f: &Filter, col: &str) -> String {
    let alts: Vec<String> = f
        .values
        .iter()
        .map(|v| match v {
            None => format!("{col} IS NULL"),
            Some(v) if matches!(f.field, Field::Page) && v.contains('*') => {
                let pat = v.replace("**", "*");
                let stars = pat.matches('*').count();
                if stars == 1 && pat.ends_with('*') && !pat.contains(['?', '[']) {
                    // A prefix: DuckDB's fast path, same answers as GLOB.
                    format!("starts_with({col}, {})", lit(&pat[..pat.len() - 1]))
                } else {
                    let glob = pat.replace('[', "[[]").replace('?', "[?]");
                    format!("{col} GLOB {}", lit(&glob))
                }
            }
            Some(v) => format!("{col} = {}", lit(v)),
        })
        .collect();
    let any = format!("({})", alts.join(" OR "));
    if f.negate {
        format!(" AND NOT COALESCE({any}, false)")
    } else {
        format!(" AND {any}")
    }
}

// ---------------------------------------------------------------- SQL

#[derive(Clone, Copy, Debug)]
struct Range {
    start: i64,
    end: i64,
}

struct Q<'a> {
    conn: &'a Connection,
    layout: Layout,
    approx: bool,
}

#[derive(Debug, Default, Clone)]
struct Totals {
    visitors: i64,
    pageviews: i64,
    visits: i64,
    bounces: i64,
    duration: i64,
}

impl Q<'_> {
    /// ` FROM events e [JOIN visits v] WHERE` site, range, action, filters.
    fn events_from(&self, r: Range, filters: &[Filter]) -> String {
        let needs_join = filters.iter().any(|f| match f.field {
            Field::Visit(c) => self.layout == Layout::Narrow || !EVENT_VISIT_COLS.contains(&c),
            Field::Page => false,
        });
        let mut s = String::from(" FROM events e");
        if needs_join {
            s.push_str(" JOIN visits v ON v.id = e.visit_id");
        }
        s.push_str(&format!(
            " WHERE e.site_id = {SITE} AND e.ts >= {} AND e.ts < {} AND e.name <> 'engagement'",
            r.start, r.end
        ));
        for f in filters {
            let col = match f.field {
                Field::Page => "e.path".to_string(),
                Field::Visit(c) if needs_join => format!("v.{c}"),
                Field::Visit(c) => format!("e.{c}"),
            };
            s.push_str(&filter_sql(f, &col));
        }
        s
    }

    /// ` FROM visits v WHERE` site, start in range, visit filters, and a
    /// matching event in [start, end + 1 day) for event filters.
    fn visits_from(&self, r: Range, filters: &[Filter]) -> String {
        let mut s = format!(
            " FROM visits v WHERE v.site_id = {SITE} AND v.started_at >= {} AND v.started_at < {}",
            r.start, r.end
        );
        let mut ev = Vec::new();
        for f in filters {
            match f.field {
                Field::Visit(c) => s.push_str(&filter_sql(f, &format!("v.{c}"))),
                Field::Page => ev.push(f.clone()),
            }
        }
        if !ev.is_empty() {
            s.push_str(&format!(
                " AND v.id IN (SELECT e.visit_id{})",
                self.events_from(
                    Range {
                        start: r.start,
                        end: r.end + DAY
                    },
                    &ev
                )
            ));
        }
        s
    }

    fn has_event_filter(filters: &[Filter]) -> bool {
        filters.iter().any(|f| matches!(f.field, Field::Page))
    }

    /// Per group `g`: distinct visitors and pageviews of the events `from`.
    /// Exact: one hash aggregate on (g, visitor) then a count per g, which
    /// DuckDB runs in parallel (a plain COUNT(DISTINCT) does not).
    fn visitors_pageviews(&self, group: &str, from: &str) -> String {
        if self.approx {
            format!(
                "SELECT {group} AS g, approx_count_distinct(e.visitor_id),
                    COUNT(*) FILTER (WHERE e.name = 'pageview'){from} GROUP BY g"
            )
        } else {
            format!(
                "SELECT g, COUNT(*), SUM(pv)::BIGINT FROM (SELECT {group} AS g, e.visitor_id,
                    COUNT(*) FILTER (WHERE e.name = 'pageview') AS pv{from}
                    GROUP BY g, e.visitor_id) GROUP BY g"
            )
        }
    }

    /// Totals of `cur` and of `prev` (which ends where `cur` starts).
    fn totals2(&self, cur: Range, prev: Range, filters: &[Filter]) -> (Totals, Totals) {
        assert_eq!(prev.end, cur.start);
        let mut out = (Totals::default(), Totals::default());
        let all = Range {
            start: prev.start,
            end: cur.end,
        };
        let sql = self.visitors_pageviews(
            &format!("e.ts >= {}", cur.start),
            &self.events_from(all, filters),
        );
        let mut stmt = self.conn.prepare(&sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let t = if r.get::<_, bool>(0).unwrap() {
                &mut out.0
            } else {
                &mut out.1
            };
            t.visitors = r.get(1).unwrap();
            t.pageviews = r.get(2).unwrap();
        }
        let visit_sql = |from: String| {
            format!(
                "SELECT v.started_at >= {} AS p, COUNT(*), COALESCE(SUM(v.is_bounce), 0)::BIGINT,
                    COALESCE(SUM(v.last_seen_at - v.started_at), 0)::BIGINT{from} GROUP BY p",
                cur.start
            )
        };
        let sqls: Vec<String> = if !Self::has_event_filter(filters) {
            vec![visit_sql(self.visits_from(all, filters))]
        } else if self.layout == Layout::Wide {
            // One semi-join for both periods: each event is held to its
            // visit's period (+1 day) through its copy of the visit's start.
            let mut s = format!(
                " FROM visits v WHERE v.site_id = {SITE} AND v.started_at >= {} AND v.started_at < {}",
                all.start, all.end
            );
            let mut ev = Vec::new();
            for f in filters {
                match f.field {
                    Field::Visit(c) => s.push_str(&filter_sql(f, &format!("v.{c}"))),
                    Field::Page => ev.push(f.clone()),
                }
            }
            s.push_str(&format!(
                " AND v.id IN (SELECT e.visit_id{} AND e.ts < (CASE WHEN e.visit_start >= {} THEN {} ELSE {} END) + {DAY})",
                self.events_from(
                    Range {
                        start: all.start,
                        end: all.end + DAY
                    },
                    &ev
                ),
                cur.start,
                cur.end,
                prev.end
            ));
            vec![visit_sql(s)]
        } else {
            vec![
                visit_sql(self.visits_from(cur, filters)),
                visit_sql(self.visits_from(prev, filters)),
            ]
        };
        for sql in sqls {
            let mut stmt = self.conn.prepare(&sql).unwrap();
            let mut rows = stmt.query([]).unwrap();
            while let Some(r) = rows.next().unwrap() {
                let t = if r.get::<_, bool>(0).unwrap() {
                    &mut out.0
                } else {
                    &mut out.1
                };
                t.visits = r.get(1).unwrap();
                t.bounces = r.get(2).unwrap();
                t.duration = r.get(3).unwrap();
            }
        }
        out
    }

    /// Visitors and pageviews per bucket (buckets contiguous, ascending).
    fn series(&self, buckets: &[Range], daily: bool, filters: &[Filter]) -> Vec<(i64, i64)> {
        let all = Range {
            start: buckets[0].start,
            end: buckets[buckets.len() - 1].end,
        };
        let bucket = if daily {
            format!("(e.ts - {}) // {DAY}", all.start)
        } else {
            let mut s = String::from("CASE");
            for (i, b) in buckets.iter().enumerate() {
                s.push_str(&format!(" WHEN e.ts < {} THEN {i}", b.end));
            }
            s.push_str(" END");
            s
        };
        let sql = self.visitors_pageviews(&bucket, &self.events_from(all, filters));
        let mut out = vec![(0, 0); buckets.len()];
        let mut stmt = self.conn.prepare(&sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let b: i64 = r.get(0).unwrap();
            out[b as usize] = (r.get(1).unwrap(), r.get(2).unwrap());
        }
        out
    }

    /// `SELECT k, visitors` over `inner` (which selects `k` and `visitor_id`).
    fn top(&self, key: &str, visitor: &str, from: &str, limit: i64) -> String {
        if self.approx {
            format!(
                "SELECT {key} AS k, approx_count_distinct({visitor}) AS c{from} GROUP BY k
                 ORDER BY c DESC, k ASC NULLS FIRST LIMIT {limit}"
            )
        } else {
            format!(
                "SELECT k, COUNT(*) AS c FROM (SELECT DISTINCT {key} AS k, {visitor}{from})
                 GROUP BY k ORDER BY c DESC, k ASC NULLS FIRST LIMIT {limit}"
            )
        }
    }

    /// Top `limit` (value, visitors), most visitors first, then by value.
    fn breakdown(&self, r: Range, prop: &str, filters: &[Filter], limit: i64) -> Vec<(Option<String>, i64)> {
        let sql = if prop == "event:page" {
            self.top(
                "e.path",
                "e.visitor_id",
                &format!("{} AND e.name = 'pageview'", self.events_from(r, filters)),
                limit,
            )
        } else {
            let col = prop.strip_prefix("visit:").unwrap();
            assert!(VISIT_COLS.contains(&col));
            if self.layout == Layout::Wide
                && Self::has_event_filter(filters)
                && EVENT_VISIT_COLS.contains(&col)
            {
                // Visits started in range with a matching event in
                // [start, end + 1 day): read from the events alone, which
                // carry their visit's start and attributes.
                let from = format!(
                    "{} AND e.visit_start >= {} AND e.visit_start < {}",
                    self.events_from(
                        Range {
                            start: r.start,
                            end: r.end + DAY
                        },
                        filters
                    ),
                    r.start,
                    r.end
                );
                self.top(&format!("e.{col}"), "e.visitor_id", &from, limit)
            } else {
                self.top(&format!("v.{col}"), "v.visitor_id", &self.visits_from(r, filters), limit)
            }
        };
        let mut stmt = self.conn.prepare(&sql).unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            out.push((r.get(0).unwrap(), r.get(1).unwrap()));
        }
        out
    }
}

// ---------------------------------------------------------------- API shapes (as src/query/mod.rs)

fn div_round(num: i64, den: i64) -> i64 {
    if den == 0 {
        return 0;
    }
    let (n, d) = (i128::from(num), i128::from(den));
    let q = (2 * n.abs() + d.abs()) / (2 * d.abs());
    (if (n < 0) != (d < 0) { -q } else { q }) as i64
}

const AGG_METRICS: [&str; 6] = [
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
];

fn metric_of(name: &str, t: &Totals) -> Value {
    if t.visits == 0 && ["views_per_visit", "bounce_rate", "visit_duration"].contains(&name) {
        return Value::Null;
    }
    match name {
        "visitors" => json!(t.visitors),
        "visits" => json!(t.visits),
        "pageviews" => json!(t.pageviews),
        "views_per_visit" => json!(div_round(t.pageviews * 100, t.visits) as f64 / 100.0),
        "bounce_rate" => json!(div_round(t.bounces * 100, t.visits)),
        "visit_duration" => json!(div_round(t.duration, t.visits)),
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

// ---------------------------------------------------------------- calendar

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn date_ts(s: &str) -> i64 {
    let p: Vec<i64> = s.split('-').map(|x| x.parse().unwrap()).collect();
    days_from_civil(p[0], p[1], p[2]) * DAY
}

fn date_str(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A view: its period's range, the previous period, and the buckets.
struct View {
    label: String,
    filters: Vec<Filter>,
    range: Range,
    previous: Range,
    buckets: Vec<Range>,
    daily: bool,
}

fn make_view(period: &str, fi: usize, date: &str, filters: Vec<Filter>) -> View {
    let end = date_ts(date) + DAY;
    let (y, _, _) = civil_from_days(date_ts(date) / DAY);
    match period {
        "30d" => {
            let start = end - 30 * DAY;
            View {
                label: format!("{period}-f{fi}"),
                filters,
                range: Range { start, end },
                previous: Range {
                    start: start - 30 * DAY,
                    end: start,
                },
                buckets: (0..30)
                    .map(|i| Range {
                        start: start + i * DAY,
                        end: start + (i + 1) * DAY,
                    })
                    .collect(),
                daily: true,
            }
        }
        "12mo" => {
            let start = days_from_civil(y, 1, 1) * DAY;
            let buckets: Vec<Range> = (1..=12)
                .map(|m| {
                    let s = days_from_civil(y, m, 1) * DAY;
                    let e = if m == 12 {
                        days_from_civil(y + 1, 1, 1) * DAY
                    } else {
                        days_from_civil(y, m + 1, 1) * DAY
                    };
                    Range {
                        start: s,
                        end: e.min(end),
                    }
                })
                .filter(|b| b.start < end)
                .collect();
            View {
                label: format!("{period}-f{fi}"),
                filters,
                range: Range { start, end },
                previous: Range {
                    start: days_from_civil(y - 1, 1, 1) * DAY,
                    end: start,
                },
                buckets,
                daily: false,
            }
        }
        _ => panic!("period {period}"),
    }
}

const CALLS: [&str; 7] = [
    "aggregate",
    "timeseries",
    "breakdown-event_page",
    "breakdown-visit_source",
    "breakdown-visit_country",
    "breakdown-visit_browser",
    "breakdown-visit_device",
];

/// One call of a view: its answers, keyed by reference file name.
fn run_call(q: &Q, v: &View, call: &str) -> Vec<(String, Value)> {
    match call {
        "aggregate" => {
            let (now, before) = q.totals2(v.range, v.previous, &v.filters);
            let mut cur = Map::new();
            let mut prev = Map::new();
            for m in AGG_METRICS {
                let a = metric_of(m, &now);
                let b = metric_of(m, &before);
                cur.insert(m.into(), json!({"change": change(m, &a, &b), "value": a}));
                prev.insert(m.into(), json!({ "value": b }));
            }
            vec![
                (format!("{}-aggregate", v.label), json!({ "results": cur })),
                (
                    format!("{}-aggregate-previous", v.label),
                    json!({ "results": prev }),
                ),
            ]
        }
        "timeseries" => {
            let s = q.series(&v.buckets, v.daily, &v.filters);
            let rows: Vec<Value> = v
                .buckets
                .iter()
                .zip(s)
                .map(|(b, (vis, pv))| json!({"date": date_str(b.start), "pageviews": pv, "visitors": vis}))
                .collect();
            vec![(format!("{}-timeseries", v.label), json!({ "results": rows }))]
        }
        _ => {
            let prop = call.strip_prefix("breakdown-").unwrap().replacen('_', ":", 1);
            let rows = q.breakdown(v.range, &prop, &v.filters, 10);
            let key = if prop == "event:page" {
                "page".to_string()
            } else {
                prop.strip_prefix("visit:").unwrap().to_string()
            };
            let none = if key == "source" || key == "referrer" {
                "Direct / None"
            } else {
                "(none)"
            };
            let rows: Vec<Value> = rows
                .into_iter()
                .map(|(k, c)| {
                    let mut o = Map::new();
                    o.insert(key.clone(), json!(k.unwrap_or_else(|| none.to_string())));
                    o.insert("visitors".into(), json!(c));
                    Value::Object(o)
                })
                .collect();
            vec![(format!("{}-{call}", v.label), json!({ "results": rows }))]
        }
    }
}

// ---------------------------------------------------------------- checking

/// Max relative error of `visitors` seen in approximate mode.
#[derive(Default)]
struct Check {
    mismatches: u64,
    checked: u64,
    max_visitor_err: f64,
    worst: String,
    errs: Vec<f64>,
    printed: u64,
}

fn visitors_of(v: &Value, out: &mut Vec<(String, f64)>, path: String) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "visitors" {
                    if let Some(n) = x.as_f64() {
                        out.push((path.clone(), n));
                    } else if let Some(n) = x.get("value").and_then(Value::as_f64) {
                        out.push((path.clone(), n));
                    }
                } else {
                    visitors_of(x, out, format!("{path}/{k}"));
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                // Rows are keyed by their label, so a reordering still lines up.
                let label = x
                    .as_object()
                    .and_then(|o| {
                        o.iter()
                            .find(|(k, _)| *k != "visitors" && *k != "pageviews")
                            .map(|(_, v)| v.to_string())
                    })
                    .unwrap_or_else(|| i.to_string());
                visitors_of(x, out, format!("{path}/{label}"));
            }
        }
        _ => {}
    }
}

/// Drops `visitors` (and the change of visitors) for the approximate check.
fn without_visitors(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "visitors")
                .map(|(k, x)| (k.clone(), without_visitors(x)))
                .collect(),
        ),
        Value::Array(a) => {
            let mut rows: Vec<Value> = a.iter().map(without_visitors).collect();
            rows.sort_by_key(|r| r.to_string());
            Value::Array(rows)
        }
        x => x.clone(),
    }
}

impl Check {
    fn compare(&mut self, refs: &HashMap<String, Value>, name: &str, got: &Value, approx: bool) {
        let Some(want) = refs.get(name) else {
            return;
        };
        self.checked += 1;
        let ok = if !approx {
            want == got
        } else {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            visitors_of(want, &mut a, String::new());
            visitors_of(got, &mut b, String::new());
            let bm: HashMap<_, _> = b.into_iter().collect();
            let mut same_rows = true;
            for (k, w) in &a {
                match bm.get(k) {
                    Some(g) => {
                        let err = if *w == 0.0 { (*g != 0.0) as i32 as f64 } else { (g - w).abs() / w };
                        self.errs.push(err);
                        if err > self.max_visitor_err {
                            self.max_visitor_err = err;
                            self.worst = format!("{name}{k}: want {w} got {g}");
                        }
                    }
                    None => same_rows = false,
                }
            }
            // Other metrics must match exactly; the rows' set too (order
            // of near-ties may differ). Timeseries rows carry visitors
            // only with pageviews, which must match.
            same_rows && without_visitors(want) == without_visitors(got)
        };
        if !ok {
            self.mismatches += 1;
            if self.printed < 20 {
                self.printed += 1;
                eprintln!("MISMATCH {name}\n  want {want}\n  got  {got}");
            }
        }
    }
}

// ---------------------------------------------------------------- query harness

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn query_main(args: &[String]) {
    let db_path = &args[2];
    let ref_dir = &args[3];
    let layout = layout_of(args);
    let approx = args.iter().any(|a| a == "--approx");
    let threads: i64 = arg_value(args, "--threads")
        .map(|s| s.parse().unwrap())
        .unwrap_or(2);
    let mem = arg_value(args, "--memory-limit");
    let runs: usize = arg_value(args, "--runs")
        .map(|s| s.parse().unwrap())
        .unwrap_or(7);

    // Reference answers and the views' filters, from calls.txt.
    let calls_txt = std::fs::read_to_string(format!("{ref_dir}/calls.txt")).unwrap();
    let mut refs = HashMap::new();
    let mut views: Vec<View> = Vec::new();
    for line in calls_txt.lines() {
        let (name, url) = line.split_once('\t').unwrap();
        if let Ok(text) = std::fs::read_to_string(format!("{ref_dir}/{name}.json")) {
            refs.insert(name.to_string(), serde_json::from_str::<Value>(&text).unwrap());
        }
        if name.ends_with("-aggregate") {
            let q: HashMap<&str, &str> = url
                .split_once('?')
                .unwrap()
                .1
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let fi: usize = name.split('-').nth(1).unwrap()[1..].parse().unwrap();
            views.push(make_view(
                q["period"],
                fi,
                q["date"],
                parse_filters(&pct_decode(q["filters"])),
            ));
        }
    }
    eprintln!("{} reference answers, {} views", refs.len(), views.len());

    let t_open = Instant::now();
    let mut cfg = Config::default()
        .access_mode(AccessMode::ReadOnly)
        .unwrap()
        .threads(threads)
        .unwrap();
    if let Some(m) = &mem {
        cfg = cfg.max_memory(m).unwrap();
    }
    let conn = Connection::open_with_flags(db_path, cfg).unwrap();
    let open_ms = t_open.elapsed().as_secs_f64() * 1e3;
    let q = Q {
        conn: &conn,
        layout,
        approx,
    };
    let mut check = Check::default();
    let mut peak_anon = status_kb("RssAnon:");

    // First view after opening (30d, first filter set).
    let mut first_call_ms = 0.0;
    for (i, call) in CALLS.iter().enumerate() {
        for (name, got) in run_call(&q, &views[0], call) {
            check.compare(&refs, &name, &got, approx);
        }
        if i == 0 {
            first_call_ms = t_open.elapsed().as_secs_f64() * 1e3;
        }
        peak_anon = peak_anon.max(status_kb("RssAnon:"));
    }
    let first_view_ms = t_open.elapsed().as_secs_f64() * 1e3;

    let mut results = Vec::new();
    for v in &views {
        let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); CALLS.len()];
        let mut whole = Vec::new();
        for _ in 0..runs {
            let tv = Instant::now();
            for (i, call) in CALLS.iter().enumerate() {
                let tc = Instant::now();
                let answers = run_call(&q, v, call);
                per_call[i].push(tc.elapsed().as_secs_f64() * 1e3);
                for (name, got) in answers {
                    check.compare(&refs, &name, &got, approx);
                }
                peak_anon = peak_anon.max(status_kb("RssAnon:"));
            }
            whole.push(tv.elapsed().as_secs_f64() * 1e3);
        }
        let calls: Map<String, Value> = CALLS
            .iter()
            .zip(per_call.iter_mut())
            .map(|(c, t)| (c.to_string(), json!((median(t) * 10.0).round() / 10.0)))
            .collect();
        let view_ms = median(&mut whole);
        eprintln!("{:8} view {:8.1} ms  {}", v.label, view_ms, Value::Object(calls.clone()));
        results.push(json!({"view": v.label, "view_ms": view_ms, "calls": calls}));
    }
    let out = json!({
        "db": db_path, "layout": if layout == Layout::Wide {"wide"} else {"narrow"},
        "approx": approx, "threads": threads, "memory_limit": mem,
        "open_ms": open_ms, "first_call_ms": first_call_ms, "first_view_ms": first_view_ms,
        "views": results,
        "peak_rss_anon_kb": peak_anon, "vm_hwm_kb": status_kb("VmHWM:"),
        "rss_file_kb_end": status_kb("RssFile:"),
        "checked": check.checked, "mismatches": check.mismatches,
        "max_visitor_err": check.max_visitor_err, "worst_visitor_err": check.worst,
        "visitor_err_p50": if check.errs.is_empty() {0.0} else {median(&mut check.errs.clone())},
        "visitor_err_over_2pct": check.errs.iter().filter(|e| **e > 0.02).count() as f64 / check.errs.len().max(1) as f64,
    });
    println!("QUERY {out}");
}

/// `sql DB QUERY...`: runs each query (read-only, 2 threads) 3 times and
/// prints its last answer and timings; for EXPLAIN ANALYZE and experiments.
fn sql_main(args: &[String]) {
    let rw = std::env::var("RW").is_ok();
    let cfg = Config::default()
        .access_mode(if rw { AccessMode::ReadWrite } else { AccessMode::ReadOnly })
        .unwrap()
        .threads(2)
        .unwrap();
    let conn = Connection::open_with_flags(&args[2], cfg).unwrap();
    for sql in &args[3..] {
        if rw {
            let t = Instant::now();
            conn.execute_batch(sql).unwrap();
            println!("-- {sql}\n-- ms: {:.1}", t.elapsed().as_secs_f64() * 1e3);
            continue;
        }
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..3 {
            let t = Instant::now();
            let mut stmt = conn.prepare(sql).unwrap();
            let mut rows = stmt.query([]).unwrap();
            text.clear();
            while let Some(r) = rows.next().unwrap() {
                let n = r.as_ref().column_count();
                let cells: Vec<String> = (0..n)
                    .map(|i| match r.get::<_, duckdb::types::Value>(i).unwrap() {
                        duckdb::types::Value::Text(s) => s,
                        v => format!("{v:?}"),
                    })
                    .collect();
                text.push_str(&cells.join(" | "));
                text.push('\n');
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("{text}-- {sql}\n-- ms: {times:.1?}\n");
    }
}
