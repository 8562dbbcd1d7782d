//! XEP-0077 In-Band Registration (`jabber:iq:register`).
//!
//! Before authentication ([`pre_auth_iq`], called by stream negotiation): the
//! registration form and the creation of new accounts, when the config allows
//! it. After authentication ([`Register`]): the registration state of the
//! account, password change, and removal of the account (the session code
//! closes the stream once the result has been sent, XEP-0077 section 3.2).

use super::{IqRequest, IqResult, IqType, Module};
use crate::accounts::{self, AccountError};
use crate::config::RegistrationConfig;
use crate::jids;
use crate::quota::WindowQuota;
use crate::server::Server;
use crate::stanza::{error_reply, iq_result, ErrorType, StanzaError};
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use zkfire_xml::{ns, Element};

const INSTRUCTIONS: &str = "Choose a username and password to register with this server.";

pub struct Register {
    /// Whether new accounts may be created in-band.
    pub allow_new: bool,
    /// Password changes per account: each costs a full key derivation, so
    /// one session must not be able to ask for them without end.
    password_changes: WindowQuota<String>,
}

impl Register {
    pub fn new(config: &RegistrationConfig) -> Self {
        Register {
            allow_new: config.allow,
            password_changes: WindowQuota::new(
                config.password_changes_per_window,
                Duration::from_secs(config.password_change_window_secs),
            ),
        }
    }
}

#[async_trait]
impl Module for Register {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::REGISTER]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::REGISTER]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        // Password changes and removal are sent to the server or to no one.
        let node = own_node(req).ok_or_else(StanzaError::forbidden)?;
        let query = req.payload;
        if query.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        let storage = &*req.server.storage;
        match req.kind {
            IqType::Get => Ok(Some(
                Element::new("query", ns::REGISTER)
                    .with_child(Element::new("registered", ns::REGISTER))
                    .with_child(Element::new("username", ns::REGISTER).with_text(node)),
            )),
            IqType::Set => match parse_set(query)? {
                SetRequest::Remove => {
                    accounts::delete(storage, &node)
                        .await
                        .map_err(|e| account_error(&node, e))?;
                    tracing::info!(account = %node, "account removed in-band");
                    Ok(None)
                }
                SetRequest::Credentials { username, password } => {
                    let named = accounts::account_name(&username, &req.server.domain)
                        .map_err(|_| StanzaError::not_allowed())?;
                    if named != node {
                        return Err(StanzaError::not_allowed()
                            .with_text("the username is not that of this account"));
                    }
                    let Some(slot) = self.password_changes.try_reserve(node.clone()) else {
                        tracing::warn!(account = %node, "password change refused: too many changes");
                        return Err(StanzaError::new(ErrorType::Wait, "resource-constraint")
                            .with_text("too many password changes; try again later"));
                    };
                    accounts::set_password(storage, &node, &password)
                        .await
                        .map_err(|e| account_error(&node, e))?;
                    slot.keep();
                    tracing::info!(account = %node, "password changed in-band");
                    Ok(None)
                }
            },
        }
    }
}

/// `<register xmlns='http://jabber.org/features/iq-register'/>`, offered among
/// the stream features when new accounts may be registered.
pub fn stream_feature() -> Element {
    Element::new("register", ns::REGISTER_FEATURE)
}

/// Answers a registration IQ received before authentication. The reply has
/// the request's id and no addresses.
///
/// Callers pass IQs of type `get` or `set`; any other type gets a
/// `bad-request` error reply, which a caller that follows RFC 6120 section
/// 8.3.1 drops (see [`crate::stanza::may_bounce`]).
pub async fn pre_auth_iq(server: &Arc<Server>, iq: &Element, ip: IpAddr) -> Element {
    let reply = match pre_auth(server, iq, ip).await {
        Ok(payload) => iq_result(iq, payload),
        Err(e) => error_reply(iq, &e),
    };
    strip_addresses(reply)
}

