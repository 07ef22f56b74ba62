//! How [`super::Sealer`]'s store follows the raw tables besides sealing:
//! removed sites, retention, deleted whole when the database is another one
//! or another process wrote events, and by the commands that put back or
//! add past data ([`forget_site`], [`forget_all`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use super::late::LATE_FILE;
use super::provisional::PROVISIONAL_FILE;
use super::reads::database_id;
use super::{COLUMNS_DIR, DAY, FOLLOWS_FILE, SealError, Sealer};
use crate::report::columns::{ColumnError, ColumnStore};
use crate::report::sqlite::recent::external_writes;
use crate::store::StoreError;
use crate::sync::Lock;

impl Sealer {
    /// A site was removed: its store goes at the next step or look.
    pub fn site_removed(&self, site_id: i64) {
        let mut sites = self.sites.locked();
        sites.removed.push(site_id);
        sites.gone.insert(site_id);
        drop(sites);
        self.wake.notify_one();
    }

    /// Retention: deletes every site's days before the one holding
    /// `cutoff` (raw events before it are deleted; that day is partly
    /// kept, and reports never reach before `cutoff`). Returns how many.
    pub async fn drop_before(self: &Arc<Self>, cutoff: i64) -> Result<usize, SealError> {
        if self.columns.get().is_none() {
            return Ok(0);
        }
        let this = self.clone();
        let dropped = tokio::task::spawn_blocking(move || {
            let day = cutoff.div_euclid(DAY);
            let mut dropped = 0;
            for id in this.site_dirs()? {
                dropped += this.columns()?.drop_before(id, day)?;
            }
            Ok::<_, SealError>(dropped)
        })
        .await
        .map_err(|e| SealError::Task(e.to_string()))??;
        if dropped > 0 {
            self.wake.notify_one();
        }
        Ok(dropped)
    }

    /// Deletes a site's store to seal it again from its first day.
    pub(super) fn restart(&self, site_id: i64, why: &str) -> Result<(), SealError> {
        tracing::warn!(
            site_id,
            reason = why,
            "deleting the site's column store to seal it again"
        );
        self.columns()?.remove_site(site_id)?;
        self.tell_late(site_id, None);
        self.mark_provisional(site_id, None)?;
        let mut sites = self.sites.locked();
        *sites.restarts.entry(site_id).or_default() += 1;
        sites.known.remove(&site_id);
        sites.provisional.remove(&site_id);
        sites.building.entry(site_id).or_insert_with(Instant::now);
        Ok(())
    }

    pub(super) fn apply_removals(&self) -> Result<(), SealError> {
        let removed = std::mem::take(&mut self.sites.locked().removed);
        for id in removed {
            self.columns()?.remove_site(id)?;
            self.mark_provisional(id, None)?;
            let mut sites = self.sites.locked();
            sites.known.remove(&id);
            sites.provisional.remove(&id);
            sites.building.remove(&id);
            sites.oversized.remove(&id);
        }
        Ok(())
    }

    /// Deletes every site's store when the database is another one than
    /// the store was sealed from (a copy put in place by hand, a new one in
    /// an old data directory), or another process wrote events since the
    /// store last followed it (they may be in past days).
    pub(super) fn follow_database(&self, conn: &Connection) -> Result<(), SealError> {
        let now_seen = database_state(conn)?;
        if self.sites.locked().follows.as_deref() == Some(now_seen.as_str()) {
            return Ok(());
        }
        let sites = self.site_dirs()?;
        if !sites.is_empty() {
            tracing::warn!(
                "the database is another one, or events were written by another process \
                 (tally demo): sealing every site again"
            );
        }
        for id in sites {
            self.columns()?.remove_site(id)?;
        }
        let path = self.dir.join(FOLLOWS_FILE);
        std::fs::write(&path, &now_seen).map_err(|source| ColumnError::Io {
            path: path.clone(),
            source,
        })?;
        self.clear_marks()?;
        let mut s = self.sites.locked();
        s.follows = Some(now_seen);
        s.known.clear();
        s.provisional.clear();
        Ok(())
    }

    /// The sites with a directory in the store.
    pub(super) fn site_dirs(&self) -> Result<Vec<i64>, SealError> {
        Ok(site_ids(&self.dir)?)
    }
}

/// `tally import` is about to add past days to a site: its store is
/// deleted (the server seals it again at start), under the store's lock: a
/// process holding the store gets [`ColumnError::Busy`] and nothing is
/// deleted. The caller holds the data directory.
pub fn forget_site(data_dir: &Path, site_id: i64) -> Result<(), ColumnError> {
    ColumnStore::open(&data_dir.join(COLUMNS_DIR))?.remove_site(site_id)
}

/// `tally restore` is about to put back another database: the whole store
/// is deleted, under its lock (a process holding it gets
/// [`ColumnError::Busy`] and nothing is deleted). The file naming what the
/// store follows goes first: a store without it is deleted at the next
/// start, so a stop halfway leaves nothing that could answer. A store that
/// cannot be opened is removed whole ([`remove_whole`]). The caller holds
/// the data directory.
pub fn forget_all(data_dir: &Path) -> Result<(), ColumnError> {
    let dir = data_dir.join(COLUMNS_DIR);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(());
    }
    let columns = match ColumnStore::open(&dir) {
        Ok(columns) => columns,
        Err(e @ ColumnError::Busy { .. }) => return Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "the column store cannot be opened: removing it whole");
            return remove_whole(&dir);
        }
    };
    let io = |path: PathBuf| move |source| ColumnError::Io { path, source };
    for name in [FOLLOWS_FILE, LATE_FILE, PROVISIONAL_FILE] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
            _ => {}
        }
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.clone()))?;
    for id in site_ids(&dir)? {
        columns.remove_site(id)?;
    }
    Ok(())
}

/// Deletes a store that cannot be opened (not a directory, unreadable),
/// the file naming what it follows first. Only where no other process can
/// hold it: under the data directory's lock.
pub(super) fn remove_whole(dir: &Path) -> Result<(), ColumnError> {
    let io = |source| ColumnError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::remove_file(dir.join(FOLLOWS_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let removed = if dir.is_dir() {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::remove_file(dir)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
        _ => Ok(()),
    }
}

/// The sites with a directory in the store at `dir`, ascending.
pub(super) fn site_ids(dir: &Path) -> Result<Vec<i64>, ColumnError> {
    let io = |source| ColumnError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        if let Some(id) = name.to_str().and_then(|n| n.parse::<i64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The database and its count of writes by other processes, as the store
/// records what it follows: `"DATABASE_ID EXTERNAL_WRITES"`.
pub(super) fn database_state(conn: &Connection) -> Result<String, StoreError> {
    Ok(format!("{} {}", database_id(conn)?, external_writes(conn)?))
}
