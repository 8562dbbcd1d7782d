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

    /// A message for the account `bare` arrived for delivery, before the
    /// router chooses the resources it goes to (or offline storage). May
    /// change it (every copy delivered or stored is then the changed one) or
    /// consume it. Runs once per message, on the node that routes it; not
    /// again when a message is rerouted or read from storage.
    async fn arriving(&self, server: &Arc<Server>, msg: &mut Element, bare: &str) -> Flow {
        let _ = (server, msg, bare);
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

/// Hooks on presence.
#[async_trait]
pub trait PresenceHooks: Send + Sync {
    /// A presence broadcast a client of this node sent (available or
    /// unavailable, no `to`), `from` stamped, before it is kept as the
    /// session's presence and sent to the contacts. May change it.
    async fn broadcast_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        presence: &mut Element,
    ) {
        let _ = (server, session, presence);
    }

    /// The account `user` (bare JID) approved `contact`'s subscription to
    /// its presence: the contact may now see what is shown to subscribers.
    async fn subscription_approved(&self, server: &Arc<Server>, user: &str, contact: &str) {
        let _ = (server, user, contact);
    }
}

/// What a module made of a top-level element from the client that is no
/// stanza (a nonza, such as XEP-0352's `<inactive/>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonza {
    /// Taken care of; nothing more to do.
    Handled,
    /// Taken care of: write to the client what hooks held for it, now,
    /// before anything else the client sent is processed.
    Release,
}

/// What becomes of a stanza about to be written to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Write,
    /// Not yet: the session keeps it, in order, until a stanza that is
    /// written (or a [`Nonza::Release`]) lets it out first. A held stanza
    /// with the same `key` as an earlier one replaces it (the latest
    /// presence of a contact is all that matters).
    Hold {
        key: Option<String>,
    },
}

/// Hooks on one client's stream. They run on the session's own task and do
/// not wait: they decide, and the session acts, so what is held is part of
/// the session (written in order, kept over a cut connection, taken along
/// when the session moves to another node).
pub trait StreamHooks: Send + Sync {
    /// Stream features offered after authentication.
    fn features(&self, server: &Server) -> Vec<Element> {
        let _ = server;
        Vec::new()
    }

    /// A nonza from the client: `Some` when this module handles it.
    fn nonza(&self, session: &LocalSession, el: &Element) -> Option<Nonza> {
        let _ = (session, el);
        None
    }

    /// A stanza about to be written to the session's client.
    fn outgoing(&self, session: &LocalSession, stanza: &Element) -> Outgoing {
        let _ = (session, stanza);
        Outgoing::Write
    }

    /// The client resumed the session (XEP-0198), on this node or another.
    fn resumed(&self, session: &LocalSession) {
        let _ = session;
    }
}
