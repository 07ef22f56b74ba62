//! [`LateEvents`]: events committed in a UTC day that was already complete
//! (a clock set back, a journal replayed long after its events were
//! acknowledged), noted per site as the writer commits them
//! ([`NoteLate`]), so that [`super::Sealer`] deletes and seals again a
//! site whose store sealed that day without them.
//!
//! The raw tables cannot tell such events apart cheaply: `events` is keyed
//! on (site, time, id), so "committed since" is not a key range. The
//! writer hands every commit's events over in memory, so a late one costs
//! one comparison there. The notes are kept in `columns/late` (written,
//! synced and renamed when a site's earliest late day moves back, which
//! normal traffic never does), so a stop before the sealer's next look
//! does not lose them; they are removed once the sealer has acted.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::{COLUMNS_DIR, DAY, SEAL_AFTER, SealError, Sealer};
use crate::report::columns::ColumnError;
use crate::store::{CommitFollower, NewEvent, StoreError};
use crate::sync::Lock;

/// The file of the notes in the store's directory: a line `SITE DAY` per
/// site.
pub(super) const LATE_FILE: &str = "late";

/// Per site, the earliest complete day an event was committed in since
/// the sealer last acted on it.
pub struct LateEvents {
    days: Mutex<BTreeMap<i64, i64>>,
    /// Per site, the newest day the sealer has sealed, as it last told: an
    /// event in it or before is late whatever the clock says (a clock set
    /// back stamps events, and judges days complete, by the same wrong
    /// time).
    sealed: Mutex<HashMap<i64, i64>>,
    file: PathBuf,
}

impl LateEvents {
    /// The notes of the store in `data_dir`, with those a previous run
    /// left (a file that cannot be read is logged and counts as none: the
    /// notes are rare, and the store is derived).
    pub fn open(data_dir: &Path) -> LateEvents {
        let file = data_dir.join(COLUMNS_DIR).join(LATE_FILE);
        let days = match std::fs::read_to_string(&file) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %file.display(), error = %e, "cannot read the column store's late events");
                BTreeMap::new()
            }
        };
        LateEvents {
            days: Mutex::new(days),
            sealed: Mutex::new(HashMap::new()),
            file,
        }
    }

    /// The sealer's word on a site's newest sealed day (`None`: nothing
    /// sealed, the store deleted).
    pub(super) fn sealed_through(&self, site_id: i64, day: Option<i64>) {
        let mut sealed = self.sealed.locked();
        match day {
            // Raised only: a reseal of the day before the newest (its
            // visits changed) keeps the newest sealed.
            Some(day) => {
                let newest = sealed.entry(site_id).or_insert(day);
                *newest = (*newest).max(day);
            }
            None => {
                sealed.remove(&site_id);
            }
        }
    }

    /// Notes the events of one commit whose day was complete at `now`, or
    /// is sealed already.
    pub fn note(&self, events: &[NewEvent], now: i64) {
        let sealed = self.sealed.locked().clone();
        let mut days = self.days.locked();
        let mut moved = false;
        for e in events {
            let day = e.ts.div_euclid(DAY);
            let complete = (day + 1) * DAY + SEAL_AFTER <= now;
            if !complete && sealed.get(&e.site_id).is_none_or(|n| day > *n) {
                continue;
            }
            if days.get(&e.site_id).is_none_or(|d| day < *d) {
                days.insert(e.site_id, day);
                moved = true;
            }
        }
        if moved {
            self.save(&days);
        }
    }

    /// The notes as they stand: site and earliest day.
    pub fn pending(&self) -> Vec<(i64, i64)> {
        self.days.locked().iter().map(|(s, d)| (*s, *d)).collect()
    }

    /// The sealer acted on `notes` (from [`LateEvents::pending`]): each goes
    /// unless an earlier day was noted for its site meanwhile.
    pub fn done(&self, notes: &[(i64, i64)]) {
        if notes.is_empty() {
            return;
        }
        let mut days = self.days.locked();
        for (site, day) in notes {
            if days.get(site) == Some(day) {
                days.remove(site);
            }
        }
        self.save(&days);
    }

    /// Writes the notes (or deletes the file when there are none). A failure
    /// is logged: the notes stay in memory until the next stop.
    fn save(&self, days: &BTreeMap<i64, i64>) {
        if let Err(e) = write_notes(&self.file, days) {
            tracing::warn!(path = %self.file.display(), error = %e, "cannot keep the column store's late events on disk");
        }
    }
}

