//! Client State Indication (XEP-0352, `urn:xmpp:csi:0`): while a client says
//! it is inactive (a phone in a pocket), what can wait is held: presence
//! updates and chat states without a body, only the latest of each per
//! sender. Anything that matters now (a message with a body or encrypted
//! payload, an IQ, a subscription request, an error) lets everything held
//! out first, in order, then itself; so does `<active/>`.
//!
//! The state is a session flag, local to the session's task; a resumed
//! session starts active again (XEP-0352 section 4), and what was held is
//! then written after the resumption.

use super::Module;
use crate::hooks::{Nonza, Outgoing, StreamHooks};
use crate::router::session_handle::LocalSession;
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub const NS: &str = "urn:xmpp:csi:0";
/// The session flag of a client that said it is inactive.
const INACTIVE: &str = "csi-inactive";
const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";

pub struct ClientStateIndication;

#[async_trait]
impl Module for ClientStateIndication {
    fn stream_hooks(&self) -> Option<&dyn StreamHooks> {
        Some(self)
    }
}

impl StreamHooks for ClientStateIndication {
    fn features(&self, _server: &crate::server::Server) -> Vec<Element> {
        vec![Element::new("csi", NS)]
    }

    fn nonza(&self, session: &LocalSession, el: &Element) -> Option<Nonza> {
        if el.ns() != NS {
            return None;
        }
        match el.name() {
            "inactive" => {
                session.set_flag(INACTIVE, true);
                Some(Nonza::Handled)
            }
            "active" => {
                session.set_flag(INACTIVE, false);
                Some(Nonza::Release)
            }
            _ => None,
        }
    }

    fn outgoing(&self, session: &LocalSession, stanza: &Element) -> Outgoing {
        if !session.has_flag(INACTIVE) {
            return Outgoing::Write;
        }
        if let Some(item) = pep_event(stanza) {
            // Held in order; the same item published again replaces it.
            return Outgoing::Hold {
                key: item.map(|(node, id)| {
                    let from = stanza.attr("from").unwrap_or("");
                    format!("pep\u{0}{from}\u{0}{node}\u{0}{id}")
                }),
            };
        }
        match can_wait(stanza) {
            Some(kind) => Outgoing::Hold {
                key: stanza.attr("from").map(|from| format!("{kind}\u{0}{from}")),
            },
            None => Outgoing::Write,
        }
    }

    fn resumed(&self, session: &LocalSession) {
        session.set_flag(INACTIVE, false);
    }
}

/// What kind of stanza that can wait `stanza` is (its latest one per sender
/// replaces the earlier), or `None` when it matters now.
fn can_wait(stanza: &Element) -> Option<&'static str> {
    match stanza.name() {
        "presence" => match stanza.attr("type") {
            None | Some("unavailable") => Some("presence"),
            // Subscription requests and answers, probes and errors matter.
            _ => None,
        },
        "message" => {
            let only_chat_state = stanza.child("body", ns::CLIENT).is_none()
                && stanza.children().any(|c| c.ns() == CHAT_STATES)
                && stanza
                    .children()
                    .all(|c| c.ns() == CHAT_STATES || c.is("thread", ns::CLIENT));
            (only_chat_state && stanza.attr("type") != Some("error")).then_some("chat-state")
        }
        _ => None,
    }
}

/// A PEP notification (XEP-0163), which can wait too: `Some(Some((node,
/// id)))` for one published item, `Some(None)` for any other event.
fn pep_event(stanza: &Element) -> Option<Option<(&str, &str)>> {
    const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
    if stanza.name() != "message" || stanza.attr("type") == Some("error") {
        return None;
    }
    let event = stanza.child("event", EVENT)?;
    if stanza.child("body", ns::CLIENT).is_some() {
        return None;
    }
    let items = event.child("items", EVENT);
    let mut published = items
        .into_iter()
        .flat_map(|i| i.children())
        .filter(|c| c.name() == "item");
    let one = match (published.next(), published.next(), event.children().count()) {
        (Some(item), None, 1) => items.and_then(|i| i.attr("node")).zip(item.attr("id")),
        _ => None,
    };
    Some(one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_updates_and_chat_states_can_wait() {
        assert_eq!(
            can_wait(&Element::new("presence", ns::CLIENT)),
            Some("presence")
        );
        let unavailable = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
        assert_eq!(can_wait(&unavailable), Some("presence"));
        let typing = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_child(Element::new("composing", CHAT_STATES));
        assert_eq!(can_wait(&typing), Some("chat-state"));
    }

    #[test]
    fn pep_events_wait_and_the_same_item_replaces_itself() {
        let event = |inner: &str| {
            zkfire_xml::parse_element(&format!(
                "<message xmlns='jabber:client' from='a@x' type='headline'>\
                 <event xmlns='http://jabber.org/protocol/pubsub#event'>{inner}</event></message>"
            ))
            .unwrap()
        };
        let nick = event("<items node='n'><item id='current'><nick xmlns='http://jabber.org/protocol/nick'>A</nick></item></items>");
        assert_eq!(pep_event(&nick), Some(Some(("n", "current"))));
        let delete = event("<delete node='n'/>");
        assert_eq!(pep_event(&delete), Some(None));
        assert_eq!(pep_event(&Element::new("message", ns::CLIENT)), None);
    }

    #[test]
    fn what_matters_is_written_at_once() {
        let subscribe = Element::new("presence", ns::CLIENT).with_attr("type", "subscribe");
        assert_eq!(can_wait(&subscribe), None);
        let text = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
            .with_child(Element::new("active", CHAT_STATES));
        assert_eq!(can_wait(&text), None);
        let receipt = Element::new("message", ns::CLIENT)
            .with_child(Element::new("received", "urn:xmpp:receipts"));
        assert_eq!(can_wait(&receipt), None);
        assert_eq!(can_wait(&Element::new("iq", ns::CLIENT)), None);
    }
}
