//! One-to-one chat between fixed pairs: accounts `2p` and `2p + 1` are pair
//! `p`. Message `n` belongs to pair `n mod P`, and goes one way or the other
//! by turns: `2p -> 2p+1` when `(n / P)` is even, back otherwise. So every
//! account sends and receives, and the timetable is spread evenly.

use crate::accounts::{parse_marker, Marked};
use crate::ledger::{Arrival, Ledger};
use crate::metrics::Counters;
use crate::schedule::{Lane, Schedule};
use crate::session::{Handler, Phase};
use crate::xmpp::stanza_error_condition;
use std::sync::Arc;
use std::time::Instant;
use zkfire_xml::Element;

/// The pairing of `users` accounts (an odd last one is left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairs {
    pub pairs: u64,
}

impl Pairs {
    pub fn new(users: usize) -> Pairs {
        Pairs {
            pairs: (users / 2) as u64,
        }
    }

    /// Accounts that take part.
    pub fn users(&self) -> usize {
        (self.pairs * 2) as usize
    }

    pub fn partner(&self, u: usize) -> usize {
        u ^ 1
    }

    /// (sender, receiver) of message `n`.
    pub fn route(&self, n: u64) -> (usize, usize) {
        let p = n % self.pairs;
        let d = (n / self.pairs) % 2;
        ((2 * p + d) as usize, (2 * p + 1 - d) as usize)
    }

    /// The messages account `u` sends.
    pub fn lane(&self, u: usize, total: u64) -> Lane {
        let u = u as u64;
        let p = u / 2;
        let d = u % 2;
        Lane::new(p + self.pairs * d, 2 * self.pairs, total)
    }
}

pub struct ChatHandler {
    pub me: usize,
    pub pairs: Pairs,
    pub schedule: Schedule,
    pub ledger: Arc<Ledger>,
    pub counters: Arc<Counters>,
    pub run_id: u32,
    pub t0: Option<Instant>,
}

impl Handler for ChatHandler {
    fn on_phase(&mut self, phase: Phase, _out: &mut String) {
        if let Phase::Run { t0 } = phase {
            self.t0 = Some(t0);
        }
    }

    fn on_stanza(&mut self, el: &Element, now: Instant, _out: &mut String) -> bool {
        if el.name() != "message" {
            return false;
        }
        let Some(body) = el.child_text("body", el.ns()) else {
            return true;
        };
        let n = match parse_marker(&body, self.run_id) {
            Marked::This(n) => n,
            Marked::Stale => {
                Counters::add(&self.counters.stale, 1);
                return true;
            }
            Marked::None => return true,
        };
        if el.attr("type") == Some("error") {
            Counters::add(&self.counters.bounced, 1);
            self.counters
                .error(format!("message bounced: {}", stanza_error_condition(el)));
            return true;
        }
        let Some(t0) = self.t0 else {
            return true;
        };
        if self.pairs.route(n).1 != self.me {
            Counters::add(&self.counters.misrouted, 1);
            self.counters.error("a message reached the wrong account");
            return true;
        }
        record(&self.ledger, &self.counters, &self.schedule, t0, n, now);
        true
    }
}

/// Records arrival `slot` of stanza `n`, due at `t0 + offset(n)`.
pub fn record_slot(
    ledger: &Ledger,
    counters: &Counters,
    schedule: &Schedule,
    t0: Instant,
    n: u64,
    slot: u64,
    now: Instant,
) {
    let due = t0 + schedule.offset(n);
    let latency = now.saturating_duration_since(due);
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    match ledger.record(slot, us) {
        Arrival::First => {
            Counters::add(&counters.received, 1);
            counters.arrival(now.saturating_duration_since(t0));
        }
        Arrival::Duplicate => Counters::add(&counters.duplicates, 1),
        Arrival::OutOfRange => counters.error("a measured stanza outside the timetable"),
    }
}

