//! Roster management (RFC 6121 section 2) with roster versioning (XEP-0237):
//! get, set and remove, and pushes to every resource of the account.
//!
//! Bounded by `[limits]`: the name, the number of groups and each group
//! name of an item (past them: `not-acceptable`, RFC 6121 section 2.3.3),
//! and the number of items (`resource-constraint`), which the storage
//! counts under the account's lock on every path that adds one.

use super::{presence, IqRequest, IqResult, IqType, Module};
use crate::jids;
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use std::sync::Arc;
use zkfire_storage::{RosterItem, Subscription};
use zkfire_xml::{ns, Element};

pub struct Roster;

#[async_trait]
impl Module for Roster {
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::ROSTER]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if !req.is_to_self() {
            // RFC 6121 section 2.1.5: only the account itself may use its roster.
            return Err(StanzaError::forbidden());
        }
        if req.payload.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        let node = account_node(req.from_bare)?;
        match req.kind {
            IqType::Get => get(req.server, &node, req.payload).await,
            IqType::Set => set(req.server, req.from_bare, &node, req.payload).await,
        }
    }
}

fn account_node(bare: &str) -> Result<String, StanzaError> {
    jids::node_of(bare).ok_or_else(StanzaError::bad_request)
}

fn storage_error(e: zkfire_storage::StorageError) -> StanzaError {
    tracing::error!("storage: {e}");
    StanzaError::internal_server_error()
}

/// The error for a change that would add an item to a full roster.
pub fn roster_full(server: &Server, account: &str) -> StanzaError {
    let max = server.config.limits.max_roster_items;
    tracing::info!(account, max, "roster full: item not added");
    StanzaError::resource_constraint().with_text(format!("the roster is full: at most {max} items"))
}

async fn get(server: &Arc<Server>, node: &str, query: &Element) -> IqResult {
    if query.children().next().is_some() {
        return Err(StanzaError::bad_request());
    }
    let storage = &server.storage;
    if let Some(ver) = query.attr("ver") {
        // XEP-0237: nothing changed since the client's version, nothing sent.
        let current = storage.roster_version(node).await.map_err(storage_error)?;
        if ver == current.to_string() {
            return Ok(None);
        }
    }
    let (version, items) = storage.roster(node).await.map_err(storage_error)?;
    let mut out = Element::new("query", ns::ROSTER).with_attr("ver", version.to_string());
    for item in &items {
        out.push(item_element(item));
    }
    Ok(Some(out))
}

async fn set(server: &Arc<Server>, bare: &str, node: &str, query: &Element) -> IqResult {
    let mut items = query.children();
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::bad_request().with_text("exactly one item"));
    };
    if !item.is("item", ns::ROSTER) {
        return Err(StanzaError::bad_request());
    }
    let contact = item
        .attr("jid")
        .and_then(jids::parse)
        .ok_or_else(StanzaError::jid_malformed)?;
    if contact.resource().is_some() {
        return Err(StanzaError::jid_malformed().with_text("roster items are bare JIDs"));
    }
    let contact = contact.to_string();
    if item.attr("subscription") == Some("remove") {
        return remove(server, bare, node, &contact).await;
    }
    let limits = &server.config.limits;
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if name
        .as_ref()
        .is_some_and(|n| n.len() > limits.max_roster_name_bytes)
    {
        return Err(StanzaError::not_acceptable().with_text(format!(
            "name longer than {} bytes",
            limits.max_roster_name_bytes
        )));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children() {
        if !g.is("group", ns::ROSTER) {
            continue;
        }
        let g = g.text();
        if g.is_empty() || g.len() > limits.max_roster_group_bytes {
            return Err(StanzaError::not_acceptable().with_text(format!(
                "group names are 1 to {} bytes",
                limits.max_roster_group_bytes
            )));
        }
        if groups.contains(&g) {
            return Err(StanzaError::bad_request().with_text("duplicate group"));
        }
        if groups.len() == limits.max_roster_groups {
            return Err(StanzaError::not_acceptable().with_text(format!(
                "at most {} groups per item",
                limits.max_roster_groups
            )));
        }
        groups.push(g);
    }
    let storage = &server.storage;
    // Name and groups only, under the account's lock: a subscription change
    // arriving at the same moment keeps its effect.
    let jid = contact.clone();
    let change: zkfire_storage::RosterChange = Box::new(move |old: Option<&RosterItem>| {
        let mut item = old.cloned().unwrap_or_else(|| new_item(&jid));
        item.name = name;
        item.groups = groups;
        Some(item)
    });
    let (before, after) = match storage
        .update_roster_item(node, &contact, change, limits.max_roster_items)
        .await
    {
        Ok(changed) => changed,
        Err(zkfire_storage::StorageError::LimitReached(_)) => {
            return Err(roster_full(server, bare));
        }
        Err(e) => return Err(storage_error(e)),
    };
    match after {
        Some((version, updated)) => push(server, bare, &item_element(&updated), version),
        None => {
            // Unchanged: still pushed, as RFC 6121 section 2.3.2 has every set pushed.
            if let Some(item) = before {
                let version = storage.roster_version(node).await.map_err(storage_error)?;
                push(server, bare, &item_element(&item), version);
            }
        }
    }
    Ok(None)
}

