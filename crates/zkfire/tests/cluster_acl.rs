//! Who may touch the cluster's znodes in ZooKeeper, and what a node does
//! when its membership znode is taken away from it.

mod common;
use common::client::Closed;
use common::cluster::{TestCluster, SESSION_TIMEOUT_MS};
use common::steps::body;
use common::Client;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

async fn anonymous(cluster: &TestCluster) -> zk::Client {
    zk::Client::connect(&cluster.zk.connect_string())
        .await
        .expect("connect to ZooKeeper")
}

/// Sends a chat message and checks the recipient's online session gets it
/// at once (a message stored offline would not arrive).
async fn chat(from: &mut Client, to: &mut Client, to_jid: &str, text: &str) {
    from.send(&format!(
        "<message to='{to_jid}' type='chat'><body>{text}</body></message>"
    ))
    .await;
    let m = tokio::time::timeout(
        Duration::from_secs(3),
        to.next_matching(|e| e.name() == "message"),
    )
    .await
    .unwrap_or_else(|_| panic!("'{text}' was not delivered online"));
    assert_eq!(body(&m).as_deref(), Some(text));
}

/// Waits until node `i`'s log says it serves as a member `n` times.
fn wait_joined(cluster: &TestCluster, i: usize, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while cluster
        .node(i)
        .log()
        .matches("serving as a cluster member")
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "node {} did not join again:\n{}",
            i + 1,
            cluster.node(i).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_znode_is_deleted_fences_itself_and_rejoins() {
    // Znodes left open, as an earlier zkfire without [zookeeper] digest
    // created them: anyone can delete a member.
    let mut cluster = TestCluster::start(0);
    let zk = anonymous(&cluster).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    zk.mkdir(&format!("{}/nodes", cluster.root), &open)
        .await
        .expect("create the open znodes");
    for i in 0..2 {
        let node = cluster.start_node_with(i, common::cluster::SECRET);
        cluster.nodes.push(Some(node));
    }
    cluster.wait_mesh(Duration::from_secs(20));
    // Each node says loudly that the cluster is open.
    for i in 0..2 {
        let log = cluster.node(i).log();
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains("without ACLs")),
            "{log}"
        );
    }
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    let mut b = Client::login(cluster.node(1), "bob", "pw", "b").await;
    a.available().await;
    b.available().await;
    chat(&mut a, &mut b, "bob@localhost", "before").await;

    let own = format!("{}/nodes/n1", cluster.root);
    let (_, before) = zk.get_data(&own).await.expect("n1 is a member");
    zk.delete(&own, None).await.expect("anyone may delete it");

    // Node 1 is no member now: its peers dropped its users, so it must not
    // keep serving them as if nothing happened. It closes their streams...
    let closed = tokio::time::timeout(Duration::from_secs(5), a.closed())
        .await
        .expect("node 1 closes its clients");
    if let Closed::Error(c) = closed {
        assert!(c == "see-other-host" || c == "system-shutdown", "{c}");
    }
    // ...and joins again, as a new incarnation.
    wait_joined(
        &cluster,
        0,
        2,
        Duration::from_millis(SESSION_TIMEOUT_MS + 5000),
    );
    assert!(cluster.node(0).log().contains("lost its membership znode"));
    let (_, after) = zk.get_data(&own).await.expect("n1 is a member again");
    assert_ne!(after.czxid, before.czxid, "a new incarnation");
    cluster.wait_mesh(Duration::from_secs(10));

    let mut a = Client::login(cluster.node(0), "alice", "pw", "a2").await;
    a.available().await;
    chat(&mut a, &mut b, "bob@localhost", "after, to node 2").await;
    chat(&mut b, &mut a, "alice@localhost", "after, to node 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_digest_the_znodes_are_still_closed_to_strangers() {
    // No [zookeeper] digest in the config: the credentials come from the
    // cluster secret.
    let cluster = TestCluster::start(2);
    cluster.wait_mesh(Duration::from_secs(20));
    let zk = anonymous(&cluster).await;
    let nodes = format!("{}/nodes", cluster.root);
    let own = format!("{nodes}/n1");
    assert_eq!(zk.delete(&own, None).await, Err(zk::Error::NoAuth));
    assert!(matches!(zk.get_data(&own).await, Err(zk::Error::NoAuth)));
    let fake = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    assert!(matches!(
        zk.create(&format!("{nodes}/intruder"), b"{}", &fake).await,
        Err(zk::Error::NoAuth)
    ));
    // The nodes and `zkfire cluster status` still see the members.
    let out = cluster.node(1).cli(&["cluster", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 member(s)"), "{text}");
    assert!(!cluster.node(0).log().contains("without ACLs"));
}
