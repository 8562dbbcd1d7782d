//! Membership through ZooKeeper (DESIGN.md, cluster points 1, 2 and 10).
//!
//! A node is a member while its ephemeral znode `<root>/nodes/<node_id>`
//! exists; the znode's creation zxid is the node's incarnation. A watch on
//! `<root>/nodes` keeps the view current. While ZooKeeper cannot be reached
//! the last view stays in force; when the session expires, or the node's
//! znode disappears while the session lives on (someone deleted it), the
//! node is no longer a member and says so (`Event::Lost`), then joins again
//! as a new incarnation.

use super::zk_acl;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// How often a member refreshes what its znode says (session count).
const REFRESH: Duration = Duration::from_secs(5);

/// What a member's znode holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeData {
    /// Where its cluster bus listens.
    pub bus: SocketAddr,
    /// Where its clients connect (`host:port`), for `see-other-host`.
    pub client_address: Option<String>,
    /// Unix seconds when the node started.
    pub started_at: i64,
    /// Client sessions bound on it, refreshed every few seconds.
    pub sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub incarnation: i64,
    pub data: NodeData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This node's znode exists, as this incarnation.
    Joined { incarnation: i64 },
    /// The members now (this node included).
    Members(Vec<Member>),
    /// This node is no longer a member, for the reason given: its
    /// ZooKeeper session expired, or its znode was deleted or replaced.
    Lost { why: &'static str },
}

#[derive(Clone)]
pub struct MembershipConfig {
    pub connect: String,
    pub root: String,
    pub session_timeout: Duration,
    /// `user:password` for digest authentication and creator-only ACLs
    /// (`zk_acl::digest`); a node always has them.
    pub digest: Option<String>,
    pub node_id: String,
    pub data: NodeData,
}

pub fn nodes_path(root: &str) -> String {
    format!("{root}/nodes")
}

/// Connects with the configured timeout and credentials.
pub async fn connect(config: &MembershipConfig) -> Result<zk::Client, zk::Error> {
    let mut connector = zk::Client::connector()
        .with_session_timeout(config.session_timeout)
        .with_connection_timeout(config.session_timeout);
    if let Some(digest) = &config.digest {
        connector = connector.with_auth("digest", digest.as_bytes());
    }
    connector.connect(&config.connect).await
}

fn credentials_refused(nodes: &str) -> String {
    format!(
        "ZooKeeper refuses this node's credentials for {nodes}: every node needs the same [zookeeper] digest, or none and the same cluster secret"
    )
}

/// Whether the cluster's znodes are open to anyone (created without ACLs);
/// says so loudly when they are.
async fn cluster_is_open(client: &zk::Client, config: &MembershipConfig) -> Result<bool, String> {
    let nodes = nodes_path(&config.root);
    let acl = match client.get_acl(&nodes).await {
        Ok((acl, _)) => acl,
        Err(zk::Error::NoAuth) => return Err(credentials_refused(&nodes)),
        Err(e) => return Err(format!("cannot read the ACL of {nodes}: {e}")),
    };
    let open = zk_acl::open_to_anyone(&acl);
    if open {
        tracing::error!(
            znode = %nodes,
            "the cluster's znodes were created without ACLs (by an earlier zkfire without [zookeeper] digest, or by hand): anyone who reaches ZooKeeper can remove members or add false ones. To close them, stop every node, delete {} (zkCli.sh deleteall {}) and start the nodes again; they create it with ACLs",
            config.root,
            config.root
        );
    }
    Ok(open)
}

/// Reads the current members.
pub async fn read_members(client: &zk::Client, root: &str) -> Result<Vec<Member>, zk::Error> {
    let children = client.list_children(&nodes_path(root)).await?;
    Ok(members_of(client, root, &children).await)
}

async fn members_of(client: &zk::Client, root: &str, children: &[String]) -> Vec<Member> {
    let mut members = Vec::new();
    for node_id in children {
        let path = format!("{}/{node_id}", nodes_path(root));
        match client.get_data(&path).await {
            Ok((bytes, stat)) => match serde_json::from_slice::<NodeData>(&bytes) {
                Ok(data) => members.push(Member {
                    node_id: node_id.clone(),
                    incarnation: stat.czxid,
                    data,
                }),
                Err(e) => tracing::warn!(node = %node_id, "unreadable member znode: {e}"),
            },
            Err(zk::Error::NoNode) => {} // left between the listing and the read
            Err(e) => tracing::warn!(node = %node_id, "cannot read member znode: {e}"),
        }
    }
    members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    members
}

