//! What an account may keep on the server is bounded, and offline messages
//! carry the server's own delay stamp, whatever the sender put in them.

mod common;
use common::steps::is_result;
use common::{Client, TestServer};
use std::time::{Duration, SystemTime};
use zkfire_xml::{ns, Element};

/// XEP-0203: the delay the recipient sees from the server's domain is the
/// server's, stamped when the message was stored, never the sender's.
#[tokio::test]
async fn offline_message_has_the_server_delay_only() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let sent_at = SystemTime::now() - Duration::from_secs(1);
    a.send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='2001-01-01T00:00:00Z'/><x xmlns='jabber:x:delay' from='localhost' stamp='20010101T00:00:00'/></message>")
        .await;
    let r = a
        .iq(
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert!(is_result(&r));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut b = Client::login(&server, "bob", "pw", "b").await;
    b.send("<presence/>").await;
    let m = b
        .next_matching(|e| e.name() == "message" && e.attr("id") == Some("m1"))
        .await;
    let received_at = SystemTime::now() + Duration::from_secs(1);
    let ours: Vec<&Element> = m
        .children()
        .filter(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some("localhost"))
        .collect();
    assert_eq!(ours.len(), 1, "{m:?}");
    let stamp = humantime::parse_rfc3339(ours[0].attr("stamp").unwrap_or_default()).expect("stamp");
    assert!(sent_at <= stamp && stamp <= received_at, "{m:?}");
    assert!(m.child("x", "jabber:x:delay").is_none(), "{m:?}");
}
