//! The limiter's tests, apart so that the limiter reads in one file.

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
fn made_up_emails_from_many_networks_cannot_lock_the_owner_out() {
    let l = LoginLimiter::default();
    let account = "owner@example.com";
    // The owner signed in from home yesterday.
    let home = ip("192.0.2.50");
    l.succeeded(l.begin(home, account, -86_400).unwrap(), -86_400);
    // One IPv6 /48: 6,000 /64s, each within its limits, try 120,000
    // emails that have no account.
    let mut tried = 0;
    for net in 0..6_000u32 {
        for host in 0..NETWORK_ATTEMPTS {
            let from = ip(&format!("2001:db8:1:{net:x}::{host:x}"));
            if let Ok(a) = l.begin_stranger(from, &format!("{tried}@example.com"), 0) {
                l.failed(a);
            }
            tried += 1;
        }
    }
    assert!(tried > MAX_ENTRIES);
    // The owner's password is still checked, from home and elsewhere.
    let a = l.begin(home, account, 1);
    assert!(a.is_ok(), "home: {a:?}");
    l.succeeded(a.unwrap(), 1);
    let a = l.begin(ip("198.51.100.7"), account, 2);
    assert!(a.is_ok(), "a new network: {a:?}");
}

#[test]
fn a_known_network_is_never_refused_for_a_full_limiter() {
    let l = LoginLimiter::with_max_entries(2);
    let account = "owner@example.com";
    let home = ip("192.0.2.50");
    l.succeeded(l.begin(home, account, -86_400).unwrap(), -86_400);
    for i in 0..2 {
        let a = l.begin(ip(&format!("10.0.{i}.1")), &format!("{i}@example.com"), 0);
        l.failed(a.unwrap());
    }
    assert_eq!(
        l.begin(ip("198.51.100.7"), account, 1).err(),
        Some(Refusal::Full)
    );
    let a = l.begin(home, account, 1);
    assert!(a.is_ok(), "{a:?}");
}

#[test]
fn a_full_network_map_forgets_the_oldest_network() {
    let l = LoginLimiter::with_max_entries(4);
    let net = |i: u32| ip(&format!("10.0.{i}.1"));
    for i in 0..4 {
        let tries = if i == 1 { NETWORK_ATTEMPTS } else { 1 };
        for n in 0..tries {
            let a = l.begin_stranger(net(i), &format!("{i}.{n}@example.com"), i64::from(i));
            l.failed(a.unwrap());
        }
    }
    let a = l.begin_stranger(net(9), "9@example.com", 10);
    assert!(a.is_ok(), "{a:?}");
    // The oldest network went; the others' counts stay.
    assert_eq!(
        l.begin_stranger(net(1), "1.x@example.com", 11).err(),
        Some(Refusal::Network)
    );
}

#[test]
fn an_email_without_an_account_is_limited_as_an_account_is() {
    // The answers must not tell which emails have accounts.
    type Begin = fn(&LoginLimiter, Option<IpAddr>, &str, i64) -> Result<Attempt, Refusal>;
    let answers = |begin: Begin| {
        let l = LoginLimiter::default();
        let net = ip("203.0.113.9");
        let mut answers = Vec::new();
        // The network's window starts with another email.
        l.failed(begin(&l, net, "first@example.com", 0).unwrap());
        for t in [
            600,
            601,
            602,
            603,
            604,
            605,
            WINDOW_SECS + 1,
            600 + WINDOW_SECS,
        ] {
            let a = begin(&l, net, "x@example.com", t);
            answers.push(a.as_ref().err().copied());
            if let Ok(a) = a {
                l.failed(a);
            }
        }
        let last = begin(&l, net, "y@example.com", 600 + WINDOW_SECS);
        answers.push(last.as_ref().err().copied());
        let last = last.unwrap();
        l.not_checked(last);
        answers
    };
    let account = answers(LoginLimiter::begin);
    assert_eq!(account, answers(LoginLimiter::begin_stranger));
    let refused = Some(Refusal::AccountFromNetwork);
    assert_eq!(
        account,
        [None, None, None, None, None, refused, refused, None, None]
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

/// Strangers polling from many networks take each back-off slot the
/// moment it opens, as fast as the limits allow.
fn poll_backoff(l: &LoginLimiter, account: &str, from: u32, until: i64) -> u32 {
    let bot = |n: u32| ip(&format!("10.{}.{}.1", n / 256, n % 256));
    let mut n = from;
    for now in 0..until {
        // Twenty polls a second, each from a network of its own.
        for _ in 0..20 {
            if let Ok(a) = l.begin(bot(n), account, now) {
                l.failed(a);
            }
            n += 1;
        }
    }
    n
}

#[test]
fn polling_strangers_cannot_keep_out_a_browser_with_a_device_token() {
    let l = LoginLimiter::default();
    let account = "owner@example.com";
    let device: Device = [7; 16];
    let other_device: Device = [8; 16];
    let mut n = 0;
    let (mut without, mut with) = (0, 0);
    for round in 0..25 {
        let now = (round + 1) * 4;
        n = poll_backoff(&l, account, n, now);
        // The owner, each time from a network never seen before.
        let owner = ip(&format!("198.51.{round}.7"));
        if l.begin(owner, account, now).is_ok() {
            without += 1;
        }
        let a = l.begin_device(owner, account, device, now);
        assert!(a.is_ok(), "round {round}: {a:?}");
        with += 1;
        // A typo, then the right password: the token's failures clear.
        l.failed(l.begin_device(owner, account, device, now).unwrap());
        l.succeeded(a.unwrap(), now);
    }
    assert_eq!(without, 0, "a new browser competes with the strangers");
    assert_eq!(with, 25, "the device token's password is always checked");
    // A stolen device cookie gives a handful of guesses, then the token is
    // refused for the window, whatever the network.
    for i in 0..DEVICE_ATTEMPTS {
        let from = ip(&format!("192.0.2.{i}"));
        l.failed(l.begin_device(from, account, other_device, 200).unwrap());
    }
    assert_eq!(
        l.begin_device(ip("203.0.113.1"), account, other_device, 201)
            .err(),
        Some(Refusal::Device)
    );
    assert!(
        l.begin_device(ip("203.0.113.1"), account, other_device, 200 + WINDOW_SECS)
            .is_ok()
    );
}

#[test]
fn refused_attempts_count_against_the_refusing_network() {
    let l = LoginLimiter::default();
    let account = "owner@example.com";
    let bot = |n: u32| ip(&format!("10.0.{n}.1"));
    for n in 0..ACCOUNT_FREE_ATTEMPTS + 1 {
        l.failed(l.begin(bot(n), account, 0).unwrap());
    }
    // Polling the back-off from one network burns that network's quota.
    let poller = ip("203.0.113.9");
    for _ in 0..NETWORK_ATTEMPTS {
        assert!(matches!(
            l.begin(poller, account, 1),
            Err(Refusal::Backoff { .. })
        ));
    }
    assert_eq!(
        l.begin(poller, "other@example.com", 1).err(),
        Some(Refusal::Network)
    );
    // Another network's quota is untouched.
    let owner = ip("198.51.100.7");
    let a = l.begin(owner, "other@example.com", 1);
    assert!(a.is_ok(), "{a:?}");
}
