//! Three nodes serving one domain: chat, presence, offline messages and
//! conflicts across nodes, and what a node's death or departure does.

mod common;
use common::client::Closed;
use common::cluster::{TestCluster, SESSION_TIMEOUT_MS};
use common::steps::{authenticated, befriend, body, enable_sm, presence_from};
use common::Client;
use std::time::{Duration, Instant};
use zkfire_xml::ns;

/// alice on node 1 and bob on node 2, available and subscribed to each other.
async fn friends_on_two_nodes(cluster: &TestCluster) -> (Client, Client) {
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    let mut b = Client::login(cluster.node(1), "bob", "pw", "b").await;
    a.available().await;
    b.available().await;
    befriend(&mut a, &mut b).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_presence_and_offline_across_nodes() {
    let cluster = TestCluster::start(3);
    cluster.wait_connected();
    let (mut a, mut b) = friends_on_two_nodes(&cluster).await;
    a.send("<message to='bob@localhost' type='chat'><body>from node 1</body></message>")
        .await;
    let m = b.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("from node 1"));
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    b.send("<message to='alice@localhost/a' type='chat'><body>from node 2</body></message>")
        .await;
    let m = a.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("from node 2"));
    // Presence changes cross nodes too.
    b.send("<presence><status>on node 2</status></presence>")
        .await;
    let p = a
        .next_matching(presence_from("bob@localhost/b", None))
        .await;
    assert_eq!(
        p.child_text("status", ns::CLIENT).as_deref(),
        Some("on node 2")
    );
    // Bob leaves; alice on node 1 sees it; a message waits offline and comes
    // to bob when he logs in on node 3.
    b.send("</stream:stream>").await;
    a.next_matching(presence_from("bob@localhost/b", Some("unavailable")))
        .await;
    a.send("<message to='bob@localhost' type='chat'><body>while away</body></message>")
        .await;
    a.iq(
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p",
    )
    .await;
    let mut b3 = Client::login(cluster.node(2), "bob", "pw", "b3").await;
    b3.send("<presence/>").await;
    // The stored message, and alice's presence (node 1 answers the probe), in any order.
    let alice_seen = presence_from("alice@localhost/a", None);
    let (mut message, mut presence) = (None, false);
    while message.is_none() || !presence {
        let e = b3
            .next_matching(|e| e.name() == "message" || alice_seen(e))
            .await;
        if e.name() == "message" {
            message = Some(e);
        } else {
            presence = true;
        }
    }
    let m = message.unwrap_or_else(|| unreachable!());
    assert_eq!(body(&m).as_deref(), Some("while away"));
    assert!(m.child("delay", ns::DELAY).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_user_on_two_nodes() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut b1 = Client::login(cluster.node(0), "bob", "pw", "one").await;
    let mut b2 = Client::login(cluster.node(1), "bob", "pw", "two").await;
    b1.send("<presence><priority>1</priority></presence>").await;
    b1.next_matching(presence_from("bob@localhost/one", None))
        .await;
    // Node 2 has heard of it before bob's second resource comes online.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b2.send("<presence><priority>5</priority></presence>").await;
    // Each resource sees the other's presence (RFC 6121 4.2.2).
    b1.next_matching(presence_from("bob@localhost/two", None))
        .await;
    b2.next_matching(presence_from("bob@localhost/one", None))
        .await;
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    a.send("<message to='bob@localhost' type='chat'><body>to the best</body></message>")
        .await;
    let m = b2.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("to the best"));
    let other = b1
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(other.is_ok(), "lower priority got it: {other:?}");
    // A roster change on one node is pushed to the resource on the other.
    b1.send("<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>").await;
    let push = b2
        .next_matching(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .await;
    assert!(push.child("query", ns::ROSTER).is_some());
    // The same full JID logging in on the other node replaces the older one.
    let _again = Client::login(cluster.node(0), "bob", "pw", "two").await;
    assert_eq!(b2.closed().await, Closed::Error("conflict".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_node_users_go_offline_for_their_contacts() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_connected();
    let (mut a, mut b) = friends_on_two_nodes(&cluster).await;
    // Carol, on the third node, is not in bob's roster: she sees him only
    // through directed presence, which his node would end if it lived.
    cluster.add_user("carol", "pw");
    let mut c = Client::login(cluster.node(2), "carol", "pw", "c").await;
    c.available().await;
    b.send("<presence to='carol@localhost/c'/>").await;
    c.next_matching(presence_from("bob@localhost/b", None))
        .await;
    let killed = Instant::now();
    cluster.node_mut(1).kill();
    a.next_matching(presence_from("bob@localhost/b", Some("unavailable")))
        .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(SESSION_TIMEOUT_MS + 2000),
        "unavailable presence after {took:?}"
    );
    c.next_matching(presence_from("bob@localhost/b", Some("unavailable")))
        .await;
    // Messages to bob now wait offline, and reach him on another node.
    a.send("<message to='bob@localhost' type='chat'><body>are you there</body></message>")
        .await;
    a.iq(
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p",
    )
    .await;
    let mut b3 = Client::login(cluster.node(2), "bob", "pw", "b3").await;
    b3.send("<presence/>").await;
    let m = b3.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("are you there"));
}

