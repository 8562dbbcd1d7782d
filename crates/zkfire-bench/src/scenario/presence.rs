//! Presence among roster contacts. Before measuring, every account makes
//! its roster over XMPP (RFC 6121), in two steps with a barrier between:
//!
//! 1. fetch the roster, add each missing contact with a roster set, and
//!    subscribe to each contact with a higher account number;
//! 2. subscribe to each contact with a lower account number.
//!
//! Every request from a contact is approved (`subscribed`) at once. Done in
//! one step (both sides subscribing to each other at the same moment), a
//! server may update the same roster item from two directions at once; two
//! steps keep one change at a time on every item, so the setup ends with
//! `both` on every item on any compliant server. Rosters already complete
//! (a second run on the same server) cost one roster get.
//!
//! Then presence change `n` is sent by account `n mod N`, and each of its
//! `K` contacts should receive it: ledger slot `n * K + slot`, where `slot`
//! is the receiver's place among the sender's contacts ([`Ring`]).

use crate::accounts::{parse_marker, Accounts, Marked, Ring};
use crate::ledger::Ledger;
use crate::metrics::Counters;
use crate::scenario::chat::record_slot;
use crate::schedule::Schedule;
use crate::session::{iq_result, Handler, Phase};
use crate::xmpp::stanza_error_condition;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use zkfire_xml::{escape_attr, ns, Element};

const ROSTER_GET_ID: &str = "zkb-roster";

/// What every session of a presence run shares.
pub struct PresenceRun {
    pub ring: Ring,
    pub accounts: Accounts,
    pub schedule: Schedule,
    pub ledger: Arc<Ledger>,
    pub counters: Arc<Counters>,
    pub run_id: u32,
    /// Whether to make the rosters (else they are taken as made).
    pub setup: bool,
}

pub struct PresenceHandler {
    me: usize,
    run: Arc<PresenceRun>,
    t0: Option<Instant>,
    /// Own bare JID, lower case.
    own: String,
    /// Expected contact → its subscription as the roster says (`none` when
    /// the roster has no item).
    subs: HashMap<usize, String>,
    /// Contacts a `subscribe` has been sent to.
    asked: HashSet<usize>,
    /// The setup step the run is in (0 before the setup).
    step: u8,
    loaded: bool,
    step1_done: bool,
    done: bool,
}

impl PresenceHandler {
    pub fn new(me: usize, run: Arc<PresenceRun>) -> PresenceHandler {
        let own = run.accounts.bare(me).to_lowercase();
        let subs = run
            .ring
            .contacts(me)
            .into_iter()
            .map(|c| (c, "none".to_string()))
            .collect();
        PresenceHandler {
            me,
            run,
            t0: None,
            own,
            subs,
            asked: HashSet::new(),
            step: 0,
            loaded: false,
            step1_done: false,
            done: false,
        }
    }

    /// Whether every contact is at `both`.
    pub fn complete(&self) -> bool {
        self.subs.values().all(|s| s == "both")
    }

    /// Whether step 1 is through: subscribed to every higher contact, and
    /// every lower one subscribed (approved by this account).
    fn step1_complete(&self) -> bool {
        self.subs
            .iter()
            .all(|(&c, s)| if c > self.me { has_to(s) } else { has_from(s) })
    }

    fn check_done(&mut self) {
        if !self.loaded {
            return;
        }
        if !self.step1_done && self.step1_complete() {
            self.step1_done = true;
            Counters::add(&self.run.counters.setup_step1_done, 1);
        }
        if !self.done && self.step == 2 && self.complete() {
            self.done = true;
            Counters::add(&self.run.counters.setup_done, 1);
        }
    }

    /// Subscribes to `c` unless already subscribed or asked.
    fn maybe_subscribe(&mut self, c: usize, out: &mut String) {
        let subscribed = self.subs.get(&c).is_some_and(|s| has_to(s));
        if !subscribed && self.asked.insert(c) {
            out.push_str("<presence type='subscribe' to='");
            out.push_str(&escape_attr(&self.run.accounts.bare(c)));
            out.push_str("'/>");
        }
    }

    /// Subscribes to the contacts of the current step.
    fn subscribe_step(&mut self, out: &mut String) {
        let mut contacts: Vec<usize> = self
            .subs
            .keys()
            .copied()
            .filter(|&c| (self.step == 1 && c > self.me) || (self.step == 2 && c < self.me))
            .collect();
        contacts.sort_unstable();
        for c in contacts {
            self.maybe_subscribe(c, out);
        }
    }

