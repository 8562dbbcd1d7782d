//! Stream management (XEP-0198): acks, resumption after a cut connection,
//! and no lost message when a session is not resumed.

mod common;
use common::steps::{authenticated, body, enable_sm, send_numbered};
use common::{Client, TestServer};
use zkfire_xml::ns;

#[tokio::test]
async fn ack_counts_handled_stanzas() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    enable_sm(&mut a).await;
    a.send("<presence/>").await;
    a.iq(
        "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p1",
    )
    .await;
    a.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let ack = a.next_matching(|e| e.is("a", ns::SM)).await;
    assert_eq!(ack.attr("h"), Some("2"));
}

#[tokio::test]
async fn resumption_after_cut_connection_delivers_everything_once() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut bob = Client::login(&server, "bob", "pw", "phone").await;
    let id = enable_sm(&mut bob).await;
    bob.available().await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>one</body></message>")
        .await;
    let first = bob.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&first).as_deref(), Some("one"));
    // Bob's connection dies without a word; he has handled 0 stanzas so far
    // by his own count except what he acknowledges at resumption.
    drop(bob);
    for i in 0..5 {
        alice
            .send(&format!(
                "<message to='bob@localhost/phone' type='chat'><body>m{i}</body></message>"
            ))
            .await;
    }
    alice
        .iq(
            "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await;

    let mut c = authenticated(&server, "bob", "pw").await;
    // Bob says he received two stanzas (his own presence and "one").
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='2'/>"
    ))
    .await;
    let resumed = c.next().await;
    assert_eq!(resumed.name(), "resumed", "{resumed:?}");
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = c.next_matching(|e| e.name() == "message").await;
        got.push(body(&m).unwrap_or_default());
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    let dup = c
        .none_within(std::time::Duration::from_millis(300), |e| {
            e.name() == "message"
        })
        .await;
    assert!(dup.is_ok(), "a message came twice: {dup:?}");
    // The resumed session is fully alive.
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>after</body></message>")
        .await;
    let m = c.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("after"));
}

#[tokio::test]
async fn unacknowledged_messages_go_offline_when_session_ends() {
    let server = TestServer::with_config(&[("stream_management", "resume_timeout_secs = 1")]);
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut bob = Client::login(&server, "bob", "pw", "phone").await;
    enable_sm(&mut bob).await;
    bob.available().await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>unacked</body></message>")
        .await;
    bob.next_matching(|e| e.name() == "message").await;
    // Cut without acknowledging; the session times out after one second.
    drop(bob);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let mut bob = Client::login(&server, "bob", "pw", "laptop").await;
    bob.send("<presence/>").await;
    let m = bob.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("unacked"));
    assert!(
        m.child("delay", ns::DELAY).is_some(),
        "stored offline, so stamped"
    );
}

#[tokio::test]
async fn resume_of_unknown_session_fails_and_bind_still_works() {
    let server = TestServer::start();
    server.add_user("bob", "pw");
    let mut c = authenticated(&server, "bob", "pw").await;
    c.send("<resume xmlns='urn:xmpp:sm:3' previd='nope' h='0'/>")
        .await;
    let failed = c.next().await;
    assert_eq!(failed.name(), "failed");
    assert!(failed.child("item-not-found", ns::STANZA_ERRORS).is_some());
    assert!(c.bind(Some("x")).await.ends_with("/x"));
}

#[tokio::test]
async fn client_that_never_acknowledges_is_closed_and_nothing_is_lost() {
    let server = TestServer::with_config(&[("stream_management", "max_unacked = 5")]);
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut bob = Client::login(&server, "bob", "pw", "phone").await;
    enable_sm(&mut bob).await;
    bob.available().await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    send_numbered(&mut alice, 10).await;
    // Bob reads but never answers <r/>: the server gives up on him.
    match bob.closed().await {
        common::client::Closed::Error(c) => assert_eq!(c, "policy-violation"),
        other => panic!("{other:?}"),
    }
    alice
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    // Every message bob did not acknowledge is waiting for him.
    let mut bob = Client::login(&server, "bob", "pw", "laptop").await;
    bob.send("<presence/>").await;
    let mut got = Vec::new();
    while got.len() < 10 {
        let m = bob.next_matching(|e| e.name() == "message").await;
        got.push(body(&m).unwrap_or_default());
    }
    let want: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    assert_eq!(got, want);
}
