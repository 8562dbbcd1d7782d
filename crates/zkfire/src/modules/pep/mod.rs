//! Personal Eventing Protocol (XEP-0163) on the subset of PubSub
//! (XEP-0060) it needs: every account is a pubsub service with nodes it
//! creates by publishing (avatars, nickname, bookmarks, OMEMO keys).
//!
//! Who gets what: a publication is sent to the owner's resources and to the
//! resources of contacts subscribed to the owner's presence whose clients
//! advertise `NODE+notify` in their entity capabilities (modules::caps), as
//! the node's access model allows; the last item of each node goes to a
//! resource whose features become known (it came online). Items live in
//! storage, so every node of a cluster reads the same nodes; the node that
//! handles a publication (the publisher's) sends the notifications to
//! resources anywhere in the cluster through the directory.

mod access;
pub mod avatar;
pub mod bookmarks;
mod node_config;
mod notify;

use super::disco::Identity;
use super::{IqRequest, IqResult, IqType, Module};
use crate::config::PepConfig;
use crate::jids;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use node_config::{form_of, pubsub_error, NodeConfig};
use std::sync::Arc;
use zkfire_storage::{PepItem, PepLimits, StorageError};
use zkfire_xml::Element;

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Longest node name and item id.
const MAX_NAME: usize = 256;

const IDENTITIES: &[Identity] = &[Identity {
    category: "pubsub",
    kind: "pep",
    name: None,
}];

pub struct Pep {
    config: PepConfig,
    avatars: avatar::AvatarHashes,
}

impl Pep {
    pub fn new(config: &PepConfig) -> Self {
        Pep {
            config: config.clone(),
            avatars: avatar::AvatarHashes::default(),
        }
    }
}

pub(crate) fn storage_error(e: StorageError) -> StanzaError {
    tracing::error!("PEP storage: {e}");
    StanzaError::internal_server_error()
}

/// The `node` of a request, checked.
fn node_name(el: &Element) -> Result<String, StanzaError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME => Ok(n.to_string()),
        Some(_) => Err(StanzaError::not_acceptable().with_text("node name too long")),
        None => Err(StanzaError::bad_request().with_extra(pubsub_error("nodeid-required"))),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An item as it goes out: `<item id='…'>payload</item>`.
pub fn item_element(ns: &str, item: &PepItem, with_payload: bool) -> Element {
    let mut el = Element::new("item", ns.to_string()).with_attr("id", item.id.clone());
    if with_payload {
        match zkfire_xml::parse_element(&item.payload) {
            Ok(payload) => el.push(payload),
            Err(e) => tracing::error!(id = %item.id, "unreadable PEP item: {e}"),
        }
    }
    el
}

/// The node an item goes to.
pub struct Target<'a> {
    /// The owner's bare JID.
    pub owner: &'a str,
    /// Its account name in storage.
    pub node_user: &'a str,
    pub node: &'a str,
}

/// Publishes `payload` as item `id` (made up when `None`) of the target
/// node, creating the node (with `options`, XEP-0060 section 7.1.5) when it
/// does not exist, and notifies; returns the item id.
pub async fn publish_item(
    server: &Arc<Server>,
    target: &Target<'_>,
    options: Option<&Element>,
    id: Option<&str>,
    payload: &Element,
) -> Result<String, StanzaError> {
    let limits = &server.config.pep;
    let payload_xml = payload.to_xml();
    if payload_xml.len() > limits.max_item_bytes {
        return Err(StanzaError::not_acceptable()
            .with_extra(pubsub_error("payload-too-big"))
            .with_text(format!("items are at most {} bytes", limits.max_item_bytes)));
    }
    let id = match id {
        Some(id) if id.len() > MAX_NAME => {
            return Err(StanzaError::not_acceptable().with_text("item id too long"))
        }
        Some(id) if !id.is_empty() => id.to_string(),
        _ => ulid::Ulid::new().to_string(),
    };
    let storage = &server.storage;
    let existing = storage
        .pep_node(target.node_user, target.node)
        .await
        .map_err(storage_error)?
        .map(|n| NodeConfig::from_stored(&n.config));
    let bound = limits.max_items_per_node;
    let config = match options {
        Some(form) => existing.clone().unwrap_or_default().with_preconditions(
            form,
            bound,
            existing.is_some(),
        )?,
        None => existing.clone().unwrap_or_default(),
    };
    if existing.is_none() {
        create(server, target.node_user, target.node, &config).await?;
    }
    let item = PepItem {
        id: id.clone(),
        payload: payload_xml,
        published_ms: now_ms(),
    };
    if config.persist_items {
        storage
            .pep_publish(target.node_user, target.node, &item, config.kept(bound))
            .await
            .map_err(storage_error)?;
    }
    let event = Element::new("items", NS_EVENT)
        .with_attr("node", target.node.to_string())
        .with_child(item_element(NS_EVENT, &item, config.deliver_payloads));
    notify::publish(server, target.owner, target.node, &config, event).await;
    Ok(id)
}