fn record(
    ledger: &Ledger,
    counters: &Counters,
    schedule: &Schedule,
    t0: Instant,
    n: u64,
    now: Instant,
) {
    record_slot(ledger, counters, schedule, t0, n, n, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zkfire_xml::parse_element;

    #[test]
    fn lanes_cover_every_message_once_with_the_right_sender() {
        for users in [2usize, 3, 4, 10, 11] {
            let pairs = Pairs::new(users);
            let total = 1000;
            let mut all = Vec::new();
            let s = Schedule::new(1000, Duration::from_secs(1), total);
            for u in 0..pairs.users() {
                let mut lane = pairs.lane(u, total);
                let mut mine = Vec::new();
                lane.take_due(&s, Duration::from_secs(5), &mut mine);
                for &n in &mine {
                    let (from, to) = pairs.route(n);
                    assert_eq!(from, u);
                    assert_eq!(to, pairs.partner(u));
                }
                all.extend(mine);
            }
            all.sort_unstable();
            assert_eq!(all, (0..total).collect::<Vec<_>>(), "users {users}");
        }
    }

    #[test]
    fn directions_alternate() {
        let pairs = Pairs::new(6);
        assert_eq!(pairs.route(0), (0, 1));
        assert_eq!(pairs.route(2), (4, 5));
        assert_eq!(pairs.route(3), (1, 0));
        assert_eq!(pairs.route(6), (0, 1));
    }

    fn handler(me: usize) -> (ChatHandler, Arc<Ledger>, Arc<Counters>, Instant) {
        let ledger = Arc::new(Ledger::new(100));
        let counters = Arc::new(Counters::default());
        let t0 = Instant::now();
        let h = ChatHandler {
            me,
            pairs: Pairs::new(4),
            schedule: Schedule::new(100, Duration::from_secs(1), 100),
            ledger: ledger.clone(),
            counters: counters.clone(),
            run_id: 5,
            t0: Some(t0),
        };
        (h, ledger, counters, t0)
    }

    fn message(body: &str, kind: &str) -> Element {
        parse_element(&format!(
            "<message type='{kind}' from='b0@localhost/x'><body>{body}</body></message>"
        ))
        .unwrap()
    }

    #[test]
    fn accounting_of_arrivals() {
        // Message 0 goes 0 -> 1; message 2 goes 1 -> 0.
        let (mut h, ledger, counters, t0) = handler(1);
        for n in 0..4 {
            ledger.mark_sent(n);
        }
        let mut out = String::new();
        let at = t0 + Duration::from_millis(7);
        assert!(h.on_stanza(&message("zkb 5 0 pad", "chat"), at, &mut out));
        assert!(h.on_stanza(&message("zkb 5 0 pad", "chat"), at, &mut out));
        assert!(h.on_stanza(&message("zkb 4 1 pad", "chat"), at, &mut out));
        assert!(h.on_stanza(&message("zkb 5 2 pad", "chat"), at, &mut out));
        assert!(h.on_stanza(&message("zkb 5 1 pad", "error"), at, &mut out));
        assert!(h.on_stanza(&message("hello", "chat"), at, &mut out));
        assert!(!h.on_stanza(
            &parse_element("<iq type='get' id='1'/>").unwrap(),
            at,
            &mut out
        ));
        assert!(out.is_empty());
        let get = |c: &std::sync::atomic::AtomicU64| Counters::get(c);
        assert_eq!(get(&counters.received), 1);
        assert_eq!(get(&counters.duplicates), 1);
        assert_eq!(get(&counters.stale), 1);
        assert_eq!(get(&counters.misrouted), 1);
        assert_eq!(get(&counters.bounced), 1);
        let (t, lat) = ledger.tally();
        assert_eq!((t.sent, t.delivered, t.lost, t.duplicates), (4, 1, 3, 1));
        // Message 0 was due at t0 and arrived 7 ms later.
        assert_eq!(lat, vec![7_000]);
    }
}
