//! Running as a cluster node: managed ZooKeeper (when configured),
//! membership, and a cluster bus per incarnation; reacting when members
//! come and go and when this node loses its ZooKeeper session.

use super::bus::{Bus, BusConfig, PeerInfo};
use super::inbound::{dispatch, Inbound};
use super::membership::{self, Event, Member, MembershipConfig, NodeData};
use super::zk_managed::ManagedZooKeeper;
use crate::config::Config;
use crate::modules::presence;
use crate::server::Server;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest frame accepted on the bus (a stanza is far smaller; snapshots of
/// many sessions are the big ones).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What serve keeps to stop the cluster side last, after the sessions.
pub struct ClusterNode {
    token: CancellationToken,
    managed: Option<ManagedZooKeeper>,
    task: tokio::task::JoinHandle<()>,
    membership: tokio::task::JoinHandle<()>,
}

impl ClusterNode {
    /// Leaves the cluster and stops the bus and any managed ZooKeeper.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        // Membership deletes this node's znode as it ends, so peers drop the
        // node at once rather than after the session timeout.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.membership).await;
        if let Some(zk) = self.managed {
            zk.stop().await;
        }
    }
}

pub async fn start(server: Arc<Server>, config: &Config) -> anyhow::Result<ClusterNode> {
    let c = &config.cluster;
    for w in config.cluster_warnings() {
        tracing::warn!("{w}");
    }
    let secret = config.cluster_secret()?;
    let listen = c.listen.context("[cluster] listen")?;
    let token = CancellationToken::new();
    let managed = match &config.zookeeper.managed {
        Some(m) => Some(ManagedZooKeeper::start(m, token.clone()).await?),
        None => None,
    };
    let connect = match (&config.zookeeper.connect, &managed) {
        (Some(c), _) => c.clone(),
        (None, Some(m)) => m.connect_string(),
        (None, None) => anyhow::bail!("no ZooKeeper to connect to"),
    };
    let tls = super::tls::bus_tls(config)?;
    let membership_config = MembershipConfig {
        connect,
        root: config.zookeeper.root.clone(),
        session_timeout: Duration::from_millis(config.zookeeper.session_timeout_ms),
        digest: Some(super::zk_acl::digest(config)?),
        node_id: c.node_id.clone(),
        data: NodeData {
            bus: c.advertise.unwrap_or(listen),
            client_address: c.client_address.clone(),
            started_at: crate::stanza::unix_now(),
            sessions: 0,
        },
    };
    let counter = server.clone();
    let sessions = Arc::new(move || counter.directory.session_count());
    let (events, membership) = membership::spawn(membership_config, sessions, token.clone());
    let bus_config = BusConfig {
        node_id: c.node_id.clone(),
        incarnation: 0,
        listen,
        secret,
        tls,
        heartbeat: Duration::from_millis(c.heartbeat_ms),
        max_queue: c.max_peer_queue,
        max_queue_bytes: c.max_peer_queue_bytes,
        max_frame: MAX_FRAME,
        handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
        max_pending_handshakes: c.max_pending_handshakes,
        max_handshakes_per_address: c.max_handshakes_per_address,
    };
    let task = tokio::spawn(follow(server, bus_config, events, token.clone()));
    Ok(ClusterNode {
        token,
        managed,
        task,
        membership,
    })
}

/// Follows membership events for the life of the node.
async fn follow(
    server: Arc<Server>,
    bus_config: BusConfig,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    token: CancellationToken,
) {
    let Some(link) = server.cluster.clone() else {
        return;
    };
    let mut bus: Option<(Arc<Bus>, CancellationToken)> = None;
    let mut members: HashMap<String, Member> = HashMap::new();
    let me = bus_config.node_id.clone();
    while let Some(event) = tokio::select! {
        e = events.recv() => e,
        _ = token.cancelled() => None,
    } {
        match event {
            Event::Joined { incarnation } => {
                let bus_token = token.child_token();
                let (handler, rx) = Inbound::new();
                let config = BusConfig {
                    incarnation,
                    ..bus_config.clone()
                };
                match Bus::start(config, handler, bus_token.clone()).await {
                    Ok(b) => {
                        let b = Arc::new(b);
                        link.set_bus(Some(b.clone()));
                        tokio::spawn(dispatch(server.clone(), rx));
                        bus = Some((b, bus_token));
                        server.serving.store(true, Ordering::SeqCst);
                        tracing::info!(incarnation, "serving as a cluster member");
                    }
                    Err(e) => {
                        tracing::error!("cannot start the cluster bus: {e:#}");
                    }
                }
            }
            Event::Members(list) => {
                let now: HashMap<String, Member> =
                    list.into_iter().map(|m| (m.node_id.clone(), m)).collect();
                for (id, old) in &members {
                    let gone = now.get(id).is_none_or(|m| m.incarnation != old.incarnation);
                    if gone && *id != me {
                        node_left(&server, id).await;
                    }
                }
                members = now;
                if let Some((b, _)) = &bus {
                    let peers = members
                        .values()
                        .filter(|m| m.node_id != me)
                        .map(|m| PeerInfo {
                            node_id: m.node_id.clone(),
                            incarnation: m.incarnation,
                            addr: m.data.bus,
                        })
                        .collect();
                    b.set_peers(peers);
                }
                let others: Vec<String> = members
                    .values()
                    .filter(|m| m.node_id != me)
                    .filter_map(|m| m.data.client_address.clone())
                    .collect();
                if let Ok(mut r) = server.redirect_to.write() {
                    *r = others.first().cloned();
                }
            }
            Event::Lost { why } => {
                // No longer a member: stop serving before joining again as a
                // new incarnation (DESIGN.md cluster point 2).
                tracing::warn!("{why}: this node stops serving until it rejoins");
                server.serving.store(false, Ordering::SeqCst);
                link.set_bus(None);
                if let Some((_, t)) = bus.take() {
                    t.cancel();
                }
                for session in server.directory.all_local() {
                    session.command(crate::router::session_handle::SessionCommand::Close(
                        "see-other-host",
                    ));
                }
                for id in members.keys().filter(|id| **id != me) {
                    server.directory.drop_node(id);
                }
                members.clear();
            }
        }
    }
    link.set_bus(None);
}

/// A node left the cluster (or came back as a new incarnation): its
/// sessions are gone, and the contacts of its users that are connected here
/// are owed unavailable presence.
async fn node_left(server: &Arc<Server>, node_id: &str) {
    let gone = server.directory.drop_node(node_id);
    tracing::info!(node = node_id, sessions = gone.len(), "cluster node left");
    // Copies of messages fanned out from here that died with its sessions.
    if let Some(link) = &server.cluster {
        for xml in link.copy_origins.node_left(node_id) {
            if let Ok(stanza) = zkfire_xml::parse_element(&xml) {
                crate::c2s::session::reroute(server, stanza).await;
            }
        }
    }
    for s in gone {
        if s.presence().available {
            presence::resource_vanished(server, &s).await;
        }
    }
}
