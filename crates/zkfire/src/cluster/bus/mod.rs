//! The cluster bus: one long-lived connection per pair of nodes, carrying
//! opaque frames for the layer above.
//!
//! - Each pair has one connection, dialed by the node with the smaller node
//!   id; the other accepts. Frames keep their order per sender → receiver.
//! - Both sides prove the cluster secret (HMAC challenge-response over both
//!   nonces, ids, incarnations and a role, see `handshake.rs`) before
//!   anything else is sent; inside TLS when configured, bound to the TLS
//!   session. Only members of the current membership, in their current
//!   incarnation, are admitted. Handshakes in progress are bounded in time
//!   and in number, members' addresses apart from strangers' (`pending.rs`).
//! - Frames are length-prefixed with a size limit; heartbeats find silent
//!   peers; peers this node dials are redialed with capped backoff.
//! - `send` never blocks and never drops silently: it queues the frame or
//!   gives it back. A queued frame stays queued until the peer acknowledges
//!   it, across reconnections; if the peer leaves for good the handler gets
//!   the unacknowledged frames back (`on_undelivered`).

pub mod frame;
pub mod handshake;
mod link;
mod listener;
mod peer;
mod pending;

use handshake::{valid_node_id, Identity};
use peer::{NotQueued, PeerSlot, QueueLimit};
use pending::PendingHandshakes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Settings of the bus of one node.
#[derive(Clone)]
pub struct BusConfig {
    pub node_id: String,
    /// This node's incarnation (the creation zxid of its membership znode).
    pub incarnation: i64,
    pub listen: SocketAddr,
    /// The cluster secret every node shares.
    pub secret: Vec<u8>,
    /// TLS server and client configurations, when the bus runs over TLS.
    pub tls: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)>,
    /// Idle links send a heartbeat this often; a peer silent for three
    /// intervals is down.
    pub heartbeat: Duration,
    /// Frames queued per peer and not yet acknowledged by it.
    pub max_queue: usize,
    /// Payload bytes queued per peer and not yet acknowledged by it.
    pub max_queue_bytes: usize,
    /// Largest payload of one frame.
    pub max_frame: usize,
    /// Bound on connecting, TLS and authentication together.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once from members' addresses, and as many
    /// again from all other addresses.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress at once from one address that is not a
    /// member's.
    pub max_handshakes_per_address: usize,
}

impl std::fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusConfig")
            .field("node_id", &self.node_id)
            .field("incarnation", &self.incarnation)
            .field("listen", &self.listen)
            .field("secret", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .field("heartbeat", &self.heartbeat)
            .field("max_queue", &self.max_queue)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_frame", &self.max_frame)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .field(
                "max_handshakes_per_address",
                &self.max_handshakes_per_address,
            )
            .finish()
    }
}

/// A member of the cluster as the membership (ZooKeeper) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: String,
    pub incarnation: i64,
    /// Where its bus listens.
    pub addr: SocketAddr,
}

/// What the layer above gets from the bus. Called from the bus's tasks:
/// return quickly.
pub trait BusHandler: Send + Sync + 'static {
    /// A frame from an authenticated peer, in the order it sent them. Called
    /// from the peer's reader task; must not block for long.
    fn on_frame(&self, from: &PeerInfo, payload: Vec<u8>);
    /// The connection to this peer is authenticated and usable (called again
    /// after each reconnection).
    fn on_peer_up(&self, peer: &PeerInfo);
    /// The connection is gone (peer down, heartbeat lost, removed from
    /// membership).
    fn on_peer_down(&self, peer: &PeerInfo);
    /// Frames `send` accepted for a peer that left for good (removed from
    /// the membership, new incarnation, or this bus stopping) before it
    /// acknowledged them, in send order. Some may have reached the peer just
    /// before it went away; none will be sent again. Called after
    /// `on_peer_down`.
    fn on_undelivered(&self, peer: &PeerInfo, payloads: Vec<Vec<u8>>) {
        let _ = (peer, payloads);
    }
}

/// What the bus's tasks share.
pub(crate) struct Shared {
    pub local: Identity,
    pub secret: Vec<u8>,
    pub tls: Option<link::Tls>,
    pub heartbeat: Duration,
    pub queue_limit: QueueLimit,
    pub max_frame: usize,
    pub handshake_timeout: Duration,
    /// Inbound handshakes in progress, by the address they come from.
    pub pending: Arc<PendingHandshakes>,
    pub handler: Arc<dyn BusHandler>,
    peers: Mutex<HashMap<String, Arc<PeerSlot>>>,
    /// Stops everything: the caller's shutdown, or the Bus dropped.
    pub stop: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<String, Arc<PeerSlot>>> {
        // The map stays consistent even if a holder panicked.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn slot(&self, node_id: &str) -> Option<Arc<PeerSlot>> {
        self.peers().get(node_id).cloned()
    }
}

