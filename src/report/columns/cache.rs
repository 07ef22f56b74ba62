//! The views reports start from: at most one per site, the newest commit's,
//! least recently used dropped past a cap on the files they keep mapped.
//!
//! A report that finds no view reads the site file and maps a view itself,
//! outside any lock; an append may commit meanwhile. So the cache counts
//! each site's commits, and keeps a view a report opened only if no commit
//! of its site came between reading the site file and offering the view:
//! a view older than the newest commit is never cached (an append numbers
//! nothing from a view, but reports would go on reading the old commit).
//! Commits replace or drop the cached view themselves.

use std::collections::HashMap;
use std::sync::Arc;

use super::site::SiteView;

/// Files the cached views may keep mapped together. Each map is an entry
/// of the process's memory map (Linux allows 65 530 by default); views a
/// running report still holds are not counted. A single view larger than
/// this is still kept, alone.
pub(super) const MAX_MAPPED: usize = 8192;

struct Cached {
    /// `None`: nothing sealed for the site.
    view: Option<Arc<SiteView>>,
    used: u64,
}

fn files(view: &Option<Arc<SiteView>>) -> usize {
    view.as_ref().map_or(0, |v| v.files())
}

pub(super) struct ViewCache {
    sites: HashMap<i64, Cached>,
    /// Commits per site since the store opened.
    commits: HashMap<i64, u64>,
    tick: u64,
    mapped: usize,
    max_mapped: usize,
}

impl ViewCache {
    pub(super) fn new(max_mapped: usize) -> ViewCache {
        ViewCache {
            sites: HashMap::new(),
            commits: HashMap::new(),
            tick: 0,
            mapped: 0,
            max_mapped,
        }
    }

    /// The cached view of a site, if any (`Some(None)`: nothing sealed).
    pub(super) fn get(&mut self, site_id: i64) -> Option<Option<Arc<SiteView>>> {
        self.tick += 1;
        let c = self.sites.get_mut(&site_id)?;
        c.used = self.tick;
        Some(c.view.clone())
    }

    /// The count of a site's commits, to hand back to [`ViewCache::offer`].
    pub(super) fn commits(&self, site_id: i64) -> u64 {
        self.commits.get(&site_id).copied().unwrap_or(0)
    }

    /// A view a report opened after seeing `commits`: cached if no commit
    /// came since and none is cached. Returns the view to read: the cached
    /// one when there is one of the same commit, else `view`.
    pub(super) fn offer(
        &mut self,
        site_id: i64,
        commits: u64,
        view: Option<Arc<SiteView>>,
    ) -> Option<Arc<SiteView>> {
        if self.commits(site_id) != commits {
            return view;
        }
        if let Some(cached) = self.get(site_id) {
            return cached;
        }
        self.put(site_id, view.clone());
        view
    }

    /// A commit of a site: `view` is its view, or `None` to leave the next
    /// report to open it. Replaces whatever was cached.
    pub(super) fn committed(&mut self, site_id: i64, view: Option<Arc<SiteView>>) {
        *self.commits.entry(site_id).or_insert(0) += 1;
        self.drop_site(site_id);
        if let Some(view) = view {
            self.put(site_id, Some(view));
        }
    }

    fn drop_site(&mut self, site_id: i64) {
        if let Some(old) = self.sites.remove(&site_id) {
            self.mapped -= files(&old.view);
        }
    }

    fn put(&mut self, site_id: i64, view: Option<Arc<SiteView>>) {
        self.tick += 1;
        self.mapped += files(&view);
        self.sites.insert(
            site_id,
            Cached {
                view,
                used: self.tick,
            },
        );
        while self.mapped > self.max_mapped {
            let oldest = self
                .sites
                .iter()
                .filter(|(id, c)| **id != site_id && files(&c.view) > 0)
                .min_by_key(|(_, c)| c.used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.drop_site(id),
                None => break,
            }
        }
    }

    /// Files the cached views keep mapped.
    #[cfg(test)]
    pub(super) fn mapped(&self) -> usize {
        self.mapped
    }

    /// Puts a view in the cache as it is, current or not.
    #[cfg(test)]
    pub(super) fn force(&mut self, site_id: i64, view: Option<Arc<SiteView>>) {
        self.drop_site(site_id);
        self.put(site_id, view);
    }
}
