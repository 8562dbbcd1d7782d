//! XEP-0202 Entity Time of the server: the current time in UTC, with the
//! offset `+00:00` (the server does not reveal its local time zone). Only
//! `get` is defined; an account's bare JID has no clock of its own and gets
//! `service-unavailable` (queries to full JIDs are routed to the client).

use super::{IqRequest, IqResult, IqType, Module};
use crate::stanza::{xep82_now, StanzaError};
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub struct EntityTime;

#[async_trait]
impl Module for EntityTime {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::TIME]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::TIME]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if req.kind != IqType::Get {
            return Err(StanzaError::not_allowed());
        }
        if req.payload.name() != "time" {
            return Err(StanzaError::bad_request());
        }
        if req.account.is_some() {
            return Err(StanzaError::service_unavailable());
        }
        Ok(Some(time_element(&xep82_now())))
    }
}

/// `<time xmlns='urn:xmpp:time'><tzo>+00:00</tzo><utc>...</utc></time>`.
fn time_element(utc: &str) -> Element {
    Element::new("time", ns::TIME)
        .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
        .with_child(Element::new("utc", ns::TIME).with_text(utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        assert_eq!(
            time_element("2006-12-19T17:58:35Z").to_xml(),
            "<time xmlns='urn:xmpp:time'><tzo>+00:00</tzo><utc>2006-12-19T17:58:35Z</utc></time>"
        );
    }

    #[test]
    fn now_is_utc_datetime() {
        // XEP-0082 DateTime in UTC: CCYY-MM-DDThh:mm:ssZ.
        let now = xep82_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
        assert_eq!(&now[10..11], "T");
    }
}
