//! XEP-0030 Service Discovery, answered by the server for itself and for the
//! bare JIDs of its accounts.
//!
//! The features come from the registered modules (`Module::server_features`
//! and `Module::account_features`), never from a list kept here. An account's
//! information is shown only to the account itself and to contacts allowed to
//! see its presence (XEP-0030 section 8); others get `service-unavailable`,
//! as if the account did not exist. The one node served is the server's
//! own entity capabilities node (XEP-0115); any other gets `item-not-found`.
//!
//! `disco#items` is empty for now: when services (MUC, upload, ...) arrive,
//! they need a way to contribute items, which the `Module` trait does not
//! have yet.

use super::{IqRequest, IqResult, IqType, Module};
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use zkfire_storage::Subscription;
use zkfire_xml::{ns, Element};

/// The name the server gives itself in its identity.
pub const SERVER_NAME: &str = "zkfire";

pub struct Disco;

#[async_trait]
impl Module for Disco {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if req.kind != IqType::Get {
            return Err(StanzaError::not_allowed());
        }
        if req.payload.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        let info = req.payload.ns() == ns::DISCO_INFO;
        let server = req.server;
        if let Some(node) = req.payload.attr("node") {
            // The one node served: the server's own caps (XEP-0115 6.3).
            let caps = format!("{}#{}", super::caps::NODE, super::caps::server_ver(server));
            if !(info && req.account.is_none() && node == caps) {
                return Err(StanzaError::item_not_found());
            }
            let mut q = info_element(&[&Identity::SERVER], &server.modules.server_features());
            q.set_attr("node", node.to_string());
            return Ok(Some(q));
        }
        match req.account {
            None if info => Ok(Some(info_element(
                &[&Identity::SERVER],
                &server.modules.server_features(),
            ))),
            None => Ok(Some(items_element())),
            Some(account) => {
                if !may_see_presence(server, account, req.from_bare).await {
                    return Err(StanzaError::service_unavailable());
                }
                if info {
                    Ok(Some(info_element(
                        &server.modules.account_identities(),
                        &server.modules.account_features(),
                    )))
                } else {
                    Ok(Some(items_element()))
                }
            }
        }
    }
}

/// A disco identity (XEP-0030 section 3.1).
pub struct Identity {
    pub category: &'static str,
    pub kind: &'static str,
    pub name: Option<&'static str>,
}

impl Identity {
    pub const SERVER: Identity = Identity {
        category: "server",
        kind: "im",
        name: Some(SERVER_NAME),
    };
    pub const ACCOUNT: Identity = Identity {
        category: "account",
        kind: "registered",
        name: None,
    };
}

/// `<query xmlns='http://jabber.org/protocol/disco#info'/>` with these
/// identities and features.
pub fn info_element(identities: &[&Identity], features: &[&str]) -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO);
    for identity in identities {
        let mut id = Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", identity.category)
            .with_attr("type", identity.kind);
        if let Some(name) = identity.name {
            id.set_attr("name", name);
        }
        query.push(id);
    }
    for f in features {
        query.push(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    query
}

fn items_element() -> Element {
    Element::new("query", ns::DISCO_ITEMS)
}

/// Whether `requester` (a bare JID) may see the presence of the account
/// `account`: it is the account itself, or has a `from` or `both`
/// subscription to it (RFC 6121 section 3). Used by the modules that answer
/// for an account only to whom its presence is shown.
pub(crate) async fn may_see_presence(server: &Server, account: &str, requester: &str) -> bool {
    if account == requester {
        return true;
    }
    super::roster::item_of(server, account, requester)
        .await
        .is_some_and(|item| matches!(item.subscription, Subscription::From | Subscription::Both))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info() {
        let q = info_element(&[&Identity::SERVER], &[ns::DISCO_INFO, ns::PING]);
        assert_eq!(
            q.to_xml(),
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='server' type='im' name='zkfire'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='urn:xmpp:ping'/></query>"
        );
    }

    #[test]
    fn account_info_has_no_name() {
        let q = info_element(&[&Identity::ACCOUNT], &[]);
        let id = q.child("identity", ns::DISCO_INFO).expect("identity");
        assert_eq!(id.attr("category"), Some("account"));
        assert_eq!(id.attr("type"), Some("registered"));
        assert_eq!(id.attr("name"), None);
    }

    #[test]
    fn items_are_empty() {
        assert_eq!(
            items_element().to_xml(),
            "<query xmlns='http://jabber.org/protocol/disco#items'/>"
        );
    }
}
