//! Presence (RFC 6121 sections 3 and 4): broadcast to approved contacts,
//! probes, directed presence, and the subscription state machine with
//! pre-approval and pending requests delivered again at the next login.
//!
//! Every check of who may see whose presence happens here, on the roster of
//! the account it protects.
//!
//! What a subscription stanza may add is bounded: a request or approval that
//! would add an item to a full roster is refused with `resource-constraint`
//! to its sender, and so is a request to an account that already has
//! `[limits] max_pending_subscriptions` waiting. A pending request is kept as
//! its requester alone, which is all that is delivered again at login.

use super::{offline, roster, Module};
use crate::jids;
use crate::router::remote::RemoteSession;
use crate::router::route;
use crate::router::session_handle::{LocalSession, PresenceState};
use crate::server::Server;
use crate::stanza::{error_reply, StanzaError};
use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::Arc;
use zkfire_storage::{RosterItem, StorageError, Subscription};
use zkfire_xml::{ns, Element};

/// Directed presence targets kept per session, so they cannot grow without bound.
const MAX_DIRECTED: usize = 1000;

pub struct Presence;

#[async_trait]
impl Module for Presence {}

/// What a session's client has said about its presence.
#[derive(Debug, Default)]
pub struct ClientPresence {
    /// Initial presence was sent and no unavailable since.
    pub available: bool,
    /// JIDs that got directed presence and are owed unavailable (RFC 6121 4.6.3).
    pub directed: HashSet<String>,
    /// Status text of the last presence, kept for last activity.
    pub last_status: String,
}

fn storage_node(bare: &str) -> Option<String> {
    jids::node_of(bare)
}

async fn roster_items(server: &Server, bare: &str) -> Vec<RosterItem> {
    let Some(node) = storage_node(bare) else {
        return Vec::new();
    };
    match server.storage.roster(&node).await {
        Ok((_, items)) => items,
        Err(e) => {
            tracing::error!(account = bare, "storage: {e}");
            Vec::new()
        }
    }
}

fn has_from(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::From | Subscription::Both)
}

fn has_to(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::To | Subscription::Both)
}

fn presence(ptype: Option<&str>, from: &str, to: &str) -> Element {
    let mut p = Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(t) = ptype {
        p.set_attr("type", t);
    }
    p
}

