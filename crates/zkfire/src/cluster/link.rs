//! The cluster seen from the router: sends stanzas and commands to other
//! nodes over the bus, and announces this node's sessions to them.

use super::bus::Bus;
use super::protocol::{BusMessage, SessionState};
use crate::router::remote::RemoteLink;
use crate::router::session_handle::LocalSession;
use std::sync::{Arc, RwLock};
use zkfire_xml::Element;

/// The bus of the current incarnation; replaced when the node joins again.
#[derive(Default)]
pub struct ClusterLink {
    bus: RwLock<Option<Arc<Bus>>>,
}

impl ClusterLink {
    pub fn set_bus(&self, bus: Option<Arc<Bus>>) {
        if let Ok(mut b) = self.bus.write() {
            *b = bus;
        }
    }

    fn bus(&self) -> Option<Arc<Bus>> {
        self.bus.read().ok().and_then(|b| b.clone())
    }

    /// Sends to one peer; false when it cannot take it now.
    pub fn send(&self, node_id: &str, message: &BusMessage) -> bool {
        match self.bus() {
            Some(bus) => bus.send(node_id, message.encode()).is_ok(),
            None => false,
        }
    }

    /// Sends to every connected peer.
    pub fn broadcast(&self, message: &BusMessage) {
        let Some(bus) = self.bus() else { return };
        let payload = message.encode();
        for peer in bus.connected_peers() {
            if bus.send(&peer.node_id, payload.clone()).is_err() {
                tracing::warn!(peer = %peer.node_id, "cluster bus queue full; peer will resynchronize");
            }
        }
    }

    pub fn announce(&self, session: &LocalSession) {
        self.broadcast(&BusMessage::Session(state_of(session)));
    }

    pub fn announce_gone(&self, session: &LocalSession) {
        self.broadcast(&BusMessage::SessionGone {
            full_jid: session.full_jid.clone(),
        });
    }
}

/// What is announced of a local session.
pub fn state_of(session: &LocalSession) -> SessionState {
    let p = session.presence();
    SessionState {
        full_jid: session.full_jid.clone(),
        available: p.available,
        priority: p.priority,
        presence: p.last.as_ref().map(Element::to_xml),
        bound_at: session.bound_at,
    }
}

impl RemoteLink for ClusterLink {
    fn deliver(&self, node_id: &str, full_jid: &str, stanza: Element) -> Result<(), Element> {
        let message = BusMessage::Stanza {
            to: full_jid.to_string(),
            xml: stanza.to_xml(),
        };
        if self.send(node_id, &message) {
            Ok(())
        } else {
            Err(stanza)
        }
    }

    fn close(&self, node_id: &str, full_jid: &str, condition: &'static str) {
        self.send(
            node_id,
            &BusMessage::Close {
                full_jid: full_jid.to_string(),
                condition: condition.to_string(),
            },
        );
    }
}