    /// Applies roster items (from the roster result or a push).
    ///
    /// A push is the newest state of its item. The roster result may be
    /// older than pushes that arrived before it (a server may answer the
    /// get from storage read before a change it pushes at once), so its
    /// items only add to what is known: subscriptions here only grow.
    fn apply_items(&mut self, query: &Element, is_push: bool) {
        for item in query.children().filter(|c| c.is("item", ns::ROSTER)) {
            let Some(c) = item.attr("jid").and_then(|j| self.run.accounts.index_of(j)) else {
                continue;
            };
            if let Some(sub) = self.subs.get_mut(&c) {
                let s = item.attr("subscription").unwrap_or("none");
                let s = if s == "remove" { "none" } else { s };
                *sub = if is_push {
                    s.to_string()
                } else {
                    union(sub, s)
                };
            }
        }
    }

    fn on_roster_result(&mut self, el: &Element, out: &mut String) {
        if el.attr("type") != Some("result") {
            self.run
                .counters
                .error(format!("roster get failed: {}", stanza_error_condition(el)));
            return;
        }
        if let Some(query) = el.child("query", ns::ROSTER) {
            self.apply_items(query, false);
        }
        self.loaded = true;
        let mut contacts: Vec<usize> = self.subs.keys().copied().collect();
        contacts.sort_unstable();
        for c in contacts {
            if self.subs.get(&c).is_some_and(|s| s == "none") {
                out.push_str("<iq type='set' id='zkb-rs");
                out.push_str(&c.to_string());
                out.push_str("'><query xmlns='jabber:iq:roster'><item jid='");
                out.push_str(&escape_attr(&self.run.accounts.bare(c)));
                out.push_str("'/></query></iq>");
            }
        }
        self.subscribe_step(out);
        self.check_done();
    }

    fn is_from_self_or_server(&self, el: &Element) -> bool {
        match el.attr("from") {
            None => true,
            Some(f) => {
                let f = f.to_lowercase();
                f == self.own || f == self.run.accounts.domain.to_lowercase()
            }
        }
    }

    fn on_presence(&mut self, el: &Element, now: Instant, out: &mut String) {
        let from = el.attr("from").and_then(|f| self.run.accounts.index_of(f));
        match el.attr("type") {
            Some("subscribe") => {
                if let Some(c) = from.filter(|c| self.subs.contains_key(c)) {
                    out.push_str("<presence type='subscribed' to='");
                    out.push_str(&escape_attr(&self.run.accounts.bare(c)));
                    out.push_str("'/>");
                }
            }
            None => {
                let Some(status) = el.child_text("status", el.ns()) else {
                    return;
                };
                let n = match parse_marker(&status, self.run.run_id) {
                    Marked::This(n) => n,
                    Marked::Stale => {
                        Counters::add(&self.run.counters.stale, 1);
                        return;
                    }
                    Marked::None => return,
                };
                let (Some(sender), Some(t0)) = (from, self.t0) else {
                    return;
                };
                if sender == self.me {
                    return;
                }
                let by_timetable = (n % self.run.accounts.count.max(1) as u64) as usize;
                let slot = self.run.ring.slot_of(sender, self.me);
                let (Some(slot), true) = (slot, sender == by_timetable) else {
                    Counters::add(&self.run.counters.misrouted, 1);
                    self.run
                        .counters
                        .error("presence reached an account that is not a contact");
                    return;
                };
                let k = self.run.ring.k() as u64;
                record_slot(
                    &self.run.ledger,
                    &self.run.counters,
                    &self.run.schedule,
                    t0,
                    n,
                    n * k + slot as u64,
                    now,
                );
            }
            Some("error") => {
                if el
                    .child_text("status", el.ns())
                    .is_some_and(|s| matches!(parse_marker(&s, self.run.run_id), Marked::This(_)))
                {
                    Counters::add(&self.run.counters.bounced, 1);
                }
                self.run
                    .counters
                    .error(format!("presence error: {}", stanza_error_condition(el)));
            }
            _ => {}
        }
    }
}

impl Handler for PresenceHandler {
    fn on_phase(&mut self, phase: Phase, out: &mut String) {
        match phase {
            Phase::Setup(step) if !self.run.setup => {
                // Rosters taken as made: every step is done at once.
                self.step = step;
                self.loaded = true;
                if step == 1 && !self.step1_done {
                    self.step1_done = true;
                    Counters::add(&self.run.counters.setup_step1_done, 1);
                }
                if step == 2 && !self.done {
                    self.done = true;
                    Counters::add(&self.run.counters.setup_done, 1);
                }
            }
            Phase::Setup(step) => {
                self.step = step;
                if !self.loaded {
                    out.push_str("<iq type='get' id='");
                    out.push_str(ROSTER_GET_ID);
                    out.push_str("'><query xmlns='jabber:iq:roster'/></iq>");
                } else {
                    self.subscribe_step(out);
                    self.check_done();
                }
            }
            Phase::Run { t0 } => self.t0 = Some(t0),
            _ => {}
        }
    }