async fn pre_auth(server: &Arc<Server>, iq: &Element, ip: IpAddr) -> IqResult {
    let kind = match iq.attr("type") {
        Some("get") => IqType::Get,
        Some("set") => IqType::Set,
        _ => return Err(StanzaError::bad_request()),
    };
    let mut children = iq.children();
    let (Some(query), None) = (children.next(), children.next()) else {
        return Err(StanzaError::bad_request());
    };
    if !query.is("query", ns::REGISTER) {
        return Err(StanzaError::service_unavailable());
    }
    if !server.config.registration.allow {
        return Err(StanzaError::service_unavailable());
    }
    match kind {
        IqType::Get => Ok(Some(registration_form())),
        IqType::Set => match parse_set(query)? {
            // Nothing to remove before logging in (XEP-0077 section 3.2).
            SetRequest::Remove => Err(StanzaError::new(ErrorType::Auth, "not-authorized")),
            SetRequest::Credentials { username, password } => {
                let node = new_account_name(&username, &server.domain)?;
                // Reserved before the account exists, so that registrations
                // racing each other cannot all pass; given back on failure.
                let Some(slot) = server.registration_limit.try_reserve(ip) else {
                    tracing::warn!(%ip, account = %node, "registration refused: too many accounts from this address");
                    return Err(StanzaError::new(ErrorType::Wait, "resource-constraint")
                        .with_text(
                            "too many accounts created from this address; try again later",
                        ));
                };
                match accounts::create(&*server.storage, &node, &password).await {
                    Ok(()) => {
                        slot.keep();
                        tracing::info!(account = %node, %ip, "account registered in-band");
                        Ok(None)
                    }
                    Err(e) => Err(account_error(&node, e)),
                }
            }
        },
    }
}

/// The empty form of XEP-0077 section 3.1.
fn registration_form() -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("instructions", ns::REGISTER).with_text(INSTRUCTIONS))
        .with_child(Element::new("username", ns::REGISTER))
        .with_child(Element::new("password", ns::REGISTER))
}

#[derive(Debug, PartialEq, Eq)]
enum SetRequest {
    Remove,
    Credentials { username: String, password: String },
}

/// Reads a `set` query: `<remove/>`, or `<username/>` with `<password/>`.
fn parse_set(query: &Element) -> Result<SetRequest, StanzaError> {
    if query.child("remove", ns::REGISTER).is_some() {
        return Ok(SetRequest::Remove);
    }
    let username = query.child_text("username", ns::REGISTER);
    let password = query.child_text("password", ns::REGISTER);
    match (username, password) {
        (Some(username), Some(password)) => {
            if username.is_empty() || password.is_empty() {
                return Err(StanzaError::not_acceptable()
                    .with_text("the username and the password must not be empty"));
            }
            Ok(SetRequest::Credentials { username, password })
        }
        _ => Err(StanzaError::bad_request().with_text("both username and password are required")),
    }
}

/// The normalized name of an account to create: a node part only, valid
/// under RFC 7622.
fn new_account_name(username: &str, domain: &str) -> Result<String, StanzaError> {
    if username.contains(['@', '/']) {
        return Err(StanzaError::jid_malformed().with_text("the username must be a bare name"));
    }
    accounts::account_name(username, domain)
        .map_err(|_| StanzaError::jid_malformed().with_text("the username is not valid"))
}

fn account_error(node: &str, e: AccountError) -> StanzaError {
    match e {
        AccountError::Exists => StanzaError::conflict(),
        AccountError::NotFound => StanzaError::item_not_found(),
        AccountError::BadPassword => {
            StanzaError::not_acceptable().with_text("the password is not acceptable")
        }
        AccountError::BadJid(_) | AccountError::WrongDomain(..) => StanzaError::jid_malformed(),
        AccountError::Storage(e) => {
            tracing::error!(account = %node, "registration: {e}");
            StanzaError::internal_server_error()
        }
    }
}

