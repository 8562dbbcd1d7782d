//! The session directory: every bound resource of the domain, the ones on
//! this node (with their queues) and, in a cluster, the ones on other nodes
//! as their nodes announced them.
//!
//! Sharded (dashmap), so delivering a message takes no global lock. Each
//! node is the single writer of its own entries; remote entries change only
//! when their node says so, or all at once when it leaves the cluster.

use super::copies::Copies;
use super::remote::RemoteSession;
use super::session_handle::{LocalSession, PresenceState, SessionCommand};
use dashmap::DashMap;
use std::sync::Arc;
use zkfire_xml::Element;

/// A bound resource, here or on another node.
#[derive(Clone)]
pub enum Resource {
    Local(Arc<LocalSession>),
    Remote(Arc<RemoteSession>),
}

impl Resource {
    pub fn full_jid(&self) -> &str {
        match self {
            Resource::Local(s) => &s.full_jid,
            Resource::Remote(s) => &s.full_jid,
        }
    }

    pub fn presence(&self) -> PresenceState {
        match self {
            Resource::Local(s) => s.presence(),
            Resource::Remote(s) => s.presence(),
        }
    }

    pub fn is_available(&self) -> bool {
        self.presence().available
    }

    /// The priority while available, `None` while unavailable.
    pub fn priority(&self) -> Option<i8> {
        match self {
            Resource::Local(s) => s.priority(),
            Resource::Remote(s) => s.priority(),
        }
    }

    /// Hands a stanza to the resource; gives it back when it cannot take it.
    pub fn deliver(&self, stanza: Element) -> Result<(), Element> {
        match self {
            Resource::Local(s) => s.deliver(stanza),
            Resource::Remote(s) => s.deliver(stanza, None),
        }
    }

    /// Hands the resource one of the copies of a message that several
    /// resources get.
    pub fn deliver_copy(
        &self,
        stanza: Element,
        copies: &std::sync::Arc<Copies>,
    ) -> Result<(), Element> {
        match self {
            Resource::Local(s) => s.deliver_held(stanza, Some(copies.hold())),
            Resource::Remote(s) => s.deliver(stanza, Some(copies)),
        }
    }

    /// Whether the client turned this session flag on (e.g. "carbons").
    pub fn has_flag(&self, flag: &str) -> bool {
        match self {
            Resource::Local(s) => s.has_flag(flag),
            Resource::Remote(s) => s.flags.iter().any(|f| f == flag),
        }
    }

    /// The value of its flag `name` (see `LocalSession::set_flag_value`).
    pub fn flag_value(&self, name: &str) -> Option<String> {
        match self {
            Resource::Local(s) => s.flag_value(name),
            Resource::Remote(s) => {
                super::session_handle::value_of(&s.flags, name).map(str::to_string)
            }
        }
    }

    /// Whether its client is connected: not waiting for resumption.
    pub fn is_connected(&self) -> bool {
        match self {
            Resource::Local(s) => !s.is_detached(),
            Resource::Remote(s) => !s.detached,
        }
    }

    /// Ends the session with a stream error.
    pub fn close(&self, condition: &'static str) {
        match self {
            Resource::Local(s) => {
                s.command(SessionCommand::Close(condition));
            }
            Resource::Remote(s) => s.close(condition),
        }
    }
}

#[derive(Default)]
pub struct Directory {
    local: DashMap<String, Vec<Arc<LocalSession>>>,
    remote: DashMap<String, Vec<Arc<RemoteSession>>>,
}

impl Directory {
    /// Adds a bound resource of this node; returns the resource it replaces
    /// (the same full JID here or on another node).
    pub fn bind(&self, session: Arc<LocalSession>) -> Option<Resource> {
        let mut entry = self.local.entry(session.bare_jid.clone()).or_default();
        let old = entry
            .iter()
            .position(|s| s.resource == session.resource)
            .map(|i| Resource::Local(entry.swap_remove(i)));
        entry.push(session.clone());
        drop(entry);
        // The same full JID on another node is replaced too: it leaves this
        // directory now, so its node's later departure says nothing of it.
        old.or_else(|| {
            let remote = self.remote_resource(&session.bare_jid, &session.resource)?;
            self.remove_remote(&session.bare_jid, &session.resource, &remote.node_id);
            Some(Resource::Remote(remote))
        })
    }

    /// Removes this very session (not a newer one with the same full JID).
    /// Returns whether the account has no other resource left on this node.
    pub fn unbind(&self, session: &LocalSession) -> bool {
        let mut last = false;
        self.local.remove_if_mut(&session.bare_jid, |_, list| {
            list.retain(|s| s.id != session.id);
            last = list.is_empty();
            last
        });
        last || !self.local.contains_key(&session.bare_jid)
    }