/// A presence stanza from the client of `session` (`from` already stamped).
pub async fn outbound(
    server: &Arc<Server>,
    session: &Arc<LocalSession>,
    state: &mut ClientPresence,
    stanza: Element,
) {
    let ptype = stanza.attr("type").map(str::to_string);
    let to = stanza.attr("to").map(str::to_string);
    match (ptype.as_deref(), to) {
        (None | Some("unavailable"), None) => {
            let mut stanza = stanza;
            server
                .modules
                .presence_broadcast(server, session, &mut stanza)
                .await;
            broadcast(server, session, state, stanza).await
        }
        (None | Some("unavailable"), Some(to)) => {
            // Directed presence (RFC 6121 section 4.6).
            let bare_to = jids::bare_of(&to).to_string();
            let subscribed = roster::item_of(server, &session.bare_jid, &bare_to)
                .await
                .is_some_and(|i| has_from(&i));
            let changed = if ptype.is_none()
                && state.available
                && !subscribed
                && state.directed.len() < MAX_DIRECTED
            {
                state.directed.insert(to.clone())
            } else if ptype.is_some() {
                state.directed.remove(&to)
            } else {
                false
            };
            if changed {
                publish_directed(server, session, state);
            }
            route(server, stanza).await;
        }
        (Some(t @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")), Some(to)) => {
            let t = t.to_string();
            let contact = jids::bare_of(&to).to_string();
            subscription_out(server, session, &contact, &t, stanza).await
        }
        (Some("probe"), Some(to)) => {
            let mut probe = presence(Some("probe"), &session.full_jid, jids::bare_of(&to));
            probe.set_attr("id", stanza.attr("id").unwrap_or_default());
            route(server, probe).await
        }
        (Some("error"), Some(_)) => route(server, stanza).await,
        _ => {} // other types without a recipient mean nothing
    }
}

/// Keeps the session's shared presence, and the cluster, up to date with
/// whom it sent directed presence.
fn publish_directed(server: &Arc<Server>, session: &Arc<LocalSession>, state: &ClientPresence) {
    let mut shared = session.presence();
    shared.directed = state.directed.iter().cloned().collect();
    session.set_presence(shared);
    if let Some(cluster) = &server.cluster {
        cluster.announce(
            session,
            server.blocklists.get(&session.bare_jid).map(|l| l.clone()),
        );
    }
}

/// Presence without `to`: availability of this resource, for the user's
/// approved contacts and the user's own resources.
async fn broadcast(
    server: &Arc<Server>,
    session: &Arc<LocalSession>,
    state: &mut ClientPresence,
    stanza: Element,
) {
    let available = stanza.attr("type").is_none();
    state.last_status = stanza.child_text("status", ns::CLIENT).unwrap_or_default();
    if !available && !state.available {
        return;
    }
    let initial = available && !state.available;
    let priority = stanza
        .child_text("priority", ns::CLIENT)
        .and_then(|p| p.trim().parse::<i8>().ok())
        .unwrap_or(0);
    session.set_presence(PresenceState {
        available,
        priority,
        last: available.then(|| stanza.clone()),
        // Unavailable ends every directed presence (sent below).
        directed: if available {
            state.directed.iter().cloned().collect()
        } else {
            Vec::new()
        },
    });
    if let Some(cluster) = &server.cluster {
        cluster.announce(
            session,
            server.blocklists.get(&session.bare_jid).map(|l| l.clone()),
        );
    }
    state.available = available;
    let items = roster_items(server, &session.bare_jid).await;
    for item in items.iter().filter(|i| has_from(i)) {
        let mut p = stanza.clone();
        p.set_attr("to", item.jid.clone());
        route(server, p).await;
    }
    let mut own = stanza.clone();
    own.set_attr("to", session.bare_jid.clone());
    route(server, own).await;
    if !available {
        for to in std::mem::take(&mut state.directed) {
            route(
                server,
                presence(Some("unavailable"), &session.full_jid, &to),
            )
            .await;
        }
        return;
    }
    if initial {
        own_resources_to(server, session);
        for item in items.iter().filter(|i| has_to(i)) {
            route(
                server,
                presence(Some("probe"), &session.full_jid, &item.jid),
            )
            .await;
        }
        redeliver_pending_subscriptions(server, session).await;
        if priority >= 0 {
            offline::deliver_stored(server, session).await;
        }
    }
}

/// RFC 6121 sections 4.2.2 and 4.3.2: a user is subscribed to its own
/// presence, so a resource that becomes available learns of the user's other
/// available resources, on any node, as a probe of the own bare JID would.
fn own_resources_to(server: &Server, session: &LocalSession) {
    for other in server.directory.resources(&session.bare_jid) {
        if other.full_jid() == session.full_jid {
            continue;
        }
        let p = other.presence();
        let Some(mut last) = p.last.filter(|_| p.available) else {
            continue;
        };
        last.set_attr("from", other.full_jid().to_string());
        last.set_attr("to", session.full_jid.clone());
        let _ = session.deliver(last);
    }
}

/// RFC 6121 section 3.1.3: unanswered subscription requests come again at login.
async fn redeliver_pending_subscriptions(server: &Server, session: &LocalSession) {
    let Some(node) = storage_node(&session.bare_jid) else {
        return;
    };
    let pending = server
        .storage
        .pending_subscriptions(&node)
        .await
        .unwrap_or_else(|e| {
            tracing::error!("storage: {e}");
            Vec::new()
        });
    for from in pending {
        let mut p = presence(Some("subscribe"), &from, &session.full_jid);
        p.set_attr("id", crate::c2s::stream::new_id());
        let _ = session.deliver(p);
    }
}

/// The session is gone: its resource is unavailable for everyone who saw it.
pub async fn session_ended(
    server: &Arc<Server>,
    session: &Arc<LocalSession>,
    state: &mut ClientPresence,
    _last: bool,
) {
    if state.available {
        let unavailable = Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", session.full_jid.clone());
        broadcast(server, session, state, unavailable).await;
    } else {
        for to in std::mem::take(&mut state.directed) {
            route(
                server,
                presence(Some("unavailable"), &session.full_jid, &to),
            )
            .await;
        }
    }
}

/// Presence addressed to an account of this server (`resource` for a full JID).
pub async fn inbound(server: &Arc<Server>, stanza: Element, bare: &str, resource: Option<&str>) {
    match stanza.attr("type") {
        None | Some("unavailable") | Some("error") => match resource {
            Some(r) => {
                if let Some(s) = server.directory.resource(bare, r) {
                    let _ = s.deliver(stanza);
                }
            }
            None => {
                for s in server
                    .directory
                    .resources(bare)
                    .into_iter()
                    .filter(|s| s.is_available())
                {
                    let _ = s.deliver(stanza.clone());
                }
            }
        },
        Some("probe") => probe(server, &stanza, bare).await,
        Some(t @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
            let t = t.to_string();
            subscription_in(server, stanza, bare, &t).await
        }
        _ => {}
    }
}

/// RFC 6121 section 4.3.2: answer a probe with the presence of every
/// available resource, only to a contact with an approved subscription.
async fn probe(server: &Arc<Server>, stanza: &Element, bare: &str) {
    let Some(from) = stanza.attr("from") else {
        return;
    };
    let prober = jids::bare_of(from);
    if prober == bare {
        return;
    }
    let approved = roster::item_of(server, bare, prober)
        .await
        .is_some_and(|i| has_from(&i));
    if !approved {
        if crate::router::account_exists(server, bare).await {
            route(server, presence(Some("unsubscribed"), bare, prober)).await;
        }
        return;
    }
    send_current_presence_to(server, bare, from).await;
}

/// Current presence of every available resource of `user_bare`, sent to `contact`.
pub async fn send_current_presence_to(server: &Arc<Server>, user_bare: &str, contact: &str) {
    for s in server.directory.resources(user_bare) {
        let state = s.presence();
        if let (true, Some(mut p)) = (state.available, state.last) {
            p.set_attr("from", s.full_jid());
            p.set_attr("to", contact);
            route(server, p).await;
        }
    }
}

/// Unavailable presence from every available resource of `user_bare` to `contact`.
pub async fn send_unavailable_to(server: &Arc<Server>, user_bare: &str, contact: &str) {
    for s in server.directory.resources(user_bare) {
        if s.is_available() {
            route(server, presence(Some("unavailable"), s.full_jid(), contact)).await;
        }
    }
}

/// A subscription stanza from the account `from_bare` (server generated).
pub async fn send_subscription(server: &Arc<Server>, from_bare: &str, to: &str, ptype: &str) {
    route(server, presence(Some(ptype), from_bare, to)).await;
}

/// Puts back a pending request taken by an answer that was then refused.
async fn restore_pending(server: &Server, node: &str, contact: &str) {
    // No bound: it was counted when it first came.
    if let Err(e) = server
        .storage
        .add_pending_subscription(node, contact, usize::MAX)
        .await
    {
        tracing::error!(account = node, "storage: {e}");
    }
}

/// Removes a pending inbound subscription request; whether there was one.
async fn take_pending(server: &Server, node: &str, contact: &str) -> bool {
    server
        .storage
        .remove_pending_subscription(node, contact)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(account = node, "storage: {e}");
            false
        })
}