/// The cluster bus of this node. Dropping it stops it.
pub struct Bus {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Bus {
    /// Binds the listener and starts serving; peers come with `set_peers`.
    pub async fn start(
        config: BusConfig,
        handler: Arc<dyn BusHandler>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Bus> {
        anyhow::ensure!(
            valid_node_id(&config.node_id),
            "cluster node id must be 1 to {} bytes",
            handshake::MAX_NODE_ID
        );
        anyhow::ensure!(!config.secret.is_empty(), "the cluster secret is empty");
        anyhow::ensure!(
            !config.heartbeat.is_zero(),
            "bus heartbeat must be positive"
        );
        anyhow::ensure!(
            config.max_pending_handshakes > 0 && config.max_handshakes_per_address > 0,
            "bus max_pending_handshakes and max_handshakes_per_address must be positive"
        );
        anyhow::ensure!(
            !config.handshake_timeout.is_zero(),
            "bus handshake timeout must be positive"
        );
        anyhow::ensure!(
            config.max_queue > 0 && config.max_queue_bytes > 0,
            "bus max_queue and max_queue_bytes must be positive"
        );
        anyhow::ensure!(
            config.max_frame > 0 && config.max_frame <= u32::MAX as usize - frame::DATA_OVERHEAD,
            "bus max_frame must be between 1 and {} bytes",
            u32::MAX as usize - frame::DATA_OVERHEAD
        );
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding the cluster bus to {}: {e}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            local: Identity {
                node_id: config.node_id,
                incarnation: config.incarnation,
            },
            secret: config.secret,
            tls: config
                .tls
                .map(|(server, client)| link::Tls::new(server, client)),
            heartbeat: config.heartbeat,
            queue_limit: QueueLimit {
                frames: config.max_queue,
                bytes: config.max_queue_bytes,
            },
            max_frame: config.max_frame,
            handshake_timeout: config.handshake_timeout,
            pending: PendingHandshakes::new(pending::Limits {
                pool: config.max_pending_handshakes,
                per_address: config.max_handshakes_per_address,
            }),
            handler,
            peers: Mutex::new(HashMap::new()),
            stop: shutdown.child_token(),
            runtime: tokio::runtime::Handle::current(),
        });
        tracing::info!(
            node = %shared.local.node_id,
            incarnation = shared.local.incarnation,
            addr = %local_addr,
            tls = shared.tls.is_some(),
            "bus: listening"
        );
        tokio::spawn(listener::accept_loop(shared.clone(), listener));
        tokio::spawn(retire_all_on_stop(shared.clone()));
        Ok(Bus { shared, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The peers that should exist now (from ZooKeeper). Connects to new
    /// ones, drops removed ones and ones whose incarnation (or address)
    /// changed. This node's own entry is ignored.
    pub fn set_peers(&self, peers: Vec<PeerInfo>) {
        let shared = &self.shared;
        if shared.stop.is_cancelled() {
            return;
        }
        let mut wanted: HashMap<String, PeerInfo> = HashMap::new();
        for p in peers {
            if p.node_id == shared.local.node_id {
                continue;
            }
            if !valid_node_id(&p.node_id) {
                tracing::warn!(peer = %p.node_id, "bus: peer node id unusable; ignored");
                continue;
            }
            if let Some(first) = wanted.get(&p.node_id) {
                tracing::warn!(peer = %p.node_id, kept = ?first, ignored = ?p, "bus: peer listed twice");
                continue;
            }
            wanted.insert(p.node_id.clone(), p);
        }
        shared
            .pending
            .set_members(wanted.values().map(|p| p.addr.ip()));
        let mut retired = Vec::new();
        {
            let mut map = shared.peers();
            map.retain(|id, slot| {
                let keep = wanted.get(id) == Some(&slot.info);
                if !keep {
                    retired.push(slot.clone());
                }
                keep
            });
            for (id, info) in wanted {
                if map.contains_key(&id) {
                    continue;
                }
                tracing::info!(peer = %id, incarnation = info.incarnation, addr = %info.addr, "bus: peer added");
                let slot = Arc::new(PeerSlot::new(info, shared.stop.child_token()));
                if shared.local.node_id < id {
                    shared
                        .runtime
                        .spawn(peer::dial_loop(shared.clone(), slot.clone()));
                }
                map.insert(id, slot);
            }
        }
        for slot in retired {
            tracing::info!(
                peer = %slot.info.node_id,
                incarnation = slot.info.incarnation,
                "bus: peer removed"
            );
            shared.runtime.spawn(slot.retire(shared.clone()));
        }
    }

    /// Queues a frame for a peer. Gives the payload back when the peer is
    /// unknown, not connected, its queue is full, or the payload exceeds
    /// `max_frame`. Never blocks.
    pub fn send(&self, node_id: &str, payload: Vec<u8>) -> Result<(), Vec<u8>> {
        if payload.len() > self.shared.max_frame {
            return Err(payload);
        }
        match self.shared.slot(node_id) {
            Some(slot) => slot
                .try_send(payload, self.shared.queue_limit)
                .map_err(|(p, _)| p),
            None => Err(payload),
        }
    }

    /// Like `send`, but waits up to `timeout` for room in a full queue. Gives
    /// the payload back at once when the peer is unknown or not connected,
    /// and when the link goes down while waiting.
    pub async fn send_wait(
        &self,
        node_id: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), Vec<u8>> {
        if payload.len() > self.shared.max_frame {
            return Err(payload);
        }
        let Some(slot) = self.shared.slot(node_id) else {
            return Err(payload);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut payload = payload;
        loop {
            // Registered before trying, so room made in between is seen.
            let room = slot.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match slot.try_send(payload, self.shared.queue_limit) {
                Ok(()) => return Ok(()),
                Err((p, NotQueued::Full)) => payload = p,
                Err((p, NotQueued::NotConnected)) => return Err(p),
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(payload);
            }
        }
    }

    /// Peers with an authenticated link now.
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        self.shared
            .peers()
            .values()
            .filter(|s| s.is_connected())
            .map(|s| s.info.clone())
            .collect()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// When the bus stops, every peer is retired so the handler gets back the
/// frames no peer acknowledged.
async fn retire_all_on_stop(shared: Arc<Shared>) {
    shared.stop.cancelled().await;
    let slots: Vec<Arc<PeerSlot>> = shared.peers().drain().map(|(_, s)| s).collect();
    for slot in slots {
        slot.retire(shared.clone()).await;
    }
}
