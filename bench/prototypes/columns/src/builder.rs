//! Builds a site's column files from Tally's SQLite tables (read-only), one
//! segment per UTC day, as a live server would seal each day once it is over.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, params};

use crate::format::{self, KIND_DICT, KIND_SEGMENT, KIND_SETS, KIND_SITE, Result, Section};
use crate::model::NOT_AN_ACTION;
use crate::store::{ATTRIBUTES, NO_VISIT, NONE, Store};

/// Strings stored once, ids in order of first sight; 0 is the missing value.
struct Dictionary {
    strings: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Dictionary {
    fn id(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return NONE };
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

pub struct DayStats {
    pub day: u32,
    pub events: usize,
    pub visits: usize,
    pub seconds: f64,
    pub bytes: u64,
}

pub struct BuildStats {
    pub events: u64,
    pub visits: u64,
    /// Events whose visit row was not found (kept, under no visit).
    pub orphans: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub days: Vec<DayStats>,
}

struct VisitRow {
    id: i64,
    visitor: u32,
    started: u32,
    duration: u32,
    pageviews: u32,
    events: u32,
    bounce: u8,
    entry: u32,
    exit: u32,
    set: u32,
}

struct EventRow {
    ts: u32,
    visit: u32,
    visitor: u32,
    name: u32,
    path: u32,
    props: u32,
    first_view: u8,
    set: u32,
}

fn secs(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

const VISIT_COLUMNS: &str = "referrer, source, utm_medium, utm_source, utm_campaign, utm_term, \
    utm_content, device, browser, browser_version, os, os_version, country, region, city";

/// Runs `[set, start, end)` of rows sorted by set.
fn runs_of(sets: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut runs: Vec<u32> = Vec::new();
    for (i, set) in sets.enumerate() {
        let i = i as u32;
        let n = runs.len();
        if n >= 3 && runs[n - 3] == set {
            runs[n - 1] = i + 1;
        } else {
            runs.extend([set, i, i + 1]);
        }
    }
    runs
}

pub fn build(db: &Path, site_id: i64, out: &Path) -> Result<BuildStats> {
    let began = Instant::now();
    std::fs::create_dir_all(out).map_err(|e| format::Error::Io(out.to_path_buf(), e))?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let (first, last): (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT MIN(ts), MAX(ts) FROM events WHERE site_id = ?1",
        [site_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (first, last) = match (first, last) {
        (Some(a), Some(b)) => (a.div_euclid(86_400), b.div_euclid(86_400)),
        _ => (0, -1),
    };
    let mut dict = Dictionary {
        strings: vec![String::new()],
        ids: HashMap::new(),
    };
    // Column order in a set is VisitColumn::ALL[2..]: source first.
    let set_columns = "source, referrer, utm_medium, utm_source, utm_campaign, utm_term, \
        utm_content, device, browser, browser_version, os, os_version, country, region, city";
    let _ = VISIT_COLUMNS;
    let mut set_list: Vec<[u32; ATTRIBUTES]> = Vec::new();
    let mut set_index: HashMap<[u32; ATTRIBUTES], u32> = HashMap::new();
    let mut visitors: HashMap<i64, u32> = HashMap::new();
    // Visit id → (number, set): a live sealer needs only the visits still
    // open at midnight; the build keeps all.
    let mut visit_numbers: HashMap<i64, (u32, u32)> = HashMap::new();
    let mut visits_stmt = conn.prepare(&format!(
        "SELECT id, visitor_id, started_at, last_seen_at, entry_page, exit_page, pageviews, \
         events, is_bounce, {set_columns} FROM visits \
         WHERE site_id = ?1 AND started_at >= ?2 AND started_at < ?3 ORDER BY started_at, id"
    ))?;
    let mut events_stmt = conn.prepare(
        "SELECT ts, visit_id, visitor_id, name, path, props, first_view FROM events \
         WHERE site_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts, id",
    )?;
    let mut stats = BuildStats {
        events: 0,
        visits: 0,
        orphans: 0,
        bytes: 0,
        seconds: 0.0,
        days: Vec::new(),
    };
    let mut days: Vec<u32> = Vec::new();
    let mut bases: Vec<u32> = Vec::new();
    let mut next_visit: u32 = 0;
    for day in first..=last {
        let t0 = Instant::now();
        let (start, end) = (day * 86_400, day * 86_400 + 86_400);
        let mut visits: Vec<VisitRow> = Vec::new();
        let mut rows = visits_stmt.query(params![site_id, start, end])?;
        while let Some(r) = rows.next()? {
            let mut set = [NONE; ATTRIBUTES];
            for (k, slot) in set.iter_mut().enumerate() {
                *slot = dict.id(r.get_ref(9 + k)?.as_str_or_null()?);
            }
            let set_id = match set_index.get(&set) {
                Some(&i) => i,
                None => {
                    let i = set_list.len() as u32;
                    set_list.push(set);
                    set_index.insert(set, i);
                    i
                }
            };
            let visitor_id: i64 = r.get(1)?;
            let next = visitors.len() as u32;
            let visitor = *visitors.entry(visitor_id).or_insert(next);
            let (started, last_seen): (i64, i64) = (r.get(2)?, r.get(3)?);
            visits.push(VisitRow {
                id: r.get(0)?,
                visitor,
                started: secs(started),
                duration: secs(last_seen - started),
                pageviews: secs(r.get(6)?),
                events: secs(r.get(7)?),
                bounce: u8::from(r.get::<_, i64>(8)? != 0),
                entry: dict.id(r.get_ref(4)?.as_str_or_null()?),
                exit: dict.id(r.get_ref(5)?.as_str_or_null()?),
                set: set_id,
            });
        }
        drop(rows);
        visits.sort_by_key(|v| (v.set, v.started, v.id));
        let base = next_visit;
        for (k, v) in visits.iter().enumerate() {
            visit_numbers.insert(v.id, (base + k as u32, v.set));
        }
        next_visit += visits.len() as u32;
        let mut events: Vec<EventRow> = Vec::new();
        let mut rows = events_stmt.query(params![site_id, start, end])?;
        while let Some(r) = rows.next()? {
            let name = r.get_ref(3)?.as_str()?;
            if name == NOT_AN_ACTION {
                continue;
            }
            let (visit, set) = match visit_numbers.get(&r.get::<_, i64>(1)?) {
                Some(&v) => v,
                None => {
                    stats.orphans += 1;
                    (u32::MAX, NO_VISIT)
                }
            };
            let visitor_id: i64 = r.get(2)?;
            let next = visitors.len() as u32;
            let visitor = *visitors.entry(visitor_id).or_insert(next);
            let first_view: i64 = r.get(6)?;
            events.push(EventRow {
                ts: secs(r.get(0)?),
                visit,
                visitor,
                name: dict.id(Some(name)),
                path: dict.id(r.get_ref(4)?.as_str_or_null()?),
                props: dict.id(r.get_ref(5)?.as_str_or_null()?),
                first_view: u8::from(first_view != 0),
                set,
            });
        }
        drop(rows);
        if visits.is_empty() && events.is_empty() {
            continue;
        }
        // Clustered on (set, name, path, time): a visit filter is judged per
        // run of a set, an event filter per group of one name and path, and
        // within a group events keep their time (and id) order (stable sort).
        events.sort_by_key(|e| (e.set, e.name, e.path, e.ts));
        let mut e_groups: Vec<u32> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let n = e_groups.len();
            if n >= 4 && e_groups[n - 4..n - 1] == [e.set, e.name, e.path] {
                e_groups[n - 1] = i as u32 + 1;
            } else {
                e_groups.extend([e.set, e.name, e.path, i as u32 + 1]);
            }
        }
        let v_runs = runs_of(visits.iter().map(|v| v.set));
        let col = |f: fn(&EventRow) -> u32| events.iter().map(f).collect::<Vec<u32>>();
        let vcol = |f: fn(&VisitRow) -> u32| visits.iter().map(f).collect::<Vec<u32>>();
        let meta = [
            day as u64,
            u64::from(base),
            events.len() as u64,
            visits.len() as u64,
        ];
        let (e_ts, e_visit, e_visitor) = (col(|e| e.ts), col(|e| e.visit), col(|e| e.visitor));
        let e_props: Vec<u32> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.props != NONE)
            .flat_map(|(i, e)| [i as u32, e.props])
            .collect();
        let e_first: Vec<u8> = events.iter().map(|e| e.first_view).collect();
        let (v_visitor, v_started, v_duration) = (
            vcol(|v| v.visitor),
            vcol(|v| v.started),
            vcol(|v| v.duration),
        );
        let (v_pageviews, v_events) = (vcol(|v| v.pageviews), vcol(|v| v.events));
        let v_bounce: Vec<u8> = visits.iter().map(|v| v.bounce).collect();
        let (v_entry, v_exit) = (vcol(|v| v.entry), vcol(|v| v.exit));
        let bytes = format::write(
            &Store::segment_path(out, day as u32),
            KIND_SEGMENT,
            &[
                Section::U64(&meta),
                Section::U32(&e_ts),
                Section::U32(&e_visit),
                Section::U32(&e_visitor),
                Section::U32(&e_props),
                Section::U8(&e_first),
                Section::U32(&e_groups),
                Section::U32(&v_visitor),
                Section::U32(&v_started),
                Section::U32(&v_duration),
                Section::U32(&v_pageviews),
                Section::U32(&v_events),
                Section::U8(&v_bounce),
                Section::U32(&v_entry),
                Section::U32(&v_exit),
                Section::U32(&v_runs),
            ],
        )?;
        days.push(day as u32);
        bases.push(base);
        stats.events += events.len() as u64;
        stats.visits += visits.len() as u64;
        stats.bytes += bytes;
        stats.days.push(DayStats {
            day: day as u32,
            events: events.len(),
            visits: visits.len(),
            seconds: t0.elapsed().as_secs_f64(),
            bytes,
        });
    }
    // Dictionary, sets, then the site file: the commit point.
    let mut offsets: Vec<u32> = Vec::with_capacity(dict.strings.len() + 1);
    let mut text: Vec<u8> = Vec::new();
    offsets.push(0);
    for s in &dict.strings {
        text.extend_from_slice(s.as_bytes());
        offsets.push(text.len() as u32);
    }
    stats.bytes += format::write(
        &out.join("dict.tcf"),
        KIND_DICT,
        &[Section::U32(&offsets), Section::U8(&text)],
    )?;
    let flat: Vec<u32> = set_list.iter().flatten().copied().collect();
    stats.bytes += format::write(&out.join("sets.tcf"), KIND_SETS, &[Section::U32(&flat)])?;
    let counts = [
        visitors.len() as u64,
        u64::from(next_visit),
        dict.strings.len() as u64,
        set_list.len() as u64,
        u64::from(dict.ids.get("pageview").copied().unwrap_or(NONE)),
    ];
    stats.bytes += format::write(
        &out.join("site.tcf"),
        KIND_SITE,
        &[
            Section::U64(&counts),
            Section::U32(&days),
            Section::U32(&bases),
        ],
    )?;
    stats.seconds = began.elapsed().as_secs_f64();
    Ok(stats)
}