/// Why a roster change did not happen.
enum NotChanged {
    /// It would have added an item to a full roster.
    RosterFull,
    /// The storage failed (logged).
    Storage,
}

/// Changes the roster item `contact` of `user` atomically (see
/// `Storage::update_roster_item`, which also keeps the roster within
/// `max_roster_items`) and pushes it when it changed. Returns the item
/// before and after (equal when nothing changed).
async fn change_item(
    server: &Server,
    user: &str,
    contact: &str,
    change: impl FnOnce(&mut RosterItem) + Send + 'static,
) -> Result<(Option<RosterItem>, RosterItem), NotChanged> {
    let node = storage_node(user).ok_or(NotChanged::Storage)?;
    let jid = contact.to_string();
    let boxed: zkfire_storage::RosterChange = Box::new(move |old: Option<&RosterItem>| {
        let blank = roster::new_item(&jid);
        let mut item = old.cloned().unwrap_or_else(|| blank.clone());
        change(&mut item);
        // A change that leaves a missing item blank creates nothing.
        (old.is_some() || item != blank).then_some(item)
    });
    let max = server.config.limits.max_roster_items;
    match server
        .storage
        .update_roster_item(&node, contact, boxed, max)
        .await
    {
        Ok((before, Some((version, after)))) => {
            roster::push(server, user, &roster::item_element(&after), version);
            Ok((before, after))
        }
        Ok((before, None)) => {
            let same = before.clone().unwrap_or_else(|| roster::new_item(contact));
            Ok((before, same))
        }
        Err(StorageError::LimitReached(_)) => Err(NotChanged::RosterFull),
        Err(e) => {
            tracing::error!(account = user, "storage: {e}");
            Err(NotChanged::Storage)
        }
    }
}