    /// All resources of an account, on every node.
    pub fn resources(&self, bare: &str) -> Vec<Resource> {
        let mut out: Vec<Resource> = self
            .local
            .get(bare)
            .map(|l| l.iter().cloned().map(Resource::Local).collect())
            .unwrap_or_default();
        if let Some(r) = self.remote.get(bare) {
            out.extend(r.iter().cloned().map(Resource::Remote));
        }
        out
    }

    /// Whether a resource of the account, other than those in `except`, has
    /// turned `flag` on; without copying the account's list (it is asked for
    /// every message, and the answer is nearly always no).
    pub fn any_flagged(&self, bare: &str, flag: &str, except: &[&str]) -> bool {
        let local = self.local.get(bare).is_some_and(|l| {
            l.iter()
                .any(|s| !except.contains(&s.full_jid.as_str()) && s.has_flag(flag))
        });
        local
            || self.remote.get(bare).is_some_and(|l| {
                l.iter().any(|s| {
                    !except.contains(&s.full_jid.as_str()) && s.flags.iter().any(|f| f == flag)
                })
            })
    }

    /// Resources of an account on this node only.
    pub fn local_resources(&self, bare: &str) -> Vec<Arc<LocalSession>> {
        self.local.get(bare).map(|l| l.clone()).unwrap_or_default()
    }

    pub fn resource(&self, bare: &str, resource: &str) -> Option<Resource> {
        let local = self
            .local
            .get(bare)
            .and_then(|l| l.iter().find(|s| s.resource == resource).cloned());
        match local {
            Some(s) => Some(Resource::Local(s)),
            None => self.remote_resource(bare, resource).map(Resource::Remote),
        }
    }

    fn remote_resource(&self, bare: &str, resource: &str) -> Option<Arc<RemoteSession>> {
        self.remote
            .get(bare)
            .and_then(|l| l.iter().find(|s| s.resource == resource).cloned())
    }

    /// The resource on another node that a stream management id names.
    pub fn remote_by_sm_id(&self, bare: &str, sm_id: &str) -> Option<Arc<RemoteSession>> {
        self.remote.get(bare).and_then(|l| {
            l.iter()
                .find(|s| s.sm_id.as_deref() == Some(sm_id))
                .cloned()
        })
    }

    /// Whether the account has a resource anywhere in the cluster.
    pub fn has_resources(&self, bare: &str) -> bool {
        self.local.contains_key(bare) || self.remote.contains_key(bare)
    }

    pub fn session_count(&self) -> usize {
        self.local.iter().map(|e| e.value().len()).sum()
    }

    /// All sessions of this node.
    pub fn all_local(&self) -> Vec<Arc<LocalSession>> {
        self.local.iter().flat_map(|e| e.value().clone()).collect()
    }

    /// Adds or updates a resource another node announced.
    pub fn upsert_remote(&self, session: Arc<RemoteSession>) {
        let mut entry = self.remote.entry(session.bare_jid.clone()).or_default();
        entry.retain(|s| s.resource != session.resource);
        entry.push(session);
    }

    /// Removes a resource another node announced gone; returns it.
    pub fn remove_remote(
        &self,
        bare: &str,
        resource: &str,
        node_id: &str,
    ) -> Option<Arc<RemoteSession>> {
        let mut removed = None;
        self.remote.remove_if_mut(bare, |_, list| {
            if let Some(i) = list
                .iter()
                .position(|s| s.resource == resource && s.node_id == node_id)
            {
                removed = Some(list.swap_remove(i));
            }
            list.is_empty()
        });
        removed
    }

    /// Forgets every resource of a node (it left the cluster); returns them.
    pub fn drop_node(&self, node_id: &str) -> Vec<Arc<RemoteSession>> {
        let mut gone = Vec::new();
        self.remote.retain(|_, list| {
            list.retain(|s| {
                if s.node_id == node_id {
                    gone.push(s.clone());
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logouts leave no entry behind: the directory shrinks back to empty.
    #[test]
    fn unbinding_every_resource_removes_the_account() {
        let dir = Directory::default();
        let (a, _rx_a) = LocalSession::new("u@localhost", "a", 10);
        let (b, _rx_b) = LocalSession::new("u@localhost", "b", 10);
        dir.bind(a.clone());
        dir.bind(b.clone());
        assert!(!dir.unbind(&a));
        assert!(dir.unbind(&b));
        assert!(!dir.has_resources("u@localhost"));
        assert_eq!(dir.local.len(), 0);
    }
}
