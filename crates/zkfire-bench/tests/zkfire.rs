//! Each scenario, with small counts, against the real zkfire binary over
//! STARTTLS, trusting the certificate it generates. The accounts are made
//! by in-band registration.
//!
//! The zkfire binary is looked for next to this crate's binary (the same
//! target directory and profile: `cargo test --workspace` builds it), or at
//! `$ZKFIRE_BIN`.

mod common;

use common::{assert_clean_traffic, bench_bin, n, run};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zkfire_testkit::ports::free_port;

fn zkfire_bin() -> PathBuf {
    let path = std::env::var_os("ZKFIRE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            bench_bin().with_file_name(format!("zkfire{}", std::env::consts::EXE_SUFFIX))
        });
    assert!(
        path.is_file(),
        "the zkfire binary is not at {}: build it first (`cargo build -p zkfire`, \
         or run `cargo test --workspace`, which builds every binary), or set ZKFIRE_BIN",
        path.display()
    );
    path
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    ports: [u16; 2],
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = [free_port(), free_port()];
        let config = dir.path().join("zkfire.toml");
        let text = format!(
            "[server]\ndomain = \"localhost\"\ndata_dir = \"{}\"\nlog_level = \"warn\"\n\
             [c2s]\nlisten = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\
             [registration]\nallow = true\nmax_per_address = 0\n",
            dir.path().join("data").display(),
            ports[0],
            ports[1]
        );
        std::fs::write(&config, text).expect("config");
        let log = std::fs::File::create(dir.path().join("zkfire.log")).expect("log");
        let child = Command::new(zkfire_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start zkfire");
        let mut server = Server { child, dir, ports };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", ports[0])).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("zkfire exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "zkfire did not listen:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(server.cert().is_file(), "no generated certificate");
        server
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("data").join("tls").join("cert.pem")
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zkfire.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- zkfire log ---\n{}", self.log());
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn every_scenario_against_zkfire() {
    let server = Server::start();
    let cert = path_str(&server.cert());
    let a0 = server.addr(0);
    let tls = ["--ca-file", cert.as_str()];

    // Idle, creating the accounts in-band.
    let mut args = vec![
        "idle",
        "-a",
        &a0,
        "-n",
        "10",
        "--register",
        "--hold-secs",
        "0.5",
    ];
    args.extend(tls);
    let (code, report, stdout) = run(&args);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("READY sessions_up=10"), "{stdout}");
    assert_eq!(n(&report, "sessions.up"), 10, "{report:#}");
    assert_eq!(n(&report, "sessions.registered"), 10, "{report:#}");
    assert_eq!(n(&report, "errors"), 0, "{report:#}");

    // Chat.
    let mut args = vec!["chat", "-a", &a0, "-n", "10", "-r", "100", "-d", "1"];
    args.extend(tls);
    let (code, report, _) = run(&args);
    assert_eq!(code, 0);
    assert_clean_traffic(&report, 100, 1);

    // Cluster: the pairs split over the node's two listeners.
    let both = format!("{a0},{}", server.addr(1));
    let mut args = vec!["cluster", "-a", &both, "-n", "10", "-r", "100", "-d", "1"];
    args.extend(tls);
    let (code, report, _) = run(&args);
    assert_eq!(code, 0);
    assert_clean_traffic(&report, 100, 1);

    // Presence: rosters made over XMPP, then every change reaches 4 contacts.
    let mut args = vec![
        "presence",
        "-a",
        &a0,
        "-n",
        "10",
        "-k",
        "4",
        "-r",
        "20",
        "-d",
        "1",
        "--setup-timeout",
        "60",
    ];
    args.extend(tls);
    let (code, report, _) = run(&args);
    assert_eq!(code, 0);
    assert_eq!(n(&report, "setup.rosters_complete"), 10, "{report:#}");
    assert_clean_traffic(&report, 20, 4);

    // Registering again finds the accounts there.
    let mut args = vec![
        "idle",
        "-a",
        &a0,
        "-n",
        "3",
        "--register",
        "--hold-secs",
        "0",
    ];
    args.extend(tls);
    let (_, report, _) = run(&args);
    assert_eq!(n(&report, "sessions.register_existing"), 3, "{report:#}");
}
