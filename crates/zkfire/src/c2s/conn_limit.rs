//! Open connections per IP address, bounded.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::Arc;

pub struct ConnLimiter {
    max_per_ip: usize,
    open: Arc<DashMap<IpAddr, usize>>,
}

/// Held for the life of a connection; frees its slot when dropped.
pub struct ConnSlot {
    ip: IpAddr,
    open: Arc<DashMap<IpAddr, usize>>,
}

impl ConnLimiter {
    pub fn new(max_per_ip: usize) -> Self {
        ConnLimiter {
            max_per_ip,
            open: Arc::new(DashMap::new()),
        }
    }

    /// Takes a slot for `ip`, or `None` when it already has the maximum.
    pub fn acquire(&self, ip: IpAddr) -> Option<ConnSlot> {
        let mut count = self.open.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(ConnSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.remove_if_mut(&self.ip, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed() {
        let limiter = ConnLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limiter.acquire(ip).unwrap();
        let _b = limiter.acquire(ip).unwrap();
        assert!(limiter.acquire(ip).is_none());
        drop(a);
        assert!(limiter.acquire(ip).is_some());
    }
}
