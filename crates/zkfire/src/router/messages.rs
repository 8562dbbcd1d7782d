//! Delivery of messages to an account of this domain (RFC 6121 section 8.5).

use super::bounce;
use crate::modules::offline;
use crate::server::Server;
use crate::stanza::StanzaError;
use std::sync::Arc;
use zkfire_xml::Element;

/// Delivers a message addressed to `bare` (and `resource`, for a full JID).
pub async fn deliver(
    server: &Arc<Server>,
    mut stanza: Element,
    bare: &str,
    resource: Option<&str>,
) {
    let msg_type = stanza.attr("type").unwrap_or("normal").to_string();
    if let Some(resource) = resource {
        if let Some(session) = server.directory.resource(bare, resource) {
            match session.deliver(stanza) {
                Ok(()) => return,
                Err(back) => stanza = back,
            }
        }
        // Section 8.5.3.2.1: no such resource.
        match msg_type.as_str() {
            "groupchat" => {
                return bounce(server, &stanza, StanzaError::service_unavailable()).await
            }
            "headline" | "error" => return,
            _ => {} // chat and normal: as if sent to the bare JID
        }
    }
    match msg_type.as_str() {
        "error" => {}
        "groupchat" => bounce(server, &stanza, StanzaError::service_unavailable()).await,
        "headline" => {
            for session in available(server, bare) {
                let _ = session.deliver(stanza.clone());
            }
        }
        _ => deliver_to_best(server, stanza, bare).await,
    }
}

/// Available resources with non-negative priority.
fn available(server: &Server, bare: &str) -> Vec<crate::router::directory::Resource> {
    server
        .directory
        .resources(bare)
        .into_iter()
        .filter(|s| {
            let p = s.presence();
            p.available && p.priority >= 0
        })
        .collect()
}

/// Chat and normal messages to a bare JID: to the available resources of
/// highest non-negative priority (all of them on a tie), else offline storage.
pub async fn deliver_to_best(server: &Arc<Server>, stanza: Element, bare: &str) {
    if server.offline_queues.contains_key(bare) {
        // Earlier messages for this account are on their way through
        // offline storage (it was not available a moment ago): this one
        // follows them, so the recipient gets them in the order sent.
        return offline::store_or_bounce(server, stanza, bare).await;
    }
    let mut candidates = available(server, bare);
    candidates.sort_by_key(|s| std::cmp::Reverse(s.presence().priority));
    let Some(best) = candidates.first().map(|s| s.presence().priority) else {
        return offline::store_or_bounce(server, stanza, bare).await;
    };
    let mut delivered = false;
    for session in candidates
        .iter()
        .take_while(|s| s.presence().priority == best)
    {
        delivered |= session.deliver(stanza.clone()).is_ok();
    }
    if !delivered {
        // The chosen resources went away meanwhile: try the others, then storage.
        for session in candidates
            .iter()
            .skip_while(|s| s.presence().priority == best)
        {
            if session.deliver(stanza.clone()).is_ok() {
                return;
            }
        }
        offline::store_or_bounce(server, stanza, bare).await;
    }
}