/// Makes a node, within the account's bound.
async fn create(
    server: &Server,
    node_user: &str,
    node: &str,
    config: &NodeConfig,
) -> Result<(), StanzaError> {
    let max_nodes = server.config.pep.max_nodes;
    match server
        .storage
        .pep_put_node(
            node_user,
            node,
            &config.to_stored(),
            PepLimits { max_nodes },
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(StorageError::LimitReached(_)) => Err(StanzaError::resource_constraint()
            .with_text(format!("at most {max_nodes} nodes per account"))),
        Err(e) => Err(storage_error(e)),
    }
}

/// Removes an item and tells who should know, as the node says.
pub async fn retract_item(
    server: &Arc<Server>,
    target: &Target<'_>,
    id: &str,
    notify: Option<bool>,
) -> Result<bool, StanzaError> {
    let Some(node) = server
        .storage
        .pep_node(target.node_user, target.node)
        .await
        .map_err(storage_error)?
    else {
        return Ok(false);
    };
    let config = NodeConfig::from_stored(&node.config);
    let removed = server
        .storage
        .pep_retract(target.node_user, target.node, id)
        .await
        .map_err(storage_error)?;
    if removed && notify.unwrap_or(config.notify_retract) {
        let event = Element::new("items", NS_EVENT)
            .with_attr("node", target.node.to_string())
            .with_child(Element::new("retract", NS_EVENT).with_attr("id", id.to_string()));
        notify::publish(server, target.owner, target.node, &config, event).await;
    }
    Ok(removed)
}

impl Pep {
    /// XEP-0060 section 7.1, with auto-create and publish-options.
    async fn publish(&self, req: &IqRequest<'_>, owner: &str, node_user: &str) -> IqResult {
        let pubsub = req.payload;
        let publish = pubsub
            .child("publish", NS)
            .ok_or_else(StanzaError::bad_request)?;
        let node = node_name(publish)?;
        let mut items = publish.children().filter(|c| c.name() == "item");
        let item = items
            .next()
            .ok_or_else(|| StanzaError::bad_request().with_extra(pubsub_error("item-required")))?;
        if items.next().is_some() {
            return Err(StanzaError::bad_request().with_extra(pubsub_error("invalid-payload")));
        }
        let mut payloads = item.children();
        let (Some(payload), None) = (payloads.next(), payloads.next()) else {
            return Err(StanzaError::bad_request().with_extra(pubsub_error("invalid-payload")));
        };
        let options = pubsub.child("publish-options", NS).and_then(form_of);
        let target = Target {
            owner,
            node_user,
            node: &node,
        };
        let id = publish_item(req.server, &target, options, item.attr("id"), payload).await?;
        if node == avatar::METADATA {
            self.avatars
                .published(req.server, owner, node_user, payload)
                .await;
        }
        Ok(Some(
            Element::new("pubsub", NS).with_child(
                Element::new("publish", NS)
                    .with_attr("node", node)
                    .with_child(Element::new("item", NS).with_attr("id", id)),
            ),
        ))
    }

    /// Explicit creation (section 8.1), with an optional configuration.
    async fn create_node(&self, req: &IqRequest<'_>, node_user: &str) -> IqResult {
        let asked = req
            .payload
            .child("create", NS)
            .ok_or_else(StanzaError::bad_request)?;
        let node = node_name(asked)?;
        let storage = &req.server.storage;
        if storage
            .pep_node(node_user, &node)
            .await
            .map_err(storage_error)?
            .is_some()
        {
            return Err(StanzaError::conflict().with_text("the node exists"));
        }
        let config = match req.payload.child("configure", NS).and_then(form_of) {
            Some(form) => NodeConfig::default().configured(form, self.config.max_items_per_node)?,
            None => NodeConfig::default(),
        };
        create(req.server, node_user, &node, &config).await?;
        Ok(None)
    }

    /// Section 7.2: the owner removes an item.
    async fn retract(&self, req: &IqRequest<'_>, owner: &str, node_user: &str) -> IqResult {
        let retract = req
            .payload
            .child("retract", NS)
            .ok_or_else(StanzaError::bad_request)?;
        let node = node_name(retract)?;
        let id = retract
            .children()
            .find(|c| c.name() == "item")
            .and_then(|i| i.attr("id"))
            .ok_or_else(|| StanzaError::bad_request().with_extra(pubsub_error("item-required")))?
            .to_string();
        self.config_of(req.server, node_user, &node).await?;
        let asked = retract.attr("notify").map(|n| n == "1" || n == "true");
        let target = Target {
            owner,
            node_user,
            node: &node,
        };
        if !retract_item(req.server, &target, &id, asked).await? {
            return Err(StanzaError::item_not_found());
        }
        Ok(None)
    }

