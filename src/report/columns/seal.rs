//! Sealing one day of a site: its rows made into a segment, its new strings
//! and attribute sets added to the site's, and the site file written.
//!
//! Visitors and visits get dense numbers, so that a distinct count is a
//! bitmap and a visit filter's answer is a range: visitor numbers by id,
//! visit numbers in the day's row order from where the last day's ended.
//! An append must give an id it met before the same number, yet keep
//! nothing unbounded: visitor ids change with the daily salt, so only those
//! of the last days can recur, and a visit's events fall on its start day
//! or soon after. The site file carries the visitor ids seen in the last
//! [`KEEP_DAYS`] days and the visits started in them or still having events
//! on the newest day; the rest are forgotten. (A visitor id seen again after
//! that gets a new number; an event of a forgotten visit counts as an
//! orphan: of no known visit, as the raw tables count an event whose visit
//! row is missing.)

use std::collections::HashMap;
use std::path::Path;

use super::dictionary::{ATTRIBUTES, Dictionary, Interner, NONE, Sets};
use super::segment::{ORPHAN, SegmentColumns};
use super::site::{
    CarriedVisit, CarriedVisitor, DayEntry, SiteState, dict_path, segment_path, sets_path,
};
use super::{ColumnError, DayRows, DayVisit};
use crate::report::model::NOT_AN_ACTION;

/// Attribute set of events whose visit row was missing: they fail every
/// visit filter, as in the raw tables' inner join.
pub(super) const NO_VISIT: u32 = u32::MAX;

/// Days (before the newest) whose visitor ids and visits the site file
/// carries: the newest and the one before may be sealed again, and the
/// latter's events meet visits of the day before it.
const KEEP_DAYS: u32 = 2;

/// What an append does to the days sealed.
#[derive(PartialEq)]
enum Mode {
    /// A day after the newest.
    New,
    /// The newest day again: its visits are numbered again from its base.
    Newest,
    /// The day before the newest again: its visits keep their numbers.
    Previous,
}

