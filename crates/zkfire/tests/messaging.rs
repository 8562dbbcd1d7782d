//! Chat, presence and roster between two accounts, and offline messages.

mod common;
use common::{Client, TestServer};
use zkfire_xml::ns;

async fn pair(server: &TestServer) -> (Client, Client) {
    server.add_user("alice", "a-pass");
    server.add_user("bob", "b-pass");
    let a = Client::login(server, "alice", "a-pass", "a1").await;
    let b = Client::login(server, "bob", "b-pass", "b1").await;
    (a, b)
}

fn is_message(e: &zkfire_xml::Element) -> bool {
    e.name() == "message"
}

#[tokio::test]
async fn chat_to_full_and_bare_jid_with_stamped_from() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;
    a.available().await;
    b.available().await;
    // A forged `from` is replaced by the server.
    a.send("<message to='bob@localhost/b1' from='mallory@localhost/x' type='chat' id='m1'><body>hi bob</body></message>").await;
    let m = b.next_matching(is_message).await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a1"));
    assert_eq!(m.child_text("body", ns::CLIENT).as_deref(), Some("hi bob"));
    b.send("<message to='alice@localhost' type='chat'><body>hi alice</body></message>")
        .await;
    let m = a.next_matching(is_message).await;
    assert_eq!(m.attr("from"), Some("bob@localhost/b1"));
    assert_eq!(
        m.child_text("body", ns::CLIENT).as_deref(),
        Some("hi alice")
    );
}

#[tokio::test]
async fn subscription_and_presence_both_ways() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;
    a.available().await;
    b.available().await;
    a.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let req = b.next_matching(|e| e.name() == "presence").await;
    assert_eq!(req.attr("type"), Some("subscribe"));
    assert_eq!(req.attr("from"), Some("alice@localhost"));
    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    // Alice gets the approval and bob's current presence.
    let sub = a
        .next_matching(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(sub.attr("from"), Some("bob@localhost"));
    a.next_matching(|e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("bob@localhost/b1")
    })
    .await;
    let roster = a
        .iq(
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
            "r1",
        )
        .await;
    let item = roster
        .child("query", ns::ROSTER)
        .and_then(|q| q.child("item", ns::ROSTER))
        .expect("item");
    assert_eq!(item.attr("jid"), Some("bob@localhost"));
    assert_eq!(item.attr("subscription"), Some("to"));
    // Bob changes presence: alice sees it; bob does not see alice's (no subscription).
    b.send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let p = a
        .next_matching(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/b1"))
        .await;
    assert_eq!(p.child_text("status", ns::CLIENT).as_deref(), Some("lunch"));
    a.send("<presence><status>here</status></presence>").await;
    let leaked = b
        .none_within(std::time::Duration::from_millis(500), |e| {
            e.name() == "presence" && e.attr("from") == Some("alice@localhost/a1")
        })
        .await;
    assert!(
        leaked.is_ok(),
        "presence reached a contact without subscription: {leaked:?}"
    );
}

#[tokio::test]
async fn offline_message_is_delivered_with_delay() {
    let server = TestServer::start();
    server.add_user("alice", "a-pass");
    server.add_user("bob", "b-pass");
    let mut a = Client::login(&server, "alice", "a-pass", "a1").await;
    a.send("<message to='bob@localhost' type='chat' id='off1'><body>while you were out</body></message>").await;
    // Make sure the message was processed before bob logs in.
    a.iq(
        "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p1",
    )
    .await;
    let mut b = Client::login(&server, "bob", "b-pass", "b1").await;
    b.send("<presence/>").await;
    let m = b.next_matching(is_message).await;
    assert_eq!(
        m.child_text("body", ns::CLIENT).as_deref(),
        Some("while you were out")
    );
    let delay = m.child("delay", ns::DELAY).expect("delay stamp");
    assert_eq!(delay.attr("from"), Some("localhost"));
    assert!(delay.attr("stamp").is_some_and(|s| s.ends_with('Z')));
}

#[tokio::test]
async fn unknown_iq_to_server_is_service_unavailable() {
    let server = TestServer::start();
    server.add_user("alice", "a-pass");
    let mut a = Client::login(&server, "alice", "a-pass", "a1").await;
    let r = a
        .iq(
            "<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>",
            "u1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    let err = r.child("error", ns::CLIENT).expect("error");
    assert!(
        err.child("service-unavailable", ns::STANZA_ERRORS)
            .is_some(),
        "{r:?}"
    );
}
