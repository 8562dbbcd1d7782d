//! XEP-0092 Software Version of the server: name and version, no operating
//! system (XEP-0092 section 5: revealing it helps attackers). Only `get` is
//! defined. An account's bare JID has no software of its own: a query to it
//! gets `service-unavailable` (RFC 6121 section 8.5.1); queries to full JIDs
//! are routed to the client.

use super::{IqRequest, IqResult, IqType, Module};
use crate::stanza::StanzaError;
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub struct Version;

#[async_trait]
impl Module for Version {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if req.kind != IqType::Get {
            return Err(StanzaError::not_allowed());
        }
        if req.payload.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        if req.account.is_some() {
            return Err(StanzaError::service_unavailable());
        }
        Ok(Some(version_element()))
    }
}

fn version_element() -> Element {
    Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("zkfire"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_os() {
        let q = version_element();
        assert_eq!(q.child_text("name", ns::VERSION).as_deref(), Some("zkfire"));
        assert_eq!(
            q.child_text("version", ns::VERSION).as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(q.child("os", ns::VERSION).is_none());
    }
}