fn secs(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

fn day_of(t: i64) -> u32 {
    secs(t.div_euclid(86_400))
}

/// Seals `day` of a site into `dir`, on top of its last commit.
/// Returns the state written, the new commit.
pub(super) fn append(
    dir: &Path,
    site_id: i64,
    day: i64,
    rows: DayRows,
) -> Result<SiteState, ColumnError> {
    let bad_rows = |what: String| ColumnError::Rows { site_id, day, what };
    let order = |what: &'static str| ColumnError::Order { site_id, day, what };
    let (start, end) = (
        day.saturating_mul(86_400),
        day.saturating_add(1).saturating_mul(86_400),
    );
    if !(0..i64::from(u32::MAX) / 86_400).contains(&day) {
        return Err(bad_rows("a day between 1970 and 2106".into()));
    }
    if let Some(e) = rows.events.iter().find(|e| e.ts < start || e.ts >= end) {
        return Err(bad_rows(format!(
            "event {} at {} is not in the day",
            e.id, e.ts
        )));
    }
    if let Some(v) = rows
        .visits
        .iter()
        .find(|v| v.started_at < start || v.started_at >= end)
    {
        return Err(bad_rows(format!("visit {} starts outside the day", v.id)));
    }
    let day = day as u32;
    let committed = SiteState::read(dir)?;
    let first = committed.is_none();
    let mut state = committed.unwrap_or_default();
    let newest = state.days.last().map(|d| d.day);
    let mode = match newest {
        None => Mode::New,
        Some(n) if day > n => Mode::New,
        Some(n) if day == n => Mode::Newest,
        Some(_) if state.days.len() >= 2 && state.days[state.days.len() - 2].day == day => {
            Mode::Previous
        }
        Some(_) => return Err(order("only the newest two days can be sealed again")),
    };
    // Strings and sets from the files the site file names, never from a
    // view: a view may be of an older commit, and numbering from it would
    // give committed ids other strings.
    let mut words = if first {
        Interner::new()
    } else {
        let dict = Dictionary::open(
            &dict_path(dir, state.dict_generation),
            state.dict_len as usize,
        )?;
        let sets = Sets::open(
            &sets_path(dir, state.dict_generation),
            state.sets_len as usize,
        )?;
        Interner::load(&dict, &sets)?
    };
    let (dict_before, sets_before) = (words.len(), words.sets_len());

    // Visits: attribute sets, sorted, numbered in row order.
    let mut visits: Vec<(u32, &DayVisit, u32, u32)> = Vec::with_capacity(rows.visits.len());
    for v in &rows.visits {
        let mut set = [NONE; ATTRIBUTES];
        for (slot, value) in set.iter_mut().zip(&v.values[2..]) {
            *slot = words.id(value.as_deref())?;
        }
        let entry = words.id(v.values[0].as_deref())?;
        let exit = words.id(v.values[1].as_deref())?;
        visits.push((words.set_id(set), v, entry, exit));
    }
    visits.sort_by_key(|(set, v, _, _)| (*set, v.started_at, v.id));
    let base = match mode {
        Mode::New => state.visits,
        Mode::Newest | Mode::Previous => state
            .days
            .iter()
            .find(|d| d.day == day)
            .map_or(0, |d| d.visit_base),
    };
    if mode == Mode::Previous {
        // Their numbers are in the newest day's events: the same visits, in
        // the same order, or nothing.
        let mut before: Vec<(u32, i64)> = state
            .carried_visits
            .iter()
            .filter(|(_, c)| c.number & ORPHAN == 0 && c.start_day == day)
            .map(|(id, c)| (c.number, *id))
            .collect();
        before.sort_unstable();
        let same = before.len() == visits.len()
            && before
                .iter()
                .zip(&visits)
                .enumerate()
                .all(|(k, ((n, id), v))| *n == base + k as u32 && *id == v.1.id);
        if !same {
            return Err(order("the visits of a day before the newest changed"));
        }
    }
    if mode == Mode::Newest {
        state
            .carried_visits
            .retain(|_, c| c.number & ORPHAN != 0 || c.start_day != day);
    }
    let count = u32::try_from(visits.len()).ok();
    let Some(next) = count
        .and_then(|c| base.checked_add(c))
        .filter(|&n| n < ORPHAN)
    else {
        return Err(ColumnError::Full("2^31 visits"));
    };
    let mut cols = SegmentColumns::default();
    let mut own: HashMap<i64, (u32, u32)> = HashMap::with_capacity(visits.len());
    let visitor_number = |id: i64, state: &mut SiteState| -> Result<u32, ColumnError> {
        let next = state.visitors;
        let c = state.carried_visitors.entry(id).or_insert(CarriedVisitor {
            number: next,
            last_day: day,
        });
        c.last_day = c.last_day.max(day);
        if c.number == next {
            state.visitors = next
                .checked_add(1)
                .ok_or(ColumnError::Full("2^32 visitors"))?;
        }
        Ok(c.number)
    };
    for (k, &(set, v, entry, exit)) in visits.iter().enumerate() {
        let number = base + k as u32;
        if own.insert(v.id, (number, set)).is_some() {
            return Err(bad_rows(format!("visit {} is there twice", v.id)));
        }
        state.carried_visits.insert(
            v.id,
            CarriedVisit {
                number,
                set,
                start_day: day,
                last_day: day_of(v.last_seen_at).max(day),
            },
        );
        cols.v_visitor
            .push(visitor_number(v.visitor_id, &mut state)?);
        cols.v_started.push(secs(v.started_at));
        cols.v_duration.push(secs(v.last_seen_at - v.started_at));
        cols.v_pageviews.push(secs(v.pageviews));
        cols.v_events.push(secs(v.events));
        cols.v_bounce.push(u8::from(v.is_bounce));
        cols.v_entry.push(entry);
        cols.v_exit.push(exit);
        let n = cols.runs.len();
        if n >= 3 && cols.runs[n - 3] == set {
            cols.runs[n - 1] = k as u32 + 1;
        } else {
            cols.runs.extend([set, k as u32, k as u32 + 1]);
        }
    }
    if mode != Mode::Previous {
        state.visits = state.visits.max(next);
        if mode == Mode::Newest {
            state.visits = next;
        }
    }

    // Events: their visit's number and set, sorted into groups.
    struct Row {
        set: u32,
        name: u32,
        path: u32,
        ts: u32,
        id: i64,
        visit: u32,
        visitor: u32,
        first_view: u8,
        pairs: Vec<[u32; 2]>,
    }
    let mut events: Vec<Row> = Vec::with_capacity(rows.events.len());
    for e in rows.events.iter().filter(|e| e.name != NOT_AN_ACTION) {
        let (visit, set) = match own.get(&e.visit_id) {
            Some(&v) => v,
            None => {
                let orphans = state.orphans;
                let c = state
                    .carried_visits
                    .entry(e.visit_id)
                    .or_insert(CarriedVisit {
                        number: ORPHAN | orphans,
                        set: NO_VISIT,
                        start_day: day,
                        last_day: day,
                    });
                c.last_day = c.last_day.max(day);
                if c.number == ORPHAN | orphans {
                    state.orphans += 1;
                    if state.orphans >= ORPHAN {
                        return Err(ColumnError::Full("2^31 orphan visits"));
                    }
                }
                (c.number, c.set)
            }
        };
        let mut pairs = Vec::new();
        if let Some(json) = &e.props {
            // Properties are strings (as ingest stores them); anything else
            // is not a property the raw tables' filters could match either.
            if let Ok(map) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
            {
                for (k, v) in &map {
                    if let Some(v) = v.as_str() {
                        pairs.push([words.id(Some(k))?, words.id(Some(v))?]);
                    }
                }
            }
        }
        events.push(Row {
            set,
            name: words.id(Some(&e.name))?,
            path: words.id(Some(&e.path))?,
            ts: secs(e.ts),
            id: e.id,
            visit,
            visitor: visitor_number(e.visitor_id, &mut state)?,
            first_view: u8::from(e.first_view),
            pairs,
        });
    }
    events.sort_by_key(|e| (e.set, e.name, e.path, e.ts, e.id));
    for (i, e) in events.iter().enumerate() {
        let end = i as u32 + 1;
        let n = cols.groups.len();
        if n >= 4 && cols.groups[n - 4..n - 1] == [e.set, e.name, e.path] {
            cols.groups[n - 1] = end;
        } else {
            cols.groups.extend([e.set, e.name, e.path, end]);
        }
        cols.ts.push(e.ts);
        cols.visit.push(e.visit);
        cols.visitor.push(e.visitor);
        cols.first_view.push(e.first_view);
        if !e.pairs.is_empty() {
            cols.props.extend([i as u32, (cols.pairs.len() / 2) as u32]);
            cols.pairs.extend(e.pairs.iter().flatten());
        }
    }

    // Files under a new generation, then the site file: the commit.
    state.generation = state
        .generation
        .checked_add(1)
        .ok_or(ColumnError::Full("generations"))?;
    let generation = state.generation;
    if words.len() != dict_before || words.sets_len() != sets_before || first {
        words.write(&dict_path(dir, generation), &sets_path(dir, generation))?;
        state.dict_generation = generation;
    }
    state.dict_len = u32::try_from(words.len()).map_err(|_| ColumnError::Full("strings"))?;
    state.sets_len = words.sets_len() as u32;
    state.pageview = words.find("pageview").unwrap_or(NONE);
    let entry = DayEntry {
        day,
        generation,
        visit_base: base,
        visits: next - base,
    };
    cols.write(&segment_path(dir, &entry), i64::from(day), base)?;
    match state.days.iter_mut().find(|d| d.day == day) {
        Some(d) => *d = entry,
        None => state.days.push(entry),
    }
    let newest = state.days.last().map_or(day, |d| d.day);
    let keep = newest.saturating_sub(KEEP_DAYS);
    state.carried_visitors.retain(|_, c| c.last_day >= keep);
    state
        .carried_visits
        .retain(|_, c| c.start_day >= keep || c.last_day + 1 >= newest);
    state.write(dir)?;
    Ok(state)
}