    /// Section 6.5: items of a node, for whom its access model lets see them.
    async fn items(&self, req: &IqRequest<'_>, owner: &str, node_user: &str) -> IqResult {
        let items = req
            .payload
            .child("items", NS)
            .ok_or_else(StanzaError::bad_request)?;
        let node = node_name(items)?;
        let config = self.config_of(req.server, node_user, &node).await?;
        access::check(req.server, owner, req.from_bare, &config).await?;
        let ids: Vec<String> = items
            .children()
            .filter(|c| c.name() == "item")
            .filter_map(|c| c.attr("id").map(str::to_string))
            .collect();
        let max = match items.attr("max_items") {
            Some(m) => Some(m.parse::<usize>().map_err(|_| StanzaError::bad_request())?),
            None => None,
        };
        let found = req
            .server
            .storage
            .pep_items(node_user, &node, (!ids.is_empty()).then_some(&ids[..]), max)
            .await
            .map_err(storage_error)?;
        let list = found
            .iter()
            .fold(Element::new("items", NS).with_attr("node", node), |l, i| {
                l.with_child(item_element(NS, i, true))
            });
        Ok(Some(Element::new("pubsub", NS).with_child(list)))
    }

    async fn config_of(
        &self,
        server: &Server,
        node_user: &str,
        node: &str,
    ) -> Result<NodeConfig, StanzaError> {
        server
            .storage
            .pep_node(node_user, node)
            .await
            .map_err(storage_error)?
            .map(|n| NodeConfig::from_stored(&n.config))
            .ok_or_else(StanzaError::item_not_found)
    }

    /// The owner's requests (section 8): configure, delete, purge, default.
    async fn owner(&self, req: &IqRequest<'_>, owner: &str, node_user: &str) -> IqResult {
        let el = req
            .payload
            .children()
            .next()
            .ok_or_else(StanzaError::bad_request)?;
        let bound = self.config.max_items_per_node;
        let storage = &req.server.storage;
        match (req.kind, el.name()) {
            (IqType::Get, "default") => Ok(Some(Element::new("pubsub", NS_OWNER).with_child(
                Element::new("default", NS_OWNER).with_child(NodeConfig::default().to_form()),
            ))),
            (IqType::Get, "configure") => {
                let node = node_name(el)?;
                let config = self.config_of(req.server, node_user, &node).await?;
                Ok(Some(
                    Element::new("pubsub", NS_OWNER).with_child(
                        Element::new("configure", NS_OWNER)
                            .with_attr("node", node)
                            .with_child(config.to_form()),
                    ),
                ))
            }
            (IqType::Set, "configure") => {
                let node = node_name(el)?;
                let config = self.config_of(req.server, node_user, &node).await?;
                let form = form_of(el).ok_or_else(StanzaError::bad_request)?;
                if form.attr("type") == Some("cancel") {
                    return Ok(None);
                }
                let new = config.configured(form, bound)?;
                storage
                    .pep_put_node(
                        node_user,
                        &node,
                        &new.to_stored(),
                        PepLimits {
                            max_nodes: self.config.max_nodes,
                        },
                    )
                    .await
                    .map_err(storage_error)?;
                Ok(None)
            }
            (IqType::Set, "delete") => {
                let node = node_name(el)?;
                let config = self.config_of(req.server, node_user, &node).await?;
                storage
                    .pep_delete_node(node_user, &node)
                    .await
                    .map_err(storage_error)?;
                if config.notify_delete {
                    let event = Element::new("delete", NS_EVENT).with_attr("node", node.clone());
                    notify::publish(req.server, owner, &node, &config, event).await;
                }
                if node == avatar::METADATA {
                    self.avatars.forget(req.server, owner);
                }
                Ok(None)
            }
            (IqType::Set, "purge") => {
                let node = node_name(el)?;
                let config = self.config_of(req.server, node_user, &node).await?;
                let items = storage
                    .pep_items(node_user, &node, None, None)
                    .await
                    .map_err(storage_error)?;
                for i in items {
                    storage
                        .pep_retract(node_user, &node, &i.id)
                        .await
                        .map_err(storage_error)?;
                }
                let event = Element::new("purge", NS_EVENT).with_attr("node", node.clone());
                notify::publish(req.server, owner, &node, &config, event).await;
                Ok(None)
            }
            _ => Err(StanzaError::feature_not_implemented()),
        }
    }

