//! Personal eventing (XEP-0163) with entity capabilities (XEP-0115), PEP
//! avatars (XEP-0084/0398/0153) and bookmarks (XEP-0402 and its private XML
//! compatibility), on the wire, on one node and across a cluster.

mod common;
use base64::Engine;
use common::cluster::TestCluster;
use common::steps::{befriend, disco_features, error_condition, subscribe_to};
use common::{Client, TestServer};
use sha1::{Digest, Sha1};
use std::time::Duration;
use zkfire_xml::{ns, Element};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const CAPS: &str = "http://jabber.org/protocol/caps";
const NICK: &str = "http://jabber.org/protocol/nick";

fn users(extra: &[(&str, &str)]) -> TestServer {
    let server = TestServer::with_config(extra);
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, "pw");
    }
    server
}

/// The caps of a test client that wants notifications of `notify`.
fn caps(notify: &[&str]) -> (String, Vec<String>) {
    let mut features: Vec<String> = [ns::DISCO_INFO, CAPS]
        .iter()
        .map(|s| s.to_string())
        .collect();
    features.extend(notify.iter().map(|n| format!("{n}+notify")));
    features.sort();
    let mut s = "client/pc//zktest<".to_string();
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    let ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
    (ver, features)
}

/// Sends available presence with caps for `notify` and answers the
/// server's disco#info query about them, if it asks.
async fn announce(c: &mut Client, notify: &[&str]) {
    let (ver, features) = caps(notify);
    c.send(&format!(
        "<presence><c xmlns='{CAPS}' hash='sha-1' node='urn:zktest' ver='{ver}'/></presence>"
    ))
    .await;
    let own = c.jid.clone();
    let mut others = Vec::new();
    let mut asked = false;
    loop {
        let e = c.next().await;
        if e.name() == "iq" && e.attr("type") == Some("get") {
            answer_disco(c, &e, &ver, &features).await;
            asked = true;
        } else if e.name() == "presence" && e.attr("from") == Some(own.as_str()) {
            break;
        } else {
            others.push(e);
        }
    }
    // The query may come after the reflection; keep whatever else comes.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while !asked {
        let Ok(e) = tokio::time::timeout_at(deadline, c.next()).await else {
            break;
        };
        if e.name() == "iq" && e.attr("type") == Some("get") {
            answer_disco(c, &e, &ver, &features).await;
            asked = true;
        } else {
            others.push(e);
        }
    }
    c.unread(others);
}

async fn answer_disco(c: &mut Client, iq: &Element, ver: &str, features: &[String]) {
    let q = iq
        .child("query", ns::DISCO_INFO)
        .expect("a disco#info query");
    assert_eq!(q.attr("node"), Some(format!("urn:zktest#{ver}").as_str()));
    let mut reply = format!(
        "<iq type='result' id='{}' to='{}'><query xmlns='{}' node='urn:zktest#{ver}'><identity category='client' type='pc' name='zktest'/>",
        iq.attr("id").unwrap(),
        iq.attr("from").unwrap(),
        ns::DISCO_INFO
    );
    for f in features {
        reply.push_str(&format!("<feature var='{f}'/>"));
    }
    reply.push_str("</query></iq>");
    c.send(&reply).await;
}

async fn online(server: &TestServer, user: &str, resource: &str, notify: &[&str]) -> Client {
    let mut c = Client::login(server, user, "pw", resource).await;
    announce(&mut c, notify).await;
    c
}

async fn publish(c: &mut Client, node: &str, id: &str, payload: &str, options: &str) -> Element {
    c.iq_keeping_others(
        &format!(
            "<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>{options}</pubsub></iq>"
        ),
        "pub",
    )
    .await
}

fn nick(n: &str) -> String {
    format!("<nick xmlns='{NICK}'>{n}</nick>")
}

fn options(fields: &[(&str, &str)]) -> String {
    let mut x = "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>".to_string();
    for (k, v) in fields {
        x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
    }
    x.push_str("</x></publish-options>");
    x
}

