//! Entity Capabilities (XEP-0115): clients say what they can do with a
//! hash in their presence; the server asks one client per hash for the
//! features behind it (disco#info), checks the hash, and keeps the answer
//! (crate::caps) for every node. Modules that depend on client features
//! (PEP's `+notify`) hear of them through `Module::client_features_known`.
//! The server announces its own capabilities in its stream features
//! (section 6.3) and answers disco#info for that node (modules::disco).

use super::disco::{Identity, SERVER_NAME};
use super::Module;
use crate::caps::FLAG;
use crate::hooks::{PresenceHooks, StreamHooks};
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use async_trait::async_trait;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::sync::Arc;
use std::time::Duration;
use zkfire_xml::{ns, Element};

pub const NS: &str = "http://jabber.org/protocol/caps";
/// The node that names zkfire in its own caps.
pub const NODE: &str = "urn:zkfire";
/// How long a client has to answer the disco#info query.
const ASK_WAIT: Duration = Duration::from_secs(10);
/// Most features taken from one client's answer.
const MAX_FEATURES: usize = 1000;

/// New caps hashes one account may have the server learn (each costs a
/// disco query and, once verified, a row in storage: a client can make up
/// valid hashes for any set of features at will).
const LEARN_PER_WINDOW: u32 = 20;
const LEARN_WINDOW: Duration = Duration::from_secs(600);

pub struct EntityCaps {
    learning: Arc<crate::quota::WindowQuota<String>>,
}

impl Default for EntityCaps {
    fn default() -> Self {
        EntityCaps {
            learning: Arc::new(crate::quota::WindowQuota::new(
                LEARN_PER_WINDOW,
                LEARN_WINDOW,
            )),
        }
    }
}

#[async_trait]
impl Module for EntityCaps {
    fn server_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn presence_hooks(&self) -> Option<&dyn PresenceHooks> {
        Some(self)
    }

    fn stream_hooks(&self) -> Option<&dyn StreamHooks> {
        Some(self)
    }
}

impl StreamHooks for EntityCaps {
    /// The server's own `<c/>` (section 6.3).
    fn features(&self, server: &Server) -> Vec<Element> {
        vec![Element::new("c", NS)
            .with_attr("hash", "sha-1")
            .with_attr("node", NODE)
            .with_attr("ver", server_ver(server))]
    }
}

/// The verification string of the server's own disco#info.
pub fn server_ver(server: &Server) -> String {
    let identity = Identity::SERVER;
    let features = server.modules.server_features();
    let mut s = format!(
        "{}/{}//{}<",
        identity.category,
        identity.kind,
        identity.name.unwrap_or(SERVER_NAME)
    );
    let mut sorted: Vec<&str> = features.to_vec();
    sorted.sort_unstable();
    for f in sorted {
        s.push_str(f);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

#[async_trait]
impl PresenceHooks for EntityCaps {
    async fn broadcast_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        presence: &mut Element,
    ) {
        if presence.attr("type").is_some() {
            return;
        }
        let Some(c) = presence.child("c", NS) else {
            return;
        };
        let (Some(node), Some(ver)) = (c.attr("node"), c.attr("ver")) else {
            return;
        };
        let key = match c.attr("hash") {
            Some(hash) => format!("{hash}:{ver}"),
            // Before version 1.4 `ver` was a version name, not a hash.
            None => format!("legacy:{node}#{ver}"),
        };
        if key.len() > 1024 || !session.set_flag_value(FLAG, Some(&key)) {
            return;
        }
        // The presence broadcast that follows announces the flag.
        let node_ver = format!("{node}#{ver}");
        let hash = c.attr("hash").map(str::to_string);
        let server = server.clone();
        let session = session.clone();
        let learning = self.learning.clone();
        tokio::spawn(async move {
            let features = match server.caps.features(&*server.storage, &key).await {
                Some(f) => f,
                None => {
                    let Some(slot) = learning.try_reserve(session.bare_jid.clone()) else {
                        tracing::info!(jid = %session.full_jid, "too many new caps hashes; not asking");
                        return;
                    };
                    let Some(f) = learn(&server, &session, &key, &node_ver, hash.as_deref()).await
                    else {
                        return;
                    };
                    slot.keep();
                    f
                }
            };
            server
                .modules
                .client_features_known(&server, &session, &features)
                .await;
        });
    }
}

/// Asks the client what its caps stand for; keeps the answer when its hash
/// checks out (an unchecked answer serves this session only).
async fn learn(
    server: &Arc<Server>,
    session: &Arc<LocalSession>,
    key: &str,
    node_ver: &str,
    hash: Option<&str>,
) -> Option<Arc<Vec<String>>> {
    let query = Element::new("query", ns::DISCO_INFO).with_attr("node", node_ver.to_string());
    let answer = server
        .requests
        .ask(session, &server.domain, "get", query, ASK_WAIT)
        .await?;
    let info = answer.child("query", ns::DISCO_INFO)?;
    let mut features: Vec<String> = info
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var").map(str::to_string))
        .take(MAX_FEATURES)
        .collect();
    features.sort_unstable();
    features.dedup();
    let features = Arc::new(features);
    let ver = key.split_once(':').map(|(_, v)| v).unwrap_or_default();
    let trusted = match hash {
        Some("sha-1") => verification_string(info).is_some_and(|s| {
            base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes())) == ver
        }),
        // Other hashes and legacy caps: believed for this client only.
        _ => false,
    };
    if trusted {
        server.caps.remember(key, features.clone());
        if let Err(e) = server.storage.set_caps_features(key, &features).await {
            tracing::error!("cannot store entity capabilities: {e}");
        }
    } else {
        tracing::debug!(jid = %session.full_jid, key, "caps not verified; used for this session only");
        // Under a key of its own, so nobody else's flag points to it.
        let own = format!("unverified:{}", session.full_jid);
        server.caps.remember(&own, features.clone());
        session.set_flag_value(FLAG, Some(&own));
        server.announce_session(session);
    }
    Some(features)
}

