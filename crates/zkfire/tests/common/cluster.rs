//! A local cluster for tests: a private ZooKeeper and PostgreSQL, and
//! several zkfire nodes on free loopback ports sharing them.

use super::TestServer;
use std::sync::Arc;
use std::time::Duration;
use zkfire_testkit::ports::free_port;
use zkfire_testkit::postgres::PostgresInstance;
use zkfire_testkit::zookeeper::{Ensemble, ZooKeeper};

/// The ZooKeeper a test cluster uses.
pub enum Zk {
    Standalone(ZooKeeper),
    Ensemble(Ensemble),
}

impl Zk {
    pub fn connect_string(&self) -> String {
        match self {
            Zk::Standalone(z) => z.connect_string(),
            Zk::Ensemble(e) => e.connect_string(),
        }
    }

    pub fn ensemble(&mut self) -> &mut Ensemble {
        match self {
            Zk::Ensemble(e) => e,
            Zk::Standalone(_) => panic!("this test cluster runs a standalone ZooKeeper"),
        }
    }
}

pub const SECRET: &str = "a-cluster-secret-for-tests";
pub const SESSION_TIMEOUT_MS: u64 = 4000;

pub struct TestCluster {
    pub zk: Zk,
    pub pg: Arc<PostgresInstance>,
    pub db_url: String,
    pub root: String,
    pub nodes: Vec<Option<TestServer>>,
}

impl TestCluster {
    pub fn start(n: usize) -> TestCluster {
        let zk = ZooKeeper::standalone().expect("ZooKeeper (Debian package zookeeper)");
        Self::start_on(Zk::Standalone(zk), n)
    }

    /// `n` nodes on a ZooKeeper ensemble of three members.
    pub fn start_on_ensemble(n: usize) -> TestCluster {
        let e = Ensemble::start(3).expect("ZooKeeper ensemble (Debian package zookeeper)");
        Self::start_on(Zk::Ensemble(e), n)
    }

