//! Sign-in attempts limited in memory (addresses are never written anywhere).
//!
//! An attempt is counted before its password is checked, in the same step
//! as the limits are read, so parallel requests cannot check more passwords
//! than the limits allow. Limits are kept per (account, client network), so
//! strangers guessing from their networks cannot keep the account's owner
//! out of theirs; per network over every account; and per account over
//! every network, where a growing but capped delay slows guessing spread
//! over many networks.
//!
//! A browser that signed in to the account before shows it with a device
//! token (see `crate::store::devices`). An attempt with a valid one for the
//! account it signs in to meets none of those limits: it is limited per
//! token instead ([`DEVICE_ATTEMPTS`]), so strangers guessing from any
//! number of networks cannot keep the owner's browsers out, and a stolen
//! device cookie is worth a handful of guesses.
//!
//! A refused attempt counts against its network's quota like a checked
//! one, so polling for the account's next back-off slot burns the
//! poller's own networks. Only attempts from a network count against it,
//! so strangers elsewhere cannot spend the owner's network's quota.
//!
//! Only accounts that exist get entries of their own, so their number is
//! bounded by the users. An email without an account is counted inside its
//! network's entry, as an account from that network would be (the answers
//! must not tell which emails have accounts), so made-up emails cannot fill
//! the maps and keep the owners out.

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
/// one, doubling each time up to [`BACKOFF_MAX_SECS`]. At the cap, guessing
/// spread over any number of networks gets at most 20 + 60 attempts an
/// hour. The cap does not bound how long the owner waits: strangers polling
/// from many networks can take every slot the moment it opens, so a browser
/// without a device token, on a network without a recent sign-in, may be
/// refused for as long as they keep at it.
pub const BACKOFF_FIRST_SECS: i64 = 2;
pub const BACKOFF_MAX_SECS: i64 = 60;
/// A network the account signed in from within this long skips the
/// account's back-off (not the other limits). Kept in memory only, so it
/// helps a browser without a device token (a first sign-in since its
/// cookies were cleared) until the next restart; the device token is what
/// keeps the owner in through an attack and a restart.
pub const KNOWN_NETWORK_SECS: i64 = 30 * 86_400;
/// Attempts with one device token, every [`WINDOW_SECS`]; past them the
/// token is refused until its window ends (it does not fall back to the
/// other limits, which would give a thief both).
pub const DEVICE_ATTEMPTS: u32 = 5;
/// Entries per map. Accounts and (account, network) pairs are only those
/// of existing accounts; when their map is full of live entries, attempts
/// that need a new entry are refused (except from a network of a recent
/// sign-in): forgetting live ones would let guessers reset their own
/// counters. Networks are not bounded by the users, so when their map is
/// full of live entries the oldest are forgotten instead: whoever holds
/// that many networks has that many networks' quotas anyway, and the
/// per-account limits still hold.
const MAX_ENTRIES: usize = 100_000;
/// Emails without an account tried from one network and still counted:
/// every live one started within the last [`WINDOW_SECS`], which spans at
/// most two of the network's windows of [`NETWORK_ATTEMPTS`] each.
const MAX_STRANGERS: usize = 2 * NETWORK_ATTEMPTS as usize;
/// Networks with a recent sign-in: added only by a right password, so the
/// oldest goes when full.
const MAX_KNOWN: usize = 10_000;
/// Emails are cut to this many bytes before they become keys (no valid
/// address is longer), and keys are hashes of a fixed size.
const MAX_ACCOUNT_BYTES: usize = super::MAX_EMAIL_BYTES;

/// A hash of the lowercased, bounded email.
type Account = [u8; 16];
/// A device token's key: the start of its stored hash.
pub type Device = [u8; 16];
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
    /// [`DEVICE_ATTEMPTS`] with this device token.
    Device,
}

/// A counted attempt, handed back with its outcome. Dropped without one, it
/// stays counted, like a wrong password.
#[must_use]
#[derive(Debug)]
pub struct Attempt {
    account: Account,
    network: Network,
    /// For an email without an account, counted in its network's entry.
    stranger: bool,
    /// Made with a valid device token: counted in its entry only.
    device: Option<Device>,
    /// When each counter's window began, so that handing the attempt back
    /// after a window ended changes nothing.
    pair_since: i64,
    network_since: i64,
    account_since: i64,
    device_since: i64,
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

/// A network's attempts, and those at emails without an account from it.
#[derive(Debug, Clone)]
struct NetworkState {
    window: Window,
    /// Each email without an account tried from here, with its count as an
    /// account from this network would have: kept here, so that made-up
    /// emails add no entries of their own. At most [`MAX_STRANGERS`].
    strangers: Vec<(Account, Window)>,
}

impl NetworkState {
    fn live(&self, now: i64) -> bool {
        self.window.live(now, WINDOW_SECS)
            || self.strangers.iter().any(|(_, w)| w.live(now, WINDOW_SECS))
    }

