//! What becomes of the stanzas a stream-management session held when it
//! ends without its client acknowledging them: each message is delivered at
//! most once more, never fanned out again, never to a session that is itself
//! waiting for resumption, and its queue is bounded in bytes.

mod common;
use common::cluster::TestCluster;
use common::steps::{authenticated, body, enable_sm, send_numbered};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::ns;

fn is_message(e: &zkfire_xml::Element) -> bool {
    e.name() == "message"
}

/// Logs bob in as `resource` with resumable stream management, available at
/// `priority`.
async fn resumable_bob(server: &TestServer, resource: &str, priority: i8) -> Client {
    let mut c = Client::login(server, "bob", "pw", resource).await;
    enable_sm(&mut c).await;
    c.send(&format!(
        "<presence><priority>{priority}</priority></presence>"
    ))
    .await;
    let own = c.jid.clone();
    c.next_matching(|e| e.name() == "presence" && e.attr("from") == Some(own.as_str()))
        .await;
    c
}

/// Every message bob's new login finds waiting within a second.
async fn messages_at_next_login(server: &TestServer, resource: &str) -> Vec<String> {
    let mut bob = Client::login(server, "bob", "pw", resource).await;
    bob.send("<presence/>").await;
    let mut got = Vec::new();
    while let Err(m) = bob
        .none_within(Duration::from_millis(1500), is_message)
        .await
    {
        got.push(body(&m).unwrap_or_default());
    }
    got
}

fn two_users(extra: &[(&str, &str)]) -> TestServer {
    let server = TestServer::with_config(extra);
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    server
}

/// The review's exponential case: one message to the bare JID of an
/// account with several resumable sessions that all drop off. Each copy
/// used to be rerouted to every other waiting session, doubling at every
/// expiry (6 sessions gave 32 copies).
#[tokio::test]
async fn expiring_sessions_do_not_multiply_a_message() {
    let server = two_users(&[("stream_management", "resume_timeout_secs = 2")]);
    let mut phones = Vec::new();
    for i in 0..6 {
        phones.push(resumable_bob(&server, &format!("phone{i}"), 0).await);
    }
    one_message_to_expiring_sessions(&server, phones).await;
    let got = messages_at_next_login(&server, "laptop").await;
    assert_eq!(got, ["once"], "the message must wait exactly once");
}

/// Reads until the first message, counting the stanzas (for `<a h=.../>`).
async fn stanzas_until_message(c: &mut Client) -> u32 {
    let mut n = 0;
    loop {
        let e = c.next().await;
        if matches!(e.name(), "message" | "presence" | "iq") {
            n += 1;
        }
        if is_message(&e) {
            return n;
        }
    }
}

/// A copy that one of the chosen resources still holds on a live
/// connection is not rerouted when another copy's session expires; once
/// that resource acknowledged it, it is not rerouted at all.
#[tokio::test]
async fn copy_of_a_connected_resource_is_not_rerouted() {
    let server = two_users(&[("stream_management", "resume_timeout_secs = 1")]);
    let mut phone = resumable_bob(&server, "phone", 5).await;
    let mut tablet = Client::login(&server, "bob", "pw", "tablet").await;
    enable_sm(&mut tablet).await;
    tablet
        .send("<presence><priority>5</priority></presence>")
        .await;
    let mut laptop = Client::login(&server, "bob", "pw", "laptop").await;
    laptop.available().await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>tie</body></message>")
        .await;
    phone.next_matching(is_message).await;
    let h = stanzas_until_message(&mut tablet).await;
    drop(phone);
    // The phone's session expires; the tablet holds its copy, connected.
    let stray = laptop
        .none_within(Duration::from_millis(2500), is_message)
        .await;
    assert!(
        stray.is_ok(),
        "rerouted although the tablet has it: {stray:?}"
    );
    // The tablet acknowledges and leaves; nothing was stored either.
    tablet
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
        .await;
    tablet.send("</stream:stream>").await;
    tablet.closed().await;
    drop(laptop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(messages_at_next_login(&server, "other").await.is_empty());
}

/// The last holder of a copy, when nobody acknowledged it, reroutes it to
/// a connected resource, not to another session waiting for resumption
/// (even one of higher priority).
#[tokio::test]
async fn reroute_prefers_a_connected_resource_over_a_waiting_one() {
    let server = two_users(&[("stream_management", "resume_timeout_secs = 3")]);
    let mut phone = resumable_bob(&server, "phone", 5).await;
    let mut waiting = Client::login(&server, "bob", "pw", "waiting").await;
    let waiting_id = enable_sm(&mut waiting).await;
    waiting
        .send("<presence><priority>1</priority></presence>")
        .await;
    let mut laptop = Client::login(&server, "bob", "pw", "laptop").await;
    laptop
        .send("<presence><priority>0</priority></presence>")
        .await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>hop</body></message>")
        .await;
    phone.next_matching(is_message).await;
    let start = tokio::time::Instant::now();
    drop(phone);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Waits for resumption until 4.5 s; the phone's copy comes free at 3 s.
    drop(waiting);
    tokio::time::sleep_until(start + Duration::from_millis(3600)).await;
    let mut c = authenticated(&server, "bob", "pw").await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{waiting_id}' h='0'/>"
    ))
    .await;
    assert_eq!(c.next().await.name(), "resumed");
    let to_waiting = c.none_within(Duration::from_millis(500), is_message).await;
    assert!(
        to_waiting.is_ok(),
        "rerouted to a waiting session: {to_waiting:?}"
    );
    let m = laptop.next_matching(is_message).await;
    assert_eq!(body(&m).as_deref(), Some("hop"));
    let again = laptop
        .none_within(Duration::from_millis(1000), is_message)
        .await;
    assert!(again.is_ok(), "delivered twice: {again:?}");
}