/// XEP-0115 section 5.1, from a disco#info answer; `None` when the answer
/// is one a correct hash cannot be checked for (section 5.4: duplicate
/// identities or features, a form without FORM_TYPE).
fn verification_string(info: &Element) -> Option<String> {
    let mut identities: Vec<String> = info
        .children()
        .filter(|c| c.name() == "identity")
        .map(|c| {
            format!(
                "{}/{}/{}/{}",
                c.attr("category").unwrap_or(""),
                c.attr("type").unwrap_or(""),
                c.attr("xml:lang").or_else(|| c.attr("lang")).unwrap_or(""),
                c.attr("name").unwrap_or("")
            )
        })
        .collect();
    let mut features: Vec<&str> = info
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    let (ni, nf) = (identities.len(), features.len());
    identities.sort();
    identities.dedup();
    features.sort_unstable();
    features.dedup();
    if identities.len() != ni || features.len() != nf {
        return None;
    }
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    let mut forms = Vec::new();
    for x in info.children().filter(|c| c.is("x", "jabber:x:data")) {
        let mut form_type = None;
        let mut fields = Vec::new();
        for field in x.children().filter(|c| c.name() == "field") {
            let mut values: Vec<String> = field
                .children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text())
                .collect();
            values.sort();
            match field.attr("var") {
                Some("FORM_TYPE") => form_type = values.into_iter().next(),
                Some(var) => fields.push((var.to_string(), values)),
                None => {}
            }
        }
        fields.sort();
        forms.push((form_type?, fields));
    }
    forms.sort();
    for (form_type, fields) in forms {
        s.push_str(&form_type);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 section 5.2 and 5.3: the examples' hashes.
    #[test]
    fn the_xep_examples_verify() {
        let simple = zkfire_xml::parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
        )
        .unwrap();
        let s = verification_string(&simple).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert_eq!(b64, "QgayPKawpkPSDYmwT/WM94uAlu0=");

        let complex = zkfire_xml::parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
             <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/>\
             <x xmlns='jabber:x:data' type='result'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
             <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
             <field var='os'><value>Mac</value></field>\
             <field var='os_version'><value>10.5.1</value></field>\
             <field var='software'><value>Psi</value></field>\
             <field var='software_version'><value>0.11</value></field></x></query>",
        )
        .unwrap();
        let s = verification_string(&complex).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert_eq!(b64, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn duplicate_features_cannot_be_verified() {
        let dup = zkfire_xml::parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='a'/><feature var='a'/></query>",
        )
        .unwrap();
        assert_eq!(verification_string(&dup), None);
    }
}
