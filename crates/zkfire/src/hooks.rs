//! The router's hook points: what happened on the stanza path, as typed
//! events that modules act on (in the spirit of Prosody's events, checked by
//! the compiler). A module implements only the hook traits it needs and
//! returns itself from the matching `Module` accessor; `Modules` calls the
//! registered ones in order of `priority` (higher first).
//!
//! The router stays the one place that decides where a stanza goes: a hook
//! may change the stanza, consume it, or send copies of its own through the
//! router or to a resource of the directory, never choose for the router.
//! Hooks run on the node where the event happens (a message is routed, and
//! its delivery decided, on the node of its sender), so they see the whole
//! cluster through the directory and need not know about nodes.

use crate::router::session_handle::LocalSession;
use crate::server::Server;
use async_trait::async_trait;
use std::sync::Arc;
use zkfire_xml::Element;

/// What becomes of a stanza after a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// It goes on its way (possibly changed), to the next hook and the router.
    Pass,
    /// The hook took care of it (answered, refused or dropped it): it goes
    /// no further.
    Consumed,
}

/// Hooks on messages.
#[async_trait]
pub trait MessageHooks: Send + Sync {
    /// Orders hooks of several modules: higher runs first.
    fn priority(&self) -> i32 {
        0
    }

    /// A message a client of this node sent, its `from` stamped and `to`
    /// normalized, before it is routed. May change or consume it.
    async fn sent_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        msg: &mut Element,
    ) -> Flow {
        let _ = (server, session, msg);
        Flow::Pass
    }

    /// A message for the account `bare` is being delivered under RFC 6121
    /// rules to the resources `to` (full JIDs, on any node; empty when it goes
    /// to offline storage). Runs once per message, on the node that routes
    /// it, just before the copies are handed out (so the message need not be
    /// copied for the hook); not again when a message is rerouted or read
    /// from storage.
    async fn delivering(&self, server: &Arc<Server>, msg: &Element, bare: &str, to: &[&str]) {
        let _ = (server, msg, bare, to);
    }
}
