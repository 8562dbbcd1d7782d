//! XEP-0191 Blocking Command: the account's blocklist, and its changes.
//!
//! Only the account itself reads or changes its list. Changes are stored,
//! replace the server's in-memory copy (which the router uses to stop
//! stanzas from blocked JIDs), are pushed to every resource of the account,
//! and change what the blocked contacts see of the user's presence: blocked
//! contacts that could see it get unavailable presence (section 3.3), and
//! unblocked ones get the current presence again (section 3.4).

use super::register::own_node;
use super::{presence, IqRequest, IqResult, IqType, Module};
use crate::jids;
use crate::router;
use crate::server::Server;
use crate::stanza::{ErrorType, StanzaError};
use async_trait::async_trait;
use std::sync::Arc;
use zkfire_storage::{RosterItem, Subscription};
use zkfire_xml::{ns, Element};

/// Most JIDs one account may block: the list is held in memory while the
/// account is online and checked for every stanza it receives.
pub const MAX_BLOCKED: usize = 5000;

pub struct Blocking;

#[async_trait]
impl Module for Blocking {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::BLOCKING]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[ns::BLOCKING]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::BLOCKING]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        let node = own_node(req).ok_or_else(StanzaError::forbidden)?;
        let bare = format!("{node}@{}", req.server.domain);
        let payload = req.payload;
        match (req.kind, payload.name()) {
            (IqType::Get, "blocklist") => {
                let list = read_list(req.server, &node).await?;
                Ok(Some(list_element("blocklist", &list)))
            }
            (IqType::Set, "block") => {
                let jids = items(payload)?;
                if jids.is_empty() {
                    return Err(StanzaError::bad_request().with_text("nothing to block"));
                }
                block(req.server, &node, &bare, jids).await.map(|()| None)
            }
            (IqType::Set, "unblock") => {
                let jids = items(payload)?;
                unblock(req.server, &node, &bare, jids).await.map(|()| None)
            }
            _ => Err(StanzaError::bad_request()),
        }
    }
}

async fn block(
    server: &Arc<Server>,
    node: &str,
    bare: &str,
    jids: Vec<String>,
) -> Result<(), StanzaError> {
    let before = read_list(server, node).await?;
    let added: Vec<String> = jids.into_iter().filter(|j| !before.contains(j)).collect();
    if added.is_empty() {
        return Ok(());
    }
    if before.len() + added.len() > MAX_BLOCKED {
        return Err(StanzaError::new(ErrorType::Modify, "policy-violation")
            .with_text(format!("at most {MAX_BLOCKED} JIDs can be blocked")));
    }
    server.storage.block(node, &added).await.map_err(|e| {
        tracing::error!(account = bare, "cannot store blocklist: {e}");
        StanzaError::internal_server_error()
    })?;
    refresh_cache(server, node, bare).await;
    push(server, bare, list_element("block", &added)).await;
    let roster = read_roster(server, node).await;
    for contact in presence_changes(&added, &before, &roster) {
        presence::send_unavailable_to(server, bare, &contact).await;
    }
    Ok(())
}

/// Unblocks `jids`, or everything when it is empty.
async fn unblock(
    server: &Arc<Server>,
    node: &str,
    bare: &str,
    jids: Vec<String>,
) -> Result<(), StanzaError> {
    let before = read_list(server, node).await?;
    let all = jids.is_empty();
    let removed: Vec<String> = if all {
        before.clone()
    } else {
        jids.into_iter().filter(|j| before.contains(j)).collect()
    };
    if removed.is_empty() {
        return Ok(());
    }
    let stored = if all {
        server.storage.unblock_all(node).await
    } else {
        server.storage.unblock(node, &removed).await
    };
    stored.map_err(|e| {
        tracing::error!(account = bare, "cannot store blocklist: {e}");
        StanzaError::internal_server_error()
    })?;
    refresh_cache(server, node, bare).await;
    push(
        server,
        bare,
        list_element("unblock", if all { &[] } else { &removed }),
    )
    .await;
    let remaining: Vec<String> = before
        .into_iter()
        .filter(|j| !removed.contains(j))
        .collect();
    let roster = read_roster(server, node).await;
    for contact in presence_changes(&removed, &remaining, &roster) {
        presence::send_current_presence_to(server, bare, &contact).await;
    }
    Ok(())
}

