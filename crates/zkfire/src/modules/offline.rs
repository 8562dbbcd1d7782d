//! Offline messages (XEP-0160): kept while an account has no available
//! resource, delivered with a delay stamp (XEP-0203) at its next initial
//! presence, bounded per account.

use super::Module;
use crate::jids;
use crate::router::bounce;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use crate::stanza::{xep82_now, StanzaError};
use async_trait::async_trait;
use std::sync::Arc;
use zkfire_xml::{ns, Element};

pub struct Offline;

#[async_trait]
impl Module for Offline {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::MSGOFFLINE]
    }
}

/// Whether a message is worth keeping: one a person would want to read
/// later, not a typing notification or receipt alone.
fn worth_storing(stanza: &Element) -> bool {
    if stanza.child("no-store", "urn:xmpp:hints").is_some() {
        return false;
    }
    stanza.child("body", ns::CLIENT).is_some()
        || stanza.child("subject", ns::CLIENT).is_some()
        || stanza.child("store", "urn:xmpp:hints").is_some()
        || stanza
            .child("encrypted", "eu.siacs.conversations.axolotl")
            .is_some()
}

/// How long an account's store queue stays open without messages.
const QUEUE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Queues a message for `bare`'s offline storage and returns at once: the
/// sender's session does not wait on the database (which may be slow or
/// down). One worker per account stores its queue in order.
pub async fn store_or_bounce(server: &Arc<Server>, stanza: Element, bare: &str) {
    let mut stanza = stanza;
    loop {
        let tx = server
            .offline_queues
            .entry(bare.to_string())
            .or_insert_with(|| spawn_store_worker(server, bare))
            .clone();
        match tx.send(stanza) {
            Ok(()) => return,
            Err(tokio::sync::mpsc::error::SendError(back)) => {
                // The worker was just closing: start a new one.
                server
                    .offline_queues
                    .remove_if(bare, |_, t| t.same_channel(&tx));
                stanza = back;
            }
        }
    }
}

fn spawn_store_worker(
    server: &Arc<Server>,
    bare: &str,
) -> tokio::sync::mpsc::UnboundedSender<Element> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Element>();
    let server2 = server.clone();
    let bare = bare.to_string();
    server.tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(QUEUE_IDLE, rx.recv()) => n.ok().flatten(),
                _ = server2.shutdown.cancelled() => None,
            };
            match next {
                Some(stanza) => store_now(&server2, stanza, &bare).await,
                None => break,
            }
        }
        // Idle or stopping: take what is left, then leave the map.
        rx.close();
        while let Ok(stanza) = rx.try_recv() {
            store_now(&server2, stanza, &bare).await;
        }
        server2
            .offline_queues
            .remove_if(&bare, |_, t| t.is_closed());
    });
    tx
}

/// Stores a message for `bare`, or tells the sender why it cannot.
async fn store_now(server: &Arc<Server>, stanza: Element, bare: &str) {
    if !crate::router::account_exists(server, bare).await {
        // RFC 6121 section 8.5.2: no such account.
        return bounce(server, &stanza, StanzaError::service_unavailable()).await;
    }
    if let Some(from) = stanza.attr("from") {
        if crate::jids::bare_of(from) != bare
            && jids::is_blocked(&server.blocklist(bare).await, from)
        {
            // XEP-0191 section 3.5, for an account that is offline.
            return bounce(server, &stanza, StanzaError::service_unavailable()).await;
        }
    }
    if !worth_storing(&stanza) {
        return;
    }
    let Some(node) = jids::node_of(bare) else {
        return;
    };
    // XEP-0203: the delay from our domain is ours alone, so a recipient can
    // trust its stamp; delays others added (say, a remote service) stay.
    let mut stanza = without_delays_from(stanza, &server.domain);
    stanza.push(
        Element::new("delay", ns::DELAY)
            .with_attr("from", server.domain.clone())
            .with_attr("stamp", xep82_now())
            .with_text("Offline Storage"),
    );
    let max = server.config.limits.max_offline_messages;
    match server
        .storage
        .store_offline(&node, &stanza.to_xml(), max)
        .await
    {
        Ok(true) => {
            // The account may have become available while this was being
            // stored, after its session had read the store: look again, so
            // the message does not wait for the next login.
            let available = server
                .directory
                .local_resources(bare)
                .into_iter()
                .find(|s| {
                    let p = s.presence();
                    // Not one waiting for resumption: it may never come back.
                    p.available && p.priority >= 0 && !s.is_detached()
                });
            if let Some(session) = available {
                deliver_stored(server, &session).await;
            }
            if let Some(cluster) = &server.cluster {
                // The account may be logging in on another node right now.
                cluster.broadcast(&crate::cluster::protocol::BusMessage::OfflineStored {
                    bare_jid: bare.to_string(),
                });
            }
        }
        Ok(false) => {
            let error = StanzaError::service_unavailable()
                .with_text("the recipient's offline storage is full");
            bounce(server, &stanza, error).await;
        }
        Err(e) => {
            tracing::error!(account = bare, "cannot store offline message: {e}");
            bounce(server, &stanza, StanzaError::internal_server_error()).await;
        }
    }
}