pub(super) fn parse(text: &str) -> BTreeMap<i64, i64> {
    text.lines()
        .filter_map(|line| {
            let (site, day) = line.split_once(' ')?;
            Some((site.trim().parse().ok()?, day.trim().parse().ok()?))
        })
        .collect()
}

pub(super) fn write_notes(file: &Path, days: &BTreeMap<i64, i64>) -> std::io::Result<()> {
    if days.is_empty() {
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)?;
    for (site, day) in days {
        writeln!(out, "{site} {day}")?;
    }
    out.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The writer's follower, noting late events before handing each commit to
/// `inner` (the rollups' feed).
pub struct NoteLate {
    inner: Arc<dyn CommitFollower>,
    late: Arc<LateEvents>,
}

impl NoteLate {
    pub fn new(inner: Arc<dyn CommitFollower>, late: Arc<LateEvents>) -> NoteLate {
        NoteLate { inner, late }
    }
}

impl CommitFollower for NoteLate {
    fn catch_up(
        &self,
        conn: &Connection,
        now: i64,
        owner: bool,
        unclean: bool,
    ) -> Result<usize, StoreError> {
        self.inner.catch_up(conn, now, owner, unclean)
    }

    fn committed(&self, conn: &Connection, events: Vec<NewEvent>, through: i64) {
        self.late.note(&events, crate::store::now_unix());
        self.inner.committed(conn, events, through);
    }

    fn rolled_back(&self) {
        self.inner.rolled_back();
    }
}

impl Sealer {
    /// Tells the late-event notes a site's newest sealed day (`None`:
    /// nothing sealed).
    pub(super) fn tell_late(&self, site_id: i64, newest: Option<i64>) {
        if let Some(late) = &self.late {
            late.sealed_through(site_id, newest);
        }
    }

    /// Restarts each site an event was committed late in: in a day its
    /// store holds already (a later day is sealed with it as usual).
    pub(super) fn act_on_late(&self) -> Result<(), SealError> {
        let Some(late) = &self.late else {
            return Ok(());
        };
        let notes = late.pending();
        for (site_id, day) in &notes {
            let newest = match self.columns()?.sealed_days(*site_id) {
                Ok(days) => days.last().copied(),
                // Restarted below all the same.
                Err(ColumnError::Damaged { .. }) => Some(*day),
                Err(e) => return Err(e.into()),
            };
            if newest.is_some_and(|n| *day <= n) {
                tracing::warn!(
                    site_id,
                    day = %super::date(*day),
                    "an event was committed in a day the column store had sealed (the clock set back?)"
                );
                self.restart(*site_id, "an event was committed in a sealed day")?;
            }
        }
        late.done(&notes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event in a sealed day is late even when the clock says the day
    /// is not over (a clock set back stamps it and judges the day by the
    /// same wrong time); one in a day after the newest sealed is not.
    #[test]
    fn an_event_in_a_sealed_day_is_late_whatever_the_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let late = LateEvents::open(dir.path());
        let day = 20_000;
        let event = |ts: i64| NewEvent {
            site_id: 1,
            ts,
            ..NewEvent::test_pageview("/")
        };
        // The clock, set back, reads the middle of `day`.
        let now = day * DAY + 43_200;
        late.note(&[event(now - 60)], now);
        assert!(late.pending().is_empty());
        late.sealed_through(1, Some(day));
        late.sealed_through(1, Some(day - 1));
        late.note(&[event(now - 60)], now);
        assert_eq!(late.pending(), vec![(1, day)]);
        late.done(&[(1, day)]);
        // The store deleted: nothing sealed, nothing late.
        late.sealed_through(1, None);
        late.note(&[event(now - 60)], now);
        assert!(late.pending().is_empty());
    }
}
