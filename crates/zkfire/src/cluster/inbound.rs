//! What other nodes tell this one: applied in the order each peer sent it,
//! by one dispatcher task, so the bus reader never waits on the router.

use super::bus::{BusHandler, PeerInfo};
use super::copy_groups::CopyGroups;
use super::link::{answer_within, state_of};
use super::protocol::{BusMessage, SessionState};
use crate::modules::{offline, presence};
use crate::router::copies::{Copies, Report};
use crate::router::remote::{Announced, RemoteSession};
use crate::router::session_handle::{PresenceState, SessionCommand};
use crate::server::Server;
use std::sync::Arc;
use tokio::sync::mpsc;

pub enum InboundEvent {
    Frame(PeerInfo, Vec<u8>),
    PeerUp(PeerInfo),
    /// What this node sent a peer that left before acknowledging it.
    Undelivered(PeerInfo, Vec<Vec<u8>>),
}

/// The bus handler: queues what arrives for the dispatcher.
pub struct Inbound {
    tx: mpsc::UnboundedSender<InboundEvent>,
}

impl Inbound {
    pub fn new() -> (Arc<Inbound>, mpsc::UnboundedReceiver<InboundEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Inbound { tx }), rx)
    }
}

impl BusHandler for Inbound {
    fn on_frame(&self, from: &PeerInfo, payload: Vec<u8>) {
        let _ = self.tx.send(InboundEvent::Frame(from.clone(), payload));
    }

    fn on_peer_up(&self, peer: &PeerInfo) {
        tracing::info!(peer = %peer.node_id, incarnation = peer.incarnation, "cluster peer connected");
        let _ = self.tx.send(InboundEvent::PeerUp(peer.clone()));
    }

    fn on_peer_down(&self, peer: &PeerInfo) {
        tracing::info!(peer = %peer.node_id, "cluster peer disconnected");
    }

    fn on_undelivered(&self, peer: &PeerInfo, payloads: Vec<Vec<u8>>) {
        let _ = self
            .tx
            .send(InboundEvent::Undelivered(peer.clone(), payloads));
    }
}

/// Applies inbound events until the channel closes.
pub async fn dispatch(server: Arc<Server>, mut rx: mpsc::UnboundedReceiver<InboundEvent>) {
    let mut groups = CopyGroups::default();
    while let Some(event) = rx.recv().await {
        match event {
            InboundEvent::PeerUp(peer) => send_snapshot(&server, &peer),
            InboundEvent::Undelivered(peer, payloads) => {
                reroute_undelivered(&server, &peer, payloads).await
            }
            InboundEvent::Frame(peer, bytes) => match BusMessage::decode(&bytes) {
                Ok(message) => {
                    tracing::trace!(peer = %peer.node_id, ?message, "from peer");
                    apply(&server, &peer, message, &mut groups).await
                }
                Err(e) => tracing::warn!(peer = %peer.node_id, "undecodable cluster message: {e}"),
            },
        }
    }
}

/// Stanzas a departed peer never acknowledged go through the router again:
/// its sessions are gone from the directory by now, so messages reach
/// another resource or offline storage instead of being lost with the node.
/// Each is rerouted once, to one place. A copy of a message that several
/// resources got is left to the departure of the peer, which lets go of all
/// its copies at once (`cluster::copy_origins`), so it is not fanned out again.
async fn reroute_undelivered(server: &Arc<Server>, peer: &PeerInfo, payloads: Vec<Vec<u8>>) {
    let mut count = 0;
    for bytes in payloads {
        let xml = match BusMessage::decode(&bytes) {
            Ok(BusMessage::Stanza {
                xml, group: None, ..
            }) => xml,
            // Copies this node reported done to the peer that fanned the
            // message out, which left before deciding: decided here.
            Ok(BusMessage::CopyDone {
                taken: false, xml, ..
            }) => xml,
            _ => continue,
        };
        if let Ok(stanza) = zkfire_xml::parse_element(&xml) {
            count += 1;
            crate::c2s::session::reroute(server, stanza).await;
        }
    }
    if count > 0 {
        tracing::info!(peer = %peer.node_id, count, "rerouted stanzas a departed peer did not acknowledge");
    }
}

