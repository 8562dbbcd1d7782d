//! The managed ZooKeeper peer against a real ZooKeeper (the Debian package
//! `zookeeper` must be installed; without it these tests fail, saying so).

use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use zkfire::cluster::zk_managed::{four_letter, ManagedZooKeeper};
use zkfire::config::ManagedZooKeeperConfig;
use zkfire_testkit::ports::free_port;

const PROBE: Duration = Duration::from_secs(2);
/// The supervisor waits 1 s before the first restart; java needs about 1.3 s.
const RESTART_WITHIN: Duration = Duration::from_secs(30);

fn config(data_dir: &Path) -> ManagedZooKeeperConfig {
    ManagedZooKeeperConfig {
        data_dir: data_dir.to_path_buf(),
        client_port: free_port(),
        heap: "128m".into(),
        ..Default::default()
    }
}

async fn start(config: &ManagedZooKeeperConfig, shutdown: CancellationToken) -> ManagedZooKeeper {
    ManagedZooKeeper::start(config, shutdown)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn ruok(port: u16) -> Option<String> {
    four_letter("127.0.0.1", port, "ruok", PROBE).await.ok()
}

fn process_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test]
async fn restarts_after_sigkill_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("zk"));
    let port = config.client_port;
    let started = Instant::now();
    let zk = start(&config, CancellationToken::new()).await;
    eprintln!("ruok after {:?}", started.elapsed());
    assert_eq!(zk.connect_string(), format!("127.0.0.1:{port}"));
    assert_eq!(ruok(port).await.as_deref(), Some("imok"));
    zk.wait_serving(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(zk.mode().await.as_deref(), Some("standalone"));
    let cfg = std::fs::read_to_string(zk.data_dir().join("zoo.cfg")).unwrap();
    assert!(cfg.contains(&format!("\nclientPort={port}\n")), "{cfg}");
    assert_eq!(
        std::fs::read_to_string(zk.data_dir().join("myid")).unwrap(),
        "1\n"
    );

    // A second peer on the same data dir is refused while the first runs.
    let err = ManagedZooKeeper::start(&config, CancellationToken::new())
        .await
        .err()
        .expect("second peer on the same data dir");
    assert!(err.to_string().contains("already runs as pid"), "{err:#}");
    // And on the same port with another data dir.
    let mut other = config.clone();
    other.data_dir = dir.path().join("other");
    let err = ManagedZooKeeper::start(&other, CancellationToken::new())
        .await
        .err()
        .expect("second peer on the same port");
    assert!(err.to_string().contains("already answers"), "{err:#}");

    // SIGKILL: the supervisor starts a new process.
    let first = zk.pid().expect("a pid");
    // SAFETY: plain syscall on the java child's pid.
    assert_eq!(
        unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) },
        0
    );
    let killed = Instant::now();
    loop {
        let restarted = zk.restarts() == 1 && zk.pid().is_some_and(|p| p != first);
        if restarted && ruok(port).await.as_deref() == Some("imok") {
            break;
        }
        assert!(
            killed.elapsed() < RESTART_WITHIN,
            "not restarted: restarts {}, pid {:?}",
            zk.restarts(),
            zk.pid()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("answering again {:?} after SIGKILL", killed.elapsed());
    assert!(!process_exists(first));
    let log = std::fs::read_to_string(zk.data_dir().join("zookeeper.log")).unwrap();
    assert_eq!(log.matches("zkfire starts ZooKeeper").count(), 2, "{log}");

    // A clean stop: the process is gone, the port closed, the pid file removed.
    let second = zk.pid().expect("a pid");
    let data_dir = zk.data_dir().to_path_buf();
    let stopping = Instant::now();
    zk.stop().await;
    eprintln!("stopped in {:?}", stopping.elapsed());
    assert!(!process_exists(second));
    assert!(ruok(port).await.is_none());
    assert!(!data_dir.join("zookeeper.pid").exists());
}

#[tokio::test]
async fn shutdown_token_stops_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let shutdown = CancellationToken::new();
    let zk = start(&config, shutdown.clone()).await;
    let pid = zk.pid().expect("a pid");
    shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_exists(pid) || zk.pid().is_some() {
        assert!(Instant::now() < deadline, "still running after shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ruok(config.client_port).await.is_none());
    assert_eq!(zk.restarts(), 0);
}

#[tokio::test]
async fn exit_at_start_is_reported_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config
        .extra
        .insert("maxClientCnxns".into(), "not-a-number".into());
    let err = ManagedZooKeeper::start(&config, CancellationToken::new())
        .await
        .err()
        .expect("ZooKeeper refuses the config");
    let err = format!("{err:#}");
    assert!(err.contains("exited at start"), "{err}");
    assert!(err.contains("not-a-number"), "{err}");
}

/// An ensemble member answers `ruok` (so `start` returns) before it has a
/// quorum, and serves once a majority runs.
#[tokio::test]
async fn ensemble_member_starts_before_quorum_and_serves_with_it() {
    let dir = tempfile::tempdir().unwrap();
    // Six distinct ports (free_port may hand out one twice).
    let mut ports = std::collections::BTreeSet::new();
    while ports.len() < 6 {
        ports.insert(free_port());
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let mut servers = std::collections::BTreeMap::new();
    for id in 1..=3 {
        let (peer, election) = (ports[2 * id - 2], ports[2 * id - 1]);
        servers.insert(id.to_string(), format!("127.0.0.1:{peer}:{election}"));
    }
    let member = |id: u32| ManagedZooKeeperConfig {
        myid: id,
        servers: servers.clone(),
        ..config(&dir.path().join(format!("zk{id}")))
    };
    let first = start(&member(1), CancellationToken::new()).await;
    assert!(first.wait_serving(Duration::from_secs(1)).await.is_err());
    assert_eq!(first.mode().await, None);

    let second = start(&member(2), CancellationToken::new()).await;
    let quorum = Instant::now();
    for zk in [&first, &second] {
        zk.wait_serving(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    eprintln!("two of three serve after {:?}", quorum.elapsed());
    let mut modes = vec![first.mode().await.unwrap(), second.mode().await.unwrap()];
    modes.sort();
    assert_eq!(modes, ["follower", "leader"]);
    let cfg = std::fs::read_to_string(first.data_dir().join("zoo.cfg")).unwrap();
    assert_eq!(cfg.matches("\nserver.").count(), 3, "{cfg}");
    first.stop().await;
    second.stop().await;
}