    fn on_stanza(&mut self, el: &Element, now: Instant, out: &mut String) -> bool {
        match el.name() {
            "presence" => {
                self.on_presence(el, now, out);
                true
            }
            "iq" => {
                let kind = el.attr("type");
                let id = el.attr("id").unwrap_or_default();
                if id == ROSTER_GET_ID && matches!(kind, Some("result" | "error")) {
                    self.on_roster_result(el, out);
                    return true;
                }
                if id.starts_with("zkb-rs") && matches!(kind, Some("result" | "error")) {
                    if kind == Some("error") {
                        self.run
                            .counters
                            .error(format!("roster set failed: {}", stanza_error_condition(el)));
                    }
                    return true;
                }
                // A roster push (RFC 6121 section 2.1.6): only from the
                // account itself or its server.
                if kind == Some("set") && self.is_from_self_or_server(el) {
                    if let Some(query) = el.child("query", ns::ROSTER) {
                        self.apply_items(query, true);
                        iq_result(el, out);
                        self.check_done();
                        return true;
                    }
                }
                false
            }
            _ => false,
        }
    }
}

fn has_to(sub: &str) -> bool {
    matches!(sub, "to" | "both")
}

fn has_from(sub: &str) -> bool {
    matches!(sub, "from" | "both")
}

