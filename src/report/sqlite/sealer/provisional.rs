//! Which sites' newest sealed day is provisional, kept in
//! `columns/provisional` (a line `SITE DAY` per site) so that a restart,
//! however late, still seals such a day for the last time: it is marked
//! before the seal that leaves it provisional is committed and unmarked
//! after its last seal, so a stop between the two costs at most one seal
//! more, never a missed one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::late::{parse, write_notes};
use super::{SealError, Sealer};
use crate::report::columns::ColumnError;
use crate::sync::Lock;

/// The file in the store's directory.
pub(super) const PROVISIONAL_FILE: &str = "provisional";

impl Sealer {
    fn provisional_file(&self) -> PathBuf {
        self.dir.join(PROVISIONAL_FILE)
    }

    /// The marks a previous run left (none when the file cannot be read:
    /// logged).
    pub(super) fn read_marks(&self) -> BTreeMap<i64, i64> {
        let file = self.provisional_file();
        match std::fs::read_to_string(&file) {
            Ok(text) => parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %file.display(), error = %e, "cannot read which column store days are provisional");
                BTreeMap::new()
            }
        }
    }

    /// Marks a site's provisional `day` (`None`: none), on disk when that
    /// changes anything.
    pub(super) fn mark_provisional(&self, site_id: i64, day: Option<i64>) -> Result<(), SealError> {
        let mut sites = self.sites.locked();
        let before = match day {
            Some(day) => sites.marked.insert(site_id, day),
            None => sites.marked.remove(&site_id),
        };
        if before == day {
            return Ok(());
        }
        self.save_marks(&sites.marked)
    }

    /// Forgets every mark (every site's store was deleted).
    pub(super) fn clear_marks(&self) -> Result<(), SealError> {
        let mut sites = self.sites.locked();
        sites.marked.clear();
        self.save_marks(&sites.marked)
    }

    fn save_marks(&self, marks: &BTreeMap<i64, i64>) -> Result<(), SealError> {
        let path = self.provisional_file();
        write_notes(&path, marks).map_err(|source| ColumnError::Io { path, source })?;
        Ok(())
    }
}
