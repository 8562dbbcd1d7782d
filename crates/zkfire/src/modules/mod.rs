//! Server modules: one XMPP feature (an RFC section or a XEP) each, with one
//! registration point. Disco features come from the registered modules, and
//! so do the hooks on the stanza path (crate::hooks).

use crate::hooks::{Flow, MessageHooks, Nonza, Outgoing, PresenceHooks, StreamHooks};
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use zkfire_xml::Element;

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private;
pub mod register;
pub mod roster;
pub mod time;
pub mod vcard;
pub mod version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    Get,
    Set,
}

/// An IQ request handed to a module.
pub struct IqRequest<'a> {
    pub server: &'a Arc<Server>,
    /// Full JID of the sender (stamped by the server).
    pub from: &'a str,
    /// Bare JID of the sending account.
    pub from_bare: &'a str,
    /// The account the IQ is addressed to, or `None` for the server itself.
    pub account: Option<&'a str>,
    pub kind: IqType,
    /// The whole `<iq/>`.
    pub iq: &'a Element,
    /// Its one child element.
    pub payload: &'a Element,
}

impl IqRequest<'_> {
    /// Addressed to the sender's own account (or to no one: RFC 6120 10.3.3).
    pub fn is_to_self(&self) -> bool {
        self.account.is_none_or(|a| a == self.from_bare)
    }
}

pub type IqResult = Result<Option<Element>, StanzaError>;

#[async_trait]
pub trait Module: Send + Sync {
    /// Features this module adds to the server's disco#info.
    fn server_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Features this module adds to an account's disco#info.
    fn account_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// Payload namespaces of the IQs this module answers.
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[]
    }

    /// Answers an IQ: `Ok(payload)` becomes a result, `Err` an error reply.
    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        let _ = req;
        Err(StanzaError::service_unavailable())
    }

    /// Its hooks on messages, if it has any (`Some(self)`).
    fn message_hooks(&self) -> Option<&dyn MessageHooks> {
        None
    }

    /// Its hooks on client streams, if it has any (`Some(self)`).
    fn stream_hooks(&self) -> Option<&dyn StreamHooks> {
        None
    }

    /// Its hooks on presence, if it has any (`Some(self)`).
    fn presence_hooks(&self) -> Option<&dyn PresenceHooks> {
        None
    }

    /// The features of a session's client became known (from its entity
    /// capabilities, XEP-0115): when it first sent them, or changed them.
    async fn client_features_known(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        features: &Arc<Vec<String>>,
    ) {
        let _ = (server, session, features);
    }

    /// Identities this module adds to an account's disco#info (XEP-0030).
    fn account_identities(&self) -> &'static [disco::Identity] {
        &[]
    }

    /// What is kept of the account `bare` under `what` changed, on this
    /// node or another (`Server::account_changed`): drop cached copies.
    fn account_changed(&self, bare: &str, what: &str) {
        let _ = (bare, what);
    }

    /// Starts its background tasks, once, when the server starts.
    fn start(&self, server: &Arc<Server>) {
        let _ = server;
    }

    /// Ends them, once, after every session has ended.
    async fn stop(&self) {}
}

/// The registered modules and the IQ namespaces they answer.
pub struct Modules {
    list: Vec<Arc<dyn Module>>,
    by_ns: HashMap<&'static str, Arc<dyn Module>>,
    /// The modules with message hooks, in the order they run.
    message_hooked: Vec<Arc<dyn Module>>,
    /// The modules with stream hooks.
    stream_hooked: Vec<Arc<dyn Module>>,
}

impl Modules {
    pub fn new(list: Vec<Arc<dyn Module>>) -> Self {
        let mut by_ns = HashMap::new();
        for m in &list {
            for ns in m.iq_namespaces() {
                by_ns.insert(*ns, m.clone());
            }
        }
        let mut message_hooked: Vec<Arc<dyn Module>> = list
            .iter()
            .filter(|m| m.message_hooks().is_some())
            .cloned()
            .collect();
        message_hooked
            .sort_by_key(|m| std::cmp::Reverse(m.message_hooks().map_or(0, |h| h.priority())));
        let stream_hooked = list
            .iter()
            .filter(|m| m.stream_hooks().is_some())
            .cloned()
            .collect();
        Modules {
            list,
            by_ns,
            message_hooked,
            stream_hooked,
        }
    }

    fn stream_hooks(&self) -> impl Iterator<Item = &dyn StreamHooks> {
        self.stream_hooked.iter().filter_map(|m| m.stream_hooks())
    }

    /// Stream features the modules offer after authentication.
    pub fn stream_features(&self, server: &Server) -> Vec<Element> {
        self.stream_hooks()
            .flat_map(|h| h.features(server))
            .collect()
    }

    /// A nonza from a client, to the first module that handles it.
    pub fn client_nonza(&self, session: &LocalSession, el: &Element) -> Option<Nonza> {
        self.stream_hooks().find_map(|h| h.nonza(session, el))
    }

