//! Which domains are registered sites, and what each excludes, cached
//! briefly so the tracking endpoint does not query the database for every
//! event, yet sees a site added, removed or changed within seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use crate::store::{self, Store, StoreError};
use crate::sync::Lock;

const FOUND_TTL: Duration = Duration::from_secs(10);
const MISSING_TTL: Duration = Duration::from_secs(2);
/// Entries kept before the cache is cleared; bounds memory under junk domains.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SiteRef {
    pub id: i64,
    pub domain: String,
    pub exclusions: Exclusions,
}

/// Path patterns a site may keep, and the characters of each: bounds on
/// the work of compiling them (once per site load) and on the settings form.
pub const MAX_PATTERNS: usize = 100;
pub const MAX_PATTERN_CHARS: usize = 200;

/// Traffic a site does not count: client networks and page path patterns.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    pub networks: Vec<IpNet>,
    pub paths: PathPatterns,
}

impl Exclusions {
    /// Parses the stored lists (one entry per line); an entry that does not
    /// parse, or a list over the limits, is a message naming it.
    pub fn parse(ips: &str, paths: &str) -> Result<Exclusions, String> {
        Ok(Exclusions {
            networks: parse_networks(ips)?,
            paths: PathPatterns::parse(paths)?,
        })
    }

    pub fn excludes_ip(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }

    pub fn excludes_path(&self, path: &str) -> bool {
        self.paths.matches(path)
    }
}

fn parse_networks(ips: &str) -> Result<Vec<IpNet>, String> {
    let mut networks = Vec::new();
    for line in ips.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let net = line
            .parse::<IpNet>()
            .or_else(|_| line.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("{line} is not an IP address or network like 192.0.2.0/24"))?;
        networks.push(net);
    }
    Ok(networks)
}

/// A site's path patterns, compiled once into one regular expression when
/// the site is loaded: `*` matches within one path segment, `**` across
/// segments (as the tracker's `data-exclude` does), anything else itself.
/// The regex crate matches in time linear in the path whatever the
/// patterns; a backtracking matcher took seconds on `/*a*a*…*b` and a
/// 30-character path, on the worker answering the event.
#[derive(Debug, Clone, Default)]
pub struct PathPatterns {
    /// `None` without patterns.
    regex: Option<Regex>,
}

impl PathPatterns {
    /// One pattern per line; blank lines are skipped.
    pub fn parse(list: &str) -> Result<PathPatterns, String> {
        let lines: Vec<&str> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return Ok(PathPatterns::default());
        }
        if lines.len() > MAX_PATTERNS {
            return Err(format!(
                "Paths: at most {MAX_PATTERNS} patterns, not {}",
                lines.len()
            ));
        }
        let mut source = String::from("^(?:");
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with('/') {
                return Err(format!("{line} is not a path pattern starting with /"));
            }
            if line.chars().count() > MAX_PATTERN_CHARS {
                return Err(format!(
                    "Paths: a pattern is longer than {MAX_PATTERN_CHARS} characters"
                ));
            }
            if i > 0 {
                source.push('|');
            }
            push_glob(&mut source, line);
        }
        source.push_str(")$");
        // Bytes, as paths are compared: `[^/]` is any byte but `/`, and
        // `.` any byte at all.
        let regex = RegexBuilder::new(&source)
            .unicode(false)
            .dot_matches_new_line(true)
            .build()
            .map_err(|e| format!("Paths: the patterns cannot be compiled ({e})"))?;
        Ok(PathPatterns { regex: Some(regex) })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.regex
            .as_ref()
            .is_some_and(|r| r.is_match(path.as_bytes()))
    }
}

/// Appends `pattern` as a regular expression: `**` is `.*`, `*` is `[^/]*`,
/// every other character is literal.
fn push_glob(out: &mut String, pattern: &str) {
    let mut rest = pattern;
    while let Some(i) = rest.find('*') {
        out.push_str(&regex::escape(&rest[..i]));
        rest = &rest[i + 1..];
        match rest.strip_prefix('*') {
            Some(after) => {
                out.push_str(".*");
                rest = after;
            }
            None => out.push_str("[^/]*"),
        }
    }
    out.push_str(&regex::escape(rest));
}

