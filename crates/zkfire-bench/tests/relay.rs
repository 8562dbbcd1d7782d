//! Every scenario, with small counts, against the built-in relay. No timing
//! assertions: only that everything sent arrived once, and the accounting.

mod common;

use common::{assert_clean_traffic, bench_bin, n, run, wait_output, Relay};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn chat_delivers_every_message_once() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0"]);
    let (code, report, stdout) = run(&[
        "chat",
        "-a",
        relay.addr(),
        "--tls",
        "none",
        "-n",
        "6",
        "-r",
        "200",
        "-d",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(report["scenario"], "chat");
    assert_eq!(n(&report, "sessions.up"), 6);
    assert_clean_traffic(&report, 200, 1);
    assert!(stdout.contains("delivered"), "{stdout}");
}

#[test]
fn cluster_splits_each_pair_over_two_addresses() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"]);
    let both = relay.addrs.join(",");
    let (code, report, _) = run(&[
        "cluster", "-a", &both, "--tls", "none", "-n", "4", "-r", "100", "-d", "1",
    ]);
    assert_eq!(code, 0);
    assert_eq!(report["scenario"], "cluster");
    assert_clean_traffic(&report, 100, 1);
    // One address is not a cluster.
    let (code, _, _) = run_failing(&["cluster", "-a", relay.addr(), "--tls", "none"]);
    assert_ne!(code, 0);
}

#[test]
fn presence_makes_rosters_then_delivers_to_every_contact() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0"]);
    let args = [
        "presence",
        "-a",
        relay.addr(),
        "--tls",
        "none",
        "-n",
        "10",
        "-k",
        "4",
        "-r",
        "20",
        "-d",
        "1",
    ];
    let (code, report, _) = run(&args);
    assert_eq!(code, 0);
    assert_eq!(n(&report, "setup.rosters_complete"), 10, "{report:#}");
    assert_clean_traffic(&report, 20, 4);
    // Again: the rosters are there already.
    let (code, report, _) = run(&args);
    assert_eq!(code, 0);
    assert_eq!(n(&report, "setup.rosters_complete"), 10, "{report:#}");
    assert_clean_traffic(&report, 20, 4);
}

#[test]
fn idle_registers_holds_and_says_when_ready() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0"]);
    let (code, report, stdout) = run(&[
        "idle",
        "-a",
        relay.addr(),
        "--tls",
        "none",
        "-n",
        "20",
        "--register",
        "--hold-secs",
        "0.5",
        "--login-concurrency",
        "4",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("READY sessions_up=20 target=20"),
        "{stdout}"
    );
    assert_eq!(n(&report, "sessions.up"), 20);
    assert_eq!(n(&report, "sessions.registered"), 20);
    assert_eq!(n(&report, "sessions.login_ms.count"), 20);
    assert_eq!(n(&report, "errors"), 0);
    assert!(report["sessions"]["logins_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(report.get("traffic").is_none());
}

#[test]
fn starttls_with_an_unchecked_certificate_on_loopback() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0", "--tls"]);
    let (code, report, _) = run(&[
        "chat",
        "-a",
        relay.addr(),
        "--insecure",
        "-n",
        "4",
        "-r",
        "50",
        "-d",
        "1",
    ]);
    assert_eq!(code, 0);
    assert_clean_traffic(&report, 50, 1);
}

#[test]
fn wrong_password_fails_every_login_and_exits_2() {
    let relay = Relay::start(&["--listen", "127.0.0.1:0"]);
    let (code, report, _) = run(&[
        "chat",
        "-a",
        relay.addr(),
        "--tls",
        "none",
        "-n",
        "2",
        "-r",
        "10",
        "-d",
        "0.5",
        "--password",
        "wrong",
    ]);
    assert_eq!(code, 2);
    assert_eq!(n(&report, "sessions.up"), 0);
    assert_eq!(n(&report, "sessions.login_failures"), 2);
    assert_eq!(n(&report, "traffic.not_sent"), 5);
    let samples = report["error_samples"].to_string();
    assert!(samples.contains("not-authorized"), "{samples}");
}

#[test]
fn refuses_addresses_off_this_machine() {
    // TEST-NET-1: never reachable, and never tried.
    let (code, stdout, stderr) = run_failing(&["chat", "-a", "192.0.2.1:5222", "--tls", "none"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let (code, _, stderr) = run_failing(&["relay", "--listen", "192.0.2.1:5299"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

/// Runs the binary where no report is expected.
fn run_failing(args: &[&str]) -> (i32, String, String) {
    let child = Command::new(bench_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start zkfire-bench");
    let out = wait_output(child, Duration::from_secs(30));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}
