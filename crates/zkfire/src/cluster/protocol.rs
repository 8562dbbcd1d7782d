//! The messages nodes exchange over the cluster bus. The bus authenticates
//! peers and keeps order; these are its payloads, as JSON.

use serde::{Deserialize, Serialize};

/// What a node announces about one of its sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub full_jid: String,
    pub available: bool,
    pub priority: i8,
    /// The last available presence, serialized (answers probes on other nodes).
    pub presence: Option<String>,
    /// When the resource was bound, in milliseconds since the Unix epoch: the
    /// newer of two logins with the same full JID wins.
    pub bound_at: u64,
    /// Its stream management resumption id, so a client can resume it
    /// through any node (XEP-0198).
    #[serde(default)]
    pub sm_id: Option<String>,
    /// The account's blocklist (XEP-0191), so every node can apply it to
    /// stanzas for this account without reading the database.
    #[serde(default)]
    pub blocklist: Option<Vec<String>>,
    /// JIDs outside the roster that got directed presence from it (RFC 6121
    /// 4.6.3), so that other nodes can send them unavailable if this node dies.
    #[serde(default)]
    pub directed: Vec<String>,
    /// Its connection is gone and it waits to be resumed (XEP-0198): other
    /// nodes do not reroute stanzas to it while a connected resource exists.
    #[serde(default)]
    pub detached: bool,
    /// What its client turned on that routing must honour (e.g. "carbons").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
}

/// Everything a session is, handed from the node that held it to the node
/// where its client resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverState {
    pub full_jid: String,
    /// Stanzas the server handled from the client (the `h` it reports).
    pub inbound: u32,
    /// The client's last acknowledged count of stanzas sent to it.
    pub acked: u32,
    /// Stanzas sent or queued for the client and not acknowledged, in order.
    pub unacked: Vec<String>,
    pub available: bool,
    pub priority: i8,
    pub presence: Option<String>,
    pub directed: Vec<String>,
    pub last_status: String,
    /// Its session flags (e.g. "carbons"): a resumed session keeps them.
    #[serde(default)]
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum BusMessage {
    /// All sessions of the sender, replacing whatever the receiver had from it.
    Snapshot { sessions: Vec<SessionState> },
    /// A session of the sender was bound or changed its presence.
    Session(SessionState),
    /// A session of the sender ended.
    SessionGone { full_jid: String },
    /// A stanza for the resource `to` on the receiver, which the sender has
    /// already routed: the receiver hands it to that resource, or, when the
    /// resource is gone, applies the rules for an absent resource.
    Stanza {
        to: String,
        xml: String,
        /// One of the copies of a message sent to several resources: the
        /// receiver counts the copies of one group together (router::copies).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<u64>,
    },
    /// The sender's copies of a message the receiver fanned out (`group` of
    /// `Stanza`) are all done: a client took one, or none did and the
    /// receiver decides whether to reroute `xml` (empty when taken).
    CopyDone {
        group: u64,
        taken: bool,
        xml: String,
    },
    /// End this session of the receiver with a stream error.
    Close { full_jid: String, condition: String },
    /// A message was stored offline for this account: a session of it that
    /// became available meanwhile should look at the store again.
    OfflineStored { bare_jid: String },
    /// This account's blocklist changed: here it is, replacing any cached copy.
    BlocklistChanged { bare_jid: String, list: Vec<String> },
    /// What a module keeps of this account (`what`, e.g. "mam-prefs")
    /// changed on the sender: the receiver forgets any copy it cached.
    AccountChanged { bare_jid: String, what: String },
    /// A client resumed on the sender a session the receiver holds: hand it over.
    ResumeRequest {
        id: u64,
        full_jid: String,
        previd: String,
        h: u32,
    },
    /// The answer to `ResumeRequest`: the session, or nothing when it cannot be had.
    ResumeHandover {
        id: u64,
        state: Option<Box<HandoverState>>,
    },
}

impl BusMessage {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<BusMessage, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = BusMessage::Stanza {
            to: "a@b/c".into(),
            xml: "<message xmlns='jabber:client'/>".into(),
            group: Some(7),
        };
        assert_eq!(BusMessage::decode(&m.encode()).unwrap(), m);
        assert!(BusMessage::decode(b"{\"t\":\"nonsense\"}").is_err());
    }
}
