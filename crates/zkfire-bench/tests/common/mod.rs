//! Running the generator binary, and the built-in relay, from tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zkfire-bench"))
}

/// Every run a test starts ends by itself well before this.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Waits for a child with a deadline; kills it and panics past it.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("output"),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "still running after {limit:?}:\n{}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting: {e}"),
        }
    }
}

/// Runs `zkfire-bench ARGS --json FILE -q`; returns the exit code, the
/// report, and stdout.
pub fn run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let child = Command::new(bench_bin())
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start zkfire-bench");
    let out = wait_output(child, RUN_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); exit {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = serde_json::from_str(&text).expect("report is JSON");
    (out.status.code().unwrap_or(-1), report, stdout)
}

/// A figure of the report, as an integer.
pub fn n(report: &serde_json::Value, path: &str) -> u64 {
    let mut v = report;
    for key in path.split('.') {
        v = &v[key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count in {report:#}"))
}

/// Checks the traffic figures of a run that lost nothing.
pub fn assert_clean_traffic(report: &serde_json::Value, scheduled: u64, per_stanza: u64) {
    let t = |k: &str| n(report, &format!("traffic.{k}"));
    assert_eq!(t("scheduled"), scheduled, "{report:#}");
    assert_eq!(t("sent"), scheduled, "{report:#}");
    assert_eq!(t("not_sent"), 0, "{report:#}");
    assert_eq!(
        t("expected_deliveries"),
        scheduled * per_stanza,
        "{report:#}"
    );
    assert_eq!(t("delivered"), scheduled * per_stanza, "{report:#}");
    assert_eq!(t("lost"), 0, "{report:#}");
    assert_eq!(t("duplicates"), 0, "{report:#}");
    assert_eq!(t("misrouted"), 0, "{report:#}");
    assert_eq!(n(report, "errors"), 0, "{report:#}");
    assert_eq!(
        n(report, "traffic.latency_ms.count"),
        scheduled * per_stanza,
        "{report:#}"
    );
    let p50 = report["traffic"]["latency_ms"]["p50_ms"]
        .as_f64()
        .unwrap_or(-1.0);
    let max = report["traffic"]["latency_ms"]["max_ms"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!(p50 >= 0.0 && max >= p50, "{report:#}");
}

/// The relay, on free loopback ports; killed when dropped.
pub struct Relay {
    child: Child,
    pub addrs: Vec<String>,
}

impl Relay {
    pub fn start(extra: &[&str]) -> Relay {
        let mut child = Command::new(bench_bin())
            .args(["relay", "--max-secs", "300"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the relay");
        let listeners = extra.iter().filter(|a| **a == "--listen").count().max(1);
        let stdout = child.stdout.take().expect("stdout");
        // Read the addresses in a thread, so that a silent relay cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("relay listening on ") {
                    if tx.send(addr.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        let mut addrs = Vec::new();
        for _ in 0..listeners {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(a) => addrs.push(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!("the relay did not say where it listens");
                }
            }
        }
        Relay { child, addrs }
    }

    pub fn addr(&self) -> &str {
        &self.addrs[0]
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
