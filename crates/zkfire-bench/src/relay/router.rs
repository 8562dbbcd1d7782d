//! The relay's sessions and rosters, all in memory: just enough of RFC 6121
//! for the generator's scenarios (message delivery, presence broadcast to
//! contacts, roster get/set/push, subscription handshakes).

use dashmap::DashMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use zkfire_xml::{escape_attr, ns, Element};

/// Stanzas waiting for one client before the relay stops reading from the
/// clients that send to it (backpressure, as a real server would apply).
pub const SESSION_QUEUE: usize = 8192;

pub struct SessionRef {
    pub id: u64,
    pub full: String,
    pub tx: mpsc::Sender<String>,
    pub available: AtomicBool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Item {
    /// The owner receives the contact's presence.
    to: bool,
    /// The contact receives the owner's presence.
    from: bool,
    /// The owner asked to subscribe and awaits the answer.
    ask: bool,
}

impl Item {
    fn subscription(&self) -> &'static str {
        match (self.to, self.from) {
            (true, true) => "both",
            (true, false) => "to",
            (false, true) => "from",
            (false, false) => "none",
        }
    }
}

type Roster = BTreeMap<String, Item>;

#[derive(Default)]
pub struct Router {
    sessions: DashMap<String, Vec<Arc<SessionRef>>>,
    rosters: Mutex<HashMap<String, Roster>>,
    next: AtomicU64,
}

/// The bare part of a JID, lower-cased as the relay keys it.
pub fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or(jid).to_lowercase()
}

impl Router {
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a session for `node@domain`, with `resource` or a variant of it
    /// when that one is taken.
    pub fn add(&self, bare_jid: &str, resource: &str, tx: mpsc::Sender<String>) -> Arc<SessionRef> {
        let id = self.next_id();
        let mut entry = self.sessions.entry(bare_jid.to_string()).or_default();
        let mut full = format!("{bare_jid}/{resource}");
        if entry.iter().any(|s| s.full == full) {
            full = format!("{bare_jid}/{resource}-{id}");
        }
        let session = Arc::new(SessionRef {
            id,
            full,
            tx,
            available: AtomicBool::new(false),
        });
        entry.push(session.clone());
        session
    }

    pub fn remove(&self, bare_jid: &str, id: u64) {
        if let Some(mut entry) = self.sessions.get_mut(bare_jid) {
            entry.retain(|s| s.id != id);
        }
        self.sessions.remove_if(bare_jid, |_, v| v.is_empty());
    }