    fn stranger(&self, account: &Account) -> Option<Window> {
        self.strangers
            .iter()
            .find(|(a, _)| a == account)
            .map(|(_, w)| *w)
    }

    fn set_stranger(&mut self, account: Account, window: Window, now: i64) {
        if let Some(entry) = self.strangers.iter_mut().find(|(a, _)| *a == account) {
            entry.1 = window;
            return;
        }
        if self.strangers.len() >= MAX_STRANGERS {
            self.strangers.retain(|(_, w)| w.live(now, WINDOW_SECS));
        }
        if self.strangers.len() >= MAX_STRANGERS {
            // Not reached while the network's limit holds; bounded anyway.
            if let Some(oldest) =
                (0..self.strangers.len()).min_by_key(|i| self.strangers[*i].1.since)
            {
                self.strangers.swap_remove(oldest);
            }
        }
        self.strangers.push((account, window));
    }
}

/// A map of counters that refuses a new key rather than forget a live one,
/// or, for networks, forgets the oldest.
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

    /// Makes room for `key`, forgetting the oldest tenth of the entries (by
    /// `age`) when the map is full of live ones, so that the next inserts
    /// find room without another pass.
    fn make_room(
        &mut self,
        key: &K,
        max: usize,
        now: i64,
        live: impl Fn(&V) -> bool,
        age: impl Fn(&V) -> i64,
    ) where
        K: Copy,
    {
        if self.has_room(key, max, now, live) {
            return;
        }
        let mut ages: Vec<(i64, K)> = self.map.iter().map(|(k, v)| (age(v), *k)).collect();
        let evict = (max / 10).max(1).min(ages.len());
        if evict == 0 {
            return;
        }
        ages.select_nth_unstable_by_key(evict - 1, |(since, _)| *since);
        for (_, k) in &ages[..evict] {
            self.map.remove(k);
        }
    }
}

#[derive(Debug, Default)]
struct Limits {
    pairs: Bounded<(Account, Network), Window>,
    networks: Bounded<Network, NetworkState>,
    accounts: Bounded<Account, AccountState>,
    /// Only valid tokens get entries: at most a few per account.
    devices: Bounded<Device, Window>,
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

    /// Counts an attempt to sign in to `account`, an existing account, from
    /// `ip`, or refuses it. Reading the limits and counting are one step
    /// under one lock.
    pub fn begin(&self, ip: Option<IpAddr>, account: &str, now: i64) -> Result<Attempt, Refusal> {
        self.count(ip, account, true, now)
    }

    /// Like [`LoginLimiter::begin`], from a browser that showed `device`, a
    /// valid device token of `account` (the caller checked it is that
    /// account's): limited per token only (see the module's description).
    pub fn begin_device(
        &self,
        ip: Option<IpAddr>,
        account: &str,
        device: Device,
        now: i64,
    ) -> Result<Attempt, Refusal> {
        let network = ip.map(network_of);
        let max = self.max_entries;
        let mut l = self.limits();
        let mut w = l.devices.map.get(&device).copied().unwrap_or(Window {
            since: now,
            count: 0,
        });
        let refusal = if w.current(now, WINDOW_SECS) >= DEVICE_ATTEMPTS {
            Some(Refusal::Device)
        } else if !l
            .devices
            .has_room(&device, max, now, |w| w.live(now, WINDOW_SECS))
        {
            Some(Refusal::Full)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            Self::charge(&mut l, network, max, now);
            return Err(refusal);
        }
        w.count += 1;
        l.devices.map.insert(device, w);
        Ok(Attempt {
            account: account_key(account),
            network,
            stranger: false,
            device: Some(device),
            pair_since: now,
            network_since: now,
            account_since: now,
            device_since: w.since,
        })
    }

    /// Like [`LoginLimiter::begin`], for an email without an account: the
    /// same limits answer the same way, but it is counted in its network's
    /// entry and meets no account's back-off (see the module's
    /// description).
    pub fn begin_stranger(
        &self,
        ip: Option<IpAddr>,
        email: &str,
        now: i64,
    ) -> Result<Attempt, Refusal> {
        self.count(ip, email, false, now)
    }

    /// Counts a refused attempt against its network's quota, so that
    /// polling for the account's next slot costs the poller.
    fn charge(l: &mut Limits, network: Network, max: usize, now: i64) {
        l.networks
            .make_room(&network, max, now, |n| n.live(now), |n| n.window.since);
        let n = l
            .networks
            .map
            .entry(network)
            .or_insert_with(|| NetworkState {
                window: Window {
                    since: now,
                    count: 0,
                },
                strangers: Vec::new(),
            });
        n.window.current(now, WINDOW_SECS);
        n.window.count = n.window.count.saturating_add(1);
    }