    /// `<affiliations/>` (section 5.7): the owner owns every node.
    async fn affiliations(&self, req: &IqRequest<'_>, node_user: &str) -> IqResult {
        let nodes = req
            .server
            .storage
            .pep_nodes(node_user)
            .await
            .map_err(storage_error)?;
        let list = nodes
            .into_iter()
            .fold(Element::new("affiliations", NS), |l, n| {
                l.with_child(
                    Element::new("affiliation", NS)
                        .with_attr("node", n.name)
                        .with_attr("affiliation", "owner"),
                )
            });
        Ok(Some(Element::new("pubsub", NS).with_child(list)))
    }
}

#[async_trait]
impl crate::hooks::PresenceHooks for Pep {
    async fn broadcast_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        presence: &mut Element,
    ) {
        self.avatars.put_hash(server, session, presence).await;
    }

    async fn subscription_approved(&self, server: &Arc<Server>, user: &str, contact: &str) {
        notify::on_subscription(server, user, contact).await;
    }
}

#[async_trait]
impl Module for Pep {
    fn account_features(&self) -> &'static [&'static str] {
        &[
            NS,
            "http://jabber.org/protocol/pubsub#access-open",
            "http://jabber.org/protocol/pubsub#access-presence",
            "http://jabber.org/protocol/pubsub#access-roster",
            "http://jabber.org/protocol/pubsub#access-whitelist",
            "http://jabber.org/protocol/pubsub#auto-create",
            "http://jabber.org/protocol/pubsub#config-node",
            "http://jabber.org/protocol/pubsub#create-and-configure",
            "http://jabber.org/protocol/pubsub#create-nodes",
            "http://jabber.org/protocol/pubsub#delete-items",
            "http://jabber.org/protocol/pubsub#delete-nodes",
            "http://jabber.org/protocol/pubsub#filtered-notifications",
            "http://jabber.org/protocol/pubsub#item-ids",
            "http://jabber.org/protocol/pubsub#last-published",
            "http://jabber.org/protocol/pubsub#persistent-items",
            "http://jabber.org/protocol/pubsub#presence-notifications",
            "http://jabber.org/protocol/pubsub#publish",
            "http://jabber.org/protocol/pubsub#publish-options",
            "http://jabber.org/protocol/pubsub#purge-nodes",
            "http://jabber.org/protocol/pubsub#retract-items",
            "http://jabber.org/protocol/pubsub#retrieve-affiliations",
            "http://jabber.org/protocol/pubsub#retrieve-default",
            "http://jabber.org/protocol/pubsub#retrieve-items",
            avatar::VCARD_CONVERSION,
            bookmarks::COMPAT,
        ]
    }

    fn account_identities(&self) -> &'static [Identity] {
        IDENTITIES
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS, NS_OWNER]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        let owner = req.account.unwrap_or(req.from_bare).to_string();
        let Some(node_user) = jids::node_of(&owner) else {
            return Err(StanzaError::item_not_found());
        };
        let own = req.is_to_self();
        let first = req
            .payload
            .children()
            .next()
            .map(|c| c.name())
            .unwrap_or("");
        match (req.payload.ns(), req.kind, first) {
            (NS, IqType::Get, "items") => self.items(req, &owner, &node_user).await,
            _ if !own => Err(StanzaError::forbidden()
                .with_text("only the account itself publishes and manages its nodes")),
            (NS, IqType::Set, "publish") => self.publish(req, &owner, &node_user).await,
            (NS, IqType::Set, "retract") => self.retract(req, &owner, &node_user).await,
            (NS, IqType::Set, "create") => self.create_node(req, &node_user).await,
            (NS, IqType::Get, "affiliations") => self.affiliations(req, &node_user).await,
            (NS, IqType::Get, "subscriptions") => Ok(Some(
                Element::new("pubsub", NS).with_child(Element::new("subscriptions", NS)),
            )),
            (NS, _, "subscribe" | "unsubscribe" | "options") => {
                // PEP delivers by presence and caps (XEP-0163 section 4);
                // explicit subscriptions are not kept.
                Err(StanzaError::feature_not_implemented()
                    .with_extra(pubsub_error("unsupported").with_attr("feature", "subscribe")))
            }
            (NS_OWNER, _, _) => self.owner(req, &owner, &node_user).await,
            _ => Err(StanzaError::bad_request()),
        }
    }

    async fn client_features_known(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        features: &Arc<Vec<String>>,
    ) {
        notify::last_items(server, session, features).await;
    }

    fn presence_hooks(&self) -> Option<&dyn crate::hooks::PresenceHooks> {
        Some(self)
    }

    fn account_changed(&self, bare: &str, what: &str) {
        if what == avatar::CHANGED {
            self.avatars.drop_cached(bare);
        }
    }
}