/// Answers a subscription stanza of the client of `session` with an error
/// instead of sending it on.
fn refuse(session: &LocalSession, stanza: &Element, error: StanzaError) {
    let mut reply = error_reply(stanza, &error);
    reply.set_attr("to", session.full_jid.clone());
    let _ = session.deliver(reply);
}

/// The user's side of a subscription change it initiates (RFC 6121 3.1.2,
/// 3.1.5, 3.2.2, 3.3.2, and pre-approval 3.4).
async fn subscription_out(
    server: &Arc<Server>,
    session: &LocalSession,
    contact: &str,
    ptype: &str,
    mut stanza: Element,
) {
    let user = session.bare_jid.as_str();
    if contact == user || jids::parse(contact).is_none() {
        return;
    }
    // Subscription stanzas carry the bare JID (RFC 6121 section 3.1.2).
    stanza.set_attr("from", user);
    stanza.set_attr("to", contact);
    let Some(node) = storage_node(user) else {
        return;
    };
    match ptype {
        "subscribe" => {
            let changed = change_item(server, user, contact, |item| {
                if !has_to(item) {
                    item.ask = true;
                }
            })
            .await;
            if let Err(NotChanged::RosterFull) = changed {
                // RFC 6121 section 3.1.2 lets the server refuse a request.
                return refuse(session, &stanza, roster::roster_full(server, user));
            }
            route(server, stanza).await;
        }
        "subscribed" => {
            let pending = take_pending(server, &node, contact).await;
            let changed = change_item(server, user, contact, move |item| {
                if has_from(item) {
                    return;
                }
                if pending {
                    item.subscription = match item.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    item.approved = false;
                } else {
                    item.approved = true;
                }
            })
            .await;
            let (before, after) = match changed {
                Ok(changed) => changed,
                Err(NotChanged::RosterFull) => {
                    if pending {
                        // Still unanswered: delivered again at next login.
                        restore_pending(server, &node, contact).await;
                    }
                    return refuse(session, &stanza, roster::roster_full(server, user));
                }
                Err(NotChanged::Storage) => return,
            };
            let had_from = before.as_ref().is_some_and(has_from);
            if pending && !had_from && has_from(&after) {
                route(server, stanza).await;
                send_current_presence_to(server, user, contact).await;
                server
                    .modules
                    .subscription_approved(server, user, contact)
                    .await;
            }
        }
        "unsubscribe" => {
            let _ = change_item(server, user, contact, |item| {
                if has_to(item) || item.ask {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::From,
                        _ => Subscription::None,
                    };
                    item.ask = false;
                }
            })
            .await;
            route(server, stanza).await;
        }
        "unsubscribed" => {
            let pending = take_pending(server, &node, contact).await;
            let changed = change_item(server, user, contact, |item| {
                if has_from(item) || item.approved {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                    item.approved = false;
                }
            })
            .await;
            let existed = changed.as_ref().is_ok_and(|(before, _)| before.is_some());
            if pending || existed {
                route(server, stanza).await;
                send_unavailable_to(server, user, contact).await;
            }
        }
        _ => {}
    }
}