    /// The sessions of an account (cloned out: no lock is held while sending).
    fn sessions_of(&self, bare_jid: &str) -> Vec<Arc<SessionRef>> {
        self.sessions
            .get(bare_jid)
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Where a stanza to `to` goes: the exact resource, or for a bare JID
    /// the most recent available session (the newest of all if none is).
    fn target(&self, to: &str) -> Option<Arc<SessionRef>> {
        let b = bare(to);
        let sessions = self.sessions.get(&b)?;
        if to.contains('/') {
            return sessions
                .iter()
                .find(|s| s.full.eq_ignore_ascii_case(to))
                .cloned();
        }
        sessions
            .iter()
            .rev()
            .find(|s| s.available.load(Ordering::Relaxed))
            .or_else(|| sessions.last())
            .cloned()
    }

    async fn send(session: &SessionRef, xml: String) {
        // A closed channel is a session that just ended: nothing to do.
        let _ = session.tx.send(xml).await;
    }

    /// Routes a message or an IQ to another entity; `Err` gives the stanza
    /// back when no session takes it.
    pub async fn route(&self, el: Element) -> Result<(), Element> {
        let Some(target) = el.attr("to").and_then(|to| self.target(to)) else {
            return Err(el);
        };
        Self::send(&target, el.to_stanza_xml(ns::CLIENT)).await;
        Ok(())
    }

    /// Delivers to every session of an account (available ones only, if
    /// `available_only`).
    async fn to_account(&self, bare_jid: &str, xml: &str, available_only: bool) {
        for s in self.sessions_of(bare_jid) {
            if !available_only || s.available.load(Ordering::Relaxed) {
                Self::send(&s, xml.to_string()).await;
            }
        }
    }

    /// Broadcast presence (no `to`) from `session` of `owner`: to the
    /// owner's own sessions and to every contact allowed to see it.
    pub async fn broadcast(&self, owner: &str, session: &SessionRef, mut el: Element) {
        let available = el.attr("type") != Some("unavailable");
        session.available.store(available, Ordering::Relaxed);
        el.set_attr("from", session.full.clone());
        let contacts: Vec<String> = {
            let rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
            rosters
                .get(owner)
                .map(|r| {
                    r.iter()
                        .filter(|(_, item)| item.from)
                        .map(|(jid, _)| jid.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for contact in contacts {
            let mut copy = el.clone();
            copy.set_attr("to", contact.clone());
            self.to_account(&contact, &copy.to_stanza_xml(ns::CLIENT), true)
                .await;
        }
        el.set_attr("to", owner.to_string());
        self.to_account(owner, &el.to_stanza_xml(ns::CLIENT), false)
            .await;
    }

    fn item_xml(jid: &str, item: Option<&Item>) -> String {
        match item {
            Some(item) => format!(
                "<item jid='{}' subscription='{}'{}/>",
                escape_attr(jid),
                item.subscription(),
                if item.ask { " ask='subscribe'" } else { "" }
            ),
            None => format!("<item jid='{}' subscription='remove'/>", escape_attr(jid)),
        }
    }

    /// Sends a roster push for `contact` to every session of `owner`.
    async fn push(&self, owner: &str, contact: &str, item: Option<&Item>) {
        let item = Self::item_xml(contact, item);
        for s in self.sessions_of(owner) {
            let id = self.next_id();
            let xml = format!(
                "<iq type='set' id='push{id}' to='{}'><query xmlns='jabber:iq:roster'>{item}</query></iq>",
                escape_attr(&s.full)
            );
            Self::send(&s, xml).await;
        }
    }

    /// Changes `owner`'s item for `contact` with `f`; returns the new item
    /// when it changed.
    fn update(&self, owner: &str, contact: &str, f: impl FnOnce(&mut Item)) -> Option<Item> {
        let mut rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
        let roster = rosters.entry(owner.to_string()).or_default();
        let item = roster.entry(contact.to_string()).or_default();
        let before = item.clone();
        f(item);
        (*item != before).then(|| item.clone())
    }

    /// The roster as `<query/>` children.
    pub fn roster_items(&self, owner: &str) -> String {
        let rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
        rosters
            .get(owner)
            .map(|r| {
                r.iter()
                    .map(|(jid, item)| Self::item_xml(jid, Some(item)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A roster set of one item: adds it (keeping its subscription) or
    /// removes it.
    pub async fn roster_set(&self, owner: &str, contact: &str, remove: bool) {
        let contact = bare(contact);
        if remove {
            let removed = {
                let mut rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
                rosters
                    .get_mut(owner)
                    .and_then(|r| r.remove(&contact))
                    .is_some()
            };
            if removed {
                self.push(owner, &contact, None).await;
            }
            return;
        }
        let is_new = {
            let mut rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
            let roster = rosters.entry(owner.to_string()).or_default();
            let new = !roster.contains_key(&contact);
            roster.entry(contact.clone()).or_default();
            new
        };
        if is_new {
            self.push(owner, &contact, Some(&Item::default())).await;
        }
    }

    /// A subscription presence (`subscribe`, `subscribed`, `unsubscribe`,
    /// `unsubscribed`) from `owner` to `to`: updates both rosters, pushes
    /// the changes, and delivers the presence.
    pub async fn subscription(&self, owner: &str, to: &str, kind: &str) {
        let contact = bare(to);
        let deliver = |kind: &str| {
            format!(
                "<presence type='{kind}' from='{}' to='{}'/>",
                escape_attr(owner),
                escape_attr(&contact)
            )
        };
        match kind {
            "subscribe" => {
                if let Some(item) = self.update(owner, &contact, |i| i.ask = !i.to) {
                    self.push(owner, &contact, Some(&item)).await;
                }
                let approved = {
                    let rosters = self.rosters.lock().unwrap_or_else(|e| e.into_inner());
                    rosters
                        .get(&contact)
                        .and_then(|r| r.get(owner))
                        .is_some_and(|i| i.from)
                };
                if approved {
                    // Already approved: the server answers for the contact.
                    self.approve(&contact, owner).await;
                } else {
                    self.to_account(&contact, &deliver("subscribe"), false)
                        .await;
                }
            }
            "subscribed" => self.approve(owner, &contact).await,
            "unsubscribe" => {
                if let Some(item) = self.update(owner, &contact, |i| {
                    i.to = false;
                    i.ask = false;
                }) {
                    self.push(owner, &contact, Some(&item)).await;
                }
                if let Some(item) = self.update(&contact, owner, |i| i.from = false) {
                    self.push(&contact, owner, Some(&item)).await;
                }
                self.to_account(&contact, &deliver("unsubscribe"), false)
                    .await;
            }
            "unsubscribed" => {
                if let Some(item) = self.update(owner, &contact, |i| i.from = false) {
                    self.push(owner, &contact, Some(&item)).await;
                }
                if let Some(item) = self.update(&contact, owner, |i| {
                    i.to = false;
                    i.ask = false;
                }) {
                    self.push(&contact, owner, Some(&item)).await;
                }
                self.to_account(&contact, &deliver("unsubscribed"), false)
                    .await;
            }
            _ => {}
        }
    }

    /// `owner` lets `contact` see its presence.
    async fn approve(&self, owner: &str, contact: &str) {
        if let Some(item) = self.update(owner, contact, |i| i.from = true) {
            self.push(owner, contact, Some(&item)).await;
        }
        if let Some(item) = self.update(contact, owner, |i| {
            i.to = true;
            i.ask = false;
        }) {
            self.push(contact, owner, Some(&item)).await;
        }
        let xml = format!(
            "<presence type='subscribed' from='{}' to='{}'/>",
            escape_attr(owner),
            escape_attr(contact)
        );
        self.to_account(contact, &xml, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(router: &Router, bare_jid: &str) -> (Arc<SessionRef>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(100);
        let s = router.add(bare_jid, "r", tx);
        s.available.store(true, Ordering::Relaxed);
        (s, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(s) = rx.try_recv() {
            out.push(s);
        }
        out
    }

    #[tokio::test]
    async fn subscription_handshake_gives_both_and_presence_flows() {
        let r = Router::default();
        let (a, mut ra) = session(&r, "a@x");
        let (_b, mut rb) = session(&r, "b@x");
        r.subscription("a@x", "b@x", "subscribe").await;
        assert!(drain(&mut ra).iter().any(|s| s.contains("ask='subscribe'")));
        assert!(drain(&mut rb)
            .iter()
            .any(|s| s.contains("type='subscribe' from='a@x'")));
        r.subscription("b@x", "a@x", "subscribed").await;
        r.subscription("b@x", "a@x", "subscribe").await;
        r.subscription("a@x", "b@x", "subscribed").await;
        assert!(r.roster_items("a@x").contains("subscription='both'"));
        assert!(r.roster_items("b@x").contains("subscription='both'"));
        drain(&mut ra);
        drain(&mut rb);
        let p = zkfire_xml::parse_element("<presence><status>s</status></presence>").unwrap();
        r.broadcast("a@x", &a, p).await;
        let to_b = drain(&mut rb);
        assert_eq!(to_b.len(), 1);
        assert!(to_b[0].contains("from='a@x/r'"));
        assert_eq!(drain(&mut ra).len(), 1, "echo to the sender");
    }

    #[tokio::test]
    async fn no_presence_without_approval() {
        let r = Router::default();
        let (a, mut ra) = session(&r, "a@x");
        let (_b, mut rb) = session(&r, "b@x");
        r.roster_set("a@x", "b@x", false).await;
        r.subscription("a@x", "b@x", "subscribe").await;
        drain(&mut rb);
        let p = zkfire_xml::parse_element("<presence/>").unwrap();
        r.broadcast("a@x", &a, p).await;
        assert!(drain(&mut rb).is_empty());
        assert_eq!(drain(&mut ra).len(), 3, "push, push with ask, echo");
    }

    #[tokio::test]
    async fn routes_to_full_and_bare_and_bounces_otherwise() {
        let r = Router::default();
        let (_a, mut ra) = session(&r, "a@x");
        let m = zkfire_xml::parse_element("<message to='a@x'><body>1</body></message>").unwrap();
        assert!(r.route(m).await.is_ok());
        let m = zkfire_xml::parse_element("<message to='a@x/r'><body>2</body></message>").unwrap();
        assert!(r.route(m).await.is_ok());
        let m =
            zkfire_xml::parse_element("<message to='a@x/other'><body>3</body></message>").unwrap();
        assert!(r.route(m).await.is_err());
        let m = zkfire_xml::parse_element("<message to='z@x'><body>4</body></message>").unwrap();
        assert!(r.route(m).await.is_err());
        assert_eq!(drain(&mut ra).len(), 2);
    }
}
