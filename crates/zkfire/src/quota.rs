//! A count of actions per key over a fixed window, taken atomically: a slot
//! is reserved before the action and given back if the action fails. A check
//! made before the action and a count made after it would let requests that
//! race all pass the check before any of them is counted.

use dashmap::DashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys kept before expired ones are swept, so a flood of keys (addresses,
/// account names) cannot grow the map forever.
const SWEEP_AT: usize = 10_000;

#[derive(Clone, Copy)]
struct Window {
    count: u32,
    since: Instant,
}

pub struct WindowQuota<K: Eq + Hash> {
    /// Actions per key per window; 0 = no limit.
    max: u32,
    window: Duration,
    counts: DashMap<K, Window>,
}

/// One reserved action. Dropped without [`Slot::keep`], it is given back.
pub struct Slot<'a, K: Eq + Hash + Clone> {
    quota: &'a WindowQuota<K>,
    /// `None` when the quota has no limit: nothing to give back.
    taken: Option<(K, Instant)>,
}

impl<K: Eq + Hash + Clone> WindowQuota<K> {
    pub fn new(max: u32, window: Duration) -> Self {
        WindowQuota {
            max,
            window,
            counts: DashMap::new(),
        }
    }

    /// Reserves one action for `key`, or `None` when its quota for the
    /// current window is used up.
    pub fn try_reserve(&self, key: K) -> Option<Slot<'_, K>> {
        if self.max == 0 {
            return Some(Slot {
                quota: self,
                taken: None,
            });
        }
        let now = Instant::now();
        // The entry stays locked from the check to the count.
        let since = {
            let mut w = self.counts.entry(key.clone()).or_insert(Window {
                count: 0,
                since: now,
            });
            if now.duration_since(w.since) >= self.window {
                *w = Window {
                    count: 0,
                    since: now,
                };
            }
            if w.count >= self.max {
                None
            } else {
                w.count += 1;
                Some(w.since)
            }
        };
        if self.counts.len() > SWEEP_AT {
            self.counts
                .retain(|_, w| now.duration_since(w.since) < self.window);
        }
        since.map(|since| Slot {
            quota: self,
            taken: Some((key, since)),
        })
    }

    fn give_back(&self, key: &K, since: Instant) {
        if let Some(mut w) = self.counts.get_mut(key) {
            // A slot of a window that has since been reset is not counted.
            if w.since == since {
                w.count = w.count.saturating_sub(1);
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.len()
    }
}

impl<K: Eq + Hash + Clone> Slot<'_, K> {
    /// The action happened: it stays counted.
    pub fn keep(mut self) {
        self.taken = None;
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<'_, K> {
    fn drop(&mut self) {
        if let Some((key, since)) = self.taken.take() {
            self.quota.give_back(&key, since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_key_is_refused_after_its_quota_and_others_are_not() {
        let quota = WindowQuota::new(2, Duration::from_secs(600));
        let a = ip("192.0.2.1");
        quota.try_reserve(a).unwrap().keep();
        quota.try_reserve(a).unwrap().keep();
        assert!(quota.try_reserve(a).is_none());
        assert!(quota.try_reserve(ip("192.0.2.2")).is_some());
    }

    #[test]
    fn reserved_slots_count_until_given_back() {
        let quota = WindowQuota::new(2, Duration::from_secs(600));
        let first = quota.try_reserve("alice").unwrap();
        let second = quota.try_reserve("alice").unwrap();
        // Two actions under way use the quota up, before either is done.
        assert!(quota.try_reserve("alice").is_none());
        drop(first);
        second.keep();
        quota.try_reserve("alice").unwrap().keep();
        assert!(quota.try_reserve("alice").is_none());
    }

    #[test]
    fn the_quota_comes_back_after_the_window() {
        let quota = WindowQuota::new(1, Duration::from_millis(20));
        let a = ip("2001:db8::1");
        let old = quota.try_reserve(a).unwrap();
        assert!(quota.try_reserve(a).is_none());
        std::thread::sleep(Duration::from_millis(30));
        let new = quota.try_reserve(a).unwrap();
        // A slot of the old window given back does not free the new one.
        drop(old);
        assert!(quota.try_reserve(a).is_none());
        new.keep();
    }

    #[test]
    fn zero_means_no_limit_and_nothing_is_tracked() {
        let quota = WindowQuota::new(0, Duration::from_secs(600));
        for _ in 0..100 {
            quota.try_reserve(ip("192.0.2.1")).unwrap().keep();
        }
        assert_eq!(quota.tracked(), 0);
    }

    #[test]
    fn expired_keys_are_swept_once_many_are_tracked() {
        let quota = WindowQuota::new(1, Duration::from_millis(1));
        // Up to SWEEP_AT entries nothing is swept...
        for i in 0..SWEEP_AT as u32 {
            quota
                .try_reserve(IpAddr::from(i.to_be_bytes()))
                .unwrap()
                .keep();
        }
        assert_eq!(quota.tracked(), SWEEP_AT);
        std::thread::sleep(Duration::from_millis(5));
        // ...one more, and every expired one goes.
        quota.try_reserve(ip("2001:db8::1")).unwrap().keep();
        assert_eq!(quota.tracked(), 1);
    }
}