/// The contact's side: a subscription stanza arrives for account `user`.
async fn subscription_in(server: &Arc<Server>, mut stanza: Element, user: &str, ptype: &str) {
    let Some(from) = stanza.attr("from").map(|f| jids::bare_of(f).to_string()) else {
        return;
    };
    stanza.set_attr("from", from.clone());
    stanza.set_attr("to", user);
    let Some(node) = storage_node(user) else {
        return;
    };
    if !crate::router::account_exists(server, user).await {
        if ptype == "subscribe" {
            // RFC 6121 section 3.1.3: no such user.
            send_subscription(server, user, &from, "unsubscribed").await;
        }
        return;
    }
    match ptype {
        "subscribe" => {
            let Ok((before, after)) = change_item(server, user, &from, |item| {
                if !has_from(item) && item.approved {
                    item.subscription = match item.subscription {
                        Subscription::To => Subscription::Both,
                        _ => Subscription::From,
                    };
                    item.approved = false;
                }
            })
            .await
            else {
                return;
            };
            let had_from = before.as_ref().is_some_and(has_from);
            if had_from {
                send_subscription(server, user, &from, "subscribed").await;
            } else if has_from(&after) {
                // Pre-approved (RFC 6121 section 3.4).
                send_subscription(server, user, &from, "subscribed").await;
                send_current_presence_to(server, user, &from).await;
                server
                    .modules
                    .subscription_approved(server, user, &from)
                    .await;
            } else {
                let max = server.config.limits.max_pending_subscriptions;
                match server
                    .storage
                    .add_pending_subscription(&node, &from, max)
                    .await
                {
                    Ok(()) => {}
                    Err(StorageError::LimitReached(_)) => {
                        // Refused rather than dropped, so the requester is
                        // not left believing it waits for an answer.
                        tracing::info!(
                            account = user,
                            from = %from,
                            max,
                            "too many pending subscription requests: refused"
                        );
                        let error = StanzaError::resource_constraint()
                            .with_text("the recipient has too many subscription requests waiting");
                        return crate::router::bounce(server, &stanza, error).await;
                    }
                    Err(e) => tracing::error!(account = user, "storage: {e}"),
                }
                deliver_to_available(server, user, &stanza);
            }
        }
        "subscribed" => {
            let changed = change_item(server, user, &from, |item| {
                if item.ask {
                    item.subscription = match item.subscription {
                        Subscription::From => Subscription::Both,
                        _ => Subscription::To,
                    };
                    item.ask = false;
                }
            })
            .await;
            if let Ok((Some(before), _)) = changed {
                if before.ask {
                    deliver_to_available(server, user, &stanza);
                }
            }
        }
        "unsubscribe" => {
            let pending = take_pending(server, &node, &from).await;
            let changed = change_item(server, user, &from, |item| {
                if has_from(item) {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::To,
                        _ => Subscription::None,
                    };
                }
            })
            .await;
            let had_from = changed
                .as_ref()
                .is_ok_and(|(before, _)| before.as_ref().is_some_and(has_from));
            if had_from {
                deliver_to_available(server, user, &stanza);
                send_unavailable_to(server, user, &from).await;
            } else if pending {
                deliver_to_available(server, user, &stanza);
            }
        }
        "unsubscribed" => {
            let changed = change_item(server, user, &from, |item| {
                if has_to(item) || item.ask {
                    item.subscription = match item.subscription {
                        Subscription::Both => Subscription::From,
                        _ => Subscription::None,
                    };
                    item.ask = false;
                }
            })
            .await;
            let had = changed
                .as_ref()
                .is_ok_and(|(before, _)| before.as_ref().is_some_and(|b| has_to(b) || b.ask));
            if had {
                deliver_to_available(server, user, &stanza);
            }
        }
        _ => {}
    }
}

fn deliver_to_available(server: &Server, user: &str, stanza: &Element) {
    for s in server
        .directory
        .resources(user)
        .into_iter()
        .filter(|s| s.is_available())
    {
        let _ = s.deliver(stanza.clone());
    }
}

/// A resource on another node vanished without its own unavailable presence
/// (its node died or lost its bus): the user's resources, contacts, and
/// whoever got directed presence from it, when connected to this node, get
/// it from here. Each node does this for its own sessions only, so nobody
/// gets it twice.
pub async fn resource_vanished(server: &Arc<Server>, gone: &RemoteSession) {
    let available = |s: &Arc<LocalSession>| s.is_available();
    let mut owed: Vec<Arc<LocalSession>> = server
        .directory
        .local_resources(&gone.bare_jid)
        .into_iter()
        .filter(available)
        .collect();
    for item in roster_items(server, &gone.bare_jid)
        .await
        .iter()
        .filter(|i| has_from(i))
    {
        owed.extend(
            server
                .directory
                .local_resources(&item.jid)
                .into_iter()
                .filter(available),
        );
    }
    // Directed presence went to a full JID, or to the available resources
    // of a bare JID (RFC 6121 4.6.3 owes them unavailable).
    for to in &gone.presence().directed {
        let bare = jids::bare_of(to);
        owed.extend(
            server
                .directory
                .local_resources(bare)
                .into_iter()
                .filter(|s| s.full_jid == *to || (bare == to && s.is_available())),
        );
    }
    let mut sent = HashSet::new();
    for s in owed {
        if sent.insert(s.id) {
            let _ = s.deliver(presence(Some("unavailable"), &gone.full_jid, &s.full_jid));
        }
    }
}
