//! Message Carbons (XEP-0280, `urn:xmpp:carbons:2`): every resource of a
//! user that turned carbons on gets a copy of the user's conversations, the
//! messages it did not receive itself and the ones the user's other
//! resources sent.
//!
//! The flag lives on the session (`LocalSession::set_flag`) and travels with
//! its announcement, so the node that routes a message, wherever the
//! resources are, knows which ones want copies. Copies go straight to the
//! chosen resource of the directory: a carbon that cannot be delivered is
//! dropped, never bounced to the original sender (XEP-0280 section 10.3).

use super::{IqRequest, IqResult, IqType, Module};
use crate::hooks::{Flow, MessageHooks};
use crate::jids;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use std::sync::Arc;
use zkfire_xml::{ns, Element};

/// The session flag of a resource that enabled carbons.
pub const FLAG: &str = "carbons";

pub struct Carbons;

#[async_trait]
impl Module for Carbons {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::CARBONS]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::CARBONS]
    }

    /// `<enable/>` and `<disable/>`, from the resource itself (section 4).
    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if req.kind != IqType::Set || !req.is_to_self() {
            return Err(StanzaError::bad_request());
        }
        let on = match req.payload.name() {
            "enable" => true,
            "disable" => false,
            _ => return Err(StanzaError::bad_request()),
        };
        let session = jids::resource_of(req.from).and_then(|r| {
            req.server
                .directory
                .local_resources(req.from_bare)
                .into_iter()
                .find(|s| s.resource == r)
        });
        let Some(session) = session else {
            return Err(StanzaError::not_allowed());
        };
        // Enabling twice, or disabling twice, is no error (section 10.1).
        if session.set_flag(FLAG, on) {
            req.server.announce_session(&session);
        }
        tracing::debug!(jid = %session.full_jid, on, "carbons");
        Ok(None)
    }

    fn message_hooks(&self) -> Option<&dyn MessageHooks> {
        Some(self)
    }
}

