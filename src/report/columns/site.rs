//! One site's directory: the site file, which is the commit point of every
//! change (what is committed of the dictionary and the sets, the days and
//! their files, the counts that keep numbers dense, and what an append
//! needs to go on numbering the same visitors and visits), and
//! [`SiteView`], the files of one commit, mapped for reports.
//!
//! ```text
//! SITE/site.tcf        see SiteState::write
//! SITE/dict-GEN.tcf    the dictionary; SITE/sets-GEN.tcf the attribute sets
//! SITE/DAY-GEN.seg     one UTC day (DAY = days since 1970-01-01)
//! ```
//! Every append writes its files under a new generation, then the site
//! file; files the site file no longer names are deleted after it, and at
//! open (what a crash left). A report holds a [`SiteView`]: its maps stay
//! valid whatever is written or deleted meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ColumnError;
use super::container::{Container, Kind, Section, io_error, write};
use super::dictionary::{Dictionary, Sets};
use super::segment::Segment;

pub(super) const SITE_FILE: &str = "site.tcf";

/// A sealed day: its segment's generation, and its visits' numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DayEntry {
    pub(super) day: u32,
    pub(super) generation: u32,
    pub(super) visit_base: u32,
    pub(super) visits: u32,
}

/// A visitor id an append may meet again (ids change with the daily salt,
/// so only those of the last days recur), with its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CarriedVisitor {
    pub(super) number: u32,
    pub(super) last_day: u32,
}

/// A visit whose events an append may still meet: started in the last days,
/// or with events on the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CarriedVisit {
    /// Its number ([`super::segment::ORPHAN`] set: an orphan number).
    pub(super) number: u32,
    pub(super) set: u32,
    pub(super) start_day: u32,
    pub(super) last_day: u32,
}

/// What the site file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct SiteState {
    pub(super) visitors: u32,
    pub(super) visits: u32,
    pub(super) orphans: u32,
    pub(super) dict_len: u32,
    pub(super) sets_len: u32,
    /// Dictionary id of the name `pageview` (0 until one is seen).
    pub(super) pageview: u32,
    /// The last generation given out, and that of the dictionary and sets.
    pub(super) generation: u32,
    pub(super) dict_generation: u32,
    /// Ascending by day; visit bases ascend with them.
    pub(super) days: Vec<DayEntry>,
    pub(super) carried_visitors: HashMap<i64, CarriedVisitor>,
    pub(super) carried_visits: HashMap<i64, CarriedVisit>,
}

/// The number after a day's last visit, in 64 bits: a damaged count must
/// be refused, not overflow.
fn end_of(d: &DayEntry) -> u64 {
    u64::from(d.visit_base) + u64::from(d.visits)
}

pub(super) fn dict_path(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("dict-{generation}.tcf"))
}

pub(super) fn sets_path(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("sets-{generation}.tcf"))
}

pub(super) fn segment_path(dir: &Path, e: &DayEntry) -> PathBuf {
    dir.join(format!("{}-{}.seg", e.day, e.generation))
}