/// A client that never acknowledges is closed at `max_unacked`; the copies
/// it held of messages that another resource took are not delivered again.
#[tokio::test]
async fn session_closed_at_max_unacked_does_not_duplicate() {
    let server = two_users(&[("stream_management", "max_unacked = 5")]);
    let mut phone = resumable_bob(&server, "phone", 0).await;
    let mut desktop = Client::login(&server, "bob", "pw", "desktop").await;
    desktop.available().await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    send_numbered(&mut alice, 10).await;
    match phone.closed().await {
        common::client::Closed::Error(c) => assert_eq!(c, "policy-violation"),
        other => panic!("{other:?}"),
    }
    let mut got = Vec::new();
    while let Err(m) = desktop
        .none_within(Duration::from_millis(1500), is_message)
        .await
    {
        got.push(body(&m).unwrap_or_default());
    }
    let want: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    assert_eq!(got, want, "each message once on the desktop");
    drop(desktop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(messages_at_next_login(&server, "laptop").await.is_empty());
}

/// XEP-0198 section 5: a client must not resume after binding; the server
/// answers `<failed/>` instead of ignoring it.
#[tokio::test]
async fn resume_after_bind_fails() {
    let server = two_users(&[]);
    let mut a = Client::login(&server, "bob", "pw", "a").await;
    let id = enable_sm(&mut a).await;
    a.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
    ))
    .await;
    let failed = a.next_matching(|e| e.ns() == ns::SM).await;
    assert_eq!(failed.name(), "failed", "{failed:?}");
    assert!(failed
        .child("unexpected-request", ns::STANZA_ERRORS)
        .is_some());
    // The session goes on.
    let pong = a
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
}

fn big_message(i: usize) -> String {
    format!(
        "<message to='bob@localhost/phone' type='chat'><body>{i}:{}</body></message>",
        "x".repeat(8000)
    )
}

