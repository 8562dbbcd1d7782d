//! Bookmarks (XEP-0402, `urn:xmpp:bookmarks:1`) are plain PEP items, one
//! per room, published by clients with the options the XEP gives. This
//! file is the compatibility with clients that still keep bookmarks in
//! private XML storage (XEP-0048 over XEP-0049, `storage:bookmarks`), as
//! XEP-0402 section 5.3 asks: such a client reads the rooms of the PEP node,
//! and what it stores is published to the PEP node, so both kinds of
//! client see the same rooms. Bookmarks of web pages (`<url/>`), which
//! XEP-0402 has no place for, stay in private storage.

use super::{publish_item, retract_item, Target};
use crate::server::Server;
use crate::stanza::StanzaError;
use std::collections::HashSet;
use std::sync::Arc;
use zkfire_xml::Element;

pub const NODE: &str = "urn:xmpp:bookmarks:1";
pub const LEGACY: &str = "storage:bookmarks";
/// What the account advertises for this compatibility.
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
const DATA: &str = "jabber:x:data";

/// XEP-0402 section 3's publish-options for the bookmarks node.
fn options() -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", DATA)
            .with_attr("var", var.to_string())
            .with_child(Element::new("value", DATA).with_text(value.to_string()))
    };
    Element::new("x", DATA)
        .with_attr("type", "submit")
        .with_child(
            field(
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#publish-options",
            )
            .with_attr("type", "hidden"),
        )
        .with_child(field("pubsub#persist_items", "true"))
        .with_child(field("pubsub#max_items", "max"))
        .with_child(field("pubsub#send_last_published_item", "never"))
        .with_child(field("pubsub#access_model", "whitelist"))
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "true"))
}

/// `storage:bookmarks` as a private XML get answers it: the rooms of the
/// PEP node, and the URLs of `stored` (what private storage holds).
pub async fn legacy_view(
    server: &Server,
    node_user: &str,
    stored: Option<&Element>,
) -> Result<Element, StanzaError> {
    let items = server
        .storage
        .pep_items(node_user, NODE, None, None)
        .await
        .map_err(super::storage_error)?;
    let mut storage = Element::new("storage", LEGACY);
    for item in items {
        let Ok(c) = zkfire_xml::parse_element(&item.payload) else {
            continue;
        };
        if !c.is("conference", NODE) {
            continue;
        }
        let mut conf = Element::new("conference", LEGACY).with_attr("jid", item.id.clone());
        if let Some(name) = c.attr("name") {
            conf.set_attr("name", name.to_string());
        }
        if is_true(c.attr("autojoin")) {
            conf.set_attr("autojoin", "true");
        }
        for child in ["nick", "password"] {
            if let Some(text) = c.child_text(child, NODE) {
                conf.push(Element::new(child, LEGACY).with_text(text));
            }
        }
        storage.push(conf);
    }
    for url in stored
        .into_iter()
        .flat_map(|s| s.children())
        .filter(|c| c.name() == "url")
    {
        storage.push(url.clone());
    }
    Ok(storage)
}

/// Whether a `storage:bookmarks` set fits the PEP node (checked before
/// anything of it is stored).
pub fn check_legacy(server: &Server, storage: &Element) -> Result<(), StanzaError> {
    let rooms = storage
        .children()
        .filter(|c| c.name() == "conference")
        .count();
    let bound = server.config.pep.max_items_per_node;
    if rooms > bound {
        return Err(StanzaError::not_acceptable().with_text(format!(
            "at most {bound} room bookmarks ([pep] max_items_per_node)"
        )));
    }
    Ok(())
}

/// A private XML set of `storage:bookmarks`: every room it lists becomes
/// (or stays) an item of the PEP node, and rooms no longer listed are
/// retracted, with notifications to the account's resources.
pub async fn publish_legacy(
    server: &Arc<Server>,
    owner: &str,
    node_user: &str,
    storage: &Element,
) -> Result<(), StanzaError> {
    let target = Target {
        owner,
        node_user,
        node: NODE,
    };
    let options = options();
    let mut listed = HashSet::new();
    for conf in storage.children().filter(|c| c.name() == "conference") {
        let Some(jid) = conf.attr("jid").and_then(crate::jids::parse) else {
            continue;
        };
        let jid = jid.to_bare().to_string();
        let mut c = Element::new("conference", NODE);
        if let Some(name) = conf.attr("name") {
            c.set_attr("name", name.to_string());
        }
        if is_true(conf.attr("autojoin")) {
            c.set_attr("autojoin", "true");
        }
        for child in ["nick", "password"] {
            if let Some(text) = conf.child_text(child, LEGACY) {
                c.push(Element::new(child, NODE).with_text(text));
            }
        }
        publish_item(server, &target, Some(&options), Some(&jid), &c).await?;
        listed.insert(jid);
    }
    let existing = server
        .storage
        .pep_items(node_user, NODE, None, None)
        .await
        .map_err(super::storage_error)?;
    for item in existing.iter().filter(|i| !listed.contains(&i.id)) {
        retract_item(server, &target, &item.id, Some(true)).await?;
    }
    Ok(())
}
