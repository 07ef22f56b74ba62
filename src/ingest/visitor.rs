//! Cookieless visitor ids: a keyed hash of (daily salt, site, IP, User-Agent).
//!
//! Salts are 32 random bytes from the OS, one per UTC day, stored so ids stay
//! stable across a restart, and deleted once they are two days old: after that
//! nobody, the operator included, can recompute an id from an IP address.
//! Yesterday's salt is kept to carry visits across midnight. An event
//! stamped on an earlier day (`tally demo`) gets that day's ids, from a salt
//! derived for it and never stored, so that ids change daily for it too.

use std::net::IpAddr;
use std::sync::RwLock;

use crate::store::{self, EventWriter};
use crate::sync::ReadWrite;

const SECONDS_PER_DAY: i64 = 86_400;

#[derive(Clone)]
struct Salts {
    day: i64,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

/// Today's id of a visitor, and yesterday's (to continue a visit across midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitorIds {
    pub current: i64,
    pub previous: Option<i64>,
}

pub struct VisitorHasher {
    salts: RwLock<Salts>,
}

#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    #[error("the OS random source failed: {0}")]
    Random(String),
    #[error("storing salt: {0}")]
    Store(String),
}

impl Salts {
    /// The salts of `day` and of the day before. An event stamped before
    /// the current salt's day (`tally demo` replays past days; a clock set
    /// back) gets that day's ids, so a visitor's ids change from day to day
    /// as with live traffic, which the read models count on: yesterday's
    /// salt for yesterday, and for older days a salt derived from the
    /// current one and the day, never stored (it goes with the current
    /// salt).
    fn of_day(&self, day: i64) -> ([u8; 32], Option<[u8; 32]>) {
        if day >= self.day {
            return (self.current, self.previous);
        }
        let salt = |d: i64| match self.previous {
            Some(p) if d == self.day - 1 => p,
            _ => *blake3::keyed_hash(&self.current, &d.to_le_bytes()).as_bytes(),
        };
        (salt(day), Some(salt(day - 1)))
    }
}

fn day_of(unix: i64) -> i64 {
    unix.div_euclid(SECONDS_PER_DAY)
}

fn new_salt() -> Result<[u8; 32], SaltError> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| SaltError::Random(e.to_string()))?;
    Ok(salt)
}

fn to_key(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl VisitorHasher {
    /// Loads or creates today's salt with a direct connection (at start-up,
    /// before the writer runs) and deletes expired ones.
    pub fn load(conn: &crate::store::Db, now: i64) -> Result<VisitorHasher, SaltError> {
        let day = day_of(now);
        let current = store::sites::put_salt(conn, day, &new_salt()?, day - 1)
            .map_err(|e| SaltError::Store(e.to_string()))?;
        let previous = store::sites::load_salts(conn, &[day - 1])
            .map_err(|e| SaltError::Store(e.to_string()))?
            .first()
            .and_then(|(_, s)| to_key(s));
        Ok(VisitorHasher {
            salts: RwLock::new(Salts {
                day,
                current: to_key(&current).ok_or(SaltError::Store("salt of wrong length".into()))?,
                previous,
            }),
        })
    }

    /// The ids of the visitor behind (`domain`, `ip`, `user_agent`) at `now`,
    /// rotating the salt first when a new UTC day has begun.
    pub async fn ids(
        &self,
        writer: &EventWriter,
        domain: &str,
        ip: IpAddr,
        user_agent: &str,
        now: i64,
    ) -> Result<VisitorIds, SaltError> {
        let salts = self.salts.reading().clone();
        let salts = if day_of(now) > salts.day {
            self.rotate(writer, now).await?
        } else {
            salts
        };
        let (current, previous) = salts.of_day(day_of(now));
        Ok(VisitorIds {
            current: hash(&current, domain, ip, user_agent),
            previous: previous.map(|p| hash(&p, domain, ip, user_agent)),
        })
    }

    /// Rotates the salt if a new UTC day has begun.
    pub async fn ensure_current(&self, writer: &EventWriter, now: i64) -> Result<(), SaltError> {
        let day = self.salts.reading().day;
        if day_of(now) > day {
            self.rotate(writer, now).await?;
        }
        Ok(())
    }

    async fn rotate(&self, writer: &EventWriter, now: i64) -> Result<Salts, SaltError> {
        let day = day_of(now);
        let fresh = new_salt()?;
        let stored = writer
            .run_for(move |tx| store::sites::put_salt(tx, day, &fresh, day - 1))
            .await
            .map_err(|e| SaltError::Store(e.to_string()))?;
        let current = to_key(&stored).ok_or(SaltError::Store("salt missing after write".into()))?;
        let mut salts = self.salts.writing();
        if salts.day < day {
            let previous = (salts.day == day - 1).then_some(salts.current);
            *salts = Salts {
                day,
                current,
                previous,
            };
            tracing::info!(day, "rotated visitor-id salt");
        }
        Ok(salts.clone())
    }
}

fn hash(salt: &[u8; 32], domain: &str, ip: IpAddr, user_agent: &str) -> i64 {
    let mut h = blake3::Hasher::new_keyed(salt);
    h.update(domain.as_bytes());
    h.update(&[0]);
    match ip {
        IpAddr::V4(v4) => h.update(&v4.octets()),
        IpAddr::V6(v6) => h.update(&v6.octets()),
    };
    h.update(&[0]);
    h.update(user_agent.as_bytes());
    let hash = h.finalize();
    let bytes: [u8; 8] = std::array::from_fn(|i| hash.as_bytes()[i]);
    // Positive, so ids read the same in SQLite and everywhere else.
    (u64::from_le_bytes(bytes) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events stamped on past days get each day's ids, as live traffic
    /// would have: a visitor's ids differ between days, yesterday's are
    /// those of yesterday's salt, and a visit carries over each midnight.
    #[test]
    fn a_past_day_has_ids_of_its_own() {
        let salts = Salts {
            day: 100,
            current: [1; 32],
            previous: Some([2; 32]),
        };
        assert_eq!(salts.of_day(100), ([1; 32], Some([2; 32])));
        assert_eq!(salts.of_day(101), ([1; 32], Some([2; 32])));
        let (yesterday, before) = salts.of_day(99);
        assert_eq!(yesterday, [2; 32]);
        let (d98, d97) = salts.of_day(98);
        assert_eq!(before, Some(d98));
        assert_ne!(d98, [1; 32]);
        assert_ne!(d98, [2; 32]);
        assert_ne!(Some(d98), d97);
        assert_eq!(salts.of_day(98), (d98, d97));
        let (d97_again, _) = salts.of_day(97);
        assert_eq!(Some(d97_again), d97);
        // Without yesterday's salt, yesterday's is derived too.
        let fresh = Salts {
            previous: None,
            ..salts
        };
        assert_ne!(fresh.of_day(99).0, [2; 32]);
    }

    #[test]
    fn hash_depends_on_every_input() {
        let s = [7u8; 32];
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let base = hash(&s, "a.com", ip, "UA");
        assert_eq!(base, hash(&s, "a.com", ip, "UA"));
        assert_ne!(base, hash(&[8u8; 32], "a.com", ip, "UA"));
        assert_ne!(base, hash(&s, "b.com", ip, "UA"));
        assert_ne!(base, hash(&s, "a.com", "192.0.2.2".parse().unwrap(), "UA"));
        assert_ne!(base, hash(&s, "a.com", ip, "UA2"));
        assert!(base >= 0);
    }
}