    fn start_on(zk: Zk, n: usize) -> TestCluster {
        let pg = PostgresInstance::shared().expect("PostgreSQL (Debian package postgresql)");
        let db_url = pg.fresh_database().expect("database");
        let root = format!("/zkfire-test-{}", free_port());
        let mut cluster = TestCluster {
            zk,
            pg,
            db_url,
            root,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let node = cluster.start_node_with(i, SECRET);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Starts node `i` (a new process) with the given secret.
    pub fn start_node_with(&self, i: usize, secret: &str) -> TestServer {
        self.start_node_extra(i, secret, &[])
    }

    /// Starts node `i` with further config lines (section, `key = value`).
    pub fn start_node_with_extra(&self, i: usize, extra: &[(&str, &str)]) -> TestServer {
        self.start_node_extra(i, SECRET, extra)
    }

    fn start_node_extra(&self, i: usize, secret: &str, extra: &[(&str, &str)]) -> TestServer {
        let server = self.spawn_node(i, secret, extra);
        server.wait_log("serving as a cluster member", Duration::from_secs(30));
        server
    }

    /// Starts node `i` without waiting for it to join.
    pub fn spawn_node(&self, i: usize, secret: &str, extra: &[(&str, &str)]) -> TestServer {
        let listen = format!("listen = \"127.0.0.1:{}\"", free_port());
        let node_id = format!("node_id = \"n{}\"", i + 1);
        let secret = format!("secret = \"{secret}\"");
        let url = format!("url = \"{}\"", self.db_url);
        let connect = format!("connect = \"{}\"", self.zk.connect_string());
        let root = format!("root = \"{}\"", self.root);
        let timeout = format!("session_timeout_ms = {SESSION_TIMEOUT_MS}");
        let mut lines = vec![
            ("cluster", "enabled = true"),
            ("cluster", node_id.as_str()),
            ("cluster", listen.as_str()),
            ("cluster", secret.as_str()),
            ("cluster", "heartbeat_ms = 300"),
            ("server", "log_level = \"info,zkfire=trace\""),
            ("storage", url.as_str()),
            ("zookeeper", connect.as_str()),
            ("zookeeper", root.as_str()),
            ("zookeeper", timeout.as_str()),
        ];
        lines.extend_from_slice(extra);
        TestServer::with_config(&lines)
    }

    pub fn node(&self, i: usize) -> &TestServer {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn node_mut(&mut self, i: usize) -> &mut TestServer {
        self.nodes[i].as_mut().expect("node is running")
    }

    /// Accounts live in the shared database: any node's CLI creates them.
    pub fn add_user(&self, name: &str, password: &str) {
        self.node(0).add_user(name, password);
    }

    /// Waits until every running node's log says it is connected to `peers` peers.
    pub fn wait_connected(&self) {
        let running: Vec<&TestServer> = self.nodes.iter().flatten().collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for node in &running {
            loop {
                let ups = node.log().matches("cluster peer connected").count();
                if ups >= running.len() - 1 {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    panic!("node not connected to its peers:\n{}", node.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The values of `key=` in a log line (tracing's `key=value` fields).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
}

impl TestCluster {
    /// Like [`TestCluster::start`], on a PostgreSQL of its own (not the one
    /// shared by the other tests), so the test may stop and start it
    /// (`cluster.pg.stop()`, `cluster.pg.start_stopped()`).
    pub fn start_with_own_postgres(n: usize) -> TestCluster {
        let zk = ZooKeeper::standalone().expect("ZooKeeper (Debian package zookeeper)");
        let pg =
            Arc::new(PostgresInstance::start().expect("PostgreSQL (Debian package postgresql)"));
        let db_url = pg.fresh_database().expect("database");
        let root = format!("/zkfire-test-{}", free_port());
        let mut cluster = TestCluster {
            zk: Zk::Standalone(zk),
            pg,
            db_url,
            root,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let node = cluster.start_node_with(i, SECRET);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Where node `i`'s cluster bus listens, from its log.
    pub fn bus_addr(&self, i: usize) -> std::net::SocketAddr {
        self.node(i)
            .log()
            .lines()
            .rev()
            .filter(|l| l.contains("bus: listening"))
            .find_map(|l| field(l, "addr")?.parse().ok())
            .expect("the node's bus is listening")
    }

    /// The incarnation node `i` last joined with, from its log.
    pub fn incarnation(&self, i: usize) -> Option<u64> {
        self.node(i)
            .log()
            .lines()
            .rev()
            .filter(|l| l.contains("serving as a cluster member"))
            .find_map(|l| field(l, "incarnation")?.parse().ok())
    }

    /// Starts node `i` again as a new process (same node id, new ports and
    /// data folder) once it serves, after it was stopped or killed (a
    /// process still running is killed first). Returns the previous
    /// process's server, whose log the caller may keep.
    pub fn restart_node(&mut self, i: usize) -> Option<TestServer> {
        let mut old = self.nodes[i].take();
        if let Some(old) = old.as_mut() {
            old.kill();
        }
        let node = self.start_node_with(i, SECRET);
        self.nodes[i] = Some(node);
        old
    }

    /// Waits until every running node has a bus link to the current
    /// incarnation of every other running node (unlike
    /// [`wait_connected`](Self::wait_connected), right also after restarts).
    pub fn wait_mesh(&self, timeout: Duration) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect();
        let deadline = std::time::Instant::now() + timeout;
        for &i in &running {
            for &j in &running {
                if i == j {
                    continue;
                }
                let peer = format!("n{}", j + 1);
                loop {
                    let inc = self.incarnation(j).map(|v| v.to_string());
                    let log = self.node(i).log();
                    let up = log.lines().any(|l| {
                        l.contains("cluster peer connected")
                            && field(l, "peer") == Some(peer.as_str())
                            && field(l, "incarnation") == inc.as_deref()
                    });
                    if up {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        panic!(
                            "node n{} not connected to {peer} (incarnation {inc:?}):\n{log}",
                            i + 1
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}
