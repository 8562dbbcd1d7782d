//! Faults around a running cluster: a node paused past its ZooKeeper
//! session, the ZooKeeper leader killed, the whole ensemble down, a stranger
//! flooding a bus port. Each test ends with an account of the messages sent.

mod common;
use common::client::Closed;
use common::cluster::{TestCluster, SESSION_TIMEOUT_MS};
use common::steps::body;
use common::Client;
use std::time::Duration;

/// Sends `n` numbered messages from `a` to `b` and checks each arrives once, in order.
async fn exchange(a: &mut Client, b: &mut Client, tag: &str, n: usize) {
    for i in 0..n {
        a.send(&format!(
            "<message to='bob@localhost' type='chat'><body>{tag}-{i}</body></message>"
        ))
        .await;
    }
    for i in 0..n {
        let m = b.next_matching(|e| e.name() == "message").await;
        assert_eq!(body(&m), Some(format!("{tag}-{i}")));
    }
    let extra = b
        .none_within(Duration::from_millis(200), |e| e.name() == "message")
        .await;
    assert!(extra.is_ok(), "duplicate: {extra:?}");
}

async fn pair(cluster: &TestCluster) -> (Client, Client) {
    cluster.add_user("alice", "pw");
    cluster.add_user("bob", "pw");
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a").await;
    let mut b = Client::login(cluster.node(1), "bob", "pw", "b").await;
    a.available().await;
    b.available().await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_node_stops_serving_and_rejoins_as_new_incarnation() {
    let cluster = TestCluster::start(2);
    cluster.wait_connected();
    let (mut a, mut b) = pair(&cluster).await;
    exchange(&mut a, &mut b, "before", 5).await;
    // Pause node 2 well past the session timeout.
    cluster.node(1).signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 2500)).await;
    // Meanwhile node 1 dropped node 2: a message to bob goes offline.
    a.send("<message to='bob@localhost' type='chat'><body>while paused</body></message>")
        .await;
    a.iq(
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p",
    )
    .await;
    cluster.node(1).signal(libc::SIGCONT);
    // Node 2 learns it lost its membership and closes its clients.
    match b.closed().await {
        Closed::Error(c) => assert!(c == "see-other-host" || c == "system-shutdown", "{c}"),
        Closed::Clean => {}
    }
    cluster
        .node(1)
        .wait_log("lost the ZooKeeper session", Duration::from_secs(10));
    // It joins again and serves; the stored message reaches bob there.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster
        .node(1)
        .log()
        .matches("serving as a cluster member")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cluster.node(1).log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut b = Client::login(cluster.node(1), "bob", "pw", "b2").await;
    b.send("<presence/>").await;
    let m = b.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("while paused"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    exchange(&mut a, &mut b, "after", 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zookeeper_leader_death_and_ensemble_outage_do_not_disturb_users() {
    let mut cluster = TestCluster::start_on_ensemble(2);
    cluster.wait_connected();
    let (mut a, mut b) = pair(&cluster).await;
    exchange(&mut a, &mut b, "start", 5).await;
    let leader = cluster.zk.ensemble().leader().expect("a leader");
    cluster.zk.ensemble().kill_member(leader);
    exchange(&mut a, &mut b, "no-leader", 5).await;
    cluster
        .zk
        .ensemble()
        .wait_for_leader(Duration::from_secs(20))
        .expect("new leader");
    // The whole ensemble goes away for longer than the session timeout.
    cluster.zk.ensemble().stop_all();
    for round in 0..3 {
        exchange(&mut a, &mut b, &format!("outage{round}"), 5).await;
        tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS / 2)).await;
    }
    // Logins go on while ZooKeeper is away.
    let mut carol = Client::login(cluster.node(1), "bob", "pw", "carol").await;
    carol.send("<presence/>").await;
    cluster.zk.ensemble().start_all().expect("ensemble back");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    exchange(&mut a, &mut b, "after", 5).await;
    for i in 0..2 {
        assert!(
            !cluster.node(i).log().contains("lost the ZooKeeper session"),
            "node {i} lost its membership:\n{}",
            cluster.node(i).log()
        );
    }
}

/// Idle TCP connections from a stranger's address (127.0.0.2: another
/// host, as far as the node can tell) to a bus port, each reopened soon
/// after the node closes it, until dropped.
struct Flood {
    stop: tokio_util::sync::CancellationToken,
    /// How long each connection the node accepted stayed open.
    lifetimes: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
}

impl Flood {
    fn start(target: std::net::SocketAddr, sockets: usize) -> Flood {
        let stop = tokio_util::sync::CancellationToken::new();
        let lifetimes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..sockets {
            let (stop, lifetimes) = (stop.clone(), lifetimes.clone());
            // Spread the reconnections so the flood refills freed slots fast.
            let pause = Duration::from_millis(200 + (i as u64 * 37) % 300);
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Some(lived) = Flood::one(target, &stop).await {
                        lifetimes.lock().unwrap().push(lived);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            });
        }
        Flood { stop, lifetimes }
    }

    /// One idle connection; how long it stayed open (None: refused, or
    /// still open when the flood stopped).
    async fn one(
        target: std::net::SocketAddr,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Duration> {
        use tokio::io::AsyncReadExt;
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind("127.0.0.2:0".parse().unwrap()).ok()?;
        let mut s = socket.connect(target).await.ok()?;
        let opened = std::time::Instant::now();
        let mut buf = [0u8; 64];
        tokio::select! {
            _ = s.read(&mut buf) => Some(opened.elapsed()),
            _ = stop.cancelled() => None,
        }
    }

    fn lifetimes(&self) -> Vec<Duration> {
        self.lifetimes.lock().unwrap().clone()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_flooding_the_bus_port_does_not_keep_a_restarted_peer_out() {
    let mut cluster = TestCluster::start(2);
    cluster.wait_mesh(Duration::from_secs(20));
    let (_, mut b) = pair(&cluster).await;
    let flood = Flood::start(cluster.bus_addr(1), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Node 1 crashes and comes back as a new incarnation: it must link to
    // node 2 again although a stranger keeps opening handshakes there.
    cluster.restart_node(0);
    cluster.wait_mesh(Duration::from_secs(5));
    let mut a = Client::login(cluster.node(0), "alice", "pw", "a2").await;
    a.available().await;
    a.send("<message to='bob@localhost' type='chat'><body>through the flood</body></message>")
        .await;
    // Delivered to bob's session on node 2 at once, not stored offline.
    let m = tokio::time::timeout(
        Duration::from_secs(3),
        b.next_matching(|e| e.name() == "message"),
    )
    .await
    .expect("the message reaches bob online");
    assert_eq!(body(&m).as_deref(), Some("through the flood"));
    // Node 2 closes each stranger connection by the handshake timeout
    // (3 s by default), and it did hold some that long.
    let lived = flood.lifetimes();
    let longest = lived.iter().max().copied().unwrap_or_default();
    assert!(longest <= Duration::from_millis(4000), "held {longest:?}");
    assert!(longest >= Duration::from_millis(2500), "held {longest:?}");
}
