//! Slows down password guessing without letting a guesser lock the real
//! user out.
//!
//! Failed logins are counted per address, per (account, address) and per
//! account, over a window. Past `free_attempts` failures, each further
//! attempt waits, doubling from 1 s up to 30 s. Which counts apply:
//! - from an address with no failure in the window, none: the right password
//!   from there goes through at once, however hard the account is being
//!   attacked from elsewhere;
//! - from an address with failures, its own count, its count for this
//!   account, and the account's count over all addresses, so that guesses
//!   spread over many addresses are slowed once each address has failed.
//!
//! Guesses in flight are bounded too, since the counts only move when an
//! exchange ends and parallel guesses would all start before any failed:
//! one SASL exchange per (account, address) at a time
//! (`logins_in_flight_per_account_and_address`), and a few per account from
//! addresses that have failures (`logins_in_flight_per_account`). An
//! address with no failures is not held back by the per-account bound, so
//! guessers holding exchanges open cannot keep the real user out. Past a
//! bound the attempt gets `<temporary-auth-failure/>` at once.

use dashmap::DashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest wait imposed on one attempt.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Entries kept before old ones are swept, so a flood of addresses cannot grow the maps forever.
const SWEEP_AT: usize = 10_000;

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

type Pair = (String, IpAddr);

/// The limits of [`AuthThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failures before attempts are slowed.
    pub free_attempts: u32,
    /// The window failures are counted over.
    pub window: Duration,
    /// Exchanges at once for one account from one address.
    pub in_flight_per_pair: u32,
    /// Exchanges at once for one account from addresses with failures.
    pub in_flight_per_account: u32,
}

pub struct AuthThrottle {
    limits: ThrottleLimits,
    by_ip: DashMap<IpAddr, Failures>,
    by_pair: DashMap<Pair, Failures>,
    by_account: DashMap<String, Failures>,
    in_flight_pair: DashMap<Pair, u32>,
    in_flight_account: DashMap<String, u32>,
}

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("another login for this account from this address is under way")]
    AccountFromAddress,
    #[error("too many logins for this account under way from addresses with failed logins")]
    Account,
}

/// A login under way: holds its in-flight slots until dropped.
pub struct Attempt<'a> {
    throttle: &'a AuthThrottle,
    delay: Duration,
    pair: Option<Pair>,
    account_slot: bool,
}

impl AuthThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        AuthThrottle {
            limits,
            by_ip: DashMap::new(),
            by_pair: DashMap::new(),
            by_account: DashMap::new(),
            in_flight_pair: DashMap::new(),
            in_flight_account: DashMap::new(),
        }
    }

    /// Starts a login from `ip` for `account` (`None`: a username that
    /// names no account of this domain): takes its in-flight slots and says
    /// how long it must wait before the credentials are checked.
    pub fn begin(&self, ip: IpAddr, account: Option<&str>) -> Result<Attempt<'_>, Busy> {
        let now = Instant::now();
        let from_ip = self.current(self.by_ip.get(&ip).map(|f| *f), now);
        let Some(account) = account else {
            return Ok(Attempt {
                throttle: self,
                delay: self.delay_for(from_ip),
                pair: None,
                account_slot: false,
            });
        };
        let pair = (account.to_string(), ip);
        let for_pair = self.current(self.by_pair.get(&pair).map(|f| *f), now);
        let failed_here = from_ip > 0 || for_pair > 0;
        if !take(
            &self.in_flight_pair,
            pair.clone(),
            self.limits.in_flight_per_pair,
        ) {
            return Err(Busy::AccountFromAddress);
        }
        let mut attempt = Attempt {
            throttle: self,
            delay: Duration::ZERO,
            pair: Some(pair),
            account_slot: false,
        };
        let mut count = from_ip.max(for_pair);
        if failed_here {
            if !take(
                &self.in_flight_account,
                account.to_string(),
                self.limits.in_flight_per_account,
            ) {
                return Err(Busy::Account);
            }
            attempt.account_slot = true;
            count = count.max(self.current(self.by_account.get(account).map(|f| *f), now));
        }
        attempt.delay = self.delay_for(count);
        Ok(attempt)
    }

    fn delay_for(&self, failures: u32) -> Duration {
        if failures < self.limits.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (failures - self.limits.free_attempts).min(5);
        (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_DELAY)
    }

    fn current(&self, f: Option<Failures>, now: Instant) -> u32 {
        match f {
            Some(f) if now.duration_since(f.since) < self.limits.window => f.count,
            _ => 0,
        }
    }

    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        let now = Instant::now();
        let window = self.limits.window;
        bump(&self.by_ip, ip, now, window);
        if let Some(account) = account {
            bump(&self.by_pair, (account.to_string(), ip), now, window);
            bump(&self.by_account, account.to_string(), now, window);
        }
    }

    /// The right password from `ip`: that address's failures for this
    /// account are forgiven. The account's count over all addresses stays,
    /// so the real user logging in does not reset a guesser's wait.
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        self.by_pair.remove(&(account.to_string(), ip));
    }
}

impl Attempt<'_> {
    /// How long to wait before the credentials are checked.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(pair) = self.pair.take() {
            if self.account_slot {
                give_back(&self.throttle.in_flight_account, &pair.0);
            }
            give_back(&self.throttle.in_flight_pair, &pair);
        }
    }
}

/// Takes one of `max` slots for `key`; the entry stays locked from the
/// check to the count.
fn take<K: Eq + Hash>(map: &DashMap<K, u32>, key: K, max: u32) -> bool {
    let mut n = map.entry(key).or_insert(0);
    if *n >= max {
        return false;
    }
    *n += 1;
    true
}

