//! Which stanzas were sent and which arrived, with their latency.
//!
//! One slot per expected delivery, indexed by stanza number (and, for
//! presence, by which contact receives it). Sending tasks mark slots sent,
//! receiving tasks store the latency; both are lock-free atomics, so any
//! number of tasks share one ledger. A second arrival in the same slot is a
//! duplicate; an arrival in a slot never marked sent is unexpected.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Latency value meaning "not received".
const NONE: u32 = u32::MAX;

/// What [`Ledger::record`] made of an arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The first arrival in this slot.
    First,
    /// The slot already had an arrival.
    Duplicate,
    /// Outside the ledger.
    OutOfRange,
}

pub struct Ledger {
    sent: Vec<AtomicU64>,
    latency_us: Vec<AtomicU32>,
    duplicates: AtomicU64,
    out_of_range: AtomicU64,
}

/// What the ledger holds at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Slots marked sent.
    pub sent: u64,
    /// Slots marked sent that received at least once.
    pub delivered: u64,
    /// Slots marked sent that never received.
    pub lost: u64,
    /// Arrivals after the first in the same slot.
    pub duplicates: u64,
    /// Arrivals in slots never marked sent, or outside the ledger.
    pub unexpected: u64,
}

impl Ledger {
    pub fn new(slots: usize) -> Ledger {
        Ledger {
            sent: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            latency_us: (0..slots).map(|_| AtomicU32::new(NONE)).collect(),
            duplicates: AtomicU64::new(0),
            out_of_range: AtomicU64::new(0),
        }
    }

    pub fn slots(&self) -> usize {
        self.latency_us.len()
    }

    /// Marks a slot sent (before the bytes are written, so that an arrival
    /// can never be seen before its send). Out-of-range slots are ignored.
    pub fn mark_sent(&self, slot: u64) {
        if slot >= self.slots() as u64 {
            return;
        }
        if let Some(word) = self.sent.get((slot / 64) as usize) {
            word.fetch_or(1 << (slot % 64), Ordering::Relaxed);
        }
    }

    pub fn is_sent(&self, slot: u64) -> bool {
        self.sent
            .get((slot / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (slot % 64)) != 0)
    }

    /// Records an arrival with its latency in microseconds (capped just
    /// below the "none" marker).
    pub fn record(&self, slot: u64, latency_us: u64) -> Arrival {
        let Some(cell) = usize::try_from(slot)
            .ok()
            .and_then(|i| self.latency_us.get(i))
        else {
            self.out_of_range.fetch_add(1, Ordering::Relaxed);
            return Arrival::OutOfRange;
        };
        let value = u32::try_from(latency_us).unwrap_or(NONE - 1).min(NONE - 1);
        match cell.compare_exchange(NONE, value, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Arrival::First,
            Err(_) => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
                Arrival::Duplicate
            }
        }
    }

    /// Counts and the latencies (µs) of the delivered slots. Call once every
    /// task that writes to the ledger has stopped.
    pub fn tally(&self) -> (Tally, Vec<u32>) {
        let mut t = Tally {
            duplicates: self.duplicates.load(Ordering::Relaxed),
            unexpected: self.out_of_range.load(Ordering::Relaxed),
            ..Tally::default()
        };
        let mut latencies = Vec::new();
        for (i, cell) in self.latency_us.iter().enumerate() {
            let lat = cell.load(Ordering::Relaxed);
            let sent = self.is_sent(i as u64);
            match (sent, lat != NONE) {
                (true, true) => {
                    t.sent += 1;
                    t.delivered += 1;
                    latencies.push(lat);
                }
                (true, false) => {
                    t.sent += 1;
                    t.lost += 1;
                }
                (false, true) => t.unexpected += 1,
                (false, false) => {}
            }
        }
        (t, latencies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_sent_delivered_lost() {
        let l = Ledger::new(10);
        for n in 0..6 {
            l.mark_sent(n);
        }
        assert_eq!(l.record(0, 100), Arrival::First);
        assert_eq!(l.record(2, 300), Arrival::First);
        assert_eq!(l.record(5, 50), Arrival::First);
        let (t, mut lat) = l.tally();
        lat.sort_unstable();
        assert_eq!(
            t,
            Tally {
                sent: 6,
                delivered: 3,
                lost: 3,
                duplicates: 0,
                unexpected: 0
            }
        );
        assert_eq!(lat, vec![50, 100, 300]);
    }

    #[test]
    fn duplicates_are_counted_once_each_and_keep_the_first_latency() {
        let l = Ledger::new(4);
        l.mark_sent(1);
        assert_eq!(l.record(1, 10), Arrival::First);
        assert_eq!(l.record(1, 20), Arrival::Duplicate);
        assert_eq!(l.record(1, 30), Arrival::Duplicate);
        let (t, lat) = l.tally();
        assert_eq!(t.delivered, 1);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.lost, 0);
        assert_eq!(lat, vec![10]);
    }

    #[test]
    fn arrivals_never_sent_or_out_of_range_are_unexpected() {
        let l = Ledger::new(3);
        l.mark_sent(0);
        assert_eq!(l.record(1, 5), Arrival::First);
        assert_eq!(l.record(3, 5), Arrival::OutOfRange);
        assert_eq!(l.record(u64::MAX, 5), Arrival::OutOfRange);
        l.mark_sent(99);
        let (t, lat) = l.tally();
        assert_eq!(t.sent, 1);
        assert_eq!(t.lost, 1);
        assert_eq!(t.delivered, 0);
        assert_eq!(t.unexpected, 3);
        assert!(lat.is_empty());
    }

    #[test]
    fn huge_latency_is_capped_not_lost() {
        let l = Ledger::new(1);
        l.mark_sent(0);
        l.record(0, u64::MAX);
        let (t, lat) = l.tally();
        assert_eq!(t.delivered, 1);
        assert_eq!(lat, vec![u32::MAX - 1]);
    }

    #[test]
    fn bit_boundaries() {
        let l = Ledger::new(130);
        for n in [0u64, 63, 64, 127, 128, 129] {
            assert!(!l.is_sent(n));
            l.mark_sent(n);
            assert!(l.is_sent(n));
        }
        assert!(!l.is_sent(1) && !l.is_sent(65));
        assert_eq!(l.tally().0.sent, 6);
    }

    #[test]
    fn concurrent_receivers_see_each_slot_once() {
        let l = Arc::new(Ledger::new(10_000));
        for n in 0..10_000 {
            l.mark_sent(n);
        }
        // Four threads each deliver every slot: one first and three
        // duplicates per slot, whoever wins.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut first = 0u64;
                    for n in 0..10_000 {
                        if l.record(n, n) == Arrival::First {
                            first += 1;
                        }
                    }
                    first
                })
            })
            .collect();
        let firsts: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(firsts, 10_000);
        let (t, _) = l.tally();
        assert_eq!(t.delivered, 10_000);
        assert_eq!(t.duplicates, 30_000);
        assert_eq!(t.lost, 0);
    }
}
