//! Stream management (XEP-0198): counters, the queue of stanzas the client has
//! not acknowledged, and the registry of sessions that can be resumed.

use super::stream::XmppStream;
use crate::router::session_handle::{Delivery, LocalSession};
use dashmap::DashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use zkfire_xml::{ns, Element};

/// A new connection asking to take over a session (`<resume/>`).
pub struct ResumeRequest {
    pub stream: XmppStream,
    /// Stanzas the client says it received.
    pub h: u32,
}

/// Another node asks for this session, which its client resumed there.
pub struct HandoverRequest {
    /// Stanzas the client says it received.
    pub h: u32,
    pub reply: tokio::sync::oneshot::Sender<Option<Box<crate::cluster::protocol::HandoverState>>>,
}

/// Per-session stream management state.
pub struct SmState {
    /// Resumption id (`None` when the client did not ask for resumption).
    pub id: Option<String>,
    /// Stanzas received from the client and handled.
    pub inbound: u32,
    /// The client's last acknowledged count of stanzas sent to it.
    pub acked: u32,
    /// Stanzas sent to the client and not yet acknowledged, oldest first.
    pub unacked: VecDeque<Delivery>,
    /// Their size, about as serialized ([`Element::approx_len`]).
    pub unacked_bytes: usize,
    pub ack_requested: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct HandledCountTooHigh;

impl SmState {
    pub fn new(id: Option<String>) -> Self {
        SmState {
            id,
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            ack_requested: false,
        }
    }

    /// The client acknowledged `h` stanzas in all; drops those from the queue.
    pub fn ack(&mut self, h: u32) -> Result<(), HandledCountTooHigh> {
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(HandledCountTooHigh);
        }
        for d in self.unacked.drain(..newly) {
            self.unacked_bytes -= d.stanza.approx_len();
            if let Some(hold) = d.hold {
                hold.taken();
            }
        }
        self.acked = h;
        self.ack_requested = false;
        Ok(())
    }

    pub fn sent(&mut self, d: Delivery) {
        self.unacked_bytes += d.stanza.approx_len();
        self.unacked.push_back(d);
    }

    /// Everything unacknowledged, emptying the queue.
    pub fn take_unacked(&mut self) -> VecDeque<Delivery> {
        self.unacked_bytes = 0;
        std::mem::take(&mut self.unacked)
    }
}

pub fn ack_element(h: u32) -> Element {
    Element::new("a", ns::SM).with_attr("h", h.to_string())
}

pub fn request_element() -> Element {
    Element::new("r", ns::SM)
}

pub fn failed_element(condition: &str, h: Option<u32>) -> Element {
    let mut failed = Element::new("failed", ns::SM);
    if let Some(h) = h {
        failed.set_attr("h", h.to_string());
    }
    failed.with_child(Element::new(condition.to_owned(), ns::STANZA_ERRORS))
}

/// Sessions that may be resumed, by resumption id.
#[derive(Default)]
pub struct SmRegistry {
    sessions: DashMap<String, Weak<LocalSession>>,
}

impl SmRegistry {
    pub fn insert(&self, id: &str, session: &Arc<LocalSession>) {
        self.sessions
            .insert(id.to_string(), Arc::downgrade(session));
    }

    pub fn remove(&self, id: &str) {
        self.sessions.remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<LocalSession>> {
        self.sessions.get(id).and_then(|w| w.upgrade())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_drop_acknowledged_stanzas() {
        let mut sm = SmState::new(None);
        for i in 0..3 {
            sm.sent(Delivery::plain(
                Element::new("message", ns::CLIENT).with_attr("id", i.to_string()),
            ));
        }
        let one = sm.unacked_bytes / 3;
        sm.ack(2).unwrap();
        assert_eq!(sm.unacked.len(), 1);
        assert_eq!(sm.unacked[0].stanza.attr("id"), Some("2"));
        assert_eq!(sm.unacked_bytes, one);
        assert_eq!(sm.ack(5), Err(HandledCountTooHigh));
        sm.ack(3).unwrap();
        assert!(sm.unacked.is_empty());
    }

    #[test]
    fn counters_wrap() {
        let mut sm = SmState::new(None);
        sm.acked = u32::MAX;
        sm.sent(Delivery::plain(Element::new("message", ns::CLIENT)));
        sm.ack(0).unwrap();
        assert!(sm.unacked.is_empty());
    }
}