    /// Whether a stanza is written to its client now or held (the first
    /// module that holds it decides).
    pub fn outgoing(&self, session: &LocalSession, stanza: &Element) -> Outgoing {
        self.stream_hooks()
            .map(|h| h.outgoing(session, stanza))
            .find(|o| *o != Outgoing::Write)
            .unwrap_or(Outgoing::Write)
    }

    pub fn stream_resumed(&self, session: &LocalSession) {
        for h in self.stream_hooks() {
            h.resumed(session);
        }
    }

    /// Runs the `sent_by_client` hooks until one consumes the message.
    pub async fn message_from_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        msg: &mut Element,
    ) -> Flow {
        for m in &self.message_hooked {
            if let Some(h) = m.message_hooks() {
                if h.sent_by_client(server, session, msg).await == Flow::Consumed {
                    return Flow::Consumed;
                }
            }
        }
        Flow::Pass
    }

    /// Runs the `arriving` hooks until one consumes the message.
    pub async fn message_arriving(
        &self,
        server: &Arc<Server>,
        msg: &mut Element,
        bare: &str,
    ) -> Flow {
        for m in &self.message_hooked {
            if let Some(h) = m.message_hooks() {
                if h.arriving(server, msg, bare).await == Flow::Consumed {
                    return Flow::Consumed;
                }
            }
        }
        Flow::Pass
    }

    /// Tells every module that what is kept of an account changed.
    pub fn account_changed(&self, bare: &str, what: &str) {
        for m in &self.list {
            m.account_changed(bare, what);
        }
    }

    /// Starts what the modules run in the background.
    pub fn start(&self, server: &Arc<Server>) {
        for m in &self.list {
            m.start(server);
        }
    }

    /// Stops it, after the last session ended (what they left is finished:
    /// archive rows written, say).
    pub async fn stop(&self) {
        for m in &self.list {
            m.stop().await;
        }
    }

    /// Runs the `broadcast_by_client` presence hooks.
    pub async fn presence_broadcast(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        presence: &mut Element,
    ) {
        for m in &self.list {
            if let Some(h) = m.presence_hooks() {
                h.broadcast_by_client(server, session, presence).await;
            }
        }
    }

    /// Tells every module what a session's client can do.
    pub async fn client_features_known(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        features: &Arc<Vec<String>>,
    ) {
        for m in &self.list {
            m.client_features_known(server, session, features).await;
        }
    }

    /// Runs the `subscription_approved` presence hooks.
    pub async fn subscription_approved(&self, server: &Arc<Server>, user: &str, contact: &str) {
        for m in &self.list {
            if let Some(h) = m.presence_hooks() {
                h.subscription_approved(server, user, contact).await;
            }
        }
    }

    /// Identities of an account: `account/registered` and the modules'.
    pub fn account_identities(&self) -> Vec<&disco::Identity> {
        std::iter::once(&disco::Identity::ACCOUNT)
            .chain(self.list.iter().flat_map(|m| m.account_identities()))
            .collect()
    }

    /// Runs the `delivering` hooks.
    pub async fn message_delivering(
        &self,
        server: &Arc<Server>,
        msg: &Element,
        bare: &str,
        to: &[&str],
    ) {
        for m in &self.message_hooked {
            if let Some(h) = m.message_hooks() {
                h.delivering(server, msg, bare, to).await;
            }
        }
    }

    /// All modules of a full server.
    pub fn standard(config: &crate::config::Config) -> Self {
        let mut list: Vec<Arc<dyn Module>> = vec![
            Arc::new(disco::Disco),
            Arc::new(roster::Roster),
            Arc::new(presence::Presence),
            Arc::new(offline::Offline),
            Arc::new(ping::Ping),
            Arc::new(version::Version),
            Arc::new(time::EntityTime),
            Arc::new(last::LastActivity),
            Arc::new(vcard::VCard),
            Arc::new(private::PrivateStorage),
            Arc::new(blocking::Blocking),
            Arc::new(carbons::Carbons),
            Arc::new(caps::EntityCaps::default()),
        ];
        if config.mam.enabled {
            list.push(Arc::new(mam::Mam::new(&config.mam)));
        }
        if config.pep.enabled {
            list.push(Arc::new(pep::Pep::new(&config.pep)));
        }
        if config.csi.enabled {
            list.push(Arc::new(csi::ClientStateIndication));
        }
        list.push(Arc::new(register::Register::new(&config.registration)));
        Modules::new(list)
    }

    pub fn for_namespace(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.by_ns.get(ns)
    }

    pub fn server_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .list
            .iter()
            .flat_map(|m| m.server_features())
            .copied()
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    pub fn account_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .list
            .iter()
            .flat_map(|m| m.account_features())
            .copied()
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }
}
