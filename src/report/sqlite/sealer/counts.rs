//! What [`super::Sealer`] shows health and metrics: the days sealed and
//! pending, and the sites stopped at a day over the memory budget.

use rusqlite::Connection;
use std::sync::atomic::Ordering;

use super::reads::raw_days;
use super::{Sealer, date, plan};
use crate::report::ColumnDays;
use crate::sync::Lock;

impl Sealer {
    /// Days sealed and complete days pending, every site together; `None`
    /// until the first look after start.
    pub fn progress(&self) -> Option<ColumnDays> {
        self.looked.load(Ordering::Relaxed).then(|| ColumnDays {
            sealed_days: self.sealed_days.load(Ordering::Relaxed),
            pending_days: self.pending_days.load(Ordering::Relaxed),
            oversized_sites: self.sites.locked().oversized.len() as u64,
        })
    }

    /// The sites that stopped sealing at a day over the memory budget, and
    /// that day: it and every later day are not in the store.
    pub fn oversized_sites(&self) -> Vec<(i64, i64)> {
        let mut sites: Vec<_> = self.sites.locked().oversized.clone().into_iter().collect();
        sites.sort_unstable();
        sites
    }

    /// The days a site has sealed and pending, without acting on them (a
    /// site not looked at: failing, or waiting after failures). A store it
    /// cannot read counts as nothing sealed.
    pub(super) fn count_days(
        &self,
        conn: &Connection,
        id: i64,
        from: i64,
        now: i64,
    ) -> (usize, usize) {
        let sealed = self
            .columns()
            .ok()
            .and_then(|c| c.sealed_days(id).ok())
            .unwrap_or_default();
        let newest = sealed.last().copied();
        let Ok(raw) = raw_days(conn, id, newest.map_or(from, |n| from.max(n + 1))) else {
            return (sealed.len(), 0);
        };
        (sealed.len(), plan(&sealed, &raw, from, None, now).pending)
    }

    /// A site's `day` holds more events than a seal may read: the site
    /// stops there (its sealed days stay a run of its raw days), logged
    /// once.
    pub(super) fn oversized(&self, site_id: i64, day: i64, max: u64) {
        let before = self.sites.locked().oversized.insert(site_id, day);
        if before != Some(day) {
            tracing::warn!(
                site_id,
                day = %date(day),
                seal_max_events_per_day = max,
                "a day of the site holds more events than a seal may hold in memory: \
                 the site's days from it on stay out of the column store"
            );
        }
    }
}
