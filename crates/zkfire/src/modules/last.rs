//! XEP-0012 Last Activity, answered by the server.
//!
//! To the server: its uptime (section 5). To an account's bare JID (section
//! 4): 0 when the account has an available resource, else the time since its
//! last resource went offline, with the status it left with as text. Only the
//! account itself and contacts allowed to see its presence may ask; others get
//! `forbidden`. Queries to full JIDs are routed to the client.

use super::disco::may_see_presence;
use super::{IqRequest, IqResult, IqType, Module};
use crate::jids;
use crate::stanza::{unix_now, StanzaError};
use async_trait::async_trait;
use zkfire_xml::{ns, Element};

pub struct LastActivity;

#[async_trait]
impl Module for LastActivity {
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::LAST]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[ns::LAST]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::LAST]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        if req.kind != IqType::Get {
            return Err(StanzaError::not_allowed());
        }
        if req.payload.name() != "query" {
            return Err(StanzaError::bad_request());
        }
        let server = req.server;
        let Some(account) = req.account else {
            return Ok(Some(last_element(server.started.elapsed().as_secs(), "")));
        };
        if !may_see_presence(server, account, req.from_bare).await {
            return Err(StanzaError::forbidden());
        }
        let online = server
            .directory
            .resources(account)
            .iter()
            .any(|s| s.is_available());
        if online {
            return Ok(Some(last_element(0, "")));
        }
        let node = jids::node_of(account).ok_or_else(StanzaError::item_not_found)?;
        match server.storage.last_activity(&node).await {
            Ok(Some((at, status))) => {
                Ok(Some(last_element(seconds_since(at, unix_now()), &status)))
            }
            Ok(None) => Err(StanzaError::item_not_found()),
            Err(e) => {
                tracing::error!(account, "cannot read last activity: {e}");
                Err(StanzaError::internal_server_error())
            }
        }
    }
}

/// Whole seconds from `at` to `now`; never negative (clocks of cluster nodes
/// may disagree a little).
fn seconds_since(at: i64, now: i64) -> u64 {
    u64::try_from(now.saturating_sub(at)).unwrap_or(0)
}

fn last_element(seconds: u64, status: &str) -> Element {
    Element::new("query", ns::LAST)
        .with_attr("seconds", seconds.to_string())
        .with_text(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(seconds_since(100, 160), 60);
        assert_eq!(seconds_since(200, 160), 0);
        assert_eq!(
            seconds_since(i64::MIN, i64::MAX),
            u64::try_from(i64::MAX).unwrap()
        );
        assert_eq!(seconds_since(i64::MAX, i64::MIN), 0);
    }

    #[test]
    fn element() {
        assert_eq!(
            last_element(903, "Heading Home").to_xml(),
            "<query xmlns='jabber:iq:last' seconds='903'>Heading Home</query>"
        );
        assert_eq!(
            last_element(0, "").to_xml(),
            "<query xmlns='jabber:iq:last' seconds='0'/>"
        );
    }
}
