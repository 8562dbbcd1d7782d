//! Resources bound on other nodes of the cluster, as the directory holds
//! them, and the link that reaches those nodes.

use super::copies::Copies;
use super::session_handle::PresenceState;
use std::sync::{Arc, Mutex};
use zkfire_xml::Element;

/// How the router reaches other nodes. The cluster layer implements it.
pub trait RemoteLink: Send + Sync {
    /// Hands a stanza to the resource `full_jid` on the node that holds it
    /// (routing was decided here; that node only delivers); gives it back
    /// when that node cannot be reached now.
    /// `group` names the copies of one message sent to several resources
    /// (see [`super::copies`]), so the receiving node counts them together.
    fn deliver(
        &self,
        node_id: &str,
        full_jid: &str,
        stanza: Element,
        group: Option<&Arc<Copies>>,
    ) -> Result<(), Element>;
    /// Asks the node to end a session with a stream error.
    fn close(&self, node_id: &str, full_jid: &str, condition: &'static str);
}

/// A resource bound on another node.
pub struct RemoteSession {
    pub node_id: String,
    pub full_jid: String,
    pub bare_jid: String,
    pub resource: String,
    /// When its node bound it (milliseconds since the Unix epoch).
    pub bound_at: u64,
    /// Its stream management resumption id, if resumable.
    pub sm_id: Option<String>,
    /// Waiting for resumption without a connection, as its node announced.
    pub detached: bool,
    /// Its session flags (see `LocalSession::set_flag`), as announced.
    pub flags: Vec<String>,
    presence: Mutex<PresenceState>,
    link: Arc<dyn RemoteLink>,
}

/// What a node announced of one of its sessions, besides its presence.
pub struct Announced {
    pub bound_at: u64,
    pub sm_id: Option<String>,
    pub detached: bool,
    pub flags: Vec<String>,
}

impl RemoteSession {
    pub fn new(
        node_id: &str,
        full_jid: &str,
        presence: PresenceState,
        link: Arc<dyn RemoteLink>,
        announced: Announced,
    ) -> Option<Self> {
        let (bare, resource) = full_jid.split_once('/')?;
        Some(RemoteSession {
            node_id: node_id.to_string(),
            full_jid: full_jid.to_string(),
            bare_jid: bare.to_string(),
            resource: resource.to_string(),
            bound_at: announced.bound_at,
            sm_id: announced.sm_id,
            detached: announced.detached,
            flags: announced.flags,
            presence: Mutex::new(presence),
            link,
        })
    }

    pub fn presence(&self) -> PresenceState {
        self.presence.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The priority while available (see [`LocalSession::priority`]).
    ///
    /// [`LocalSession::priority`]: super::session_handle::LocalSession::priority
    pub fn priority(&self) -> Option<i8> {
        self.presence.lock().ok()?.priority_if_available()
    }

    pub fn deliver(&self, stanza: Element, group: Option<&Arc<Copies>>) -> Result<(), Element> {
        self.link
            .deliver(&self.node_id, &self.full_jid, stanza, group)
    }

    pub fn close(&self, condition: &'static str) {
        self.link.close(&self.node_id, &self.full_jid, condition);
    }
}