    fn count(
        &self,
        ip: Option<IpAddr>,
        account: &str,
        exists: bool,
        now: i64,
    ) -> Result<Attempt, Refusal> {
        let network = ip.map(network_of);
        let max = self.max_entries;
        let mut l = self.limits();
        let counted = Self::count_in(&mut l, network, account, exists, max, now);
        if counted.is_err() {
            Self::charge(&mut l, network, max, now);
        }
        counted
    }

    fn count_in(
        l: &mut Limits,
        network: Network,
        account: &str,
        exists: bool,
        max: usize,
        now: i64,
    ) -> Result<Attempt, Refusal> {
        let account = account_key(account);
        let pair = (account, network);
        let known = exists
            && l.known
                .get(&pair)
                .is_some_and(|at| now - at < KNOWN_NETWORK_SECS);
        let fresh = Window {
            since: now,
            count: 0,
        };
        let mut net = l
            .networks
            .map
            .get(&network)
            .cloned()
            .unwrap_or_else(|| NetworkState {
                window: fresh,
                strangers: Vec::new(),
            });
        let pair_w = if exists {
            l.pairs.map.get(&pair).copied()
        } else {
            net.stranger(&account)
        };
        let mut pair_w = pair_w.unwrap_or(fresh);
        if pair_w.current(now, WINDOW_SECS) >= PAIR_ATTEMPTS {
            return Err(Refusal::AccountFromNetwork);
        }
        if net.window.current(now, WINDOW_SECS) >= NETWORK_ATTEMPTS {
            return Err(Refusal::Network);
        }
        let mut acc = None;
        if exists {
            let mut a = l
                .accounts
                .map
                .get(&account)
                .copied()
                .unwrap_or(AccountState {
                    window: fresh,
                    next_at: 0,
                    over: 0,
                });
            if now - a.window.since >= ACCOUNT_WINDOW_SECS {
                a.over = 0;
            }
            a.window.current(now, ACCOUNT_WINDOW_SECS);
            let backing_off = a.window.count >= ACCOUNT_FREE_ATTEMPTS && !known;
            if backing_off && now < a.next_at {
                return Err(Refusal::Backoff { until: a.next_at });
            }
            // A network the account signed in from lately is never refused
            // for want of room: the owner gets in whatever fills the maps.
            // Its entries may go past the bound, by at most [`MAX_KNOWN`].
            let room = known
                || l.pairs
                    .has_room(&pair, max, now, |w| w.live(now, WINDOW_SECS))
                    && l.accounts.has_room(&account, max, now, |a| a.live(now));
            if !room {
                return Err(Refusal::Full);
            }
            a.window.count += 1;
            if backing_off {
                a.over += 1;
                a.next_at = now + backoff(a.over);
            }
            acc = Some(a);
        }
        l.networks
            .make_room(&network, max, now, |n| n.live(now), |n| n.window.since);
        pair_w.count += 1;
        net.window.count += 1;
        if exists {
            l.pairs.map.insert(pair, pair_w);
        } else {
            net.set_stranger(account, pair_w, now);
        }
        let network_since = net.window.since;
        l.networks.map.insert(network, net);
        if let Some(a) = acc {
            l.accounts.map.insert(account, a);
        }
        Ok(Attempt {
            account,
            network,
            stranger: !exists,
            device: None,
            pair_since: pair_w.since,
            network_since,
            account_since: acc.map_or(now, |a| a.window.since),
            device_since: now,
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
        if attempt.stranger {
            return;
        }
        let pair = (attempt.account, attempt.network);
        l.pairs.map.remove(&pair);
        if let Some(d) = attempt.device {
            l.devices.map.remove(&d);
        }
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
        if let Some(d) = a.device {
            if let Some(w) = l.devices.map.get_mut(&d) {
                w.refund(a.device_since);
            }
            return;
        }
        if let Some(n) = l.networks.map.get_mut(&a.network) {
            n.window.refund(a.network_since);
            if a.stranger
                && let Some((_, w)) = n.strangers.iter_mut().find(|(k, _)| *k == a.account)
            {
                w.refund(a.pair_since);
            }
        }
        if a.stranger {
            return;
        }
        if let Some(w) = l.pairs.map.get_mut(&(a.account, a.network)) {
            w.refund(a.pair_since);
        }
        if let Some(s) = l.accounts.map.get_mut(&a.account) {
            s.window.refund(a.account_since);
        }
    }
}

#[cfg(test)]
mod tests;