fn send_snapshot(server: &Server, peer: &PeerInfo) {
    let Some(link) = &server.cluster else { return };
    let sessions = server
        .directory
        .all_local()
        .iter()
        .map(|s| state_of(s, server.blocklists.get(&s.bare_jid).map(|l| l.clone())))
        .collect();
    if !link.send(&peer.node_id, &BusMessage::Snapshot { sessions }) {
        tracing::warn!(peer = %peer.node_id, "could not send the session snapshot");
    }
}

fn remote_session(
    server: &Server,
    node_id: &str,
    state: &SessionState,
) -> Option<Arc<RemoteSession>> {
    if let (Some(list), Some((bare, _))) = (&state.blocklist, state.full_jid.split_once('/')) {
        server
            .blocklists
            .insert(bare.to_string(), Arc::new(list.clone()));
    }
    let link = server.cluster.clone()?;
    let presence = PresenceState::from_announced(
        state.available,
        state.priority,
        state.presence.as_deref(),
        state.directed.clone(),
    );
    RemoteSession::new(
        node_id,
        &state.full_jid,
        presence,
        link,
        Announced {
            bound_at: state.bound_at,
            sm_id: state.sm_id.clone(),
            detached: state.detached,
            flags: state.flags.clone(),
        },
    )
    .map(Arc::new)
}

async fn apply(
    server: &Arc<Server>,
    peer: &PeerInfo,
    message: BusMessage,
    groups: &mut CopyGroups,
) {
    match message {
        BusMessage::Snapshot { sessions } => {
            let before = server.directory.drop_node(&peer.node_id);
            for state in &sessions {
                if let Some(s) = remote_session(server, &peer.node_id, state) {
                    server.directory.upsert_remote(s);
                }
            }
            // Sessions that ended while the bus was down: their presence
            // never arrived, so it is owed now.
            for old in before {
                let still = sessions.iter().any(|s| s.full_jid == old.full_jid);
                if !still && old.presence().available {
                    presence::resource_vanished(server, &old).await;
                }
            }
        }
        BusMessage::Session(state) => {
            let Some(remote) = remote_session(server, &peer.node_id, &state) else {
                return;
            };
            if let Some(local) = server
                .directory
                .local_resources(&remote.bare_jid)
                .into_iter()
                .find(|s| s.resource == remote.resource)
            {
                // The same full JID on two nodes: the newer login wins (RFC 6120 7.7.2.2).
                if local.bound_at <= state.bound_at {
                    local.command(SessionCommand::Close("conflict"));
                } else {
                    remote.close("conflict");
                }
            }
            server.directory.upsert_remote(remote);
        }
        BusMessage::SessionGone { full_jid } => {
            if let Some((bare, resource)) = full_jid.split_once('/') {
                server
                    .directory
                    .remove_remote(bare, resource, &peer.node_id);
            }
        }
        BusMessage::Stanza { to, xml, group } => match zkfire_xml::parse_element(&xml) {
            Ok(stanza) => {
                let copies = group.map(|id| {
                    groups.get(&peer.node_id, id, || {
                        report_to(server, &peer.node_id, id, &xml)
                    })
                });
                deliver_here(server, &to, stanza, copies).await
            }
            Err(e) => tracing::warn!(peer = %peer.node_id, "unreadable stanza from peer: {e}"),
        },
        BusMessage::CopyDone { group, taken, xml } => {
            let reroute = server
                .cluster
                .as_ref()
                .and_then(|link| link.copy_origins.done(group, &peer.node_id, taken, xml));
            if let Some(stanza) = reroute.and_then(|x| zkfire_xml::parse_element(&x).ok()) {
                crate::c2s::session::reroute(server, stanza).await;
            }
        }
        BusMessage::AccountChanged { bare_jid, what } => {
            server.modules.account_changed(&bare_jid, &what);
        }
        BusMessage::Close {
            full_jid,
            condition,
        } => {
            if let Some((bare, resource)) = full_jid.split_once('/') {
                for s in server.directory.local_resources(bare) {
                    if s.resource == resource {
                        s.command(SessionCommand::Close(static_condition(&condition)));
                    }
                }
            }
        }
        BusMessage::OfflineStored { bare_jid } => {
            let available = server
                .directory
                .local_resources(&bare_jid)
                .into_iter()
                .find(|s| {
                    let p = s.presence();
                    // Not one waiting for resumption: it may never come back.
                    p.available && p.priority >= 0 && !s.is_detached()
                });
            if let Some(session) = available {
                offline::deliver_stored(server, &session).await;
            }
        }
        BusMessage::BlocklistChanged { bare_jid, list } => {
            if server.directory.has_resources(&bare_jid) {
                server.blocklists.insert(bare_jid, Arc::new(list));
            } else {
                server.blocklists.remove(&bare_jid);
            }
        }
        BusMessage::ResumeRequest {
            id,
            full_jid,
            previd,
            h,
        } => hand_over(server, peer, id, &full_jid, &previd, h),
        BusMessage::ResumeHandover { id, state } => {
            if let Some(link) = &server.cluster {
                link.handover_answered(id, state);
            }
        }
    }
}