/// The union of two subscription states (`none`, `to`, `from`, `both`).
fn union(a: &str, b: &str) -> String {
    let bits = |s: &str| match s {
        "to" => 1,
        "from" => 2,
        "both" => 3,
        _ => 0,
    };
    match bits(a) | bits(b) {
        3 => "both",
        2 => "from",
        1 => "to",
        _ => "none",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zkfire_xml::parse_element;

    fn handler_with(me: usize, setup: bool) -> (PresenceHandler, Arc<Counters>, Arc<Ledger>) {
        let counters = Arc::new(Counters::default());
        let ledger = Arc::new(Ledger::new(6 * 2 * 10));
        let run = Arc::new(PresenceRun {
            ring: Ring::new(6, 2).unwrap(),
            accounts: Accounts {
                prefix: "u".into(),
                domain: "localhost".into(),
                count: 6,
            },
            schedule: Schedule::new(10, Duration::from_secs(1), 10),
            ledger: ledger.clone(),
            counters: counters.clone(),
            run_id: 3,
            setup,
        });
        (PresenceHandler::new(me, run), counters, ledger)
    }

    fn handler(me: usize) -> (PresenceHandler, Arc<Counters>, Arc<Ledger>) {
        handler_with(me, true)
    }

    fn feed(h: &mut PresenceHandler, xml: &str) -> String {
        let mut out = String::new();
        let el = parse_element(xml).unwrap();
        assert!(h.on_stanza(&el, Instant::now(), &mut out), "{xml}");
        out
    }

    fn push(jid: &str, sub: &str) -> String {
        format!(
            "<iq type='set' id='push'><query xmlns='jabber:iq:roster'>\
             <item jid='{jid}' subscription='{sub}'/></query></iq>"
        )
    }

    #[test]
    fn roster_setup_goes_up_then_down() {
        // Ring of 6 with k = 2: u3's contacts are u4 (higher) and u2 (lower).
        let (mut h, counters, _) = handler(3);
        let mut out = String::new();
        h.on_phase(Phase::Setup(1), &mut out);
        assert!(out.contains("id='zkb-roster'"));
        // u4 already has an item (subscription from), u2 has none.
        let out = feed(
            &mut h,
            "<iq type='result' id='zkb-roster'><query xmlns='jabber:iq:roster'>\
             <item jid='u4@localhost' subscription='from'/></query></iq>",
        );
        assert!(out.contains("<item jid='u2@localhost'/>"));
        assert!(!out.contains("<item jid='u4@localhost'/>"));
        assert!(out.contains("type='subscribe' to='u4@localhost'"));
        assert!(!out.contains("type='subscribe' to='u2@localhost'"));
        // A request from u2 is approved; from a stranger, ignored.
        let out = feed(&mut h, "<presence type='subscribe' from='u2@localhost'/>");
        assert_eq!(out, "<presence type='subscribed' to='u2@localhost'/>");
        assert_eq!(
            feed(&mut h, "<presence type='subscribe' from='u0@localhost'/>"),
            ""
        );
        assert_eq!(
            feed(&mut h, &push("u4@localhost", "both")),
            "<iq type='result' id='push'/>"
        );
        assert_eq!(Counters::get(&counters.setup_step1_done), 0);
        feed(&mut h, &push("u2@localhost", "from"));
        assert_eq!(Counters::get(&counters.setup_step1_done), 1);
        assert_eq!(Counters::get(&counters.setup_done), 0);
        // Step 2: now u2.
        let mut out = String::new();
        h.on_phase(Phase::Setup(2), &mut out);
        assert_eq!(out, "<presence type='subscribe' to='u2@localhost'/>");
        feed(&mut h, &push("u2@localhost", "both"));
        assert_eq!(Counters::get(&counters.setup_done), 1);
        assert!(h.complete());
        // Nothing more happens after that.
        let mut out = String::new();
        h.on_phase(Phase::Setup(2), &mut out);
        assert!(out.is_empty());
        assert_eq!(Counters::get(&counters.setup_done), 1);
    }

    #[test]
    fn an_older_roster_result_does_not_undo_a_push() {
        let (mut h, counters, _) = handler(0);
        let mut out = String::new();
        h.on_phase(Phase::Setup(1), &mut out);
        feed(&mut h, &push("u1@localhost", "both"));
        feed(
            &mut h,
            "<iq type='result' id='zkb-roster'><query xmlns='jabber:iq:roster'>\
             <item jid='u1@localhost' subscription='to'/>\
             <item jid='u5@localhost' subscription='both'/></query></iq>",
        );
        assert!(h.complete());
        assert_eq!(Counters::get(&counters.setup_step1_done), 1);
        h.on_phase(Phase::Setup(2), &mut out);
        assert_eq!(Counters::get(&counters.setup_done), 1);
        assert_eq!(union("to", "from"), "both");
        assert_eq!(union("none", "to"), "to");
    }

    #[test]
    fn skipped_setup_counts_every_step_done() {
        let (mut h, counters, _) = handler_with(0, false);
        let mut out = String::new();
        h.on_phase(Phase::Setup(1), &mut out);
        h.on_phase(Phase::Setup(2), &mut out);
        assert!(out.is_empty());
        assert_eq!(Counters::get(&counters.setup_step1_done), 1);
        assert_eq!(Counters::get(&counters.setup_done), 1);
    }

    #[test]
    fn pushes_from_others_are_not_roster_pushes() {
        let (mut h, _, _) = handler(0);
        let el = parse_element(
            "<iq type='set' id='x' from='u1@localhost/r'><query xmlns='jabber:iq:roster'>\
             <item jid='u1@localhost' subscription='both'/></query></iq>",
        )
        .unwrap();
        let mut out = String::new();
        assert!(!h.on_stanza(&el, Instant::now(), &mut out));
        assert!(!h.complete());
    }

    #[test]
    fn deliveries_land_in_the_senders_slot() {
        // Ring of 6 with k = 2: u1's contacts are u2 (slot 0) and u0 (slot 1).
        let (mut h, counters, ledger) = handler(0);
        let t0 = Instant::now();
        let mut out = String::new();
        h.on_phase(Phase::Run { t0 }, &mut out);
        for slot in 0..20 {
            ledger.mark_sent(slot);
        }
        let p = |from: &str, n: u64| {
            format!(
                "<presence from='{from}'><show>away</show><status>zkb 3 {n} x</status></presence>"
            )
        };
        feed(&mut h, &p("u1@localhost/r", 1));
        feed(&mut h, &p("u1@localhost/r", 1));
        feed(&mut h, &p("u0@localhost/r", 0));
        feed(&mut h, &p("u3@localhost/r", 3));
        feed(&mut h, &p("u1@localhost/r", 9));
        feed(&mut h, "<presence from='u1@localhost/r'/>");
        // u3 is no contact of u0; change 9 is u3's, not u1's.
        assert_eq!(Counters::get(&counters.received), 1);
        assert_eq!(Counters::get(&counters.duplicates), 1);
        assert_eq!(Counters::get(&counters.misrouted), 2);
        let (t, lat) = ledger.tally();
        assert_eq!(t.delivered, 1);
        assert_eq!(lat.len(), 1);
        // Change 1 by u1 reached u0 in slot 1: ledger slot 1 * 2 + 1.
        assert_eq!(ledger.record(3, 0), crate::ledger::Arrival::Duplicate);
    }
}
