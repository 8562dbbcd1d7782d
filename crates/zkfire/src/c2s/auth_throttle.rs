//! Slows down password guessing: after a number of failed logins for one
//! account or from one address within a window, each further attempt waits,
//! doubling up to a cap.

use dashmap::DashMap;
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

pub struct AuthThrottle {
    free_attempts: u32,
    window: Duration,
    by_ip: DashMap<IpAddr, Failures>,
    by_account: DashMap<String, Failures>,
}

impl AuthThrottle {
    pub fn new(free_attempts: u32, window: Duration) -> Self {
        AuthThrottle {
            free_attempts,
            window,
            by_ip: DashMap::new(),
            by_account: DashMap::new(),
        }
    }

    /// How long to wait before checking this attempt.
    pub fn delay(&self, ip: IpAddr, account: Option<&str>) -> Duration {
        let now = Instant::now();
        let mut count = self.current(self.by_ip.get(&ip).map(|f| *f), now);
        if let Some(account) = account {
            count = count.max(self.current(self.by_account.get(account).map(|f| *f), now));
        }
        if count < self.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (count - self.free_attempts).min(5);
        (Duration::from_secs(1) * 2u32.pow(doublings)).min(MAX_DELAY)
    }

    fn current(&self, f: Option<Failures>, now: Instant) -> u32 {
        match f {
            Some(f) if now.duration_since(f.since) < self.window => f.count,
            _ => 0,
        }
    }

    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        let now = Instant::now();
        let window = self.window;
        let bump = |f: &mut Failures| {
            if now.duration_since(f.since) >= window {
                *f = Failures {
                    count: 0,
                    since: now,
                };
            }
            f.count = f.count.saturating_add(1);
        };
        bump(&mut self.by_ip.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
        }));
        if let Some(account) = account {
            bump(
                &mut self
                    .by_account
                    .entry(account.to_string())
                    .or_insert(Failures {
                        count: 0,
                        since: now,
                    }),
            );
        }
        if self.by_ip.len() > SWEEP_AT {
            self.by_ip
                .retain(|_, f| now.duration_since(f.since) < window);
        }
        if self.by_account.len() > SWEEP_AT {
            self.by_account
                .retain(|_, f| now.duration_since(f.since) < window);
        }
    }

    pub fn succeeded(&self, account: &str) {
        self.by_account.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_free_attempts() {
        let t = AuthThrottle::new(2, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(t.delay(ip, Some("a")), Duration::ZERO);
        t.failed(ip, Some("a"));
        t.failed(ip, Some("a"));
        assert_eq!(t.delay(ip, Some("a")), Duration::from_secs(1));
        t.failed(ip, Some("a"));
        assert_eq!(t.delay(ip, None), Duration::from_secs(2));
        // Another address guessing the same account is slowed too.
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(t.delay(other, Some("a")), Duration::from_secs(2));
        t.succeeded("a");
        assert_eq!(t.delay(other, Some("a")), Duration::ZERO);
    }
}