/// Runs membership until `shutdown`; events go to the returned channel.
/// `sessions` tells how many client sessions this node has. The task must
/// be awaited at shutdown: it deletes this node's znode on its way out.
pub fn spawn(
    config: MembershipConfig,
    sessions: Arc<dyn Fn() -> usize + Send + Sync>,
    shutdown: CancellationToken,
) -> (mpsc::UnboundedReceiver<Event>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let mut joined = false;
            match run_session(&config, &sessions, &tx, &shutdown, &mut joined).await {
                Ok(()) => return,
                Err(e) => {
                    if joined {
                        // A membership that ended, not a failure to start one.
                        backoff = Duration::from_millis(200);
                    }
                    tracing::warn!("ZooKeeper: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
    (rx, task)
}

/// One ZooKeeper session: join, watch, until it expires or this node's
/// znode is taken away (Err) or shutdown (Ok).
async fn run_session(
    config: &MembershipConfig,
    sessions: &Arc<dyn Fn() -> usize + Send + Sync>,
    tx: &mpsc::UnboundedSender<Event>,
    shutdown: &CancellationToken,
    joined: &mut bool,
) -> Result<(), String> {
    let client = tokio::select! {
        c = connect(config) => c.map_err(|e| format!("cannot connect to {}: {e}", config.connect))?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let nodes = nodes_path(&config.root);
    // A new cluster's znodes are creator-only.
    let options =
        zk::CreateMode::Persistent.with_acls(zk_acl::for_new_znodes(config.digest.is_none()));
    match client.mkdir(&nodes, &options).await {
        Ok(()) | Err(zk::Error::NodeExists) => {}
        Err(zk::Error::NoAuth) => return Err(credentials_refused(&nodes)),
        Err(e) => return Err(format!("cannot create {nodes}: {e}")),
    }
    let open = cluster_is_open(&client, config).await?;
    let own = format!("{nodes}/{}", config.node_id);
    let mut data = config.data.clone();
    let own_acls = zk_acl::for_new_znodes(open || config.digest.is_none());
    let incarnation = create_own_znode(&client, config, own_acls, &own, &data).await?;
    tracing::info!(node = %config.node_id, incarnation, "joined the cluster");
    let _ = tx.send(Event::Joined { incarnation });
    *joined = true;
    let mut client = client;
    let mut state = client.state_watcher();
    let mut refresh = tokio::time::interval(REFRESH);
    loop {
        let listed = match client.list_and_watch_children(&nodes).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::debug!("ZooKeeper listing failed: {e}");
                None
            }
        };
        let Some((children, watcher)) = listed else {
            match wait_state(&mut state, shutdown).await {
                StateOutcome::Usable => continue,
                StateOutcome::Shutdown => return leave(&client, &own).await,
                StateOutcome::Gone => match resume(config, &client, shutdown).await {
                    Resumed::Same(c) => {
                        client = c;
                        state = client.state_watcher();
                        continue;
                    }
                    Resumed::Expired => {
                        let _ = tx.send(Event::Lost {
                            why: "lost the ZooKeeper session",
                        });
                        return Err("the ZooKeeper session expired".into());
                    }
                    Resumed::Shutdown => return Ok(()),
                },
            }
        };
        let members = members_of(&client, &config.root, &children).await;
        if let Some(why) = own_znode_lost(&children, &members, &config.node_id, incarnation) {
            // Peers dropped this node and its users when the znode went:
            // stop serving as they would after an expiry, and join again
            // as a new incarnation (a re-created znode has a new zxid).
            tracing::error!(
                znode = %own,
                incarnation,
                "this node's membership znode {why} (not by this node); it stops serving and joins again"
            );
            let _ = tx.send(Event::Lost {
                why: "lost its membership znode",
            });
            return Err(format!("{own} {why}"));
        }
        let _ = tx.send(Event::Members(members));
        let changed = watcher.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                _ = &mut changed => break,
                s = state.changed() => {
                    if s.is_terminated() {
                        match resume(config, &client, shutdown).await {
                            Resumed::Same(c) => {
                                client = c;
                                state = client.state_watcher();
                                break;
                            }
                            Resumed::Expired => {
                                let _ = tx.send(Event::Lost {
                            why: "lost the ZooKeeper session",
                        });
                                return Err(format!("the ZooKeeper session ended ({s:?})"));
                            }
                            Resumed::Shutdown => return Ok(()),
                        }
                    }
                    if s == zk::SessionState::SyncConnected {
                        break; // reconnected: read the view again
                    }
                }
                _ = refresh.tick() => {
                    let count = sessions();
                    if count != data.sessions {
                        data.sessions = count;
                        let bytes = serde_json::to_vec(&data).unwrap_or_default();
                        if let Err(e) = client.set_data(&own, &bytes, None).await {
                            tracing::debug!("cannot refresh member znode: {e}");
                        }
                    }
                }
                _ = shutdown.cancelled() => return leave(&client, &own).await,
            }
        }
    }
}

