//! XEP-0199 XMPP Ping: the answer to a ping addressed to the server or to an
//! account's bare JID (the router has checked that the account exists). The
//! server's own keepalive pings to clients live in the session code.

use super::{IqRequest, IqResult, IqType, Module};
use crate::stanza::StanzaError;
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub struct Ping;

#[async_trait]
impl Module for Ping {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        answer(req.kind, req.payload)
    }
}

/// A `get` with `<ping/>` gets an empty result; only `get` is defined.
fn answer(kind: IqType, payload: &Element) -> IqResult {
    if kind != IqType::Get {
        return Err(StanzaError::not_allowed());
    }
    if !payload.is("ping", ns::PING) {
        return Err(StanzaError::bad_request());
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_only() {
        let ping = Element::new("ping", ns::PING);
        assert!(matches!(answer(IqType::Get, &ping), Ok(None)));
        let set = answer(IqType::Set, &ping).unwrap_err();
        assert_eq!(set.condition, "not-allowed");
        let other = answer(IqType::Get, &Element::new("pong", ns::PING)).unwrap_err();
        assert_eq!(other.condition, "bad-request");
    }
}
