//! Client State Indication (XEP-0352): what an inactive client's server
//! holds back, what it lets through, and that nothing is lost or reordered,
//! also over stream management.

mod common;
use common::steps::{authenticated, befriend, body, enable_sm};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::{ns, Element};

const CSI: &str = "urn:xmpp:csi:0";

fn is_stanza(e: &Element) -> bool {
    matches!(e.name(), "message" | "presence" | "iq")
}

/// alice and bob, subscribed to each other and available; bob then says
/// he is inactive.
async fn friends(server: &TestServer) -> (Client, Client) {
    let mut alice = Client::login(server, "alice", "pw", "desk").await;
    let mut bob = Client::login(server, "bob", "pw", "phone").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    // What the subscription brought settles before bob goes inactive.
    while bob
        .none_within(Duration::from_millis(300), is_stanza)
        .await
        .is_err()
    {}
    (alice, bob)
}

fn server() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    server
}

fn show(s: &str) -> String {
    format!("<presence><show>{s}</show></presence>")
}

fn typing(state: &str) -> String {
    format!("<message to='bob@localhost' type='chat'><{state} xmlns='http://jabber.org/protocol/chatstates'/></message>")
}

#[tokio::test]
async fn csi_is_offered_after_authentication() {
    let server = server();
    let mut c = Client::connect(server.port).await;
    let before = c.open().await;
    assert!(before.child("csi", CSI).is_none());
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    c.auth("SCRAM-SHA-256", "bob", "pw").await.expect("login");
    let after = c.open().await;
    assert!(after.child("csi", CSI).is_some(), "{after:?}");
}

/// Presence updates and chat states wait, only the latest of each; a
/// message with a body lets them out first, in order.
#[tokio::test]
async fn an_inactive_client_gets_the_latest_state_before_the_next_message() {
    let server = server();
    let (mut alice, mut bob) = friends(&server).await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    for s in ["away", "dnd", "xa"] {
        alice.send(&show(s)).await;
    }
    alice.send(&typing("composing")).await;
    alice.send(&typing("paused")).await;
    let early = bob.none_within(Duration::from_millis(700), is_stanza).await;
    assert!(early.is_ok(), "held while inactive: {early:?}");

    alice
        .send("<message to='bob@localhost' type='chat'><body>wake up</body></message>")
        .await;
    let first = bob.next_matching(is_stanza).await;
    assert_eq!(first.name(), "presence");
    assert_eq!(
        first.child_text("show", ns::CLIENT).as_deref(),
        Some("xa"),
        "the latest only"
    );
    let second = bob.next_matching(is_stanza).await;
    assert!(
        second
            .child("paused", "http://jabber.org/protocol/chatstates")
            .is_some(),
        "{second:?}"
    );
    let third = bob.next_matching(is_stanza).await;
    assert_eq!(body(&third).as_deref(), Some("wake up"));
    let more = bob.none_within(Duration::from_millis(300), is_stanza).await;
    assert!(more.is_ok(), "earlier states are dropped: {more:?}");
}

/// `<active/>` lets everything out before the server answers what the
/// client sends next (XEP-0352 section 5).
#[tokio::test]
async fn active_releases_before_the_next_request_is_answered() {
    let server = server();
    let (mut alice, mut bob) = friends(&server).await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    alice.send(&show("away")).await;
    let held = bob.none_within(Duration::from_millis(500), is_stanza).await;
    assert!(held.is_ok(), "{held:?}");
    bob.send("<active xmlns='urn:xmpp:csi:0'/><iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let first = bob.next_matching(is_stanza).await;
    assert_eq!(first.name(), "presence", "before the pong: {first:?}");
    let pong = bob.next_matching(is_stanza).await;
    assert_eq!(pong.attr("id"), Some("p"));
    // Active again: presence comes at once.
    alice.send(&show("chat")).await;
    let now = bob.next_matching(is_stanza).await;
    assert_eq!(now.child_text("show", ns::CLIENT).as_deref(), Some("chat"));
}

/// What was held when the connection broke is written on the resumed
/// stream, which starts active, and counted like every other stanza.
#[tokio::test]
async fn held_stanzas_survive_a_resumption() {
    let server = server();
    let (mut alice, mut bob) = friends(&server).await;
    let id = enable_sm(&mut bob).await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    alice.send(&show("away")).await;
    let held = bob.none_within(Duration::from_millis(500), is_stanza).await;
    assert!(held.is_ok(), "{held:?}");
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = authenticated(&server, "bob", "pw").await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
    ))
    .await;
    assert_eq!(c.next().await.name(), "resumed");
    let p = c.next_matching(is_stanza).await;
    assert_eq!(p.child_text("show", ns::CLIENT).as_deref(), Some("away"));
    c.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    c.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    // The resumed stream is active: the next update is not held.
    alice.send(&show("dnd")).await;
    let p = c.next_matching(is_stanza).await;
    assert_eq!(p.child_text("show", ns::CLIENT).as_deref(), Some("dnd"));
}

/// At most `[csi] max_held` stanzas wait; one more lets them all out.
#[tokio::test]
async fn held_stanzas_are_bounded() {
    let server = TestServer::with_config(&[("csi", "max_held = 2")]);
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let (mut alice, mut bob) = friends(&server).await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    let mut others = Vec::new();
    for r in ["two", "three"] {
        let mut c = Client::login(&server, "alice", "pw", r).await;
        c.send(&show("away")).await;
        others.push(c);
    }
    let held = bob.none_within(Duration::from_millis(500), is_stanza).await;
    assert!(held.is_ok(), "two may wait: {held:?}");
    alice.send(&show("xa")).await;
    let mut from = Vec::new();
    for _ in 0..3 {
        let p = bob.next_matching(|e| e.name() == "presence").await;
        from.push(p.attr("from").unwrap_or_default().to_string());
    }
    assert_eq!(
        from,
        [
            "alice@localhost/two",
            "alice@localhost/three",
            "alice@localhost/desk"
        ]
    );
}