/// Why this node's own znode is no longer the one it created, if it is not:
/// deleted (by an operator, or anyone when the znodes are open), or
/// replaced by another znode of the same name.
fn own_znode_lost(
    children: &[String],
    members: &[Member],
    node_id: &str,
    incarnation: i64,
) -> Option<&'static str> {
    if !children.iter().any(|c| c == node_id) {
        return Some("was deleted");
    }
    // A znode that could not be read this time is checked on the next round.
    match members.iter().find(|m| m.node_id == node_id) {
        Some(m) if m.incarnation != incarnation => Some("was replaced"),
        _ => None,
    }
}

enum Resumed {
    /// The same session, so the same incarnation: nothing changed for peers.
    Same(zk::Client),
    /// ZooKeeper says the session is gone: this node is no longer a member.
    Expired,
    Shutdown,
}

/// The client gave up on its session. That may only mean ZooKeeper could not
/// be reached in time (the whole ensemble down, DESIGN.md cluster point 10):
/// the node goes on serving with the membership it last saw and keeps
/// trying to take the same session up again. Only ZooKeeper's own word
/// that the session expired ends the membership.
async fn resume(
    config: &MembershipConfig,
    old: &zk::Client,
    shutdown: &CancellationToken,
) -> Resumed {
    let session = old.session().clone();
    let mut backoff = Duration::from_millis(200);
    let mut logged = false;
    loop {
        let mut connector = zk::Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.session_timeout)
            .with_session(session.clone());
        if let Some(digest) = &config.digest {
            connector = connector.with_auth("digest", digest.as_bytes());
        }
        let attempt = tokio::select! {
            r = connector.connect(&config.connect) => r,
            _ = shutdown.cancelled() => return Resumed::Shutdown,
        };
        match attempt {
            Ok(client) => {
                tracing::info!(
                    "ZooKeeper reachable again; the session and membership are unchanged"
                );
                return Resumed::Same(client);
            }
            Err(zk::Error::SessionExpired) => return Resumed::Expired,
            Err(e) => {
                if !logged {
                    tracing::warn!(
                        "ZooKeeper cannot be reached ({e}); serving with the last known membership"
                    );
                    logged = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return Resumed::Shutdown,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum StateOutcome {
    Usable,
    Gone,
    Shutdown,
}

async fn wait_state(state: &mut zk::StateWatcher, shutdown: &CancellationToken) -> StateOutcome {
    loop {
        tokio::select! {
            s = state.changed() => {
                if s.is_terminated() {
                    return StateOutcome::Gone;
                }
                if s == zk::SessionState::SyncConnected {
                    return StateOutcome::Usable;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if state.peek_state() == zk::SessionState::SyncConnected {
                    return StateOutcome::Usable;
                }
            }
            _ = shutdown.cancelled() => return StateOutcome::Shutdown,
        }
    }
}

/// A clean leave: the znode goes at once, so peers need not wait for the
/// session to time out.
async fn leave(client: &zk::Client, own: &str) -> Result<(), String> {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.delete(own, None)).await;
    tracing::info!("left the cluster");
    Ok(())
}

/// Creates this node's ephemeral znode and returns its creation zxid. A
/// znode left by this node's previous incarnation (a crash and a quick
/// restart) is waited out for one session timeout, then removed: the node id
/// is this node's.
async fn create_own_znode(
    client: &zk::Client,
    config: &MembershipConfig,
    acls: zk::Acls<'static>,
    own: &str,
    data: &NodeData,
) -> Result<i64, String> {
    let bytes = serde_json::to_vec(data).map_err(|e| e.to_string())?;
    let options = zk::CreateMode::Ephemeral.with_acls(acls);
    let deadline = tokio::time::Instant::now() + config.session_timeout;
    loop {
        match client.create(own, &bytes, &options).await {
            Ok((stat, _)) => return Ok(stat.czxid),
            Err(zk::Error::NodeExists) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        znode = own,
                        "removing the znode of an earlier incarnation of this node"
                    );
                    match client.delete(own, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(format!("cannot remove stale {own}: {e}")),
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Err(e) => return Err(format!("cannot create {own}: {e}")),
        }
    }
}
