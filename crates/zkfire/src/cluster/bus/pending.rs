//! Bounds on the handshakes in progress at the bus port, so that strangers
//! holding idle connections cannot keep the members out.
//!
//! Connections from a member's address (the IP of a bus address in the
//! membership) draw on a pool of their own that strangers never touch.
//! Everyone else shares a second pool of the same size, and each of their
//! addresses (an IPv4 address, or an IPv6 /64, which one host usually has
//! whole) may hold only a few of its slots. A connection past a bound is
//! closed at once; a slot is held until the handshake ends, at most for the
//! handshake timeout.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// What may be in progress at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Slots of each pool: the members' and the strangers'.
    pub pool: usize,
    /// Slots one stranger address may hold.
    pub per_address: usize,
}

/// Which bound a connection closed before its handshake met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The members' pool is full (members' hosts opening many connections).
    MembersPool,
    /// The strangers' pool is full.
    StrangersPool,
    /// This stranger address holds all the slots it may.
    AddressShare,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::MembersPool => "too many handshakes from member addresses in progress",
            Refused::StrangersPool => "too many handshakes from non-member addresses in progress",
            Refused::AddressShare => "too many handshakes from this address in progress",
        })
    }
}

#[derive(Default)]
struct Counts {
    /// The member addresses, as `key` gives them.
    members: HashSet<IpAddr>,
    members_pending: usize,
    strangers_pending: usize,
    per_stranger: HashMap<IpAddr, usize>,
}

pub(crate) struct PendingHandshakes {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// A slot held for one handshake; freed when dropped.
pub(crate) struct HandshakeSlot {
    owner: Arc<PendingHandshakes>,
    /// The stranger address it counts against; `None` for a member's.
    stranger: Option<IpAddr>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut c = self.owner.counts();
        match self.stranger {
            None => c.members_pending -= 1,
            Some(key) => {
                c.strangers_pending -= 1;
                if let Some(n) = c.per_stranger.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        c.per_stranger.remove(&key);
                    }
                }
            }
        }
    }
}

/// The address a connection counts against: IPv4 (also when mapped into
/// IPv6) as it is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
        v4 => v4,
    }
}

impl PendingHandshakes {
    pub fn new(limits: Limits) -> Arc<PendingHandshakes> {
        Arc::new(PendingHandshakes {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Plain counters: consistent even if a holder panicked.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses the members' bus addresses are on.
    pub fn set_members(&self, ips: impl IntoIterator<Item = IpAddr>) {
        self.counts().members = ips.into_iter().map(key).collect();
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<HandshakeSlot, Refused> {
        let key = key(ip);
        let mut c = self.counts();
        if c.members.contains(&key) {
            if c.members_pending >= self.limits.pool {
                return Err(Refused::MembersPool);
            }
            c.members_pending += 1;
            return Ok(HandshakeSlot {
                owner: self.clone(),
                stranger: None,
            });
        }
        if c.strangers_pending >= self.limits.pool {
            return Err(Refused::StrangersPool);
        }
        let held = c.per_stranger.entry(key).or_insert(0);
        if *held >= self.limits.per_address {
            return Err(Refused::AddressShare);
        }
        *held += 1;
        c.strangers_pending += 1;
        Ok(HandshakeSlot {
            owner: self.clone(),
            stranger: Some(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn strangers_never_take_the_members_slots() {
        let p = PendingHandshakes::new(Limits {
            pool: 4,
            per_address: 2,
        });
        p.set_members([ip("10.0.0.1")]);
        let mut held = Vec::new();
        for n in 2..=3 {
            for _ in 0..2 {
                held.push(p.admit(ip(&format!("192.0.2.{n}"))).unwrap());
            }
        }
        assert_eq!(p.admit(ip("192.0.2.9")).err(), Some(Refused::StrangersPool));
        let members: Vec<HandshakeSlot> =
            (0..4).map(|_| p.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(p.admit(ip("10.0.0.1")).err(), Some(Refused::MembersPool));
        drop(members);
        assert!(p.admit(ip("::ffff:10.0.0.1")).is_ok());
        held.clear();
        assert!(p.admit(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn one_address_holds_only_its_share() {
        let p = PendingHandshakes::new(Limits {
            pool: 64,
            per_address: 2,
        });
        let a = p.admit(ip("2001:db8::1")).unwrap();
        let _b = p.admit(ip("2001:db8::2")).unwrap();
        // The same /64.
        assert_eq!(
            p.admit(ip("2001:db8::3")).err(),
            Some(Refused::AddressShare)
        );
        assert!(p.admit(ip("2001:db8:0:1::1")).is_ok());
        drop(a);
        assert!(p.admit(ip("2001:db8::3")).is_ok());
    }
}