/// RFC 6121 section 2.5: removing an item also cancels both subscriptions.
async fn remove(server: &Arc<Server>, bare: &str, node: &str, contact: &str) -> IqResult {
    let storage = &server.storage;
    let Some(item) = storage
        .roster_item(node, contact)
        .await
        .map_err(storage_error)?
    else {
        return Err(StanzaError::item_not_found());
    };
    let had_pending_in = storage
        .remove_pending_subscription(node, contact)
        .await
        .map_err(storage_error)?;
    let Some(version) = storage
        .remove_roster_item(node, contact)
        .await
        .map_err(storage_error)?
    else {
        return Err(StanzaError::item_not_found());
    };
    let removed = Element::new("item", ns::ROSTER)
        .with_attr("jid", contact)
        .with_attr("subscription", "remove");
    push(server, bare, &removed, version);
    if matches!(item.subscription, Subscription::To | Subscription::Both) || item.ask {
        presence::send_subscription(server, bare, contact, "unsubscribe").await;
    }
    if matches!(item.subscription, Subscription::From | Subscription::Both) || had_pending_in {
        presence::send_subscription(server, bare, contact, "unsubscribed").await;
        presence::send_unavailable_to(server, bare, contact).await;
    }
    Ok(None)
}

pub fn new_item(contact: &str) -> RosterItem {
    RosterItem {
        jid: contact.to_string(),
        name: None,
        subscription: Subscription::None,
        ask: false,
        approved: false,
        groups: Vec::new(),
    }
}

/// The `<item/>` of a roster result or push.
pub fn item_element(item: &RosterItem) -> Element {
    let mut el = Element::new("item", ns::ROSTER)
        .with_attr("jid", item.jid.clone())
        .with_attr("subscription", item.subscription.as_str());
    if let Some(name) = &item.name {
        el.set_attr("name", name.clone());
    }
    if item.ask {
        el.set_attr("ask", "subscribe");
    }
    if item.approved {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push(Element::new("group", ns::ROSTER).with_text(g.clone()));
    }
    el
}

/// Sends a roster push (RFC 6121 section 2.1.6) to every resource of the account.
pub fn push(server: &Server, bare: &str, item: &Element, version: i64) {
    for session in server.directory.resources(bare) {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", crate::c2s::stream::new_id())
            .with_attr("to", session.full_jid())
            .with_child(
                Element::new("query", ns::ROSTER)
                    .with_attr("ver", version.to_string())
                    .with_child(item.clone()),
            );
        let _ = session.deliver(iq);
    }
}

/// The roster item `contact_bare` has in the roster of `user_bare`.
pub async fn item_of(server: &Server, user_bare: &str, contact_bare: &str) -> Option<RosterItem> {
    let node = jids::node_of(user_bare)?;
    match server.storage.roster_item(&node, contact_bare).await {
        Ok(item) => item,
        Err(e) => {
            tracing::error!("storage: {e}");
            None
        }
    }
}
