//! User avatars published through PEP (XEP-0084) shown to clients that use
//! vCard avatars (XEP-0398, PEP vCard conversion): the published image
//! becomes the vCard's PHOTO, and the user's presence carries its hash as
//! XEP-0153 says (`<x xmlns='vcard-temp:x:update'><photo>…</photo></x>`),
//! injected by the server whatever the client put there.

use crate::jids;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use dashmap::DashMap;
use std::sync::Arc;
use zkfire_xml::{ns, Element};

pub const METADATA: &str = "urn:xmpp:avatar:metadata";
pub const DATA: &str = "urn:xmpp:avatar:data";
pub const VCARD_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// What `Server::account_changed` calls a new avatar.
pub const CHANGED: &str = "pep-avatar";
/// Accounts whose avatar hash is kept in memory; past it the map starts over.
const MAX_CACHED: usize = 100_000;

/// The current avatar hash per account (`None`: no PEP avatar).
#[derive(Default)]
pub struct AvatarHashes {
    cached: DashMap<String, Option<String>>,
}

impl AvatarHashes {
    /// The account published new avatar metadata: the vCard follows it.
    pub async fn published(
        &self,
        server: &Arc<Server>,
        owner: &str,
        node_user: &str,
        metadata: &Element,
    ) {
        let info = metadata.child("info", METADATA);
        let hash = info.and_then(|i| i.attr("id")).map(str::to_string);
        if let (Some(info), Some(hash)) = (info, &hash) {
            let ids = [hash.clone()];
            let data = server
                .storage
                .pep_items(node_user, DATA, Some(&ids), None)
                .await
                .unwrap_or_default();
            let binval = data
                .first()
                .and_then(|d| zkfire_xml::parse_element(&d.payload).ok())
                .map(|d| d.text());
            match binval {
                Some(b) => {
                    let kind = info.attr("type").unwrap_or("image/png");
                    set_vcard_photo(server, node_user, Some((kind, b.trim()))).await
                }
                // Metadata pointing at an image elsewhere (a URL): the
                // vCard keeps what it has.
                None => tracing::debug!(account = owner, "avatar data not in PEP"),
            }
        } else {
            set_vcard_photo(server, node_user, None).await;
        }
        self.remember(owner, hash);
        server.account_changed(owner, CHANGED);
    }

    /// The avatar node was deleted.
    pub fn forget(&self, server: &Server, owner: &str) {
        self.remember(owner, None);
        server.account_changed(owner, CHANGED);
    }

    pub fn drop_cached(&self, bare: &str) {
        self.cached.remove(bare);
    }

    fn remember(&self, bare: &str, hash: Option<String>) {
        if self.cached.len() >= MAX_CACHED {
            self.cached.clear();
        }
        self.cached.insert(bare.to_string(), hash);
    }

    async fn hash_of(&self, server: &Server, bare: &str) -> Option<String> {
        if let Some(h) = self.cached.get(bare) {
            return h.clone();
        }
        let user = jids::node_of(bare)?;
        let hash = match server
            .storage
            .pep_items(&user, METADATA, None, Some(1))
            .await
        {
            Ok(items) => items
                .first()
                .and_then(|i| zkfire_xml::parse_element(&i.payload).ok())
                .and_then(|m| m.child("info", METADATA)?.attr("id").map(str::to_string)),
            Err(e) => {
                tracing::error!(account = bare, "avatar hash: {e}");
                return None;
            }
        };
        self.remember(bare, hash.clone());
        hash
    }
}

impl AvatarHashes {
    /// Puts the avatar hash into a presence broadcast (XEP-0153).
    pub async fn put_hash(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        presence: &mut Element,
    ) {
        if presence.attr("type").is_some() {
            return;
        }
        let Some(hash) = self.hash_of(server, &session.bare_jid).await else {
            // No PEP avatar: a client's own vCard-based hash stays.
            return;
        };
        presence.retain_children(|c| !c.is("x", VCARD_UPDATE));
        presence.push(
            Element::new("x", VCARD_UPDATE)
                .with_child(Element::new("photo", VCARD_UPDATE).with_text(hash)),
        );
    }
}

/// The other way (XEP-0398 section 4): a vCard set with a PHOTO by a client
/// that knows only vCard avatars is published as the PEP avatar, so PEP
/// clients show it too. A vCard without a PHOTO changes nothing (clients
/// that edit other fields often send back a vCard they read before).
pub async fn from_vcard(server: &Arc<Server>, owner: &str, node_user: &str, vcard: &Element) {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let Some(photo) = vcard.child("PHOTO", ns::VCARD) else {
        return;
    };
    let Some(b64) = photo.child_text("BINVAL", ns::VCARD) else {
        return;
    };
    let b64: String = b64.split_whitespace().collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
        tracing::info!(account = owner, "vCard PHOTO is not base64; not published");
        return;
    };
    let hash: String = Sha1::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let kind = photo
        .child_text("TYPE", ns::VCARD)
        .unwrap_or_else(|| "image/png".to_string());
    let data_target = super::Target {
        owner,
        node_user,
        node: DATA,
    };
    let data = Element::new("data", DATA).with_text(b64);
    if let Err(e) = super::publish_item(server, &data_target, None, Some(&hash), &data).await {
        tracing::info!(
            account = owner,
            "vCard PHOTO not published as PEP avatar: {}",
            e.condition
        );
        return;
    }
    let metadata = Element::new("metadata", METADATA).with_child(
        Element::new("info", METADATA)
            .with_attr("id", hash.clone())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", kind),
    );
    let meta_target = super::Target {
        owner,
        node_user,
        node: METADATA,
    };
    if let Err(e) = super::publish_item(server, &meta_target, None, Some(&hash), &metadata).await {
        tracing::info!(account = owner, "PEP avatar metadata: {}", e.condition);
        return;
    }
    server.account_changed(owner, CHANGED);
}

/// Puts the image into the account's vCard as its PHOTO (or removes it),
/// keeping everything else of the vCard.
async fn set_vcard_photo(server: &Server, node_user: &str, photo: Option<(&str, &str)>) {
    let mut vcard = match server.storage.vcard(node_user).await {
        Ok(Some(xml)) => zkfire_xml::parse_element(&xml).unwrap_or_else(|_| empty()),
        Ok(None) => empty(),
        Err(e) => {
            tracing::error!(account = node_user, "vCard for the avatar: {e}");
            return;
        }
    };
    vcard.retain_children(|c| c.name() != "PHOTO");
    if let Some((kind, binval)) = photo {
        vcard.push(
            Element::new("PHOTO", ns::VCARD)
                .with_child(Element::new("TYPE", ns::VCARD).with_text(kind.to_string()))
                .with_child(Element::new("BINVAL", ns::VCARD).with_text(binval.to_string())),
        );
    }
    if let Err(e) = server.storage.set_vcard(node_user, &vcard.to_xml()).await {
        tracing::error!(account = node_user, "vCard for the avatar: {e}");
    }
}

fn empty() -> Element {
    Element::new("vCard", ns::VCARD)
}
