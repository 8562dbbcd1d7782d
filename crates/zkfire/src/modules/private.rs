//! XEP-0049 Private XML Storage (`jabber:iq:private`): each account keeps one
//! element per namespace (legacy bookmarks, client preferences) that only
//! the account itself can read or write.
//!
//! `get` names one element, and gets the stored element of its namespace, or
//! the requested element back empty when nothing is stored. `set` stores each
//! child under its namespace. Elements of the reserved namespaces (`jabber:*`,
//! `http://jabber.org/*`, `vcard-temp`) or of none get `not-acceptable`
//! (section 3); requests for another account get `forbidden`.
//!
//! Legacy bookmarks (`storage:bookmarks`) are the rooms of the account's
//! PEP bookmarks (XEP-0402 section 5.3, `pep::bookmarks`), so clients of
//! either kind see the same rooms.
//!
//! An account keeps at most `[limits] max_private_items` namespaces and
//! `max_private_bytes` of XML; a set that would pass either is refused
//! whole with `resource-constraint` (the storage checks it with the write).

use super::pep::bookmarks;
use super::register::own_node;
use super::{IqRequest, IqResult, IqType, Module};
use crate::stanza::StanzaError;
use async_trait::async_trait;
use zkfire_storage::{Limit, PrivateXmlLimits, StorageError};
use zkfire_xml::{ns, Element};

pub struct PrivateStorage;

#[async_trait]
impl Module for PrivateStorage {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::PRIVATE]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::PRIVATE]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        let node = own_node(req).ok_or_else(StanzaError::forbidden)?;
        let elements = requested(req.kind, req.payload)?;
        let storage = &req.server.storage;
        match req.kind {
            IqType::Get => {
                let [wanted] = elements[..] else {
                    return Err(StanzaError::bad_request());
                };
                let stored = match storage.private_xml(&node, wanted.ns()).await {
                    Ok(Some(xml)) => Some(stored_element(&node, &xml)?),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::error!(account = %node, "cannot read private XML: {e}");
                        return Err(StanzaError::internal_server_error());
                    }
                };
                let found = if wanted.ns() == bookmarks::LEGACY && req.server.config.pep.enabled {
                    bookmarks::legacy_view(req.server, &node, stored.as_ref()).await?
                } else {
                    stored.unwrap_or_else(|| {
                        Element::new(wanted.name().to_owned(), wanted.ns().to_owned())
                    })
                };
                Ok(Some(Element::new("query", ns::PRIVATE).with_child(found)))
            }
            IqType::Set => {
                let xml: Vec<(&str, String)> =
                    elements.iter().map(|el| (el.ns(), el.to_xml())).collect();
                let pairs: Vec<(&str, &str)> = xml.iter().map(|(n, x)| (*n, x.as_str())).collect();
                let limits = &req.server.config.limits;
                let bounds = PrivateXmlLimits {
                    max_items: limits.max_private_items,
                    max_bytes: limits.max_private_bytes,
                };
                let legacy = elements
                    .iter()
                    .find(|e| e.ns() == bookmarks::LEGACY)
                    .filter(|_| req.server.config.pep.enabled);
                if let Some(legacy) = legacy {
                    bookmarks::check_legacy(req.server, legacy)?;
                }
                match storage.set_private_xml(&node, &pairs, bounds).await {
                    Ok(()) => {
                        if let Some(legacy) = legacy {
                            bookmarks::publish_legacy(req.server, req.from_bare, &node, legacy)
                                .await?;
                        }
                        Ok(None)
                    }
                    Err(StorageError::LimitReached(limit)) => {
                        tracing::info!(account = %node, "private XML storage full: {limit}");
                        Err(StanzaError::resource_constraint().with_text(full_text(limit, bounds)))
                    }
                    Err(e) => {
                        tracing::error!(account = %node, "cannot store private XML: {e}");
                        Err(StanzaError::internal_server_error())
                    }
                }
            }
        }
    }
}