/// How this node tells `node` that its copies of message `group` are done.
fn report_to(server: &Arc<Server>, node: &str, group: u64, xml: &str) -> Report {
    let link = server.cluster.clone();
    let (node, xml) = (node.to_string(), xml.to_string());
    Box::new(move |taken| {
        let Some(link) = &link else { return false };
        let xml = if taken { String::new() } else { xml.clone() };
        link.send(&node, &BusMessage::CopyDone { group, taken, xml })
    })
}

/// A stanza another node routed to a resource of this one. When that
/// resource is gone, it is treated as absent: messages and requests go
/// through the router again from here (another resource, offline storage,
/// or an error), the rest is dropped as for any resource that went away.
async fn deliver_here(
    server: &Arc<Server>,
    to: &str,
    stanza: zkfire_xml::Element,
    copies: Option<Arc<Copies>>,
) {
    let Some((bare, resource)) = to.split_once('/') else {
        return;
    };
    let local = server
        .directory
        .local_resources(bare)
        .into_iter()
        .find(|s| s.resource == resource);
    let stanza = match local {
        Some(s) => match s.deliver_held(stanza, copies.as_ref().map(|c| c.hold())) {
            Ok(()) => return,
            Err(back) => back,
        },
        None => stanza,
    };
    if copies.is_some_and(|c| c.settled_or_held()) {
        // Another session here has this message; it answers for it.
        return;
    }
    crate::c2s::session::reroute(server, stanza).await;
}

/// A peer asks for one of this node's sessions, which its client resumed
/// there. The session task packs itself up and ends; the answer goes back
/// from a task of its own, so this dispatcher does not wait for it.
fn hand_over(server: &Arc<Server>, peer: &PeerInfo, id: u64, full_jid: &str, previd: &str, h: u32) {
    let Some(link) = server.cluster.clone() else {
        return;
    };
    let session = full_jid.split_once('/').and_then(|(bare, resource)| {
        server
            .directory
            .local_resources(bare)
            .into_iter()
            .find(|s| s.resource == resource && s.sm_id().as_deref() == Some(previd))
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let asked = session.is_some_and(|s| {
        s.command(SessionCommand::Handover(Box::new(
            crate::c2s::stream_mgmt::HandoverRequest { h, reply: tx },
        )))
    });
    let node = peer.node_id.clone();
    tokio::spawn(async move {
        let state = if asked {
            answer_within(rx, std::time::Duration::from_secs(3)).await
        } else {
            None
        };
        link.send(&node, &BusMessage::ResumeHandover { id, state });
    });
}

fn static_condition(condition: &str) -> &'static str {
    match condition {
        "conflict" => "conflict",
        "not-authorized" => "not-authorized",
        "system-shutdown" => "system-shutdown",
        "policy-violation" => "policy-violation",
        _ => "undefined-condition",
    }
}