fn strip_addresses(mut reply: Element) -> Element {
    reply.remove_attr("to");
    reply.remove_attr("from");
    reply
}

/// The sender's account name, when the IQ is addressed to the sender's own
/// account (or to no one, or to the server) and the sender is an account of
/// this domain. Shared by the modules that act on the sender's own data.
pub(crate) fn own_node(req: &IqRequest<'_>) -> Option<String> {
    if !req.is_to_self() {
        return None;
    }
    local_node(&req.server.domain, req.from_bare)
}

/// The account name of `bare` when it is a bare JID of `domain`.
pub(crate) fn local_node(domain: &str, bare: &str) -> Option<String> {
    let jid = jids::parse(bare)?;
    if jid.domain().as_str() != domain || jid.resource().is_some() {
        return None;
    }
    jid.node().map(|n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(children: &[(&str, &str)]) -> Element {
        let mut q = Element::new("query", ns::REGISTER);
        for (name, text) in children {
            q.push(Element::new(name.to_string(), ns::REGISTER).with_text(*text));
        }
        q
    }

    #[test]
    fn set_requests() {
        assert_eq!(
            parse_set(&query(&[("remove", "")])).ok(),
            Some(SetRequest::Remove)
        );
        assert_eq!(
            parse_set(&query(&[("username", "alice"), ("password", "secret")])).ok(),
            Some(SetRequest::Credentials {
                username: "alice".into(),
                password: "secret".into()
            })
        );
        let missing = parse_set(&query(&[("username", "alice")])).unwrap_err();
        assert_eq!(missing.condition, "bad-request");
        let empty = parse_set(&query(&[("username", "alice"), ("password", "")])).unwrap_err();
        assert_eq!(empty.condition, "not-acceptable");
        let empty = parse_set(&query(&[("username", ""), ("password", "x")])).unwrap_err();
        assert_eq!(empty.condition, "not-acceptable");
        // Fields of another namespace do not count.
        let mut foreign = Element::new("query", ns::REGISTER);
        foreign.push(Element::new("username", "urn:other").with_text("alice"));
        foreign.push(Element::new("password", "urn:other").with_text("x"));
        assert_eq!(parse_set(&foreign).unwrap_err().condition, "bad-request");
    }

    #[test]
    fn new_account_names() {
        assert_eq!(new_account_name("Alice", "localhost").unwrap(), "alice");
        for bad in ["a@localhost", "a/b", "a@other", "a b\u{0}", "\"x\"", "<x>"] {
            assert_eq!(
                new_account_name(bad, "localhost").unwrap_err().condition,
                "jid-malformed",
                "{bad:?}"
            );
        }
        assert!(new_account_name(&"x".repeat(2000), "localhost").is_err());
    }

    #[test]
    fn local_nodes() {
        assert_eq!(
            local_node("localhost", "alice@localhost").as_deref(),
            Some("alice")
        );
        assert_eq!(local_node("localhost", "alice@elsewhere"), None);
        assert_eq!(local_node("localhost", "localhost"), None);
        assert_eq!(local_node("localhost", "alice@localhost/r"), None);
        assert_eq!(local_node("localhost", "not a jid@@"), None);
    }

    #[test]
    fn form_and_feature() {
        let form = registration_form();
        assert!(form.child("username", ns::REGISTER).is_some());
        assert!(form.child("password", ns::REGISTER).is_some());
        assert!(form.child("instructions", ns::REGISTER).is_some());
        assert_eq!(
            stream_feature().to_xml(),
            "<register xmlns='http://jabber.org/features/iq-register'/>"
        );
    }

    #[test]
    fn replies_carry_no_addresses() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("id", "r1")
            .with_attr("to", "localhost")
            .with_attr("from", "forged@localhost");
        let reply = strip_addresses(error_reply(&iq, &StanzaError::conflict()));
        assert_eq!(reply.attr("id"), Some("r1"));
        assert_eq!(reply.attr("to"), None);
        assert_eq!(reply.attr("from"), None);
    }
}