/// Namespace of the legacy delay (XEP-0091), which clients still show.
const LEGACY_DELAY: &str = "jabber:x:delay";

/// The stanza without the delay elements (XEP-0203, and the legacy XEP-0091
/// one) that claim to come from `domain` or an address at it.
fn without_delays_from(mut stanza: Element, domain: &str) -> Element {
    stanza.retain_children(|el| {
        let claims_domain = (el.is("delay", ns::DELAY) || el.is("x", LEGACY_DELAY))
            && el
                .attr("from")
                .is_some_and(|from| jids::domain_of(from).eq_ignore_ascii_case(domain));
        !claims_domain
    });
    stanza
}

/// Hands every stored message to a session that just became available, and
/// removes those it took.
pub async fn deliver_stored(server: &Arc<Server>, session: &LocalSession) {
    let Some(node) = jids::node_of(&session.bare_jid) else {
        return;
    };
    // One flush per account at a time, so two never hand out the same message.
    let lock = server
        .offline_flush
        .entry(session.bare_jid.clone())
        .or_default()
        .clone();
    {
        let _guard = lock.lock().await;
        flush(server, session, &node).await;
    }
    drop(lock);
    server
        .offline_flush
        .remove_if(&session.bare_jid, |_, l| Arc::strong_count(l) == 1);
}

async fn flush(server: &Server, session: &LocalSession, node: &str) {
    let messages = match server.storage.offline_messages(node).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(account = %session.bare_jid, "cannot read offline messages: {e}");
            return;
        }
    };
    let mut delivered = Vec::new();
    for m in messages {
        let Ok(mut stanza) = zkfire_xml::parse_element(&m.stanza) else {
            tracing::warn!(account = %session.bare_jid, id = m.id, "dropping unreadable offline message");
            delivered.push(m.id);
            continue;
        };
        stanza.set_attr("to", session.full_jid.clone());
        if session.deliver(stanza).is_err() {
            break;
        }
        delivered.push(m.id);
    }
    if !delivered.is_empty() {
        if let Err(e) = server
            .storage
            .delete_offline_messages(node, &delivered)
            .await
        {
            tracing::error!(account = %session.bare_jid, "cannot delete delivered offline messages: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delays_claiming_our_domain_are_removed() {
        let delay = |from: &str| {
            Element::new("delay", ns::DELAY)
                .with_attr("from", from)
                .with_attr("stamp", "2001-01-01T00:00:00Z")
        };
        let m = Element::new("message", ns::CLIENT)
            .with_attr("id", "m")
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
            .with_child(delay("example.org"))
            .with_child(delay("Example.org/x"))
            .with_child(delay("user@example.org"))
            .with_child(delay("elsewhere.net"))
            .with_child(Element::new("x", LEGACY_DELAY).with_attr("from", "example.org"));
        let kept = without_delays_from(m, "example.org");
        let froms: Vec<&str> = kept.children().filter_map(|c| c.attr("from")).collect();
        assert_eq!(froms, ["elsewhere.net"]);
        assert_eq!(kept.attr("id"), Some("m"));
        assert_eq!(kept.child_text("body", ns::CLIENT).as_deref(), Some("hi"));
    }

    #[test]
    fn chat_states_alone_are_not_stored() {
        let typing = Element::new("message", ns::CLIENT).with_child(Element::new(
            "composing",
            "http://jabber.org/protocol/chatstates",
        ));
        assert!(!worth_storing(&typing));
        let text = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
        assert!(worth_storing(&text));
    }
}
