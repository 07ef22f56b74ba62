//! The column store: filtered reports from immutable, memory-mapped files,
//! one per site and UTC day, instead of the raw tables or a copy of recent
//! traffic on the heap. It is derived data: fed whole days of rows
//! ([`DayRows`]) by whoever reads the events, it knows no SQL and no store,
//! and answers what [`crate::report::sqlite::raw`] answers on the same rows.
//!
//! - [`container`]: the file format every column file shares.
//! - [`dictionary`]: a site's strings and visit attribute sets.
//! - [`segment`]: one day of a site, column by column.
//! - [`site`]: a site's directory, its commit point and mapped views.
//! - [`cache`]: the views reports start from.
//! - [`seal`]: a day's rows made into a segment, numbering visitors and
//!   visits densely across days.
//! - [`scan`], [`bitmap`], [`totals`], [`breakdown`]: the reports.
//!
//! The server's sealer (`crate::report::sqlite::sealer`) feeds it complete
//! days, and filtered reports over those days read it (see ARCHITECTURE.md,
//! "Column store").

mod bitmap;
mod breakdown;
mod cache;
mod container;
mod dictionary;
mod scan;
mod seal;
mod segment;
mod site;
mod totals;

#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::report::model::{
    BreakdownRow, Dimension, Filter, RowsToAdd, TimeRange, Totals, VisitColumn,
};
use crate::sync::Lock;
use cache::ViewCache;
use container::io_error;
use site::{SiteState, SiteView};

/// Why the column store could not do what it was asked.
#[derive(Debug, Error)]
pub enum ColumnError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not what it should be: truncated, changed, or written by
    /// another version. Rebuilding the site from the raw tables mends it.
    #[error("{path}: damaged column file: {what}")]
    Damaged { path: PathBuf, what: String },
    /// The rows handed to an append do not belong to their day.
    #[error("site {site_id}, day {day}: {what}")]
    Rows {
        site_id: i64,
        day: i64,
        what: String,
    },
    /// An append out of order: a day before the newest two, or a day
    /// before the newest whose visits are not those its numbers were given
    /// to. The site must be removed and sealed again from its first day.
    #[error("site {site_id}, day {day}: {what}; the site must be sealed again")]
    Order {
        site_id: i64,
        day: i64,
        what: &'static str,
    },
    /// Another process has the store open: one writes it at a time.
    #[error("{path}: the column store is in use by another process")]
    Busy { path: PathBuf },
    /// A count outgrew its 32 bits.
    #[error("the column store is full: {0}")]
    Full(&'static str),
}

/// One event of a day, as the raw tables hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct DayEvent {
    pub ts: i64,
    pub id: i64,
    pub visit_id: i64,
    pub visitor_id: i64,
    pub name: String,
    pub path: String,
    /// A JSON object of string values.
    pub props: Option<String>,
    pub first_view: bool,
}

/// One visit that started in a day, with its final fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayVisit {
    pub id: i64,
    pub visitor_id: i64,
    pub started_at: i64,
    pub last_seen_at: i64,
    pub pageviews: i64,
    pub events: i64,
    pub is_bounce: bool,
    /// By [`VisitColumn::index`]: entry and exit page, then the attributes.
    pub values: [Option<String>; 17],
}

impl DayVisit {
    pub fn value(&self, column: VisitColumn) -> Option<&str> {
        self.values[column.index()].as_deref()
    }
}

/// The rows of one site's UTC day: events whose time is in the day (in any
/// order), and visits that started in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayRows {
    pub events: Vec<DayEvent>,
    pub visits: Vec<DayVisit>,
}

/// Every site's column files under one directory (one subdirectory per
/// site id). Appends are one at a time; reports read at any time, each
/// from the commit it started with.
pub struct ColumnStore {
    dir: PathBuf,
    views: Mutex<ViewCache>,
    appending: Mutex<()>,
    /// Held while the store is open (see [`lock`]).
    _lock: std::fs::File,
}