/// A waiting session keeps at most `max_unacked_bytes` for its client: past
/// that it ends, and what it held waits in offline storage.
#[tokio::test]
async fn waiting_session_is_bounded_in_bytes() {
    let server = two_users(&[
        ("c2s", "max_stanza_bytes = 10000"),
        ("stream_management", "resume_timeout_secs = 60"),
        ("stream_management", "max_unacked_bytes = 20000"),
    ]);
    let phone = resumable_bob(&server, "phone", 0).await;
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    for i in 0..5 {
        alice.send(&big_message(i)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = messages_at_next_login(&server, "laptop").await;
    let firsts: Vec<&str> = got
        .iter()
        .map(|b| b.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(firsts, ["0", "1", "2", "3", "4"], "every message, in order");
    assert!(server.log().contains("unacknowledged bytes"), "logged");
}

/// A connected client that does not acknowledge `max_unacked_bytes` is
/// closed, and nothing it held is lost.
#[tokio::test]
async fn connected_session_is_bounded_in_bytes() {
    let server = two_users(&[
        ("c2s", "max_stanza_bytes = 10000"),
        ("stream_management", "max_unacked_bytes = 20000"),
    ]);
    let mut phone = resumable_bob(&server, "phone", 0).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    for i in 0..5 {
        alice.send(&big_message(i)).await;
    }
    match phone.closed().await {
        common::client::Closed::Error(c) => assert_eq!(c, "policy-violation"),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = messages_at_next_login(&server, "laptop").await;
    let firsts: Vec<&str> = got
        .iter()
        .map(|b| b.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(firsts, ["0", "1", "2", "3", "4"]);
}

/// The same bound across all of an account's waiting sessions: past it,
/// the session that would go over ends, and its copies, which the other
/// sessions still hold, are not stored again.
#[tokio::test]
async fn waiting_sessions_of_one_account_are_bounded_together() {
    let server = two_users(&[
        ("c2s", "max_stanza_bytes = 10000"),
        ("stream_management", "resume_timeout_secs = 60"),
        ("stream_management", "max_unacked_bytes = 100000"),
        (
            "stream_management",
            "max_detached_bytes_per_account = 30000",
        ),
    ]);
    let mut ids = Vec::new();
    for r in ["p1", "p2", "p3"] {
        let mut c = Client::login(&server, "bob", "pw", r).await;
        ids.push(enable_sm(&mut c).await);
        c.available().await;
        drop(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut alice = Client::login(&server, "alice", "pw", "desk").await;
    for i in 0..2 {
        // Each message goes to all three waiting sessions: 3 x 2 x 8 KB
        // would be 48 KB against the account's 30 KB.
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat'><body>{i}:{}</body></message>",
                "y".repeat(8000)
            ))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut resumed = Vec::new();
    for id in &ids {
        let mut c = authenticated(&server, "bob", "pw").await;
        c.send(&format!(
            "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
        ))
        .await;
        if c.next().await.name() == "resumed" {
            let mut got = Vec::new();
            while let Err(m) = c.none_within(Duration::from_millis(500), is_message).await {
                got.push(body(&m).unwrap_or_default()[..1].to_string());
            }
            resumed.push(got);
        }
    }
    assert!(
        !resumed.is_empty() && resumed.len() < 3,
        "{} resumable",
        resumed.len()
    );
    for got in &resumed {
        assert_eq!(got, &["0", "1"], "a session kept within the bound has both");
    }
    assert!(messages_at_next_login(&server, "laptop").await.is_empty());
}

/// Two cluster nodes whose sessions wait two seconds for resumption.
fn cluster_of_two() -> TestCluster {
    let mut cluster = TestCluster::start(0);
    for i in 0..2 {
        let node =
            cluster.start_node_with_extra(i, &[("stream_management", "resume_timeout_secs = 2")]);
        cluster.nodes.push(Some(node));
    }
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    cluster
}

/// Sends one message from alice on `sender` to bob's sessions, each of
/// which reads it; then they drop off one after another and expire.
async fn one_message_to_expiring_sessions(sender: &TestServer, mut phones: Vec<Client>) {
    let mut alice = Client::login(sender, "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>once</body></message>")
        .await;
    for p in phones.iter_mut() {
        let m = p.next_matching(is_message).await;
        assert_eq!(body(&m).as_deref(), Some("once"));
    }
    for p in phones.drain(..) {
        drop(p);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let bounced = alice
        .none_within(Duration::from_millis(300), is_message)
        .await;
    assert!(bounced.is_ok(), "the sender got an error: {bounced:?}");
}

/// The copies that one node sent to several sessions of another node are
/// counted together there: one message waits, not one per session.
#[tokio::test]
async fn expiring_sessions_on_another_node_do_not_multiply_a_message() {
    let cluster = cluster_of_two();
    let mut phones = Vec::new();
    for i in 0..4 {
        phones.push(resumable_bob(cluster.node(1), &format!("phone{i}"), 0).await);
    }
    one_message_to_expiring_sessions(cluster.node(0), phones).await;
    let got = messages_at_next_login(cluster.node(0), "laptop").await;
    assert_eq!(got, ["once"]);
}

/// With the account's sessions spread over both nodes, the node that fanned
/// the message out counts the other as one holder until it reports: one
/// copy waits in the whole cluster.
#[tokio::test]
async fn expiring_sessions_on_two_nodes_leave_one_copy() {
    let cluster = cluster_of_two();
    let mut phones = Vec::new();
    for i in 0..4 {
        phones.push(resumable_bob(cluster.node(i % 2), &format!("phone{i}"), 0).await);
    }
    one_message_to_expiring_sessions(cluster.node(0), phones).await;
    let got = messages_at_next_login(cluster.node(1), "laptop").await;
    assert_eq!(got, ["once"]);
}

/// The node holding the only copies dies before any client acknowledged
/// them: the node that fanned the message out lets go of that node's share
/// when it leaves, and reroutes the message once.
#[tokio::test]
async fn copies_lost_with_a_dead_node_are_rerouted_once() {
    let mut cluster = cluster_of_two();
    let mut phones = Vec::new();
    for i in 0..3 {
        phones.push(resumable_bob(cluster.node(1), &format!("phone{i}"), 0).await);
    }
    let mut alice = Client::login(cluster.node(0), "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>once</body></message>")
        .await;
    for p in phones.iter_mut() {
        p.next_matching(is_message).await;
    }
    cluster.node_mut(1).kill();
    // Node 2's membership ends with its ZooKeeper session.
    tokio::time::sleep(Duration::from_millis(
        common::cluster::SESSION_TIMEOUT_MS + 2000,
    ))
    .await;
    let got = messages_at_next_login(cluster.node(0), "laptop").await;
    assert_eq!(got, ["once"]);
}
