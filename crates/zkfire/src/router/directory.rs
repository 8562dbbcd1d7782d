//! The session directory: which resources of which account are bound here.
//!
//! Sharded (dashmap), so delivering a message takes no global lock.

use super::session_handle::LocalSession;
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Directory {
    users: DashMap<String, Vec<Arc<LocalSession>>>,
}

impl Directory {
    /// Adds a bound resource; returns the session it replaces (same full JID).
    pub fn bind(&self, session: Arc<LocalSession>) -> Option<Arc<LocalSession>> {
        let mut entry = self.users.entry(session.bare_jid.clone()).or_default();
        let old = entry
            .iter()
            .position(|s| s.resource == session.resource)
            .map(|i| entry.swap_remove(i));
        entry.push(session);
        old
    }

    /// Removes this very session (not a newer one with the same full JID).
    /// Returns whether the account has no other resource left here.
    pub fn unbind(&self, session: &LocalSession) -> bool {
        let mut last = false;
        self.users.remove_if_mut(&session.bare_jid, |_, list| {
            list.retain(|s| s.id != session.id);
            last = list.is_empty();
            last
        });
        last
    }

    /// All resources of an account bound here.
    pub fn resources(&self, bare: &str) -> Vec<Arc<LocalSession>> {
        self.users.get(bare).map(|l| l.clone()).unwrap_or_default()
    }

    pub fn resource(&self, bare: &str, resource: &str) -> Option<Arc<LocalSession>> {
        self.users
            .get(bare)
            .and_then(|l| l.iter().find(|s| s.resource == resource).cloned())
    }

    pub fn has_resources(&self, bare: &str) -> bool {
        self.users.contains_key(bare)
    }

    pub fn session_count(&self) -> usize {
        self.users.iter().map(|e| e.value().len()).sum()
    }

    pub fn all(&self) -> Vec<Arc<LocalSession>> {
        self.users.iter().flat_map(|e| e.value().clone()).collect()
    }
}
