//! XEP-0054 vcard-temp: each account's vCard, kept as the XML the owner set.
//!
//! `get` with no `to`, or to an account's bare JID, returns that account's
//! vCard (vCards are public); an account without one gets an empty
//! `<vCard/>`, and so does a query to the server, which has none. `set` is
//! allowed only for the sender's own vCard.

use super::register::own_node;
use super::{IqRequest, IqResult, IqType, Module};
use crate::jids;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub struct VCard;

#[async_trait]
impl Module for VCard {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::VCARD]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::VCARD]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if !is_vcard(req.payload) {
            return Err(StanzaError::bad_request());
        }
        let storage = &req.server.storage;
        match req.kind {
            IqType::Get => {
                let Some(account) = req.account else {
                    return Ok(Some(empty_vcard()));
                };
                let node = jids::node_of(account).ok_or_else(StanzaError::item_not_found)?;
                match storage.vcard(&node).await {
                    Ok(Some(xml)) => stored_vcard(&node, &xml).map(Some),
                    Ok(None) => Ok(Some(empty_vcard())),
                    Err(e) => {
                        tracing::error!(account = %node, "cannot read vCard: {e}");
                        Err(StanzaError::internal_server_error())
                    }
                }
            }
            IqType::Set => {
                // The server's own vCard cannot be set.
                if req.account.is_none() {
                    return Err(StanzaError::forbidden());
                }
                let node = own_node(req).ok_or_else(StanzaError::forbidden)?;
                if let Err(e) = storage.set_vcard(&node, &req.payload.to_xml()).await {
                    tracing::error!(account = %node, "cannot store vCard: {e}");
                    return Err(StanzaError::internal_server_error());
                }
                if req.server.config.pep.enabled {
                    // XEP-0398: the PHOTO becomes the PEP avatar.
                    super::pep::avatar::from_vcard(req.server, req.from_bare, &node, req.payload)
                        .await;
                }
                Ok(None)
            }
        }
    }
}

fn is_vcard(el: &Element) -> bool {
    el.is("vCard", ns::VCARD)
}

fn empty_vcard() -> Element {
    Element::new("vCard", ns::VCARD)
}

/// A stored vCard read back into an element.
fn stored_vcard(node: &str, xml: &str) -> Result<Element, StanzaError> {
    match zkfire_xml::parse_element(xml) {
        Ok(el) if is_vcard(&el) => Ok(el),
        Ok(el) => {
            tracing::error!(account = %node, "stored vCard is a <{}/> of {}", el.name(), el.ns());
            Err(StanzaError::internal_server_error())
        }
        Err(e) => {
            tracing::error!(account = %node, "cannot parse stored vCard: {e}");
            Err(StanzaError::internal_server_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vcard_payloads() {
        assert!(is_vcard(&empty_vcard()));
        assert!(!is_vcard(&Element::new("vcard", ns::VCARD)));
        assert!(!is_vcard(&Element::new(
            "vCard",
            "urn:ietf:params:xml:ns:vcard-4.0"
        )));
    }

    #[test]
    fn stored_round_trip() {
        let card = Element::new("vCard", ns::VCARD)
            .with_child(Element::new("FN", ns::VCARD).with_text("Juliet <Capulet> & 'co'"))
            .with_child(
                Element::new("PHOTO", ns::VCARD)
                    .with_child(Element::new("TYPE", ns::VCARD).with_text("image/png")),
            );
        assert_eq!(stored_vcard("juliet", &card.to_xml()).ok(), Some(card));
        assert!(stored_vcard("juliet", "<vCard xmlns='vcard-temp'>").is_err());
        assert!(stored_vcard("juliet", "<query xmlns='vcard-temp'/>").is_err());
    }
}