#[tokio::test(flavor = "multi_thread")]
async fn node_with_wrong_secret_is_refused() {
    let mut cluster = TestCluster::start(0);
    let digest = ("zookeeper", "digest = \"zkfire:zk-secret\"");
    let node = cluster.start_node_with_extra(0, &[digest]);
    cluster.nodes.push(Some(node));
    // Its ZooKeeper credentials come from the secret: ZooKeeper refuses it.
    let outsider = cluster.spawn_node(1, "not-the-cluster-secret!!", &[]);
    outsider.wait_log("refuses this node's credentials", Duration::from_secs(15));
    assert!(!outsider.log().contains("serving as a cluster member"));
    drop(outsider);
    // With the ZooKeeper credentials but not the secret, the bus refuses it.
    let intruder = cluster.spawn_node(1, "not-the-cluster-secret!!", &[digest]);
    cluster.nodes.push(Some(intruder));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cluster
        .node(0)
        .log()
        .contains("does not know the cluster secret")
    {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            cluster.node(0).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!cluster.node(0).log().contains("cluster peer connected"));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_is_a_clean_leave() {
    let mut cluster = TestCluster::start(2);
    cluster.wait_connected();
    let (mut a, mut b) = friends_on_two_nodes(&cluster).await;
    assert!(cluster.node_mut(1).stop(), "clean exit");
    // It deleted its znode on the way out: peers need not wait for a timeout.
    assert!(
        cluster.node(1).log().contains("left the cluster"),
        "{}",
        cluster.node(1).log()
    );
    a.next_matching(presence_from("bob@localhost/b", Some("unavailable")))
        .await;
    match b.closed().await {
        Closed::Error(c) => assert!(c == "see-other-host" || c == "system-shutdown", "{c}"),
        Closed::Clean => panic!("no stream error at shutdown"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_management_resumes_on_another_node() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut bob = Client::login(cluster.node(0), "bob", "pw", "phone").await;
    let previd = enable_sm(&mut bob).await;
    bob.available().await;
    let mut alice = Client::login(cluster.node(1), "alice", "pw", "desk").await;
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>one</body></message>")
        .await;
    assert_eq!(
        body(&bob.next_matching(|e| e.name() == "message").await).as_deref(),
        Some("one")
    );
    // Bob's connection to node 1 dies; meanwhile alice writes more.
    drop(bob);
    for i in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@localhost/phone' type='chat'><body>m{i}</body></message>"
            ))
            .await;
    }
    alice
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    // Bob comes back through node 2 and resumes the session node 1 held.
    let node2 = cluster.node(1);
    let mut c = authenticated(node2, "bob", "pw").await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='2'/>"
    ))
    .await;
    let resumed = c.next().await;
    assert_eq!(resumed.name(), "resumed", "{resumed:?}");
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = c.next_matching(|e| e.name() == "message").await;
        got.push(body(&m).unwrap_or_default());
    }
    assert_eq!(got, ["m0", "m1", "m2"]);
    let dup = c
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(dup.is_ok(), "a message came twice: {dup:?}");
    // The session lives on node 2 now: new messages and presence reach it there.
    alice
        .send("<message to='bob@localhost/phone' type='chat'><body>after</body></message>")
        .await;
    let m = c.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("after"));
}