/// The normalized, deduplicated JIDs of the `<item/>`s of a `<block/>` or
/// `<unblock/>`: `bad-request` for an item without `jid`, `jid-malformed`
/// for an invalid one.
fn items(payload: &Element) -> Result<Vec<String>, StanzaError> {
    let mut out: Vec<String> = Vec::new();
    for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
        let raw = item
            .attr("jid")
            .ok_or_else(|| StanzaError::bad_request().with_text("item without jid"))?;
        let jid = jids::parse(raw).ok_or_else(StanzaError::jid_malformed)?;
        let jid = jid.to_string();
        if !out.contains(&jid) {
            out.push(jid);
        }
    }
    Ok(out)
}

/// `<name xmlns='urn:xmpp:blocking'>` with one `<item/>` per JID.
fn list_element(name: &str, jids: &[String]) -> Element {
    let mut el = Element::new(name.to_owned(), ns::BLOCKING);
    for jid in jids {
        el.push(Element::new("item", ns::BLOCKING).with_attr("jid", jid.clone()));
    }
    el
}

/// Whom the user's presence must be sent to (or withdrawn from) after the
/// blocklist items `changed` were added (or removed), `others` being the
/// items that block either way: each contact with a `from` or `both`
/// subscription that `changed` matches and `others` does not. An item with
/// a resource concerns that full JID only.
fn presence_changes(changed: &[String], others: &[String], roster: &[RosterItem]) -> Vec<String> {
    let changed: Vec<jid::Jid> = changed.iter().filter_map(|j| jids::parse(j)).collect();
    let mut out: Vec<String> = Vec::new();
    for item in roster {
        if !matches!(item.subscription, Subscription::From | Subscription::Both) {
            continue;
        }
        let Some(contact) = jids::parse(&item.jid) else {
            continue;
        };
        for c in &changed {
            let target = if c.resource().is_some() {
                // A full JID item: that resource of this very contact.
                if c.node() != contact.node() || c.domain() != contact.domain() {
                    continue;
                }
                c.to_string()
            } else if jids::item_matches(c, &contact) {
                contact.to_string()
            } else {
                continue;
            };
            if !jids::is_blocked(others, &target) && !out.contains(&target) {
                out.push(target);
            }
        }
    }
    out
}

async fn read_list(server: &Server, node: &str) -> Result<Vec<String>, StanzaError> {
    server.storage.blocklist(node).await.map_err(|e| {
        tracing::error!(account = %node, "cannot read blocklist: {e}");
        StanzaError::internal_server_error()
    })
}

async fn read_roster(server: &Server, node: &str) -> Vec<RosterItem> {
    match server.storage.roster(node).await {
        Ok((_, items)) => items,
        Err(e) => {
            tracing::error!(account = %node, "cannot read roster: {e}");
            Vec::new()
        }
    }
}

/// Replaces the in-memory copy of the list and gives the other nodes of a
/// cluster the new list, so no node goes on applying the old one.
async fn refresh_cache(server: &Server, node: &str, bare: &str) {
    match server.storage.blocklist(node).await {
        Ok(list) => {
            if let Some(cluster) = &server.cluster {
                cluster.broadcast(&crate::cluster::protocol::BusMessage::BlocklistChanged {
                    bare_jid: bare.to_string(),
                    list: list.clone(),
                });
            }
            if server.directory.has_resources(bare) {
                server.blocklists.insert(bare.to_string(), Arc::new(list));
            }
        }
        Err(e) => {
            // Better no copy than a stale one: the next look-up reads storage.
            tracing::error!(account = bare, "cannot read blocklist: {e}");
            server.blocklists.remove(bare);
        }
    }
}