/// Deletes a site's directory: renamed first, so a crash halfway leaves no
/// half site behind (what a crash left of an earlier removal goes first).
fn remove_dir(dir: &Path, site_id: i64) -> Result<(), ColumnError> {
    let site = dir.join(site_id.to_string());
    let gone = dir.join(format!("{site_id}.removed"));
    if gone.exists() {
        std::fs::remove_dir_all(&gone).map_err(io_error(&gone))?;
    }
    std::fs::rename(&site, &gone).map_err(io_error(&site))?;
    container::sync_dir(dir)?;
    std::fs::remove_dir_all(&gone).map_err(io_error(&gone))
}

/// The store's lock file: an OS lock (`flock`) held by the one process that
/// has the store open, so no other process appends, deletes what it
/// thinks unnamed, or changes a file this one has mapped. Released when the
/// process ends, however it ends.
const LOCK_FILE: &str = "lock";

fn lock(dir: &Path) -> Result<std::fs::File, ColumnError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ColumnError::Busy { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(&path)(e)),
    }
}

/// Times a report opens a view again when a commit deleted files under it
/// while it mapped them.
const OPEN_TRIES: usize = 8;

impl ColumnStore {
    /// Opens (or creates) the store in `dir`, deleting what an interrupted
    /// append or removal left behind.
    pub fn open(dir: &Path) -> Result<ColumnStore, ColumnError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        // Before anything is deleted: what another process's append left
        // unnamed may be under way.
        let lock = lock(dir)?;
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Ok(site_id) = name.parse::<i64>() {
                match SiteState::read(&path) {
                    Ok(Some(state)) => state.delete_unnamed(&path)?,
                    Ok(None) => {}
                    // One site's damage must not stop the others' reports:
                    // the site is removed, and sealed again from its first
                    // day like a new one.
                    Err(e @ ColumnError::Damaged { .. }) => {
                        tracing::warn!(site_id, error = %e, "column store: removing a damaged site");
                        remove_dir(dir, site_id)?;
                    }
                    Err(e) => return Err(e),
                }
            } else if name.ends_with(".removed") {
                std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            }
        }
        Ok(ColumnStore {
            dir: dir.to_path_buf(),
            views: Mutex::new(ViewCache::new(cache::MAX_MAPPED)),
            appending: Mutex::new(()),
            _lock: lock,
        })
    }

    fn site_dir(&self, site_id: i64) -> PathBuf {
        self.dir.join(site_id.to_string())
    }

    /// The newest commit of a site, `None` if nothing was sealed.
    fn view(&self, site_id: i64) -> Result<Option<Arc<SiteView>>, ColumnError> {
        let dir = self.site_dir(site_id);
        let mut tries = 0;
        loop {
            let seen = {
                let mut views = self.views.locked();
                if let Some(v) = views.get(site_id) {
                    return Ok(v);
                }
                views.commits(site_id)
            };
            // Mapped outside the lock: a first read checks every file.
            let opened = SiteState::read(&dir).and_then(|state| match state {
                Some(state) => Ok(Some(Arc::new(SiteView::open(&dir, &state, None)?))),
                None => Ok(None),
            });
            let mut views = self.views.locked();
            match opened {
                Ok(view) => return Ok(views.offer(site_id, seen, view)),
                // A commit deleted what the site file read had named.
                Err(_) if views.commits(site_id) != seen && tries < OPEN_TRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Records a commit of a site in the cache: the new view, mapped from
    /// the one cached (which keeps its segments), or nothing when none was
    /// (the next report maps it). Any error drops the cached view.
    fn committed(&self, dir: &Path, site_id: i64, state: &SiteState) -> Result<(), ColumnError> {
        let before = self.views.locked().get(site_id).flatten();
        let view = match before {
            Some(before) => match SiteView::open(dir, state, Some(&before)) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    self.views.locked().committed(site_id, None);
                    return Err(e);
                }
            },
            None => None,
        };
        self.views.locked().committed(site_id, view);
        Ok(())
    }

    /// Seals `day` (days since 1970-01-01, UTC) of a site from its rows.
    /// Days go in increasing order; sealing the newest day again, or the
    /// one before it, replaces it (a visit that crossed midnight changed).
    /// Replacing the day before the newest keeps its visits' numbers, which
    /// the newest day's events use, so it must hold the same visits.
    pub fn append_day(&self, site_id: i64, day: i64, rows: DayRows) -> Result<(), ColumnError> {
        let _one = self.appending.locked();
        let dir = self.site_dir(site_id);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            // So the new site's name survives a crash with its files.
            container::sync_dir(&self.dir)?;
        }
        let state = match seal::append(&dir, site_id, day, rows) {
            Ok(state) => state,
            Err(e) => {
                // The site file may have been written before the error.
                self.views.locked().committed(site_id, None);
                return Err(e);
            }
        };
        self.committed(&dir, site_id, &state)?;
        state.delete_unnamed(&dir)
    }

    /// The days sealed for a site, ascending.
    pub fn sealed_days(&self, site_id: i64) -> Result<Vec<i64>, ColumnError> {
        let days = |d: &[site::DayEntry]| d.iter().map(|d| i64::from(d.day)).collect();
        if let Some(view) = self.views.locked().get(site_id) {
            return Ok(view.map_or_else(Vec::new, |v| days(&v.days)));
        }
        // The site file alone: no need to map the days.
        Ok(SiteState::read(&self.site_dir(site_id))?.map_or_else(Vec::new, |s| days(&s.days)))
    }

    /// Deletes a site's days before `day` (retention). Returns how many.
    /// Reports must not reach before `day` afterwards: they would count
    /// nothing there.
    pub fn drop_before(&self, site_id: i64, day: i64) -> Result<usize, ColumnError> {
        let _one = self.appending.locked();
        let dir = self.site_dir(site_id);
        let Some(mut state) = SiteState::read(&dir)? else {
            return Ok(0);
        };
        let before = state.days.len();
        state.days.retain(|d| i64::from(d.day) >= day);
        let dropped = before - state.days.len();
        if dropped > 0 {
            if let Err(e) = state.write(&dir) {
                self.views.locked().committed(site_id, None);
                return Err(e);
            }
            self.committed(&dir, site_id, &state)?;
            state.delete_unnamed(&dir)?;
        }
        Ok(dropped)
    }

    /// Deletes everything of a site. Reports already running finish on
    /// what they mapped.
    pub fn remove_site(&self, site_id: i64) -> Result<(), ColumnError> {
        let _one = self.appending.locked();
        let dir = self.site_dir(site_id);
        if !dir.exists() {
            self.views.locked().committed(site_id, None);
            return Ok(());
        }
        let removed = remove_dir(&self.dir, site_id);
        // After the rename: a report that read the site file before it
        // must not cache what it mapped.
        self.views.locked().committed(site_id, None);
        removed
    }

    /// The site's newest commit, to answer several reports from one
    /// state: `None` if nothing was sealed.
    pub fn snapshot(&self, site_id: i64) -> Result<Option<SiteSnapshot>, ColumnError> {
        Ok(self.view(site_id)?.map(|view| SiteSnapshot { view }))
    }

    /// `answer` from the site's newest commit, or `empty` when nothing of
    /// the site is sealed.
    fn newest<T>(
        &self,
        site_id: i64,
        empty: impl FnOnce() -> T,
        answer: impl FnOnce(&SiteSnapshot) -> Result<T, ColumnError>,
    ) -> Result<T, ColumnError> {
        match self.snapshot(site_id)? {
            Some(s) => answer(&s),
            None => Ok(empty()),
        }
    }

    /// Totals over `range`, as [`crate::report::sqlite::raw::totals`], from
    /// the newest commit.
    pub fn totals(
        &self,
        site_id: i64,
        range: TimeRange,
        filters: &[Filter],
    ) -> Result<Totals, ColumnError> {
        self.newest(site_id, Totals::default, |s| s.totals(range, filters))
    }

    /// [`SiteSnapshot::series`] from the newest commit.
    pub fn series(
        &self,
        site_id: i64,
        buckets: &[TimeRange],
        filters: &[Filter],
    ) -> Result<Vec<Totals>, ColumnError> {
        let empty = || vec![Totals::default(); buckets.len()];
        self.newest(site_id, empty, |s| s.series(buckets, filters))
    }

    /// [`SiteSnapshot::breakdown`] from the newest commit.
    #[allow(clippy::too_many_arguments)]
    pub fn breakdown(
        &self,
        site_id: i64,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        need_visits: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BreakdownRow>, ColumnError> {
        self.newest(site_id, Vec::new, |s| {
            s.breakdown(range, dimension, filters, need_visits, limit, offset)
        })
    }

    /// [`SiteSnapshot::prop_keys`] from the newest commit.
    pub fn prop_keys(
        &self,
        site_id: i64,
        range: TimeRange,
        filters: &[Filter],
        limit: i64,
    ) -> Result<Vec<String>, ColumnError> {
        self.newest(site_id, Vec::new, |s| s.prop_keys(range, filters, limit))
    }
}

