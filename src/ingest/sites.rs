//! Which domains are registered sites, and what each excludes, cached
//! briefly so the tracking endpoint does not query the database for every
//! event, yet sees a site added, removed or changed within seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::store::{self, Store, StoreError};

const FOUND_TTL: Duration = Duration::from_secs(10);
const MISSING_TTL: Duration = Duration::from_secs(2);
/// Entries kept before the cache is cleared; bounds memory under junk domains.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SiteRef {
    pub id: i64,
    pub domain: String,
    pub exclusions: Exclusions,
}

/// Traffic a site does not count: client networks and page path patterns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exclusions {
    pub networks: Vec<IpNet>,
    pub paths: Vec<String>,
}

impl Exclusions {
    /// Parses the stored lists (one entry per line); an entry that does not
    /// parse is a message naming it.
    pub fn parse(ips: &str, paths: &str) -> Result<Exclusions, String> {
        let mut networks = Vec::new();
        for line in ips.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let net = line
                .parse::<IpNet>()
                .or_else(|_| line.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{line} is not an IP address or network like 192.0.2.0/24"))?;
            networks.push(net);
        }
        let mut patterns = Vec::new();
        for line in paths.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !line.starts_with('/') {
                return Err(format!("{line} is not a path pattern starting with /"));
            }
            patterns.push(line.to_string());
        }
        Ok(Exclusions {
            networks,
            paths: patterns,
        })
    }

    pub fn excludes_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }

    pub fn excludes_path(&self, path: &str) -> bool {
        self.paths.iter().any(|p| path_matches(p, path))
    }
}

/// `*` matches within one path segment, `**` across segments (as the
/// tracker's `data-exclude` does).
pub fn path_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| go(&p[2..], &s[i..])),
            Some(b'*') => {
                let seg = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
                (0..=seg).any(|i| go(&p[1..], &s[i..]))
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
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
        let conn = self.store.reader()?;
        let site = match store::sites::find_site(&conn, domain)? {
            Some(s) => {
                let (ips, paths) = store::sites::exclusions(&conn, s.id)?;
                // Stored lists were validated when saved; a line that no
                // longer parses is skipped rather than stopping ingest.
                let exclusions = Exclusions::parse(&ips, &paths).unwrap_or_else(|e| {
                    tracing::warn!(domain = %s.domain, error = %e, "ignoring site exclusions");
                    Exclusions::default()
                });
                Some(SiteRef {
                    id: s.id,
                    domain: s.domain,
                    exclusions,
                })
            }
            None => None,
        };
        let mut cache = self.cache.lock().expect("site cache");
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(domain.to_string(), (site.clone(), Instant::now()));
        Ok(site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns() {
        assert!(path_matches("/admin/*", "/admin/users"));
        assert!(!path_matches("/admin/*", "/admin/users/1"));
        assert!(path_matches("/admin/**", "/admin/users/1"));
        assert!(path_matches("/blog/*/edit", "/blog/post/edit"));
        assert!(path_matches("/exact", "/exact"));
        assert!(!path_matches("/exact", "/exact/more"));
    }

    #[test]
    fn exclusions_parse_and_match() {
        let e = Exclusions::parse("192.0.2.0/24\n\n 2001:db8::1 ", "/admin/**").unwrap();
        assert!(e.excludes_ip("192.0.2.77".parse().unwrap()));
        assert!(e.excludes_ip("2001:db8::1".parse().unwrap()));
        assert!(!e.excludes_ip("198.51.100.1".parse().unwrap()));
        assert!(e.excludes_path("/admin/x/y"));
        assert!(
            Exclusions::parse("nonsense", "")
                .unwrap_err()
                .contains("nonsense")
        );
        assert!(Exclusions::parse("", "admin").is_err());
    }
}
