//! Who may see a node's items (XEP-0060 section 4.5, the access models).

use super::node_config::{pubsub_error, Access, NodeConfig};
use crate::server::Server;
use crate::stanza::StanzaError;
use zkfire_storage::{RosterItem, Subscription};

/// Whether the owner's roster item for a requester lets it see the node
/// (the owner itself is let through before this is asked).
pub fn allows(config: &NodeConfig, item: Option<&RosterItem>) -> bool {
    let subscribed =
        item.is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
    match config.access {
        Access::Open => true,
        Access::Presence => subscribed,
        Access::Roster => {
            item.is_some_and(|i| i.groups.iter().any(|g| config.roster_groups.contains(g)))
        }
        Access::Whitelist => false,
    }
}

/// The error for a requester the node is closed to.
pub async fn check(
    server: &Server,
    owner: &str,
    requester: &str,
    config: &NodeConfig,
) -> Result<(), StanzaError> {
    if owner == requester || config.access == Access::Open {
        return Ok(());
    }
    let item = crate::modules::roster::item_of(server, owner, requester).await;
    if allows(config, item.as_ref()) {
        return Ok(());
    }
    Err(match config.access {
        Access::Presence => StanzaError::new(crate::stanza::ErrorType::Auth, "not-authorized")
            .with_extra(pubsub_error("presence-subscription-required")),
        Access::Roster => StanzaError::new(crate::stanza::ErrorType::Auth, "not-authorized")
            .with_extra(pubsub_error("not-in-roster-group")),
        _ => StanzaError::not_allowed().with_extra(pubsub_error("closed-node")),
    })
}
