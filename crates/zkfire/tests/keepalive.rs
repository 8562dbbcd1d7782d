//! Keepalives: the server pings silent clients (XEP-0199) and drops those
//! that do not answer; whitespace from the client counts as being alive.

mod common;
use common::client::Closed;
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::ns;

fn quick_pings() -> TestServer {
    TestServer::with_config(&[
        ("limits", "ping_after_secs = 1"),
        ("limits", "ping_timeout_secs = 1"),
    ])
}

#[tokio::test]
async fn silent_client_is_pinged_and_answering_keeps_it() {
    let server = quick_pings();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let ping = a.next_matching(|e| e.name() == "iq").await;
    assert!(ping.child("ping", ns::PING).is_some(), "{ping:?}");
    assert_eq!(ping.attr("from"), Some("localhost"));
    let id = ping.attr("id").unwrap_or_default().to_string();
    a.send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
        .await;
    // Still connected well after the timeout would have struck.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = a
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn client_that_does_not_answer_is_dropped() {
    let server = quick_pings();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    assert_eq!(a.closed().await, Closed::Error("connection-timeout".into()));
}

#[tokio::test]
async fn whitespace_keepalives_count_as_activity() {
    let server = quick_pings();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    for _ in 0..6 {
        a.send(" ").await;
        let ping = a
            .none_within(Duration::from_millis(500), |e| e.name() == "iq")
            .await;
        assert!(ping.is_ok(), "pinged despite keepalives: {ping:?}");
    }
}