impl SiteState {
    /// The site file of `dir`, `None` if there is none (a new site).
    pub(super) fn read(dir: &Path) -> Result<Option<SiteState>, ColumnError> {
        let path = dir.join(SITE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let c = Container::open(&path, Kind::Site)?;
        let &[
            visitors,
            visits,
            orphans,
            dict_len,
            sets_len,
            pageview,
            generation,
            dict_gen,
        ] = c.cast::<u32>(0)?
        else {
            return Err(c.damaged("site counts"));
        };
        let days: &[[u32; 4]] = c.cast(1)?;
        let days: Vec<DayEntry> = days
            .iter()
            .map(|d| DayEntry {
                day: d[0],
                generation: d[1],
                visit_base: d[2],
                visits: d[3],
            })
            .collect();
        let ordered = days
            .windows(2)
            .all(|w| w[0].day < w[1].day && end_of(&w[0]) <= u64::from(w[1].visit_base));
        let inside = days.iter().all(|d| end_of(d) <= u64::from(visits));
        if !ordered || !inside {
            return Err(c.damaged("days"));
        }
        let visitor_ids: &[u64] = c.cast(2)?;
        let visitor_rows: &[[u32; 2]] = c.cast_exact(3, visitor_ids.len())?;
        let visit_ids: &[u64] = c.cast(4)?;
        let visit_rows: &[[u32; 4]] = c.cast_exact(5, visit_ids.len())?;
        Ok(Some(SiteState {
            visitors,
            visits,
            orphans,
            dict_len,
            sets_len,
            pageview,
            generation,
            dict_generation: dict_gen,
            days,
            carried_visitors: visitor_ids
                .iter()
                .zip(visitor_rows)
                .map(|(&id, r)| {
                    let v = CarriedVisitor {
                        number: r[0],
                        last_day: r[1],
                    };
                    (id as i64, v)
                })
                .collect(),
            carried_visits: visit_ids
                .iter()
                .zip(visit_rows)
                .map(|(&id, r)| {
                    let v = CarriedVisit {
                        number: r[0],
                        set: r[1],
                        start_day: r[2],
                        last_day: r[3],
                    };
                    (id as i64, v)
                })
                .collect(),
        }))
    }

    /// Writes the site file: the commit point of an append, a retention
    /// pass or a first seal.
    pub(super) fn write(&self, dir: &Path) -> Result<(), ColumnError> {
        let counts = [
            self.visitors,
            self.visits,
            self.orphans,
            self.dict_len,
            self.sets_len,
            self.pageview,
            self.generation,
            self.dict_generation,
        ];
        let days: Vec<u32> = self
            .days
            .iter()
            .flat_map(|d| [d.day, d.generation, d.visit_base, d.visits])
            .collect();
        // Sorted, so the same state always writes the same bytes.
        let mut visitors: Vec<(&i64, &CarriedVisitor)> = self.carried_visitors.iter().collect();
        visitors.sort_unstable_by_key(|(id, _)| **id);
        let mut visits: Vec<(&i64, &CarriedVisit)> = self.carried_visits.iter().collect();
        visits.sort_unstable_by_key(|(id, _)| **id);
        let visitor_ids: Vec<u64> = visitors.iter().map(|(id, _)| **id as u64).collect();
        let visitor_rows: Vec<u32> = visitors
            .iter()
            .flat_map(|(_, v)| [v.number, v.last_day])
            .collect();
        let visit_ids: Vec<u64> = visits.iter().map(|(id, _)| **id as u64).collect();
        let visit_rows: Vec<u32> = visits
            .iter()
            .flat_map(|(_, v)| [v.number, v.set, v.start_day, v.last_day])
            .collect();
        write(
            &dir.join(SITE_FILE),
            Kind::Site,
            &[
                Section::U32(&counts),
                Section::U32(&days),
                Section::U64(&visitor_ids),
                Section::U32(&visitor_rows),
                Section::U64(&visit_ids),
                Section::U32(&visit_rows),
            ],
        )?;
        Ok(())
    }

    /// Deletes the files of `dir` this state does not name: those an
    /// append or a retention pass replaced, and what a crash left.
    pub(super) fn delete_unnamed(&self, dir: &Path) -> Result<(), ColumnError> {
        let mut named = vec![
            PathBuf::from(SITE_FILE),
            dict_path(Path::new(""), self.dict_generation),
            sets_path(Path::new(""), self.dict_generation),
        ];
        named.extend(self.days.iter().map(|d| segment_path(Path::new(""), d)));
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            if !named.iter().any(|n| n.as_os_str() == entry.file_name()) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        Ok(())
    }
}

/// One commit of a site, mapped whole: its dictionary, its sets and every
/// segment it names, so a report holding it reads what it started with
/// whatever is appended, replaced or deleted meanwhile (a deleted file
/// lives on until its last map goes).
pub(super) struct SiteView {
    pub(super) dict: Dictionary,
    pub(super) sets: Sets,
    pub(super) visitors: usize,
    pub(super) visits: usize,
    pub(super) orphans: usize,
    pub(super) pageview: u32,
    pub(super) days: Vec<DayEntry>,
    /// The segment of each of `days`.
    segments: Vec<Arc<Segment>>,
}

impl SiteView {
    /// Maps the files `state` names. Segments `before` (the previous
    /// commit) mapped and `state` names again are shared, not read again.
    pub(super) fn open(
        dir: &Path,
        state: &SiteState,
        before: Option<&SiteView>,
    ) -> Result<SiteView, ColumnError> {
        let dict = Dictionary::open(
            &dict_path(dir, state.dict_generation),
            state.dict_len as usize,
        )?;
        let sets = Sets::open(
            &sets_path(dir, state.dict_generation),
            state.sets_len as usize,
        )?;
        let kept: HashMap<DayEntry, &Arc<Segment>> = before
            .map(|b| b.days.iter().copied().zip(&b.segments).collect())
            .unwrap_or_default();
        let mut segments = Vec::with_capacity(state.days.len());
        for e in &state.days {
            let seg = match kept.get(e) {
                Some(s) => Arc::clone(s),
                None => Arc::new(open_segment(dir, e)?),
            };
            segments.push(seg);
        }
        Ok(SiteView {
            dict,
            sets,
            visitors: state.visitors as usize,
            visits: state.visits as usize,
            orphans: state.orphans as usize,
            pageview: state.pageview,
            days: state.days.clone(),
            segments,
        })
    }

    /// How many files the view keeps mapped.
    pub(super) fn files(&self) -> usize {
        self.segments.len() + 2
    }

    /// The segments holding events or visit starts in `[start, end)`, in
    /// day order.
    pub(super) fn segments_for(
        &self,
        start: i64,
        end: i64,
    ) -> Result<Vec<Arc<Segment>>, ColumnError> {
        if end <= start {
            return Ok(Vec::new());
        }
        let (first, last) = (start.div_euclid(86_400), (end - 1).div_euclid(86_400));
        let a = self.days.partition_point(|d| i64::from(d.day) < first);
        let b = self.days.partition_point(|d| i64::from(d.day) <= last);
        Ok(self.segments[a..b.max(a)].to_vec())
    }

    /// Rows (events and visits) of the days `[start, end)` reaches: what a
    /// query reads, to size its tables by.
    pub(super) fn rows(&self, start: i64, end: i64) -> usize {
        self.segments_for(start, end)
            .map_or(0, |s| s.iter().map(|s| s.n_events + s.n_visits).sum())
    }

    /// The segment holding visit number `n` (not an orphan number).
    pub(super) fn segment_of_visit(&self, n: u32) -> Result<Option<Arc<Segment>>, ColumnError> {
        let i = self.days.partition_point(|d| d.visit_base <= n);
        match i.checked_sub(1) {
            Some(i) if n - self.days[i].visit_base < self.days[i].visits => {
                Ok(Some(Arc::clone(&self.segments[i])))
            }
            _ => Ok(None),
        }
    }
}

/// Maps the segment of a day and checks it is the one the site file names.
fn open_segment(dir: &Path, e: &DayEntry) -> Result<Segment, ColumnError> {
    let seg = Segment::open(&segment_path(dir, e))?;
    if seg.day != i64::from(e.day) || seg.visit_base != e.visit_base {
        return Err(seg.damaged(format!("holds day {}, expected {}", seg.day, e.day)));
    }
    if seg.n_visits != e.visits as usize {
        return Err(seg.damaged("visits other than the site file says"));
    }
    Ok(seg)
}
