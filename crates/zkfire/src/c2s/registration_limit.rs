//! Caps in-band registrations per client address: with registration open,
//! one address must not be able to create accounts without end (spam
//! accounts, filling the database).

use dashmap::DashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses kept before expired ones are swept, so a flood of addresses
/// cannot grow the map forever.
const SWEEP_AT: usize = 10_000;

#[derive(Clone, Copy)]
struct Window {
    count: u32,
    since: Instant,
}

pub struct RegistrationLimit {
    /// Accounts one address may create per window; 0 = no limit.
    max: u32,
    window: Duration,
    by_ip: DashMap<IpAddr, Window>,
}

impl RegistrationLimit {
    pub fn new(max: u32, window: Duration) -> Self {
        RegistrationLimit {
            max,
            window,
            by_ip: DashMap::new(),
        }
    }

    /// Whether `ip` may create one more account now.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let now = Instant::now();
        match self.by_ip.get(&ip) {
            Some(w) if now.duration_since(w.since) < self.window => w.count < self.max,
            _ => true,
        }
    }

    /// Counts an account created from `ip`.
    pub fn created(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut entry = self.by_ip.entry(ip).or_insert(Window {
                count: 0,
                since: now,
            });
            if now.duration_since(entry.since) >= self.window {
                *entry = Window {
                    count: 0,
                    since: now,
                };
            }
            entry.count = entry.count.saturating_add(1);
        }
        if self.by_ip.len() > SWEEP_AT {
            self.by_ip
                .retain(|_, w| now.duration_since(w.since) < self.window);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_refused_after_its_quota_and_others_are_not() {
        let limit = RegistrationLimit::new(2, Duration::from_secs(600));
        let a = ip("192.0.2.1");
        assert!(limit.allows(a));
        limit.created(a);
        assert!(limit.allows(a));
        limit.created(a);
        assert!(!limit.allows(a));
        assert!(limit.allows(ip("192.0.2.2")));
    }

    #[test]
    fn the_quota_comes_back_after_the_window() {
        let limit = RegistrationLimit::new(1, Duration::from_millis(20));
        let a = ip("2001:db8::1");
        limit.created(a);
        assert!(!limit.allows(a));
        std::thread::sleep(Duration::from_millis(30));
        assert!(limit.allows(a));
    }

    #[test]
    fn zero_means_no_limit_and_nothing_is_tracked() {
        let limit = RegistrationLimit::new(0, Duration::from_secs(600));
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            limit.created(a);
        }
        assert!(limit.allows(a));
        assert_eq!(limit.tracked(), 0);
    }

    #[test]
    fn expired_addresses_are_swept_once_many_are_tracked() {
        let limit = RegistrationLimit::new(1, Duration::from_millis(1));
        // Up to SWEEP_AT entries nothing is swept...
        for i in 0..SWEEP_AT as u32 {
            limit.created(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limit.tracked(), SWEEP_AT);
        std::thread::sleep(Duration::from_millis(5));
        // ...one more, and every expired one goes.
        limit.created(ip("2001:db8::1"));
        assert_eq!(limit.tracked(), 1);
    }
}
