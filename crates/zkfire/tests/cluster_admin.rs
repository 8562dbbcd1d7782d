//! Running a cluster: `zkfire cluster status`, three nodes that run their
//! own ZooKeeper ensemble, caches that stay coherent, and where clients of a
//! stopping node are sent.

mod common;
use common::client::Closed;
use common::cluster::{TestCluster, SECRET};
use common::steps::error_condition;
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_testkit::ports::free_port;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_status_lists_members_and_fails_without_zookeeper() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    let _a = Client::login(cluster.node(1), "alice", "pw", "a").await;
    let out = cluster.node(0).cli(&["cluster", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("2 member(s)"), "{text}");
    assert!(text.contains("n1") && text.contains("n2"), "{text}");
    // A config pointing at no ZooKeeper: non-zero, with a message.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("z.toml");
    std::fs::write(
        &config,
        format!(
            "[zookeeper]\nconnect = \"127.0.0.1:{}\"\nsession_timeout_ms = 1500\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zkfire"))
        .args(["cluster", "status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be reached"));
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_run_their_own_zookeeper_ensemble() {
    let pg = zkfire_testkit::postgres::PostgresInstance::shared().expect("PostgreSQL");
    let db = pg.fresh_database().expect("database");
    let zk_dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let servers: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(i, (p, e))| format!("{} = \"127.0.0.1:{p}:{e}\"", i + 1))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let lines = [
            ("cluster", "enabled = true".to_string()),
            ("cluster", format!("node_id = \"m{}\"", i + 1)),
            ("cluster", format!("listen = \"127.0.0.1:{}\"", free_port())),
            ("cluster", format!("secret = \"{SECRET}\"")),
            ("storage", format!("url = \"{db}\"")),
            ("zookeeper", "session_timeout_ms = 6000".to_string()),
            (
                "zookeeper.managed",
                format!("data_dir = \"{}\"", zk_dirs[i].path().display()),
            ),
            (
                "zookeeper.managed",
                format!("client_port = {}", client_ports[i]),
            ),
            ("zookeeper.managed", format!("myid = {}", i + 1)),
            ("zookeeper.managed", "heap = \"128m\"".to_string()),
            ("zookeeper.managed.servers", servers[0].clone()),
            ("zookeeper.managed.servers", servers[1].clone()),
            ("zookeeper.managed.servers", servers[2].clone()),
        ];
        let refs: Vec<(&str, &str)> = lines.iter().map(|(s, l)| (*s, l.as_str())).collect();
        nodes.push(TestServer::with_config(&refs));
    }
    for n in &nodes {
        n.wait_log("serving as a cluster member", Duration::from_secs(60));
    }
    nodes[0].add_user("alice", "pw");
    nodes[0].add_user("bob", "pw");
    let mut a = Client::login(&nodes[0], "alice", "pw", "a").await;
    let mut b = Client::login(&nodes[2], "bob", "pw", "b").await;
    b.available().await;
    // Wait until node 1 knows bob's session on node 3.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        a.send("<message to='bob@localhost/b' type='chat'><body>over the managed ensemble</body></message>")
            .await;
        if let Err(m) = b
            .none_within(Duration::from_millis(500), |e| e.name() == "message")
            .await
        {
            assert_eq!(
                common::steps::body(&m).as_deref(),
                Some("over the managed ensemble")
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", nodes[0].log());
    }
    let out = nodes[1].cli(&["cluster", "status"]);
    assert!(stdout(&out).contains("3 member(s)"), "{}", stdout(&out));
    for mut n in nodes {
        assert!(
            n.stop(),
            "clean stop with the managed ZooKeeper:\n{}",
            n.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blocklist_change_on_one_node_is_seen_on_another() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut b1 = Client::login(cluster.node(0), "bob", "pw", "one").await;
    let mut b2 = Client::login(cluster.node(1), "bob", "pw", "two").await;
    let mut a = Client::login(cluster.node(1), "alice", "pw", "a").await;
    b1.available().await;
    b2.available().await;
    // Node 2 learns bob's (empty) blocklist by delivering a message.
    a.send("<message to='bob@localhost/two' type='chat'><body>first</body></message>")
        .await;
    b2.next_matching(|e| e.name() == "message").await;
    // Bob blocks alice through node 1; node 2 must stop delivering at once.
    let r = b1
        .iq("<iq type='set' id='bl'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>", "bl")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send("<message to='bob@localhost/two' type='chat' id='x'><body>blocked?</body></message>")
        .await;
    let err = a.next_matching(|e| e.attr("id") == Some("x")).await;
    assert_eq!(
        error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    let leaked = b2
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(leaked.is_ok(), "{leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_node_sends_clients_to_a_live_peer() {
    let mut cluster = TestCluster::start(1);
    // A second node that announces where its clients should go.
    let address = format!("client_address = \"127.0.0.1:{}\"", cluster.node(0).port);
    let peer = cluster.start_node_with_extra(1, &[("cluster", &address)]);
    cluster.nodes.push(Some(peer));
    cluster.wait_connected();
    cluster.add_user("alice", "pw");
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    assert!(cluster.node_mut(0).stop());
    assert_eq!(a.closed().await, Closed::Error("see-other-host".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_credentials_protect_what_zkfire_creates() {
    let mut cluster = TestCluster::start(0);
    let digest = ("zookeeper", "digest = \"zkfire:zk-secret\"");
    let node = cluster.start_node_with_extra(0, &[digest]);
    cluster.nodes.push(Some(node));
    let own = format!("{}/nodes/n1", cluster.root);
    // Without the credentials ZooKeeper refuses to show the member znode...
    let anonymous = zookeeper_client::Client::connect(&cluster.zk.connect_string())
        .await
        .expect("connect");
    assert!(matches!(
        anonymous.get_data(&own).await,
        Err(zookeeper_client::Error::NoAuth)
    ));
    // ...and with them it does.
    let authed = zookeeper_client::Client::connector()
        .with_auth("digest", b"zkfire:zk-secret")
        .connect(&cluster.zk.connect_string())
        .await
        .expect("connect");
    assert!(authed.get_data(&own).await.is_ok());
    // The status command uses the same credentials.
    let out = cluster.node(0).cli(&["cluster", "status"]);
    assert!(stdout(&out).contains("1 member(s)"), "{}", stdout(&out));
}

#[test]
fn check_config_warns_about_zookeeper_acls_without_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    let check = |digest: &str| {
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "[cluster]\nenabled = true\nnode_id = 'n1'\nlisten = '127.0.0.1:7000'\nsecret = '{SECRET}'\n\
                 [storage]\nurl = 'postgres://u@127.0.0.1/db'\n\
                 [zookeeper]\nconnect = '127.0.0.1:2181'\n{digest}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zkfire"))
            .args(["check-config", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let without = check("");
    assert!(
        without.contains("warning") && without.contains("[zookeeper] digest"),
        "{without}"
    );
    let with = check("digest = 'zkfire:zk-secret'");
    assert!(!with.contains("[zookeeper] digest"), "{with}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_derived_zookeeper_credentials_can_be_printed_for_zkcli() {
    let cluster = TestCluster::start(1);
    let out = cluster.node(0).cli(&["cluster", "zookeeper-credentials"]);
    assert!(out.status.success(), "{out:?}");
    let digest = stdout(&out).trim().to_string();
    assert!(digest.starts_with("zkfire:"), "{digest}");
    assert!(!digest.contains(SECRET));
    // They are what the nodes use: they open the member znode.
    let authed = zookeeper_client::Client::connector()
        .with_auth("digest", digest.as_bytes())
        .connect(&cluster.zk.connect_string())
        .await
        .expect("connect");
    let own = format!("{}/nodes/n1", cluster.root);
    assert!(authed.get_data(&own).await.is_ok());
}
