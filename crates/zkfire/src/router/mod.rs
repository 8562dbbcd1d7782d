//! The router: the one place that decides where a stanza goes.
//!
//! Modules and sessions never look up where a JID lives; they hand stanzas to
//! [`route`]. Today every session is on this node; the cluster plugs in here.

pub mod copies;
pub mod directory;
pub mod messages;
pub mod remote;
pub mod server_requests;
pub mod session_handle;

use crate::jids;
use crate::modules::{IqRequest, IqType};
use crate::server::Server;
use crate::stanza::{error_reply, iq_result, may_bounce, Kind, StanzaError};
use jid::Jid;
use std::sync::Arc;
use zkfire_xml::Element;

/// Routes a stanza whose `from` the server has stamped and whose `to` is set.
///
/// Boxed because routing recurses (a bounce is routed, presence handling
/// routes replies).
pub fn route<'a>(
    server: &'a Arc<Server>,
    stanza: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(route_now(server, stanza))
}

/// [`route`] for a stanza whose `to` the caller has just parsed, as `to`:
/// a client's stanza is not parsed twice on its way. Boxed too, so that a
/// session's own future does not grow by the router's.
pub fn route_to<'a>(
    server: &'a Arc<Server>,
    stanza: Element,
    to: Jid,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        tracing::trace!(stanza = %stanza.to_xml(), "route");
        if let Some(kind) = Kind::of(&stanza) {
            route_addressed(server, stanza, kind, to).await;
        }
    })
}

async fn route_now(server: &Arc<Server>, stanza: Element) {
    tracing::trace!(stanza = %stanza.to_xml(), "route");
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let Some(to) = stanza.attr("to").and_then(jids::parse) else {
        if stanza.attr("to").is_some() {
            bounce(server, &stanza, StanzaError::jid_malformed()).await;
        }
        return;
    };
    route_addressed(server, stanza, kind, to).await;
}

/// Routes a stanza of `kind` to `to`, its parsed `to` attribute.
async fn route_addressed(server: &Arc<Server>, stanza: Element, kind: Kind, to: Jid) {
    if to.domain().as_str() != server.domain {
        // No server-to-server yet: other domains cannot be reached.
        bounce(server, &stanza, StanzaError::remote_server_not_found()).await;
        return;
    }
    let Some(node) = to.node() else {
        if kind == Kind::Iq {
            handle_iq_here(server, stanza, None).await;
        }
        // Messages and presence to the server itself need no answer.
        return;
    };
    let bare = [node.as_str(), "@", &server.domain].concat();
    // A message for an account with no resource goes to offline storage,
    // which applies the blocklist itself, off the sender's path.
    let stored_later = kind == Kind::Message && !server.directory.has_resources(&bare);
    if let Some(from) = stanza.attr("from") {
        if !stored_later
            && !jids::bare_of(from).eq(&bare)
            && jids::is_blocked(&server.blocklist(&bare).await, from)
        {
            // XEP-0191 section 3.5: nothing from a blocked JID reaches the user.
            if kind != Kind::Presence {
                bounce(server, &stanza, StanzaError::service_unavailable()).await;
            }
            return;
        }
        if kind == Kind::Presence
            && stanza.attr("type") != Some("unavailable")
            && sender_blocks(server, from, stanza.attr("to").unwrap_or(&bare)).await
        {
            // XEP-0191 section 3.3: after the unavailable presence that
            // blocking sends, a blocked contact sees no more of the user's presence.
            return;
        }
    }
    match kind {
        Kind::Message => {
            messages::deliver(server, stanza, &bare, to.resource().map(|r| r.as_str())).await
        }
        Kind::Presence => {
            crate::modules::presence::inbound(
                server,
                stanza,
                &bare,
                to.resource().map(|r| r.as_str()),
            )
            .await
        }
        Kind::Iq => match to.resource() {
            Some(resource) => {
                deliver_iq_to_resource(server, stanza, &bare, resource.as_str()).await
            }
            None => handle_iq_here(server, stanza, Some(&bare)).await,
        },
    }
}

/// Whether `from`, when it is an account of this server, blocks `to`.
async fn sender_blocks(server: &Server, from: &str, to: &str) -> bool {
    let from_bare = jids::bare_of(from);
    if from_bare == jids::bare_of(to) || !from_bare.contains('@') {
        return false;
    }
    let Some(domain) = from_bare.split_once('@').map(|(_, d)| d) else {
        return false;
    };
    if domain != server.domain {
        return false;
    }
    let list = server.blocklist(from_bare).await;
    !list.is_empty() && jids::is_blocked(&list, to)
}

/// Sends the error reply for `stanza` back to its sender.
pub async fn bounce(server: &Arc<Server>, stanza: &Element, error: StanzaError) {
    if !may_bounce(stanza) || stanza.attr("from").is_none() {
        return;
    }
    let reply = error_reply(stanza, &error);
    route(server, reply).await;
}

async fn deliver_iq_to_resource(server: &Arc<Server>, iq: Element, bare: &str, resource: &str) {
    if let Some(session) = server.directory.resource(bare, resource) {
        match session.deliver(iq) {
            Ok(()) => return,
            Err(iq) => return bounce(server, &iq, StanzaError::service_unavailable()).await,
        }
    }
    // RFC 6121 section 8.5.3.2.3: no such resource.
    bounce(server, &iq, StanzaError::service_unavailable()).await;
}

/// Answers an IQ addressed to the server (`account` None) or to an account's
/// bare JID, through the module that owns its payload namespace.
pub async fn handle_iq_here(server: &Arc<Server>, iq: Element, account: Option<&str>) {
    let kind = match iq.attr("type") {
        Some("get") => IqType::Get,
        Some("set") => IqType::Set,
        // Results and errors addressed to the server or an account: nothing waits for them.
        _ => return,
    };
    let mut children = iq.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        return bounce(server, &iq, StanzaError::bad_request()).await;
    };
    let Some(from) = iq.attr("from") else { return };
    let from_bare = jids::bare_of(from);
    if let Some(account) = account {
        if account != from_bare && !account_exists(server, account).await {
            return bounce(server, &iq, StanzaError::service_unavailable()).await;
        }
    }
    let Some(module) = server.modules.for_namespace(payload.ns()) else {
        return bounce(server, &iq, StanzaError::service_unavailable()).await;
    };
    let req = IqRequest {
        server,
        from,
        from_bare,
        account,
        kind,
        iq: &iq,
        payload,
    };
    let reply = match module.handle_iq(&req).await {
        Ok(payload) => {
            let mut reply = iq_result(&iq, payload);
            if reply.attr("from").is_none() {
                reply.set_attr("from", account.unwrap_or(&server.domain));
            }
            reply
        }
        Err(e) => {
            let mut reply = error_reply(&iq, &e);
            if reply.attr("from").is_none() {
                reply.set_attr("from", account.unwrap_or(&server.domain));
            }
            reply
        }
    };
    route(server, reply).await;
}

/// Whether an account exists: true at once when it has sessions here.
pub async fn account_exists(server: &Server, bare: &str) -> bool {
    if server.directory.has_resources(bare) {
        return true;
    }
    let Some(node) = jids::node_of(bare) else {
        return false;
    };
    server
        .storage
        .account_exists(&node)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(account = bare, "storage: {e}");
            false
        })
}