/// The elements a query gets or sets, after the checks of XEP-0049 section 3:
/// at least one, none of a reserved namespace, one only in a `get`, and no
/// two of the same namespace in a `set` (one element is kept per namespace).
fn requested(kind: IqType, query: &Element) -> Result<Vec<&Element>, StanzaError> {
    if query.name() != "query" {
        return Err(StanzaError::bad_request());
    }
    let elements: Vec<&Element> = query.children().collect();
    if elements.is_empty() {
        return Err(StanzaError::not_acceptable().with_text("no element to get or set"));
    }
    if elements.iter().any(|el| is_reserved(el.ns())) {
        return Err(StanzaError::not_acceptable().with_text("reserved namespace"));
    }
    match kind {
        IqType::Get if elements.len() > 1 => {
            Err(StanzaError::bad_request().with_text("one namespace per get"))
        }
        IqType::Set
            if elements
                .iter()
                .enumerate()
                .any(|(i, el)| elements[..i].iter().any(|o| o.ns() == el.ns())) =>
        {
            Err(StanzaError::not_acceptable().with_text("one element per namespace"))
        }
        _ => Ok(elements),
    }
}

/// Namespaces that private storage may not hold (XEP-0049 section 3), and
/// the empty one.
fn is_reserved(namespace: &str) -> bool {
    namespace.is_empty()
        || namespace.starts_with("jabber:")
        || namespace.starts_with("http://jabber.org/")
        || namespace == ns::VCARD
}

/// What the user is told when a set would pass a bound.
fn full_text(limit: Limit, bounds: PrivateXmlLimits) -> String {
    match limit {
        Limit::PrivateXmlItems => format!(
            "private storage is full: at most {} namespaces per account",
            bounds.max_items
        ),
        _ => format!(
            "private storage is full: at most {} bytes per account",
            bounds.max_bytes
        ),
    }
}

fn stored_element(node: &str, xml: &str) -> Result<Element, StanzaError> {
    zkfire_xml::parse_element(xml).map_err(|e| {
        tracing::error!(account = %node, "cannot parse stored private XML: {e}");
        StanzaError::internal_server_error()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(children: &[(&str, &str)]) -> Element {
        let mut q = Element::new("query", ns::PRIVATE);
        for (name, namespace) in children {
            q.push(Element::new(name.to_string(), namespace.to_string()));
        }
        q
    }

    fn condition(r: Result<Vec<&Element>, StanzaError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.condition)
    }

    #[test]
    fn reserved_namespaces() {
        for reserved in [
            "",
            "jabber:iq:roster",
            "jabber:client",
            "http://jabber.org/protocol/muc",
            "vcard-temp",
        ] {
            assert!(is_reserved(reserved), "{reserved}");
        }
        for free in [
            "storage:bookmarks",
            "exodus:prefs",
            "urn:xmpp:bookmarks:1",
            "http://example.org/x",
        ] {
            assert!(!is_reserved(free), "{free}");
        }
    }

    #[test]
    fn request_checks() {
        let one = query(&[("storage", "storage:bookmarks")]);
        assert_eq!(condition(requested(IqType::Get, &one)), "ok");
        assert_eq!(condition(requested(IqType::Set, &one)), "ok");

        let none = query(&[]);
        assert_eq!(condition(requested(IqType::Get, &none)), "not-acceptable");
        assert_eq!(condition(requested(IqType::Set, &none)), "not-acceptable");

        // A child without a namespace of its own is in jabber:iq:private.
        let inherited = query(&[("storage", ns::PRIVATE)]);
        assert_eq!(
            condition(requested(IqType::Set, &inherited)),
            "not-acceptable"
        );
        let vcard = query(&[("vCard", ns::VCARD)]);
        assert_eq!(condition(requested(IqType::Get, &vcard)), "not-acceptable");

        let two = query(&[("a", "urn:a"), ("b", "urn:b")]);
        assert_eq!(condition(requested(IqType::Get, &two)), "bad-request");
        assert_eq!(condition(requested(IqType::Set, &two)), "ok");

        let same = query(&[("a", "urn:a"), ("b", "urn:a")]);
        assert_eq!(condition(requested(IqType::Set, &same)), "not-acceptable");

        let wrong = Element::new("storage", ns::PRIVATE);
        assert_eq!(condition(requested(IqType::Get, &wrong)), "bad-request");
    }
}
