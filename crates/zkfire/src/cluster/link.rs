//! The cluster seen from the router: sends stanzas and commands to other
//! nodes over the bus, and announces this node's sessions to them.

use super::bus::Bus;
use super::copy_origins::CopyOrigins;
use super::protocol::{BusMessage, HandoverState, SessionState};
use crate::router::copies::Copies;
use crate::router::remote::RemoteLink;
use crate::router::session_handle::LocalSession;
use std::sync::{Arc, RwLock};
use zkfire_xml::Element;

/// How long a node waits for a peer to hand over a resumed session.
const HANDOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The bus of the current incarnation; replaced when the node joins again.
#[derive(Default)]
pub struct ClusterLink {
    bus: RwLock<Option<Arc<Bus>>>,
    /// Session handovers asked of peers and not yet answered.
    handovers: dashmap::DashMap<u64, tokio::sync::oneshot::Sender<Option<Box<HandoverState>>>>,
    next_handover: std::sync::atomic::AtomicU64,
    /// Messages fanned out to sessions here and on other nodes.
    pub copy_origins: CopyOrigins,
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

    /// Asks `node_id` for the session a client resumed here (XEP-0198 across
    /// nodes); `None` when the peer does not answer in time or has no such session.
    pub async fn take_over(
        &self,
        node_id: &str,
        full_jid: &str,
        previd: &str,
        h: u32,
    ) -> Option<Box<HandoverState>> {
        let id = self
            .next_handover
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handovers.insert(id, tx);
        let asked = self.send(
            node_id,
            &BusMessage::ResumeRequest {
                id,
                full_jid: full_jid.to_string(),
                previd: previd.to_string(),
                h,
            },
        );
        let answer = if asked {
            answer_within(rx, HANDOVER_TIMEOUT).await
        } else {
            None
        };
        self.handovers.remove(&id);
        answer
    }

    /// A peer answered a handover request.
    pub fn handover_answered(&self, id: u64, state: Option<Box<HandoverState>>) {
        if let Some((_, tx)) = self.handovers.remove(&id) {
            let _ = tx.send(state);
        }
    }

    pub fn announce(&self, session: &LocalSession, blocklist: Option<Arc<Vec<String>>>) {
        self.broadcast(&BusMessage::Session(state_of(session, blocklist)));
    }

    pub fn announce_gone(&self, session: &LocalSession) {
        self.broadcast(&BusMessage::SessionGone {
            full_jid: session.full_jid.clone(),
        });
    }
}

/// The answer on `rx` if it comes within `wait`; none for a dropped sender.
pub async fn answer_within<T>(
    rx: tokio::sync::oneshot::Receiver<Option<T>>,
    wait: std::time::Duration,
) -> Option<T> {
    tokio::time::timeout(wait, rx).await.ok()?.ok()?
}

/// What is announced of a local session.
pub fn state_of(session: &LocalSession, blocklist: Option<Arc<Vec<String>>>) -> SessionState {
    let p = session.presence();
    SessionState {
        full_jid: session.full_jid.clone(),
        available: p.available,
        priority: p.priority,
        presence: p.last.as_ref().map(Element::to_xml),
        bound_at: session.bound_at,
        sm_id: session.sm_id(),
        blocklist: blocklist.map(|l| l.as_ref().clone()),
        directed: p.directed,
        detached: session.is_detached(),
        flags: session.flags(),
    }
}

impl RemoteLink for ClusterLink {
    fn deliver(
        &self,
        node_id: &str,
        full_jid: &str,
        stanza: Element,
        group: Option<&Arc<Copies>>,
    ) -> Result<(), Element> {
        let xml = stanza.to_xml();
        let counted = group.is_some_and(|c| self.copy_origins.sending(c, node_id, &xml));
        let message = BusMessage::Stanza {
            to: full_jid.to_string(),
            xml,
            group: group.map(|c| c.id),
        };
        if self.send(node_id, &message) {
            Ok(())
        } else {
            if let (Some(c), true) = (group, counted) {
                self.copy_origins.not_sent(c.id, node_id);
            }
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
