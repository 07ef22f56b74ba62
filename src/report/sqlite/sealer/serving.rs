//! Which ranges of a site the column store may answer for, as reports see
//! the database: the read side of [`super::Sealer`]'s bookkeeping.
//!
//! A site's sealed days are a run of its days with raw events, from the
//! oldest that retention keeps up to the newest sealed one, with none left
//! out (the sealer seals days in order, and a gap makes it delete the site
//! and seal it again from its first day). So a range that ends by the end
//! of the newest sealed day holds nothing the store lacks: days before the
//! first sealed one have no raw events that reports may reach.
//!
//! The store follows one database state: its `meta.database_id` and
//! `meta.external_writes`. A report reads both in its own transaction; when
//! they are not what the store follows (another process wrote events, which
//! may be in sealed days, and the sealer has not caught up yet), the store
//! does not answer.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::follow::database_state;
use super::{DAY, Sealer};
use crate::report::columns::{ColumnError, SiteSnapshot};
use crate::sync::Lock;

/// One commit of a site's store, and how far it holds the site.
#[derive(Clone)]
pub struct SealedSite {
    /// Every part of a report reads this commit: one the sealer replaces
    /// or deletes meanwhile does not change its answers.
    pub snapshot: SiteSnapshot,
    /// The end of the commit's newest day: the store holds every event
    /// before it.
    pub end: i64,
}

impl SealedSite {
    /// Whether the store holds every event before `end`.
    pub fn covers(&self, end: i64) -> bool {
        end <= self.end
    }
}

impl Sealer {
    /// The store and how far it holds `site_id`, if it follows the database
    /// state `conn` reads (inside the report's transaction); `None` when it
    /// is not open, follows another state, or holds nothing of the site.
    pub fn sealed_site(&self, conn: &Connection, site_id: i64) -> Option<SealedSite> {
        let columns = self.columns.get()?.clone();
        let follows = {
            let sites = self.sites.locked();
            if sites.gone.contains(&site_id) {
                return None;
            }
            sites.follows.clone()?
        };
        if database_state(conn).ok()? != follows {
            return None;
        }
        let snapshot = match columns.snapshot(site_id) {
            Ok(snapshot) => snapshot?,
            Err(e) => {
                tracing::warn!(site_id, error = %e, "column store: the site cannot be read");
                self.failed_to_answer(site_id, &e);
                return None;
            }
        };
        let end = (snapshot.newest_day()? + 1) * DAY;
        Some(SealedSite { snapshot, end })
    }
}

impl Sealer {
    /// A report part was answered by the store.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// The store failed to answer a report part of `site_id` (the report
    /// read the raw tables instead). A damaged file has the site sealed
    /// again from its first day at the next look.
    pub fn failed_to_answer(&self, site_id: i64, e: &ColumnError) {
        self.answer_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(e, ColumnError::Damaged { .. }) {
            self.sites.locked().damaged.insert(site_id);
            self.wake.notify_one();
        }
    }

    /// Report parts the store answered, and those it failed to, since start.
    pub fn answers(&self) -> (u64, u64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.answer_errors.load(Ordering::Relaxed),
        )
    }
}