fn is_event(e: &Element) -> bool {
    e.name() == "message" && e.child("event", EVENT).is_some()
}

/// The first `<items/>` item of an event: (node, item id, payload text).
fn event_item(e: &Element) -> (String, String, String) {
    let items = e
        .child("event", EVENT)
        .and_then(|ev| ev.child("items", EVENT))
        .expect("items");
    let item = items.child("item", EVENT).expect("an item");
    let text = item.children().next().map(|p| p.text()).unwrap_or_default();
    (
        items.attr("node").unwrap_or("").to_string(),
        item.attr("id").unwrap_or("").to_string(),
        text,
    )
}

/// The child `name` of an event's `<event/>`, if `e` is such an event.
fn event_child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.child("event", EVENT)?.child(name, EVENT)
}

/// An owner request (`purge`, `delete`) on `node`, which must succeed.
async fn owner_op(c: &mut Client, op: &str, node: &str) {
    let r = c
        .iq(
            &format!("<iq type='set' id='own'><pubsub xmlns='{OWNER}'><{op} node='{node}'/></pubsub></iq>"),
            "own",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{op}: {r:?}");
}

async fn no_event(c: &mut Client, what: &str) {
    let got = c.none_within(Duration::from_millis(600), is_event).await;
    assert!(got.is_ok(), "{what}: {got:?}");
}

async fn items(c: &mut Client, to: &str, node: &str, extra: &str) -> Element {
    c.iq(
        &format!(
            "<iq type='get' id='it' to='{to}'><pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub></iq>"
        ),
        "it",
    )
    .await
}

fn item_ids(reply: &Element) -> Vec<String> {
    reply
        .child("pubsub", PUBSUB)
        .and_then(|p| p.child("items", PUBSUB))
        .map(|i| {
            i.children()
                .filter_map(|c| c.attr("id").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn accounts_are_pep_services_and_the_server_has_caps() {
    let server = users(&[]);
    let mut c = Client::login(&server, "alice", "pw", "r").await;
    let info = c
        .iq(
            "<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d",
        )
        .await;
    let q = info.child("query", ns::DISCO_INFO).expect("info");
    assert!(q.children().any(|i| i.name() == "identity"
        && i.attr("category") == Some("pubsub")
        && i.attr("type") == Some("pep")));
    let features: Vec<&str> = q.children().filter_map(|f| f.attr("var")).collect();
    for f in [
        "http://jabber.org/protocol/pubsub#publish",
        "http://jabber.org/protocol/pubsub#publish-options",
        "http://jabber.org/protocol/pubsub#auto-create",
        "urn:xmpp:bookmarks:1#compat",
        "urn:xmpp:pep-vcard-conversion:0",
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }
    // The server has caps of its own; other disco nodes are not served.
    assert!(disco_features(&mut c, "localhost")
        .await
        .iter()
        .any(|f| f == CAPS));
    let e = c
        .iq(
            "<iq type='get' id='n' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='urn:zkfire#nope'/></iq>",
            "n",
        )
        .await;
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn a_publication_reaches_contacts_who_want_it_and_no_one_else() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[NICK]).await;
    let mut bob = online(&server, "bob", "phone", &[NICK]).await;
    let mut carol = online(&server, "carol", "tab", &[NICK]).await;
    befriend(&mut alice, &mut bob).await;
    // bob's other resource does not want nicknames.
    let mut quiet = online(&server, "bob", "watch", &["urn:xmpp:avatar:metadata"]).await;
    let r = publish(&mut alice, NICK, "current", &nick("Alice"), "").await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let e = bob.next_matching(is_event).await;
    assert_eq!(e.attr("from"), Some("alice@localhost"));
    assert_eq!(e.attr("type"), Some("headline"));
    assert_eq!(
        event_item(&e),
        (NICK.into(), "current".into(), "Alice".into())
    );
    // The owner's own resource that wants it gets it too.
    let own = alice.next_matching(is_event).await;
    assert_eq!(event_item(&own).2, "Alice");
    no_event(&mut carol, "carol is no contact").await;
    no_event(&mut quiet, "a client without +notify").await;
}

#[tokio::test]
async fn a_resource_coming_online_gets_the_last_items() {
    let server = users(&[]);
    {
        let mut alice = online(&server, "alice", "desk", &[]).await;
        let mut bob = online(&server, "bob", "phone", &[]).await;
        befriend(&mut alice, &mut bob).await;
        publish(&mut alice, NICK, "1", &nick("old"), "").await;
        publish(&mut alice, NICK, "2", &nick("new"), "").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = online(&server, "bob", "phone", &[NICK]).await;
    let e = bob.next_matching(is_event).await;
    assert_eq!(event_item(&e), (NICK.into(), "2".into(), "new".into()));
    assert!(e.child("delay", ns::DELAY).is_some(), "stamped: {e:?}");
    no_event(&mut bob, "only the last item").await;
    // A second client with the same caps: the server knows them already.
    let mut again = Client::login(&server, "bob", "pw", "laptop").await;
    let (ver, _) = caps(&[NICK]);
    again
        .send(&format!(
            "<presence><c xmlns='{CAPS}' hash='sha-1' node='urn:zktest' ver='{ver}'/></presence>"
        ))
        .await;
    let e = again
        .next_matching(|e| is_event(e) || e.name() == "iq")
        .await;
    assert!(is_event(&e), "no second disco query for known caps: {e:?}");
}

#[tokio::test]
async fn a_false_caps_hash_is_not_believed_for_others() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &[]).await;
    befriend(&mut alice, &mut bob).await;
    // mallory-style: bob claims the hash of a NICK+notify client but
    // answers with other features.
    let (ver, _) = caps(&[NICK]);
    let mut liar = Client::login(&server, "carol", "pw", "x").await;
    liar.send(&format!(
        "<presence><c xmlns='{CAPS}' hash='sha-1' node='urn:zktest' ver='{ver}'/></presence>"
    ))
    .await;
    let q = liar.next_matching(|e| e.name() == "iq").await;
    answer_disco(&mut liar, &q, &ver, &["urn:nothing".to_string()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // bob really wants nicknames, with the same hash: his answer counts.
    bob.send(&format!(
        "<presence><c xmlns='{CAPS}' hash='sha-1' node='urn:zktest' ver='{ver}'/></presence>"
    ))
    .await;
    let q = bob
        .next_matching(|e| e.name() == "iq" && e.attr("type") == Some("get"))
        .await;
    let (_, real) = caps(&[NICK]);
    answer_disco(&mut bob, &q, &ver, &real).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&mut alice, NICK, "n", &nick("A"), "").await;
    assert_eq!(event_item(&bob.next_matching(is_event).await).2, "A");
}

#[tokio::test]
async fn access_models_decide_who_reads_items() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &[]).await;
    let mut carol = online(&server, "carol", "tab", &[]).await;
    befriend(&mut alice, &mut bob).await;
    publish(&mut alice, NICK, "n", &nick("A"), "").await;
    // presence (the default): contacts yes, strangers no.
    assert_eq!(
        item_ids(&items(&mut bob, "alice@localhost", NICK, "").await),
        ["n"]
    );
    let e = items(&mut carol, "alice@localhost", NICK, "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-authorized"));
    assert!(e
        .child("error", ns::CLIENT)
        .and_then(|x| x.child("presence-subscription-required", ERRORS))
        .is_some());
    // open: anyone (OMEMO device lists).
    let devices = "eu.siacs.conversations.axolotl.devicelist";
    let r = publish(
        &mut alice,
        devices,
        "current",
        "<list xmlns='eu.siacs.conversations.axolotl'><device id='42'/></list>",
        &options(&[("pubsub#access_model", "open")]),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    assert_eq!(
        item_ids(&items(&mut carol, "alice@localhost", devices, "").await),
        ["current"]
    );
    // whitelist: the owner only.
    publish(
        &mut alice,
        "secret",
        "s",
        "<x xmlns='urn:x'/>",
        &options(&[("pubsub#access_model", "whitelist")]),
    )
    .await;
    let e = items(&mut bob, "alice@localhost", "secret", "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-allowed"));
    assert_eq!(
        item_ids(&items(&mut alice, "alice@localhost", "secret", "").await),
        ["s"]
    );
    // Nobody but the owner publishes or manages.
    let e = bob
        .iq(
            &format!("<iq type='set' id='x' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><publish node='{NICK}'><item>{}</item></publish></pubsub></iq>", nick("B")),
            "x",
        )
        .await;
    assert_eq!(error_condition(&e).as_deref(), Some("forbidden"));
    let e = items(&mut bob, "alice@localhost", "no-such-node", "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn items_retract_delete_and_purge() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &["urn:test:node"]).await;
    befriend(&mut alice, &mut bob).await;
    let node = "urn:test:node";
    for i in 1..=3 {
        let r = publish(
            &mut alice,
            node,
            &format!("i{i}"),
            "<x xmlns='urn:test'/>",
            &options(&[("pubsub#max_items", "2")]),
        )
        .await;
        assert_eq!(r.attr("type"), Some("result"), "{r:?}");
        bob.next_matching(is_event).await;
    }
    assert_eq!(
        item_ids(&items(&mut alice, "alice@localhost", node, "").await),
        ["i2", "i3"]
    );
    assert_eq!(
        item_ids(&items(&mut alice, "alice@localhost", node, " max_items='1'").await),
        ["i3"]
    );
    let r = alice
        .iq(
            &format!("<iq type='set' id='rt'><pubsub xmlns='{PUBSUB}'><retract node='{node}' notify='true'><item id='i3'/></retract></pubsub></iq>"),
            "rt",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let e = bob.next_matching(is_event).await;
    let retract = e
        .child("event", EVENT)
        .and_then(|ev| ev.child("items", EVENT))
        .and_then(|i| i.child("retract", EVENT));
    assert_eq!(retract.and_then(|r| r.attr("id")), Some("i3"));
    // Conflicting publish-options on an existing node.
    let e = publish(
        &mut alice,
        node,
        "i4",
        "<x xmlns='urn:test'/>",
        &options(&[("pubsub#access_model", "open")]),
    )
    .await;
    assert_eq!(error_condition(&e).as_deref(), Some("conflict"));
    assert!(e
        .child("error", ns::CLIENT)
        .and_then(|x| x.child("precondition-not-met", ERRORS))
        .is_some());
    // Configuration, read and changed by the owner.
    let conf = alice
        .iq(&format!("<iq type='get' id='cf'><pubsub xmlns='{OWNER}'><configure node='{node}'/></pubsub></iq>"), "cf")
        .await;
    let form = conf
        .child("pubsub", OWNER)
        .and_then(|p| p.child("configure", OWNER))
        .and_then(|c| c.child("x", "jabber:x:data"))
        .expect("a form");
    assert!(form
        .children()
        .any(|f| f.attr("var") == Some("pubsub#max_items")
            && f.child_text("value", "jabber:x:data").as_deref() == Some("2")));
    // Purge, then delete, both announced.
    owner_op(&mut alice, "purge", node).await;
    let e = bob.next_matching(is_event).await;
    assert!(event_child(&e, "purge").is_some(), "{e:?}");
    assert!(item_ids(&items(&mut alice, "alice@localhost", node, "").await).is_empty());
    owner_op(&mut alice, "delete", node).await;
    let e = bob.next_matching(is_event).await;
    assert!(event_child(&e, "delete").is_some(), "{e:?}");
    let e = items(&mut alice, "alice@localhost", node, "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn nodes_and_items_are_bounded() {
    let server = users(&[("pep", "max_nodes = 2"), ("pep", "max_item_bytes = 1000")]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let big = format!("<x xmlns='urn:test'>{}</x>", "y".repeat(2000));
    let e = publish(&mut alice, "n1", "a", &big, "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-acceptable"));
    assert!(e
        .child("error", ns::CLIENT)
        .and_then(|x| x.child("payload-too-big", ERRORS))
        .is_some());
    for n in ["n1", "n2"] {
        let r = publish(&mut alice, n, "a", "<x xmlns='urn:test'/>", "").await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let e = publish(&mut alice, "n3", "a", "<x xmlns='urn:test'/>", "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("resource-constraint"));
    // Publishing to an existing node still works at the bound.
    let r = publish(&mut alice, "n2", "b", "<x xmlns='urn:test'/>", "").await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn a_pep_avatar_is_the_vcard_photo_and_its_hash_is_in_presence() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &[]).await;
    befriend(&mut alice, &mut bob).await;
    let png = b"\x89PNG\r\n\x1a\n fake image bytes";
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let hash: String = Sha1::digest(png)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = publish(
        &mut alice,
        "urn:xmpp:avatar:data",
        &hash,
        &format!("<data xmlns='urn:xmpp:avatar:data'>{b64}</data>"),
        "",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let r = publish(
        &mut alice,
        "urn:xmpp:avatar:metadata",
        &hash,
        &format!("<metadata xmlns='urn:xmpp:avatar:metadata'><info id='{hash}' bytes='{}' type='image/png' width='1' height='1'/></metadata>", png.len()),
        "",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let vcard = bob
        .iq(
            "<iq type='get' id='v' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
            "v",
        )
        .await;
    let photo = vcard
        .child("vCard", ns::VCARD)
        .and_then(|v| v.child("PHOTO", ns::VCARD))
        .expect("a PHOTO");
    assert_eq!(
        photo.child_text("TYPE", ns::VCARD).as_deref(),
        Some("image/png")
    );
    assert_eq!(
        photo.child_text("BINVAL", ns::VCARD).as_deref(),
        Some(b64.as_str())
    );
    // The next presence carries the hash, whatever the client put there.
    alice
        .send("<presence><x xmlns='vcard-temp:x:update'><photo>stale</photo></x></presence>")
        .await;
    let p = bob
        .next_matching(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/desk"))
        .await;
    let photos: Vec<String> = p
        .children()
        .filter(|c| c.is("x", "vcard-temp:x:update"))
        .filter_map(|x| x.child_text("photo", "vcard-temp:x:update"))
        .collect();
    assert_eq!(photos, [hash]);
}

#[tokio::test]
async fn bookmarks_are_shared_between_pep_and_private_storage() {
    let server = users(&[]);
    let mut phone = online(&server, "alice", "phone", &[]).await;
    let mut legacy = online(&server, "alice", "legacy", &["urn:xmpp:bookmarks:1"]).await;
    let mut bob = online(&server, "bob", "r", &[]).await;
    befriend(&mut phone, &mut bob).await;
    let bookmark_options = options(&[
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ]);
    let r = publish(
        &mut phone,
        "urn:xmpp:bookmarks:1",
        "room@conference.localhost",
        "<conference xmlns='urn:xmpp:bookmarks:1' name='The Room' autojoin='true'><nick>al</nick></conference>",
        &bookmark_options,
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    legacy.next_matching(is_event).await;
    // A client of private storage sees it...
    let got = legacy
        .iq("<iq type='get' id='pv'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>", "pv")
        .await;
    let conf = got
        .child("query", ns::PRIVATE)
        .and_then(|q| q.child("storage", "storage:bookmarks"))
        .and_then(|s| s.child("conference", "storage:bookmarks"))
        .expect("the room in private storage");
    assert_eq!(conf.attr("jid"), Some("room@conference.localhost"));
    assert_eq!(conf.attr("autojoin"), Some("true"));
    assert_eq!(
        conf.child_text("nick", "storage:bookmarks").as_deref(),
        Some("al")
    );
    // ... and what it stores there (another room, the first gone, a URL)
    // is what PEP clients see.
    let r = legacy
        .iq(
            "<iq type='set' id='ps'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>\
             <conference jid='other@conference.localhost' name='Other'><nick>al2</nick></conference>\
             <url name='site' url='https://example.org/'/></storage></query></iq>",
            "ps",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let ids = item_ids(&items(&mut phone, "alice@localhost", "urn:xmpp:bookmarks:1", "").await);
    assert_eq!(ids, ["other@conference.localhost"]);
    let got = legacy
        .iq("<iq type='get' id='pv2'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>", "pv2")
        .await;
    let storage = got
        .child("query", ns::PRIVATE)
        .and_then(|q| q.child("storage", "storage:bookmarks"))
        .unwrap();
    assert_eq!(
        storage.children().filter(|c| c.name() == "url").count(),
        1,
        "the URL stays"
    );
    // A contact reads none of it.
    let e = items(&mut bob, "alice@localhost", "urn:xmpp:bookmarks:1", "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-allowed"));
}

#[tokio::test]
async fn deleting_the_user_deletes_its_nodes() {
    let server = users(&[]);
    {
        let mut alice = online(&server, "alice", "desk", &[]).await;
        publish(
            &mut alice,
            NICK,
            "n",
            &nick("A"),
            &options(&[("pubsub#access_model", "open")]),
        )
        .await;
    }
    let out = server.cli(&["user", "delete", "alice"]);
    assert!(out.status.success(), "{out:?}");
    server.add_user("alice", "pw");
    let mut bob = online(&server, "bob", "r", &[]).await;
    let e = items(&mut bob, "alice@localhost", NICK, "").await;
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
}

/// alice publishes on node 1; bob's resources on nodes 2 and 3 get it, and
/// carol coming online on node 3 gets alice's last item.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_cross_the_cluster() {
    let cluster = TestCluster::start(3);
    cluster.wait_connected();
    for u in ["alice", "bob", "carol"] {
        cluster.add_user(u, "pw");
    }
    let mut alice = online(cluster.node(0), "alice", "desk", &[]).await;
    let mut bob2 = online(cluster.node(1), "bob", "two", &[NICK]).await;
    befriend(&mut alice, &mut bob2).await;
    let mut bob3 = online(cluster.node(2), "bob", "three", &[NICK]).await;
    {
        let mut carol = online(cluster.node(2), "carol", "c", &[]).await;
        // carol subscribes to alice (one way is enough for notifications).
        subscribe_to(&mut carol, "carol@localhost", &mut alice, "alice@localhost").await;
        carol
            .next_matching(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
            .await;
    }
    // Node 1 has heard of the caps of bob's resources.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = publish(&mut alice, NICK, "n", &nick("Alice"), "").await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    assert_eq!(event_item(&bob2.next_matching(is_event).await).2, "Alice");
    assert_eq!(event_item(&bob3.next_matching(is_event).await).2, "Alice");
    let mut carol = online(cluster.node(2), "carol", "later", &[NICK]).await;
    assert_eq!(event_item(&carol.next_matching(is_event).await).2, "Alice");
}

/// Client State Indication (XEP-0352): an inactive client's PEP events
/// wait, and a republished item replaces the one held before it.
#[tokio::test]
async fn an_inactive_client_gets_the_latest_events_when_active() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &[NICK]).await;
    befriend(&mut alice, &mut bob).await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&mut alice, NICK, "current", &nick("first"), "").await;
    publish(&mut alice, NICK, "current", &nick("second"), "").await;
    no_event(&mut bob, "held while inactive").await;
    bob.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let e = bob.next_matching(is_event).await;
    assert_eq!(event_item(&e).2, "second");
    no_event(&mut bob, "the first was replaced").await;
}

/// XEP-0163 section 6.1.1: a new subscriber gets the last items at once.
#[tokio::test]
async fn a_new_subscriber_gets_the_last_items() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    publish(&mut alice, NICK, "n", &nick("Alice"), "").await;
    let mut carol = online(&server, "carol", "tab", &[NICK]).await;
    no_event(&mut carol, "not a subscriber yet").await;
    subscribe_to(&mut carol, "carol@localhost", &mut alice, "alice@localhost").await;
    let e = carol.next_matching(is_event).await;
    assert_eq!(event_item(&e), (NICK.into(), "n".into(), "Alice".into()));
}

/// A client can make up valid caps hashes at will: the server learns at
/// most 20 new ones per account in ten minutes, then stops asking.
#[tokio::test]
async fn new_caps_hashes_are_bounded_per_account() {
    let server = users(&[]);
    let mut c = Client::login(&server, "alice", "pw", "r").await;
    for i in 0..21 {
        let node = format!("urn:made-up:{i}");
        let (ver, features) = caps(&[node.as_str()]);
        c.send(&format!(
            "<presence><c xmlns='{CAPS}' hash='sha-1' node='urn:zktest' ver='{ver}'/></presence>"
        ))
        .await;
        let asked = c
            .none_within(Duration::from_millis(1500), |e| {
                e.name() == "iq" && e.attr("type") == Some("get")
            })
            .await;
        match asked {
            Err(q) if i < 20 => answer_disco(&mut c, &q, &ver, &features).await,
            Err(q) => panic!("asked about hash {i}: {q:?}"),
            Ok(()) if i < 20 => panic!("hash {i} not asked about"),
            Ok(()) => {}
        }
    }
}

/// Legacy bookmarks beyond what the PEP node keeps are refused whole.
#[tokio::test]
async fn too_many_legacy_bookmarks_are_refused_before_anything_is_stored() {
    let server = users(&[("pep", "max_items_per_node = 3")]);
    let mut c = online(&server, "alice", "r", &[]).await;
    let rooms: String = (0..4)
        .map(|i| format!("<conference jid='r{i}@conference.localhost'/>"))
        .collect();
    let r = c
        .iq(
            &format!("<iq type='set' id='ps'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>{rooms}</storage></query></iq>"),
            "ps",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-acceptable"));
    let got = c
        .iq("<iq type='get' id='pv'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>", "pv")
        .await;
    let storage = got
        .child("query", ns::PRIVATE)
        .and_then(|q| q.child("storage", "storage:bookmarks"))
        .expect("storage");
    assert_eq!(storage.children().count(), 0, "nothing stored: {storage:?}");
}

/// XEP-0398 the other way: a vCard PHOTO set by a vCard-only client is
/// published as the PEP avatar, and its hash goes into presence.
#[tokio::test]
async fn a_vcard_photo_becomes_the_pep_avatar() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk", &[]).await;
    let mut bob = online(&server, "bob", "phone", &["urn:xmpp:avatar:metadata"]).await;
    befriend(&mut alice, &mut bob).await;
    let png = b"\x89PNG\r\n\x1a\n another fake image";
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let hash: String = Sha1::digest(png)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = alice
        .iq_keeping_others(
            &format!("<iq type='set' id='vs'><vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{b64}</BINVAL></PHOTO></vCard></iq>"),
            "vs",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let e = bob.next_matching(is_event).await;
    let (node, id, _) = event_item(&e);
    assert_eq!(
        (node.as_str(), id.as_str()),
        ("urn:xmpp:avatar:metadata", hash.as_str())
    );
    let data = items(&mut bob, "alice@localhost", "urn:xmpp:avatar:data", "").await;
    assert_eq!(item_ids(&data), std::slice::from_ref(&hash));
    alice.send("<presence/>").await;
    let p = bob
        .next_matching(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/desk"))
        .await;
    let photo = p
        .child("x", "vcard-temp:x:update")
        .and_then(|x| x.child_text("photo", "vcard-temp:x:update"));
    assert_eq!(photo, Some(hash));
    // The vCard keeps its other fields.
    let v = bob
        .iq(
            "<iq type='get' id='vg' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
            "vg",
        )
        .await;
    assert_eq!(
        v.child("vCard", ns::VCARD)
            .and_then(|c| c.child_text("FN", ns::VCARD))
            .as_deref(),
        Some("Alice")
    );
}
