//! Starts real private ZooKeeper servers (the Debian package `zookeeper` must
//! be installed; without it these tests fail, saying so).

use std::net::TcpStream;
use std::time::{Duration, Instant};
use zkfire_testkit::zookeeper::{four_letter, server_mode, Ensemble, ZooKeeper};

/// After losing its leader, the rest elects a new one in about 2 s here.
const REELECTION: Duration = Duration::from_secs(30);

#[test]
fn standalone_answers_and_cleans_up() {
    let zk = ZooKeeper::standalone().unwrap_or_else(|e| panic!("{e:#}"));
    let port = zk.port();
    let folder = zk.folder().to_path_buf();
    assert_eq!(zk.connect_string(), format!("127.0.0.1:{port}"));
    assert_eq!(four_letter(port, "ruok").as_deref(), Some("imok"));
    assert_eq!(server_mode(port).as_deref(), Some("standalone"));
    assert!(folder.join("zookeeper.log").is_file());

    drop(zk);
    assert!(!folder.exists(), "folder left behind");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening"
    );
}

#[test]
fn ensemble_survives_its_leader_and_takes_it_back() {
    let started = Instant::now();
    let mut zk = Ensemble::start(3).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("ensemble of 3 serving after {:?}", started.elapsed());
    assert_eq!(zk.connect_string().split(',').count(), 3);
    let modes: Vec<_> = (0..3).map(|i| zk.mode(i)).collect();
    let leaders = modes
        .iter()
        .filter(|m| m.as_deref() == Some("leader"))
        .count();
    assert_eq!(leaders, 1, "modes: {modes:?}");
    let old = zk.leader().expect("a leader");

    // Killing the leader leaves a majority that elects a new one.
    let killed = Instant::now();
    zk.kill_member(old);
    assert!(!zk.is_running(old));
    assert!(four_letter(zk.client_port(old), "ruok").is_none());
    let new = zk
        .wait_for_leader(REELECTION)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(new, old);
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &rest {
        zk.wait_member_serving(i, REELECTION)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    eprintln!("new leader after {:?}", killed.elapsed());

    // The killed member comes back as a follower.
    let restarted = Instant::now();
    zk.start_member(old).unwrap_or_else(|e| panic!("{e:#}"));
    zk.wait_member_serving(old, REELECTION)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(zk.mode(old).as_deref(), Some("follower"));
    assert_eq!(zk.leader(), Some(new));
    eprintln!("rejoined after {:?}", restarted.elapsed());

    // Whole ensemble down, then up again.
    zk.stop_all();
    assert!((0..3).all(|i| four_letter(zk.client_port(i), "ruok").is_none()));
    let restarted = Instant::now();
    zk.start_all().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(zk.leader().is_some());
    eprintln!("whole ensemble back after {:?}", restarted.elapsed());

    let folder = zk.folder().to_path_buf();
    let ports: Vec<u16> = (0..3).map(|i| zk.client_port(i)).collect();
    drop(zk);
    assert!(!folder.exists(), "folder left behind");
    for port in ports {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
