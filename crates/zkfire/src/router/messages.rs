//! Delivery of messages to an account of this domain (RFC 6121 section 8.5).

use super::bounce;
use super::copies::Copies;
use crate::modules::offline;
use crate::router::directory::Resource;
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
    let hooks = &server.modules;
    if hooks.message_arriving(server, &mut stanza, bare).await == crate::hooks::Flow::Consumed {
        return;
    }
    // The types delivery tells apart; `chat`, `normal` and any other are alike.
    let msg_type = match stanza.attr("type") {
        Some("groupchat") => "groupchat",
        Some("headline") => "headline",
        Some("error") => "error",
        _ => "normal",
    };
    if let Some(resource) = resource {
        if let Some(session) = server.directory.resource(bare, resource) {
            if msg_type != "error" {
                let to = [session.full_jid()];
                server
                    .modules
                    .message_delivering(server, &stanza, bare, &to)
                    .await;
            }
            match session.deliver(stanza) {
                Ok(()) => return,
                Err(back) => stanza = back,
            }
        }
        // Section 8.5.3.2.1: no such resource.
        match msg_type {
            "groupchat" => {
                return bounce(server, &stanza, StanzaError::service_unavailable()).await
            }
            "headline" | "error" => return,
            _ => {} // chat and normal: as if sent to the bare JID
        }
    }
    match msg_type {
        "error" => {}
        "groupchat" => bounce(server, &stanza, StanzaError::service_unavailable()).await,
        "headline" => {
            let all = available(server, bare);
            let to: Vec<&str> = all.iter().map(|(s, _)| s.full_jid()).collect();
            server
                .modules
                .message_delivering(server, &stanza, bare, &to)
                .await;
            for (session, _) in all {
                let _ = session.deliver(stanza.clone());
            }
        }
        _ => deliver_to_best(server, stanza, bare).await,
    }
}

/// Available resources with non-negative priority, with that priority
/// (read once: it may change meanwhile).
fn available(server: &Server, bare: &str) -> Vec<(Resource, i8)> {
    server
        .directory
        .resources(bare)
        .into_iter()
        .filter_map(|s| {
            let priority = s.priority().filter(|p| *p >= 0)?;
            Some((s, priority))
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
        server
            .modules
            .message_delivering(server, &stanza, bare, &[])
            .await;
        return offline::store_or_bounce(server, stanza, bare).await;
    }
    let mut candidates = available(server, bare);
    candidates.sort_by_key(|(_, priority)| std::cmp::Reverse(*priority));
    let best = candidates.first().map(|(_, p)| *p);
    let tied = candidates
        .iter()
        .take_while(|(_, p)| Some(*p) == best)
        .count();
    let (chosen, others) = candidates.split_at(tied);
    let to: Vec<&str> = chosen.iter().map(|(s, _)| s.full_jid()).collect();
    server
        .modules
        .message_delivering(server, &stanza, bare, &to)
        .await;
    let Some(((last, _), firsts)) = chosen.split_last() else {
        return offline::store_or_bounce(server, stanza, bare).await;
    };
    // Copies for all but the last chosen resource, which takes the stanza
    // itself: most accounts have one resource, and a copy costs. Several
    // copies are counted together, so that sessions ending without their
    // client's acknowledgement reroute the message once, not once each.
    let mut delivered = false;
    let copies = (!firsts.is_empty()).then(Copies::new);
    let give = |session: &Resource, stanza: Element| match &copies {
        Some(copies) => session.deliver_copy(stanza, copies),
        None => session.deliver(stanza),
    };
    for (session, _) in firsts {
        delivered |= give(session, stanza.clone()).is_ok();
    }
    let mut stanza = match give(last, stanza) {
        Ok(()) => return,
        Err(_) if delivered => return,
        Err(back) => back,
    };
    // The chosen resources went away meanwhile: try the others, then storage.
    for (session, _) in others {
        match session.deliver(stanza) {
            Ok(()) => return,
            Err(back) => stanza = back,
        }
    }
    offline::store_or_bounce(server, stanza, bare).await;
}

/// A message that reached a session of `bare` but not its client, whose
/// session ended: delivered once more, to one place. That is the connected
/// resource of highest non-negative priority (never one waiting for
/// resumption, which may end the same way and would pass it on again), else
/// offline storage. Never fanned out to every resource, as a message to the
/// bare JID would be: each of them may be ending too.
pub async fn redeliver(server: &Arc<Server>, stanza: Element, bare: &str) {
    if server.offline_queues.contains_key(bare) {
        // Keep the order of what is on its way to storage already.
        return offline::store_or_bounce(server, stanza, bare).await;
    }
    let mut candidates: Vec<(Resource, i8)> = available(server, bare)
        .into_iter()
        .filter(|(s, _)| s.is_connected())
        .collect();
    candidates.sort_by_key(|(_, priority)| std::cmp::Reverse(*priority));
    let mut stanza = stanza;
    for (session, _) in candidates {
        match session.deliver(stanza) {
            Ok(()) => return,
            Err(back) => stanza = back,
        }
    }
    offline::store_or_bounce(server, stanza, bare).await;
}