/// One commit of a site, mapped: every report from it reads the same days,
/// whatever is appended, replaced or deleted meanwhile.
#[derive(Clone)]
pub struct SiteSnapshot {
    view: Arc<SiteView>,
}

impl SiteSnapshot {
    /// The newest day it holds (days since 1970-01-01, UTC).
    pub fn newest_day(&self) -> Option<i64> {
        self.view.days.last().map(|d| i64::from(d.day))
    }

    /// Totals over `range`, as [`crate::report::sqlite::raw::totals`].
    pub fn totals(&self, range: TimeRange, filters: &[Filter]) -> Result<Totals, ColumnError> {
        Ok(totals::series(&self.view, &[range], filters)?
            .pop()
            .unwrap_or_default())
    }

    /// The totals of each bucket (ascending, not overlapping), in one scan.
    pub fn series(
        &self,
        buckets: &[TimeRange],
        filters: &[Filter],
    ) -> Result<Vec<Totals>, ColumnError> {
        totals::series(&self.view, buckets, filters)
    }

    /// Rows `offset..offset + limit` of `dimension`, as
    /// [`crate::report::sqlite::raw::breakdown`]. A property's rows carry
    /// their visits only when `need_visits` asks (they cost a count of
    /// distinct visits per row shown).
    pub fn breakdown(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        need_visits: bool,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<BreakdownRow>, ColumnError> {
        let none = RowsToAdd::default();
        self.breakdown_with(range, dimension, filters, need_visits, limit, offset, &none)
    }

    /// [`Self::breakdown`] of a range of which `range` is the store's part:
    /// `extra` holds the rows of the rest, added to the store's by value
    /// before the rows are ranked.
    #[allow(clippy::too_many_arguments)]
    pub fn breakdown_with(
        &self,
        range: TimeRange,
        dimension: &Dimension,
        filters: &[Filter],
        need_visits: bool,
        limit: i64,
        offset: i64,
        extra: &RowsToAdd,
    ) -> Result<Vec<BreakdownRow>, ColumnError> {
        breakdown::breakdown(
            &self.view,
            range,
            dimension,
            filters,
            need_visits,
            limit,
            offset,
            extra,
        )
    }

    /// Up to `limit` property keys of the matching events in `range`, most
    /// visitors first, as [`crate::report::sqlite::raw::prop_keys`].
    pub fn prop_keys(
        &self,
        range: TimeRange,
        filters: &[Filter],
        limit: i64,
    ) -> Result<Vec<String>, ColumnError> {
        let keys = breakdown::prop_keys(&self.view, range, filters)?;
        Ok(keys
            .into_iter()
            .take(limit.max(0) as usize)
            .map(|(k, _)| k)
            .collect())
    }

    /// Every property key of the matching events in `range` with its
    /// visitors, most first (then by key).
    pub fn prop_key_visitors(
        &self,
        range: TimeRange,
        filters: &[Filter],
    ) -> Result<Vec<(String, i64)>, ColumnError> {
        breakdown::prop_keys(&self.view, range, filters)
    }
}