#[async_trait]
impl MessageHooks for Carbons {
    /// `sent` copies for the user's other resources; a carbon that a client
    /// made itself is refused (section 11: only the server makes them).
    async fn sent_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        msg: &mut Element,
    ) -> Flow {
        if is_carbon(msg) {
            tracing::info!(jid = %session.full_jid, "refused a carbon sent by a client");
            let error = StanzaError::not_acceptable().with_text("carbons are made by the server");
            crate::router::bounce(server, msg, error).await;
            return Flow::Consumed;
        }
        let to_self = msg
            .attr("to")
            .is_some_and(|to| jids::bare_of(to) == session.bare_jid);
        if !to_self && eligible(msg, Direction::Sent) {
            copy_to(server, msg, &session.bare_jid, &[&session.full_jid], "sent").await;
        }
        Flow::Pass
    }

    /// `received` copies for the resources that do not get the message.
    async fn delivering(&self, server: &Arc<Server>, msg: &Element, bare: &str, to: &[&str]) {
        let from_self = msg
            .attr("from")
            .is_some_and(|from| jids::bare_of(from) == bare);
        if !from_self && eligible(msg, Direction::Received) {
            copy_to(server, msg, bare, to, "received").await;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// A `<received/>` or `<sent/>` wrapper at the top of a message.
fn is_carbon(msg: &Element) -> bool {
    msg.children()
        .any(|c| c.ns() == ns::CARBONS && matches!(c.name(), "received" | "sent"))
}

/// XEP-0280 section 6.1: the messages of a conversation, and no others.
fn eligible(msg: &Element, direction: Direction) -> bool {
    if msg.child("private", ns::CARBONS).is_some() || msg.child("no-copy", ns::HINTS).is_some() {
        return false;
    }
    let muc_user = msg
        .child("x", "http://jabber.org/protocol/muc#user")
        .is_some();
    match msg.attr("type") {
        Some("groupchat") | Some("headline") | Some("error") => return false,
        // A private message from a room occupant: the room already sends
        // it to every joined client.
        Some("chat") if muc_user && direction == Direction::Received => {
            return msg
                .child("x", "http://jabber.org/protocol/muc#user")
                .is_some_and(|x| {
                    x.child("invite", "http://jabber.org/protocol/muc#user")
                        .is_some()
                })
        }
        Some("chat") => return true,
        _ => {}
    }
    // Type normal (or none): with a body, or with what IM clients use.
    msg.child("body", ns::CLIENT).is_some()
        || msg.children().any(|c| {
            matches!(
                c.ns(),
                "urn:xmpp:receipts"
                    | "http://jabber.org/protocol/chatstates"
                    | "urn:xmpp:chat-markers:0"
                    | "jabber:x:conference"
            ) || (c.name() == "x"
                && c.ns() == "http://jabber.org/protocol/muc#user"
                && c.child("invite", "http://jabber.org/protocol/muc#user")
                    .is_some())
        })
}

/// Sends `msg`, wrapped in `<{kind}/>`, to each carbons-enabled resource of
/// `bare` that is not in `except`.
async fn copy_to(server: &Arc<Server>, msg: &Element, bare: &str, except: &[&str], kind: &str) {
    if !server.directory.any_flagged(bare, FLAG, except) {
        return;
    }
    for resource in server.directory.resources(bare) {
        let full = resource.full_jid();
        if except.contains(&full) || !resource.has_flag(FLAG) {
            continue;
        }
        let mut copy = Element::new("message", ns::CLIENT)
            .with_attr("from", bare.to_string())
            .with_attr("to", full.to_string())
            .with_child(
                Element::new(kind.to_string(), ns::CARBONS)
                    .with_child(Element::new("forwarded", ns::FORWARD).with_child(msg.clone())),
            );
        if let Some(t) = msg.attr("type") {
            copy.set_attr("type", t.to_string());
        }
        if resource.deliver(copy).is_err() {
            tracing::debug!(to = full, "carbon copy not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: Option<&str>, children: Vec<Element>) -> Element {
        let mut m = Element::new("message", ns::CLIENT);
        if let Some(t) = t {
            m.set_attr("type", t);
        }
        for c in children {
            m.push(c);
        }
        m
    }

    fn body() -> Element {
        Element::new("body", ns::CLIENT).with_text("hi")
    }

    #[test]
    fn conversations_are_eligible_and_the_rest_is_not() {
        let d = Direction::Received;
        assert!(eligible(&msg(Some("chat"), vec![]), d));
        assert!(eligible(&msg(None, vec![body()]), d));
        assert!(eligible(&msg(Some("normal"), vec![body()]), d));
        assert!(!eligible(&msg(Some("normal"), vec![]), d));
        assert!(!eligible(&msg(Some("groupchat"), vec![body()]), d));
        assert!(!eligible(&msg(Some("headline"), vec![body()]), d));
        assert!(!eligible(&msg(Some("error"), vec![body()]), d));
        let receipt = Element::new("received", "urn:xmpp:receipts");
        assert!(eligible(&msg(None, vec![receipt]), d));
    }

    #[test]
    fn private_and_no_copy_messages_are_not_copied() {
        let private = Element::new("private", ns::CARBONS);
        assert!(!eligible(
            &msg(Some("chat"), vec![body(), private]),
            Direction::Sent
        ));
        let no_copy = Element::new("no-copy", ns::HINTS);
        assert!(!eligible(
            &msg(Some("chat"), vec![body(), no_copy]),
            Direction::Sent
        ));
    }

    #[test]
    fn private_messages_of_a_room_are_copied_only_when_sent() {
        let x = || Element::new("x", "http://jabber.org/protocol/muc#user");
        assert!(!eligible(
            &msg(Some("chat"), vec![body(), x()]),
            Direction::Received
        ));
        assert!(eligible(
            &msg(Some("chat"), vec![body(), x()]),
            Direction::Sent
        ));
    }

    #[test]
    fn carbon_wrappers_are_recognised() {
        let wrapped = msg(Some("chat"), vec![Element::new("received", ns::CARBONS)]);
        assert!(is_carbon(&wrapped));
        assert!(!is_carbon(&msg(Some("chat"), vec![body()])));
    }
}
