//! Sign-in attempts limited in memory (addresses are never written anywhere).
//!
//! An attempt is counted before its password is checked, in the same step
//! as the limits are read, so parallel requests cannot check more passwords
//! than the limits allow. Limits are kept per (account, client network), so
//! strangers guessing from their networks cannot keep the account's owner
//! out of theirs; per network over every account; and per account over
//! every network, where a growing but capped delay slows guessing spread
//! over many networks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use ipnet::IpNet;

/// Attempts per account from one network, every [`WINDOW_SECS`]: enough
/// for an owner's typos, too few to guess a password.
pub const PAIR_ATTEMPTS: u32 = 5;
/// Attempts from one network over every account, every [`WINDOW_SECS`]:
/// one office or household signing in to several accounts stays well
/// under it; a network trying many emails does not.
pub const NETWORK_ATTEMPTS: u32 = 20;
pub const WINDOW_SECS: i64 = 15 * 60;
/// Attempts per account over every network, every [`ACCOUNT_WINDOW_SECS`],
/// before the back-off starts: four networks' worth of [`PAIR_ATTEMPTS`],
/// so an owner moving between home, office and phone never meets it.
pub const ACCOUNT_FREE_ATTEMPTS: u32 = 20;
pub const ACCOUNT_WINDOW_SECS: i64 = 60 * 60;
/// Past the free attempts, each attempt on the account (from a network it
/// was not signed in from lately) must wait this long after the previous
/// one, doubling each time up to [`BACKOFF_MAX_SECS`]. The cap bounds how
/// long strangers can make the owner wait: they have to keep guessing to
/// take each slot, and the owner's network of a recent sign-in skips the
/// back-off altogether. At the cap, guessing spread over any number of
/// networks gets at most 20 + 60 attempts an hour.
pub const BACKOFF_FIRST_SECS: i64 = 2;
pub const BACKOFF_MAX_SECS: i64 = 60;
/// A network the account signed in from within this long skips the
/// account's back-off (not the other limits).
pub const KNOWN_NETWORK_SECS: i64 = 30 * 86_400;
/// Entries per map. An entry is created only by an attempt whose password
/// is then checked (two at a time, about 20 ms each: at most some 100 a
/// second), so the maps fill only while the hashing slots are taken anyway.
/// When a map is full of live entries, attempts that need a new entry are
/// refused: forgetting live ones would let an attacker reset their own
/// counters by filling the map.
const MAX_ENTRIES: usize = 100_000;
/// Networks with a recent sign-in: added only by a right password, so the
/// oldest goes when full.
const MAX_KNOWN: usize = 10_000;
/// Emails are cut to this many bytes before they become keys (no valid
/// address is longer), and keys are hashes of a fixed size.
const MAX_ACCOUNT_BYTES: usize = super::MAX_EMAIL_BYTES;

/// A hash of the lowercased, bounded email.
type Account = [u8; 16];
/// The client's /24 (IPv4) or /64 (IPv6); `None` for a client without an
/// address, which all share one.
type Network = Option<IpNet>;

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`PAIR_ATTEMPTS`] for this account from this network.
    AccountFromNetwork,
    /// [`NETWORK_ATTEMPTS`] from this network.
    Network,
    /// The account's back-off: the next attempt is allowed at `until`.
    Backoff { until: i64 },
    /// The limiter is full of live entries.
    Full,
}

/// A counted attempt, handed back with its outcome. Dropped without one, it
/// stays counted, like a wrong password.
#[must_use]
#[derive(Debug)]
pub struct Attempt {
    account: Account,
    network: Network,
    /// When each counter's window began, so that handing the attempt back
    /// after a window ended changes nothing.
    pair_since: i64,
    network_since: i64,
    account_since: i64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    since: i64,
    count: u32,
}

impl Window {
    fn live(&self, now: i64, window: i64) -> bool {
        self.count > 0 && now - self.since < window
    }

    /// The count in the current window, after starting a new one if due.
    fn current(&mut self, now: i64, window: i64) -> u32 {
        if now - self.since >= window {
            *self = Window {
                since: now,
                count: 0,
            };
        }
        self.count
    }