/// Pushes a change to every resource of the account (XEP-0191 section 3.3).
async fn push(server: &Arc<Server>, bare: &str, change: Element) {
    for session in server.directory.resources(bare) {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("block-{:016x}", rand::random::<u64>()))
            .with_attr("from", bare)
            .with_attr("to", session.full_jid())
            .with_child(change.clone());
        router::route(server, iq).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, jids: &[&str]) -> Element {
        let mut el = Element::new(name.to_owned(), ns::BLOCKING);
        for j in jids {
            el.push(Element::new("item", ns::BLOCKING).with_attr("jid", *j));
        }
        el
    }

    fn contact(jid: &str, subscription: Subscription) -> RosterItem {
        RosterItem {
            jid: jid.to_string(),
            name: None,
            subscription,
            ask: false,
            approved: false,
            groups: Vec::new(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn items_are_normalized_and_checked() {
        let el = request(
            "block",
            &[
                "Romeo@Montague.lit",
                "romeo@montague.lit",
                "montague.lit/Orchard",
            ],
        );
        assert_eq!(
            items(&el).unwrap(),
            strings(&["romeo@montague.lit", "montague.lit/Orchard"])
        );
        assert!(items(&request("unblock", &[])).unwrap().is_empty());
        let bad = request("block", &["@montague.lit"]);
        assert_eq!(items(&bad).unwrap_err().condition, "jid-malformed");
        let missing =
            Element::new("block", ns::BLOCKING).with_child(Element::new("item", ns::BLOCKING));
        assert_eq!(items(&missing).unwrap_err().condition, "bad-request");
        // Items of another namespace are not items of this protocol.
        let foreign = Element::new("block", ns::BLOCKING)
            .with_child(Element::new("item", "urn:other").with_attr("jid", "a@b"));
        assert!(items(&foreign).unwrap().is_empty());
    }

    #[test]
    fn list_elements() {
        assert_eq!(
            list_element("blocklist", &strings(&["a@b"])).to_xml(),
            "<blocklist xmlns='urn:xmpp:blocking'><item jid='a@b'/></blocklist>"
        );
        assert_eq!(
            list_element("unblock", &[]).to_xml(),
            "<unblock xmlns='urn:xmpp:blocking'/>"
        );
    }

    #[test]
    fn presence_goes_only_to_subscribers() {
        let roster = vec![
            contact("romeo@montague.lit", Subscription::Both),
            contact("tybalt@capulet.lit", Subscription::From),
            contact("nurse@capulet.lit", Subscription::To),
            contact("mercutio@verona.lit", Subscription::None),
        ];
        let changed = strings(&["romeo@montague.lit", "capulet.lit", "mercutio@verona.lit"]);
        assert_eq!(
            presence_changes(&changed, &[], &roster),
            strings(&["romeo@montague.lit", "tybalt@capulet.lit"])
        );
    }

    #[test]
    fn presence_skips_contacts_blocked_otherwise() {
        let roster = vec![
            contact("romeo@montague.lit", Subscription::Both),
            contact("benvolio@montague.lit", Subscription::Both),
        ];
        let changed = strings(&["romeo@montague.lit", "benvolio@montague.lit"]);
        let others = strings(&["montague.lit"]);
        assert!(presence_changes(&changed, &others, &roster).is_empty());
        let others = strings(&["benvolio@montague.lit"]);
        assert_eq!(
            presence_changes(&changed, &others, &roster),
            strings(&["romeo@montague.lit"])
        );
    }

    #[test]
    fn full_jid_items_concern_one_resource() {
        let roster = vec![contact("romeo@montague.lit", Subscription::From)];
        let changed = strings(&["romeo@montague.lit/orchard", "juliet@capulet.lit/balcony"]);
        assert_eq!(
            presence_changes(&changed, &[], &roster),
            strings(&["romeo@montague.lit/orchard"])
        );
    }
}