fn give_back<K: Eq + Hash>(map: &DashMap<K, u32>, key: &K) {
    if let Some(mut n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
    }
    map.remove_if(key, |_, n| *n == 0);
}

fn bump<K: Eq + Hash>(map: &DashMap<K, Failures>, key: K, now: Instant, window: Duration) {
    {
        let mut f = map.entry(key).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.duration_since(f.since) >= window {
            *f = Failures {
                count: 0,
                since: now,
            };
        }
        f.count = f.count.saturating_add(1);
    }
    if map.len() > SWEEP_AT {
        map.retain(|_, f| now.duration_since(f.since) < window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(free_attempts: u32) -> AuthThrottle {
        AuthThrottle::new(ThrottleLimits {
            free_attempts,
            window: Duration::from_secs(60),
            in_flight_per_pair: 1,
            in_flight_per_account: 2,
        })
    }

    fn ip(n: u8) -> IpAddr {
        [127, 0, 0, n].into()
    }

    fn delay(t: &AuthThrottle, from: IpAddr, account: Option<&str>) -> Duration {
        t.begin(from, account).unwrap().delay()
    }

    #[test]
    fn delays_grow_after_free_attempts_from_the_failing_address() {
        let t = throttle(2);
        assert_eq!(delay(&t, ip(2), Some("a")), Duration::ZERO);
        t.failed(ip(2), Some("a"));
        t.failed(ip(2), Some("a"));
        assert_eq!(delay(&t, ip(2), Some("a")), Duration::from_secs(1));
        t.failed(ip(2), Some("a"));
        assert_eq!(delay(&t, ip(2), Some("a")), Duration::from_secs(2));
        // The address's count slows it for other accounts and unknown names.
        assert_eq!(delay(&t, ip(2), Some("b")), Duration::from_secs(2));
        assert_eq!(delay(&t, ip(2), None), Duration::from_secs(2));
        for _ in 0..20 {
            t.failed(ip(2), Some("a"));
        }
        assert_eq!(delay(&t, ip(2), Some("a")), MAX_DELAY);
    }

    #[test]
    fn an_address_without_failures_is_not_slowed_by_the_account_count() {
        let t = throttle(2);
        for _ in 0..10 {
            t.failed(ip(2), Some("a"));
        }
        assert_eq!(delay(&t, ip(3), Some("a")), Duration::ZERO);
        // Once it has failed itself, the account's count applies to it.
        t.failed(ip(3), Some("a"));
        assert_eq!(delay(&t, ip(3), Some("a")), MAX_DELAY);
        // The real user's success from another address does not reset it.
        t.succeeded(ip(4), "a");
        t.failed(ip(5), None);
        assert_eq!(delay(&t, ip(5), Some("a")), MAX_DELAY);
    }

    #[test]
    fn success_forgives_that_address_for_that_account() {
        let t = throttle(1);
        t.failed(ip(2), Some("a"));
        t.failed(ip(2), Some("a"));
        t.succeeded(ip(2), "a");
        // The address's own count remains.
        assert_eq!(delay(&t, ip(2), Some("a")), Duration::from_secs(2));
        let t = throttle(1);
        t.failed(ip(2), Some("a"));
        t.failed(ip(2), Some("a"));
        t.by_ip.clear();
        t.succeeded(ip(2), "a");
        assert_eq!(delay(&t, ip(2), Some("a")), Duration::ZERO);
    }

    #[test]
    fn one_exchange_per_account_and_address() {
        let t = throttle(5);
        let first = t.begin(ip(2), Some("a")).unwrap();
        assert_eq!(
            t.begin(ip(2), Some("a")).err(),
            Some(Busy::AccountFromAddress)
        );
        // Another account from the same address, or the same from another, may start.
        let _b = t.begin(ip(2), Some("b")).unwrap();
        let _c = t.begin(ip(3), Some("a")).unwrap();
        drop(first);
        assert!(t.begin(ip(2), Some("a")).is_ok());
        // Names of no account take no slot.
        let _n1 = t.begin(ip(2), None).unwrap();
        let _n2 = t.begin(ip(2), None).unwrap();
    }

    #[test]
    fn failing_addresses_share_a_bound_per_account_that_clean_ones_skip() {
        let t = throttle(5);
        for n in 2..=4 {
            t.failed(ip(n), Some("a"));
        }
        let first = t.begin(ip(2), Some("a")).unwrap();
        let _second = t.begin(ip(3), Some("a")).unwrap();
        assert_eq!(t.begin(ip(4), Some("a")).err(), Some(Busy::Account));
        // An address with no failures is not held back.
        let _clean = t.begin(ip(9), Some("a")).unwrap();
        drop(first);
        let _third = t.begin(ip(4), Some("a")).unwrap();
    }

    #[test]
    fn slots_are_given_back_and_their_entries_removed() {
        let t = throttle(5);
        t.failed(ip(2), Some("a"));
        {
            let _a = t.begin(ip(2), Some("a")).unwrap();
            assert_eq!(t.in_flight_pair.len(), 1);
            assert_eq!(t.in_flight_account.len(), 1);
        }
        assert!(t.in_flight_pair.is_empty());
        assert!(t.in_flight_account.is_empty());
        // A refused attempt leaves nothing behind either.
        let _a = t.begin(ip(2), Some("a")).unwrap();
        let _ = t.begin(ip(2), Some("a"));
        drop(_a);
        assert!(t.in_flight_pair.is_empty());
        assert!(t.in_flight_account.is_empty());
    }
}