    fn refund(&mut self, since: i64) {
        if self.since == since {
            self.count = self.count.saturating_sub(1);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct AccountState {
    window: Window,
    /// Past the free attempts: no attempt before this.
    next_at: i64,
    /// Attempts past the free ones in this window; the next delay doubles
    /// with each.
    over: u32,
}

impl AccountState {
    fn live(&self, now: i64) -> bool {
        self.window.live(now, ACCOUNT_WINDOW_SECS) || now < self.next_at
    }
}

/// A map of counters that refuses a new key rather than forget a live one.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    /// When expired entries were last dropped: while the map stays full of
    /// live entries, at most once a second, so refusals stay cheap.
    purged_at: Option<i64>,
}

impl<K, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            purged_at: None,
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Bounded<K, V> {
    /// Whether `key` has an entry or one can be added.
    fn has_room(&mut self, key: &K, max: usize, now: i64, live: impl Fn(&V) -> bool) -> bool {
        if self.map.contains_key(key) || self.map.len() < max {
            return true;
        }
        if self.purged_at != Some(now) {
            self.purged_at = Some(now);
            self.map.retain(|_, v| live(v));
        }
        self.map.len() < max
    }
}

#[derive(Debug, Default)]
struct Limits {
    pairs: Bounded<(Account, Network), Window>,
    networks: Bounded<Network, Window>,
    accounts: Bounded<Account, AccountState>,
    /// (account, network) → the time of its last sign-in.
    known: HashMap<(Account, Network), i64>,
}

/// Counts sign-in attempts; see the module's description.
pub struct LoginLimiter {
    inner: Mutex<Limits>,
    max_entries: usize,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::with_max_entries(MAX_ENTRIES)
    }
}

/// The network `ip` belongs to for limits: a household or office usually
/// holds one IPv4 address or one IPv6 /64, and an attacker holds many
/// addresses within them as cheaply as one.
pub fn network_of(ip: IpAddr) -> IpNet {
    let ip = ip.to_canonical();
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

fn account_key(email: &str) -> Account {
    let email = email.trim();
    let mut end = email.len().min(MAX_ACCOUNT_BYTES);
    while !email.is_char_boundary(end) {
        end -= 1;
    }
    let hash = blake3::hash(email[..end].to_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.as_bytes()[..16]);
    key
}

/// The delay after the `over`-th attempt past the free ones.
fn backoff(over: u32) -> i64 {
    let doublings = over.saturating_sub(1).min(16);
    (BACKOFF_FIRST_SECS << doublings).min(BACKOFF_MAX_SECS)
}

impl LoginLimiter {
    fn with_max_entries(max_entries: usize) -> LoginLimiter {
        LoginLimiter {
            inner: Mutex::default(),
            max_entries,
        }
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an attempt to sign in to `account` from `ip`, or refuses it.
    /// Reading the limits and counting are one step under one lock.
    pub fn begin(&self, ip: Option<IpAddr>, account: &str, now: i64) -> Result<Attempt, Refusal> {
        let account = account_key(account);
        let network = ip.map(network_of);
        let pair = (account, network);
        let max = self.max_entries;
        let mut l = self.limits();
        let known = l
            .known
            .get(&pair)
            .is_some_and(|at| now - at < KNOWN_NETWORK_SECS);
        let fresh = Window {
            since: now,
            count: 0,
        };
        let mut pair_w = l.pairs.map.get(&pair).copied().unwrap_or(fresh);
        if pair_w.current(now, WINDOW_SECS) >= PAIR_ATTEMPTS {
            return Err(Refusal::AccountFromNetwork);
        }
        let mut net_w = l.networks.map.get(&network).copied().unwrap_or(fresh);
        if net_w.current(now, WINDOW_SECS) >= NETWORK_ATTEMPTS {
            return Err(Refusal::Network);
        }
        let mut acc = l
            .accounts
            .map
            .get(&account)
            .copied()
            .unwrap_or(AccountState {
                window: fresh,
                next_at: 0,
                over: 0,
            });
        if now - acc.window.since >= ACCOUNT_WINDOW_SECS {
            acc.over = 0;
        }
        acc.window.current(now, ACCOUNT_WINDOW_SECS);
        let backing_off = acc.window.count >= ACCOUNT_FREE_ATTEMPTS && !known;
        if backing_off && now < acc.next_at {
            return Err(Refusal::Backoff { until: acc.next_at });
        }
        let room = l
            .pairs
            .has_room(&pair, max, now, |w| w.live(now, WINDOW_SECS))
            && l.networks
                .has_room(&network, max, now, |w| w.live(now, WINDOW_SECS))
            && l.accounts.has_room(&account, max, now, |a| a.live(now));
        if !room {
            return Err(Refusal::Full);
        }
        pair_w.count += 1;
        net_w.count += 1;
        acc.window.count += 1;
        if backing_off {
            acc.over += 1;
            acc.next_at = now + backoff(acc.over);
        }
        l.pairs.map.insert(pair, pair_w);
        l.networks.map.insert(network, net_w);
        l.accounts.map.insert(account, acc);
        Ok(Attempt {
            account,
            network,
            pair_since: pair_w.since,
            network_since: net_w.since,
            account_since: acc.window.since,
        })
    }

    /// A wrong password (or email): the attempt stays counted.
    pub fn failed(&self, attempt: Attempt) {
        drop(attempt);
    }

    /// The password was never checked (no hashing slot in time): the
    /// attempt is handed back.
    pub fn not_checked(&self, attempt: Attempt) {
        let mut l = self.limits();
        Self::refund(&mut l, &attempt);
    }

    /// The right password: the account's failures from this network are
    /// cleared, and this network skips the account's back-off from now on
    /// (see [`KNOWN_NETWORK_SECS`]). Failures counted for the network and
    /// for the account elsewhere stay, so a right password for one account
    /// does not reset guessing at another.
    pub fn succeeded(&self, attempt: Attempt, now: i64) {
        let mut l = self.limits();
        Self::refund(&mut l, &attempt);
        let pair = (attempt.account, attempt.network);
        l.pairs.map.remove(&pair);
        if l.known.len() >= MAX_KNOWN && !l.known.contains_key(&pair) {
            l.known.retain(|_, at| now - *at < KNOWN_NETWORK_SECS);
            if l.known.len() >= MAX_KNOWN {
                let oldest = l.known.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    l.known.remove(&k);
                }
            }
        }
        l.known.insert(pair, now);
    }

    fn refund(l: &mut Limits, a: &Attempt) {
        if let Some(w) = l.pairs.map.get_mut(&(a.account, a.network)) {
            w.refund(a.pair_since);
        }
        if let Some(w) = l.networks.map.get_mut(&a.network) {
            w.refund(a.network_since);
        }
        if let Some(s) = l.accounts.map.get_mut(&a.account) {
            s.window.refund(a.account_since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn parallel_attempts_never_exceed_the_limit() {
        let l = Arc::new(LoginLimiter::default());
        let barrier = Arc::new(Barrier::new(40));
        let threads: Vec<_> = (0..40)
            .map(|i| {
                let (l, barrier) = (l.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // Different hosts of one network, one account.
                    l.begin(ip(&format!("203.0.113.{i}")), "owner@example.com", 0)
                        .map(|a| l.failed(a))
                        .is_ok()
                })
            })
            .collect();
        let counted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(counted, PAIR_ATTEMPTS as usize);
    }

    #[test]
    fn strangers_cannot_lock_the_owner_out_of_another_network() {
        let l = LoginLimiter::default();
        for i in 0..PAIR_ATTEMPTS {
            let a = l.begin(ip(&format!("203.0.113.{i}")), "Owner@Example.com", 0);
            l.failed(a.unwrap());
        }
        assert_eq!(
            l.begin(ip("203.0.113.200"), "owner@example.com", 1).err(),
            Some(Refusal::AccountFromNetwork),
            "the whole /24, any case of the email"
        );
        // The owner, elsewhere: a typo, then the right password.
        let owner = ip("198.51.100.7");
        l.failed(l.begin(owner, "owner@example.com", 2).unwrap());
        let a = l.begin(owner, "owner@example.com", 3).unwrap();
        l.succeeded(a, 3);
        // That cleared the owner's network only.
        for _ in 0..PAIR_ATTEMPTS {
            l.failed(l.begin(owner, "owner@example.com", 4).unwrap());
        }
        assert!(l.begin(ip("203.0.113.1"), "owner@example.com", 5).is_err());
        // Other accounts from the strangers' network still work, and every
        // limit ends with its window.
        assert!(l.begin(ip("203.0.113.1"), "other@example.com", 5).is_ok());
        assert!(
            l.begin(ip("203.0.113.1"), "owner@example.com", WINDOW_SECS)
                .is_ok()
        );
        // IPv6: the /64.
        for _ in 0..PAIR_ATTEMPTS {
            l.failed(
                l.begin(ip("2001:db8:1:2::1"), "owner@example.com", 0)
                    .unwrap(),
            );
        }
        assert!(
            l.begin(ip("2001:db8:1:2:ffff::9"), "owner@example.com", 1)
                .is_err()
        );
        assert!(
            l.begin(ip("2001:db8:1:3::1"), "owner@example.com", 1)
                .is_ok()
        );
    }

    #[test]
    fn one_network_cannot_try_many_accounts() {
        let l = LoginLimiter::default();
        for i in 0..NETWORK_ATTEMPTS {
            l.failed(
                l.begin(ip("203.0.113.9"), &format!("{i}@example.com"), 0)
                    .unwrap(),
            );
        }
        assert_eq!(
            l.begin(ip("203.0.113.10"), "new@example.com", 1).err(),
            Some(Refusal::Network)
        );
        assert!(l.begin(ip("198.51.100.1"), "new@example.com", 1).is_ok());
    }

    #[test]
    fn guessing_from_many_networks_backs_off_within_a_bound() {
        let l = LoginLimiter::default();
        let account = "owner@example.com";
        // The owner signed in from home last week.
        let home = ip("192.0.2.50");
        l.succeeded(l.begin(home, account, -7 * 86_400).unwrap(), -7 * 86_400);
        // A botnet, one attempt per network.
        let bot = |n: u32| ip(&format!("10.{}.{}.1", n / 256, n % 256));
        for n in 0..ACCOUNT_FREE_ATTEMPTS {
            l.failed(l.begin(bot(n), account, 0).unwrap());
        }
        // Then one attempt per delay, doubling up to the cap.
        let (mut now, mut n, mut delays) = (0, 100, Vec::new());
        for _ in 0..10 {
            l.failed(l.begin(bot(n), account, now).unwrap());
            let Err(Refusal::Backoff { until }) = l.begin(bot(n + 1), account, now) else {
                panic!("no back-off at {now}");
            };
            assert!(l.begin(bot(n + 2), account, until - 1).is_err());
            delays.push(until - now);
            now = until;
            n += 3;
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
        // The owner's network of a recent sign-in skips the back-off.
        let a = l.begin(home, account, now - 1).unwrap();
        l.succeeded(a, now - 1);
        // A new network of the owner's waits at most the cap, and once the
        // guessing stops, the back-off ends with the account's window.
        assert!(
            l.begin(ip("198.51.100.7"), account, now + BACKOFF_MAX_SECS)
                .is_ok()
        );
        let later = ACCOUNT_WINDOW_SECS + BACKOFF_MAX_SECS * 2;
        for i in 0..ACCOUNT_FREE_ATTEMPTS {
            let a = l.begin(bot(1000 + i), account, later);
            assert!(a.is_ok(), "attempt {i} after the window");
            l.failed(a.unwrap());
        }
    }

    #[test]
    fn a_full_limiter_refuses_new_keys_instead_of_forgetting_live_ones() {
        let l = LoginLimiter::with_max_entries(4);
        let net = |i: u32| ip(&format!("10.0.{i}.1"));
        for i in 0..4 {
            l.failed(l.begin(net(i), &format!("{i}@example.com"), 0).unwrap());
        }
        assert_eq!(
            l.begin(net(9), "9@example.com", 1).err(),
            Some(Refusal::Full)
        );
        // Live counters are kept: the first pair runs out as it would have.
        for _ in 1..PAIR_ATTEMPTS {
            l.failed(l.begin(net(0), "0@example.com", 2).unwrap());
        }
        assert_eq!(
            l.begin(net(0), "0@example.com", 3).err(),
            Some(Refusal::AccountFromNetwork)
        );
        // Expired entries make room. The accounts' window is the longest.
        assert_eq!(
            l.begin(net(9), "9@example.com", WINDOW_SECS).err(),
            Some(Refusal::Full)
        );
        assert!(
            l.begin(net(9), "9@example.com", ACCOUNT_WINDOW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn keys_are_bounded_and_attempts_not_checked_are_handed_back() {
        let l = LoginLimiter::default();
        let long = format!("{}@example.com", "a".repeat(100_000));
        for _ in 0..PAIR_ATTEMPTS {
            l.failed(l.begin(ip("203.0.113.1"), &long, 0).unwrap());
        }
        assert!(l.begin(ip("203.0.113.1"), &long.to_uppercase(), 0).is_err());
        assert_eq!(account_key(&long).len(), 16);
        let other = "b@example.com";
        for _ in 0..PAIR_ATTEMPTS - 1 {
            l.failed(l.begin(None, other, 0).unwrap());
        }
        let last = l.begin(None, other, 0).unwrap();
        assert!(l.begin(None, other, 0).is_err());
        l.not_checked(last);
        assert!(l.begin(None, other, 0).is_ok());
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let n = |s: &str| network_of(s.parse().unwrap()).to_string();
        assert_eq!(n("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(n("::ffff:203.0.113.77"), "203.0.113.0/24");
        assert_eq!(n("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