/// Whether `path` matches the one `pattern`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    PathPatterns::parse(pattern).is_ok_and(|p| p.matches(path))
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
        if let Some((site, at)) = self.cache.locked().get(domain) {
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
                // Stored lists were checked when saved; one that no longer
                // parses (or breaks a limit added since) is skipped with a
                // warning rather than stopping ingest, each list apart.
                let ignore = |list: &str, e: String| {
                    tracing::warn!(domain = %s.domain, error = %e, "ignoring the site's excluded {list}");
                };
                let exclusions = Exclusions {
                    networks: parse_networks(&ips).unwrap_or_else(|e| {
                        ignore("addresses", e);
                        Vec::new()
                    }),
                    paths: PathPatterns::parse(&paths).unwrap_or_else(|e| {
                        ignore("paths", e);
                        PathPatterns::default()
                    }),
                };
                Some(SiteRef {
                    id: s.id,
                    domain: s.domain,
                    exclusions,
                })
            }
            None => None,
        };
        let mut cache = self.cache.locked();
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

    /// Runs `f` on a thread and fails if it takes more than 10 seconds: a
    /// safety net only, since a linear matcher takes microseconds.
    fn within_ten_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the match did not finish within 10 seconds")
    }

    #[test]
    fn a_pathological_pattern_matches_a_long_path_in_linear_time() {
        let pattern = "/*a*a*a*a*a*a*a*a*a*a*a*b";
        let e = Exclusions::parse("", pattern).unwrap();
        let long = format!("/{}", "a".repeat(10_000));
        let (excluded, also) = within_ten_seconds(move || {
            (e.excludes_path(&long), e.excludes_path(&format!("{long}b")))
        });
        assert!(!excluded);
        assert!(also);
        let across = Exclusions::parse("", "/**a**a**a**a**a**a**a**a**a**a**b").unwrap();
        let deep = format!("/{}", "a/".repeat(5_000));
        assert!(!within_ten_seconds(move || across.excludes_path(&deep)));
        // The most a site may save: every pattern as long and as starry as
        // allowed, each a little different.
        let worst: Vec<String> = (0..MAX_PATTERNS)
            .map(|i| {
                let mut p = format!("/{i}");
                while p.len() + 2 < MAX_PATTERN_CHARS {
                    p.push_str(if p.len() % 3 == 0 { "**a" } else { "*a" });
                }
                p.push('b');
                p
            })
            .collect();
        let worst = Exclusions::parse("", &worst.join("\n")).unwrap();
        let long = format!("/1{}", "a/".repeat(5_000));
        assert!(!within_ten_seconds(move || worst.excludes_path(&long)));
    }

    #[test]
    fn pattern_lists_are_bounded() {
        let long = format!("/{}", "x".repeat(MAX_PATTERN_CHARS));
        let e = Exclusions::parse("", &long).unwrap_err();
        assert!(e.contains("Paths"), "{e}");
        let fine = format!("/{}", "x".repeat(MAX_PATTERN_CHARS - 1));
        assert!(Exclusions::parse("", &fine).unwrap().excludes_path(&fine));
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("/p{i}")).collect();
        let e = Exclusions::parse("", &many.join("\n")).unwrap_err();
        assert!(e.contains("Paths"), "{e}");
        assert!(Exclusions::parse("", &many[1..].join("\n")).is_ok());
        // Characters a regex would read are literal here.
        let odd = Exclusions::parse("", "/a.b/(x)+?/[c]/*").unwrap();
        assert!(odd.excludes_path("/a.b/(x)+?/[c]/d"));
        assert!(!odd.excludes_path("/axb/(x)+?/[c]/d"));
        let accents = Exclusions::parse("", "/café/*").unwrap();
        assert!(accents.excludes_path("/café/menü"));
        assert!(!accents.excludes_path("/cafe/menu"));
    }

    #[test]
    fn a_stored_list_over_the_limits_is_ignored_not_the_addresses() {
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(data.path(), 1).unwrap();
        let conn = store.write_connection().unwrap();
        let site = store::sites::add_site(&conn, "example.com", "UTC", false).unwrap();
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("/p{i}")).collect();
        store::sites::set_exclusions(&conn, site.id, "192.0.2.0/24", &many.join("\n")).unwrap();
        let found = SiteDirectory::new(store)
            .find("example.com")
            .unwrap()
            .unwrap();
        assert!(!found.exclusions.excludes_path("/p1"));
        assert!(found.exclusions.excludes_ip("192.0.2.1".parse().unwrap()));
    }
}
