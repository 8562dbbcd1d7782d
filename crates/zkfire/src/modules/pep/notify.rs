//! Notifications (XEP-0163 sections 4.3 and 6): what a publication sends to
//! whom, and the last items a resource gets when its client's features
//! become known.

use super::access;
use super::node_config::{Access, NodeConfig, SendLast};
use super::{item_element, NS_EVENT};
use crate::jids;
use crate::router::directory::Resource;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use std::sync::Arc;
use zkfire_storage::Subscription;
use zkfire_xml::{ns, Element};

/// `<message type='headline'>` with the `<event/>` holding `child`.
fn event_message(owner: &str, to: &str, child: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_string())
        .with_attr("type", "headline")
        .with_child(Element::new("event", NS_EVENT).with_child(child))
}

/// Whether the resource's client asked for notifications of `node`.
async fn wants(server: &Server, resource: &Resource, node: &str) -> bool {
    let wanted = format!("{node}+notify");
    server
        .caps
        .of(&*server.storage, resource)
        .await
        .is_some_and(|f| f.contains(&wanted))
}

/// Sends `child` (items, retract, delete or purge of `node`) to the owner's
/// resources and to those of its contacts that the node is open to and
/// whose clients want it.
pub async fn publish(
    server: &Arc<Server>,
    owner: &str,
    node: &str,
    config: &NodeConfig,
    child: Element,
) {
    let mut accounts = vec![owner.to_string()];
    if config.access != Access::Whitelist {
        let roster = match jids::node_of(owner) {
            Some(user) => server.storage.roster(&user).await.map(|(_, i)| i),
            None => Ok(Vec::new()),
        };
        match roster {
            Ok(items) => accounts.extend(
                items
                    .iter()
                    .filter(|i| {
                        matches!(i.subscription, Subscription::From | Subscription::Both)
                            && access::allows(config, Some(i))
                    })
                    .map(|i| i.jid.clone()),
            ),
            Err(e) => tracing::error!(account = owner, "PEP notifications: roster: {e}"),
        }
    }
    for account in accounts {
        for resource in server.directory.resources(&account) {
            if resource.is_available() && wants(server, &resource, node).await {
                let msg = event_message(owner, resource.full_jid(), child.clone());
                let _ = resource.deliver(msg);
            }
        }
    }
}

/// The nodes a client wants notifications of (`NODE+notify`).
fn wanted(features: &[String]) -> Vec<&str> {
    features
        .iter()
        .filter_map(|f| f.strip_suffix("+notify"))
        .collect()
}

/// XEP-0163 section 6.2: a resource whose client's features just became
/// known gets the last item of each node it wants notifications of, of its
/// own account and of each contact whose presence it is subscribed to.
pub async fn last_items(server: &Arc<Server>, session: &Arc<LocalSession>, features: &[String]) {
    let wanted = wanted(features);
    if wanted.is_empty() {
        return;
    }
    let me = session.bare_jid.clone();
    let mut owners = vec![me.clone()];
    let ours = format!("@{}", server.domain);
    if let Some(user) = jids::node_of(&me) {
        match server.storage.roster(&user).await {
            Ok((_, items)) => owners.extend(
                items
                    .into_iter()
                    .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
                    .map(|i| i.jid)
                    .filter(|j| j.ends_with(&ours)),
            ),
            Err(e) => tracing::error!(account = %me, "PEP last items: roster: {e}"),
        }
    }
    let to = Resource::Local(session.clone());
    for owner in owners {
        send_last(server, &owner, &to, &wanted, &[SendLast::OnSubAndPresence]).await;
    }
}

/// XEP-0163 section 6.1.1: a new subscriber gets the owner's last items,
/// on each of its resources that wants them.
pub async fn on_subscription(server: &Arc<Server>, owner: &str, subscriber: &str) {
    for resource in server.directory.resources(subscriber) {
        if !resource.is_available() {
            continue;
        }
        let Some(features) = server.caps.of(&*server.storage, &resource).await else {
            continue;
        };
        let wanted = wanted(&features);
        let when = [SendLast::OnSub, SendLast::OnSubAndPresence];
        send_last(server, owner, &resource, &wanted, &when).await;
    }
}

/// The last item of each of `owner`'s nodes in `wanted` whose
/// `send_last_published_item` is one of `when` and that the resource's
/// account may read, to that resource, with a delay stamp.
async fn send_last(
    server: &Arc<Server>,
    owner: &str,
    to: &Resource,
    wanted: &[&str],
    when: &[SendLast],
) {
    let Some(owner_user) = jids::node_of(owner) else {
        return;
    };
    let reader = jids::bare_of(to.full_jid()).to_string();
    let nodes = match server.storage.pep_nodes(&owner_user).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(account = %owner, "PEP last items: {e}");
            return;
        }
    };
    let wanted_nodes: Vec<_> = nodes
        .iter()
        .filter(|n| wanted.contains(&n.name.as_str()))
        .collect();
    if wanted_nodes.is_empty() {
        return;
    }
    // The owner's roster item for the reader, read once for all its nodes.
    let item = if reader == owner {
        None
    } else {
        crate::modules::roster::item_of(server, owner, &reader).await
    };
    for node in wanted_nodes {
        let config = NodeConfig::from_stored(&node.config);
        let readable = reader == owner || access::allows(&config, item.as_ref());
        if !when.contains(&config.send_last) || !readable {
            continue;
        }
        let last = server
            .storage
            .pep_items(&owner_user, &node.name, None, Some(1))
            .await
            .unwrap_or_default();
        for item in last {
            let stamp = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(u64::try_from(item.published_ms).unwrap_or(0));
            let items = Element::new("items", NS_EVENT)
                .with_attr("node", node.name.clone())
                .with_child(item_element(NS_EVENT, &item, config.deliver_payloads));
            let mut msg = event_message(owner, to.full_jid(), items);
            msg.push(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", owner.to_string())
                    .with_attr("stamp", humantime::format_rfc3339_millis(stamp).to_string()),
            );
            let _ = to.deliver(msg);
        }
    }
}
