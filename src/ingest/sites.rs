//! Which domains are registered sites, cached briefly so the tracking endpoint
//! does not query the database for every event, yet sees a site added or
//! removed from the CLI within seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{self, Store, StoreError};

const FOUND_TTL: Duration = Duration::from_secs(10);
const MISSING_TTL: Duration = Duration::from_secs(2);
/// Entries kept before the cache is cleared; bounds memory under junk domains.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SiteRef {
    pub id: i64,
    pub domain: String,
}

pub struct SiteDirectory {
    store: Store,
    cache: Mutex<HashMap<String, (Option<SiteRef>, Instant)>>,
}

impl SiteDirectory {
    pub fn new(store: Store) -> SiteDirectory {
        SiteDirectory {
            store,
            cache: Mutex::default(),
        }
    }

    pub fn find(&self, domain: &str) -> Result<Option<SiteRef>, StoreError> {
        if let Some((site, at)) = self.cache.lock().expect("site cache").get(domain) {
            let ttl = if site.is_some() {
                FOUND_TTL
            } else {
                MISSING_TTL
            };
            if at.elapsed() < ttl {
                return Ok(site.clone());
            }
        }
        let site = store::sites::find_site(&*self.store.reader()?, domain)?.map(|s| SiteRef {
            id: s.id,
            domain: s.domain,
        });
        let mut cache = self.cache.lock().expect("site cache");
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(domain.to_string(), (site.clone(), Instant::now()));
        Ok(site)
    }
}
