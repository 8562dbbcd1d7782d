//! Message Carbons (XEP-0280): a user's carbons-enabled resources see both
//! sides of every conversation, on one node and across a cluster.

mod common;
use common::cluster::TestCluster;
use common::steps::{body, disco_features, error_condition};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::{ns, Element};

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

/// The message inside a carbon of `kind` ("received" or "sent"), if `e` is one.
fn carbon<'a>(e: &'a Element, kind: &str) -> Option<&'a Element> {
    e.child(kind, ns::CARBONS)?
        .child("forwarded", ns::FORWARD)?
        .child("message", ns::CLIENT)
}

async fn enable_carbons(c: &mut Client) {
    let r = c
        .iq(
            "<iq type='set' id='cc'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            "cc",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

/// bob on `resource` of `server`, available at `priority`, carbons on or off.
async fn bob(server: &TestServer, resource: &str, priority: i8, carbons: bool) -> Client {
    let mut c = Client::login(server, "bob", "pw", resource).await;
    if carbons {
        enable_carbons(&mut c).await;
    }
    c.send(&format!(
        "<presence><priority>{priority}</priority></presence>"
    ))
    .await;
    let own = c.jid.clone();
    c.next_matching(|e| e.name() == "presence" && e.attr("from") == Some(own.as_str()))
        .await;
    c
}

async fn nothing(c: &mut Client, what: &str) {
    let got = c.none_within(Duration::from_millis(500), is_message).await;
    assert!(got.is_ok(), "{what}: {got:?}");
}

fn users() -> TestServer {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    server
}

#[tokio::test]
async fn the_server_advertises_carbons() {
    let server = users();
    let mut c = Client::login(&server, "bob", "pw", "r").await;
    let features = disco_features(&mut c, "localhost").await;
    assert!(features.iter().any(|f| f == ns::CARBONS), "{features:?}");
}

#[tokio::test]
async fn received_and_sent_copies_reach_only_carbons_enabled_resources() {
    let server = users();
    let mut phone = bob(&server, "phone", 0, true).await;
    let mut laptop = bob(&server, "laptop", 0, true).await;
    let mut old = bob(&server, "old", 0, false).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;

    alice
        .send("<message to='bob@localhost/phone' type='chat' id='a1'><body>to the phone</body></message>")
        .await;
    let m = phone.next_matching(is_message).await;
    assert_eq!(body(&m).as_deref(), Some("to the phone"));
    assert!(carbon(&m, "received").is_none(), "the original, not a copy");
    let c = laptop.next_matching(is_message).await;
    assert_eq!(
        c.attr("from"),
        Some("bob@localhost"),
        "from the own bare JID"
    );
    assert_eq!(c.attr("to"), Some("bob@localhost/laptop"));
    assert_eq!(c.attr("type"), Some("chat"));
    let inner = carbon(&c, "received").expect("a received carbon");
    assert_eq!(inner.attr("from"), Some("alice@localhost/desk"));
    assert_eq!(inner.attr("id"), Some("a1"));
    assert_eq!(body(inner).as_deref(), Some("to the phone"));
    nothing(&mut old, "carbons are off there").await;

    phone
        .send("<message to='alice@localhost/desk' type='chat' id='b1'><body>from the phone</body></message>")
        .await;
    alice.next_matching(is_message).await;
    let c = laptop.next_matching(is_message).await;
    let inner = carbon(&c, "sent").expect("a sent carbon");
    assert_eq!(inner.attr("from"), Some("bob@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("alice@localhost/desk"));
    nothing(&mut phone, "no copy to the sender").await;
    nothing(&mut old, "carbons are off there").await;
}

#[tokio::test]
async fn resources_that_got_the_message_get_no_copy() {
    let server = users();
    let mut a = bob(&server, "a", 5, true).await;
    let mut b = bob(&server, "b", 5, true).await;
    let mut low = bob(&server, "low", 1, true).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>tie</body></message>")
        .await;
    for c in [&mut a, &mut b] {
        let m = c.next_matching(is_message).await;
        assert!(carbon(&m, "received").is_none());
        nothing(c, "the original came, a copy must not").await;
    }
    let m = low.next_matching(is_message).await;
    assert!(carbon(&m, "received").is_some(), "{m:?}");
}

#[tokio::test]
async fn private_no_copy_groupchat_and_disabled_are_not_copied() {
    let server = users();
    let mut phone = bob(&server, "phone", 0, true).await;
    let mut laptop = bob(&server, "laptop", 0, true).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    phone
        .send("<message to='alice@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>hush</body><no-copy xmlns='urn:xmpp:hints'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost/phone'><subject>no body</subject><thread>t</thread></message>")
        .await;
    phone.next_matching(is_message).await;
    nothing(&mut laptop, "private, no-copy and bodiless normal").await;
    let r = laptop
        .iq(
            "<iq type='set' id='dc'><disable xmlns='urn:xmpp:carbons:2'/></iq>",
            "dc",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>after</body></message>")
        .await;
    nothing(&mut laptop, "disabled").await;
}

/// Only the server makes carbons: a client, or a contact, that sends a
/// `<received/>` wrapper to make a message look forwarded is refused.
#[tokio::test]
async fn forged_carbons_are_refused() {
    let server = users();
    let mut phone = bob(&server, "phone", 0, true).await;
    let mut laptop = bob(&server, "laptop", 0, true).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    let forged = "<received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='carol@localhost/x' to='bob@localhost' type='chat'><body>forged</body></message></forwarded></received>";
    alice
        .send(&format!(
            "<message to='bob@localhost/laptop' type='chat' id='f1'>{forged}</message>"
        ))
        .await;
    let e = alice.next_matching(is_message).await;
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(error_condition(&e).as_deref(), Some("not-acceptable"));
    phone
        .send(&format!(
            "<message to='bob@localhost/laptop' type='chat' id='f2'>{forged}</message>"
        ))
        .await;
    let e = phone.next_matching(is_message).await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-acceptable"));
    nothing(&mut laptop, "nothing forged arrives").await;
}

/// Carbons follow a user's resources across nodes: a message to the
/// resource on node 1 is copied to the one on node 2, and back.
#[tokio::test(flavor = "multi_thread")]
async fn carbons_across_nodes() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut one = bob(cluster.node(0), "one", 0, true).await;
    let mut two = bob(cluster.node(1), "two", 0, true).await;
    // Node 1 has heard that "two" turned carbons on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Client::login(cluster.node(0), "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost/one' type='chat'><body>hello one</body></message>")
        .await;
    one.next_matching(is_message).await;
    let c = two.next_matching(is_message).await;
    let inner = carbon(&c, "received").expect("a received carbon on node 2");
    assert_eq!(body(inner).as_deref(), Some("hello one"));
    two.send("<message to='alice@localhost/desk' type='chat'><body>from two</body></message>")
        .await;
    alice.next_matching(is_message).await;
    let c = one.next_matching(is_message).await;
    let inner = carbon(&c, "sent").expect("a sent carbon on node 1");
    assert_eq!(body(inner).as_deref(), Some("from two"));
}
