//! The command line: accounts, configuration checks and shutdown.

mod common;
use common::client::Closed;
use common::{Client, TestServer};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn user_add_list_passwd_delete() {
    let server = TestServer::start();
    server.add_user("alice", "one");
    server.add_user("bob@localhost", "two");
    let out = server.cli(&["user", "list"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "alice@localhost\nbob@localhost\n");
    let dup = server.cli(&["user", "add", "alice", "--password", "x"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    let other = server.cli(&["user", "add", "eve@example.org", "--password", "x"]);
    assert!(!other.status.success());
    assert!(
        stderr(&other).contains("not served here"),
        "{}",
        stderr(&other)
    );
    let out = server.cli(&["user", "passwd", "alice", "--password", "three"]);
    assert!(out.status.success(), "{}", stderr(&out));
    Client::login(&server, "alice", "three", "r").await;
    let out = server.cli(&["user", "delete", "bob"]);
    assert!(out.status.success());
    let out = server.cli(&["user", "delete", "bob"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such account"));
    assert_eq!(stdout(&server.cli(&["user", "list"])), "alice@localhost\n");
}

#[test]
fn password_from_stdin_when_not_a_terminal() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("z.toml");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zkfire"))
        .args(["user", "add", "carol", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped-secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("created carol@localhost"));
}

#[test]
fn check_config_names_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_zkfire"))
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let ok = run("[server]\ndomain = \"example.org\"\n");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("example.org"));
    let typo = run("[c2s]\nmax_stanza_byte = 5\n");
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains("max_stanza_byte"),
        "{}",
        stderr(&typo)
    );
    let small = run("[c2s]\nmax_stanza_bytes = 5\n");
    assert!(!small.status.success());
    assert!(stderr(&small).contains("max_stanza_bytes"));
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_zkfire"))
        .args(["check-config", "--config", "/nonexistent/zkfire.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let said = stderr(&missing);
    assert!(
        said.contains("cannot read /nonexistent/zkfire.toml"),
        "{said}"
    );
    assert_eq!(said.matches("os error 2").count(), 1, "said once: {said}");
}

#[tokio::test]
async fn sigterm_sends_system_shutdown_and_exits_cleanly() {
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    a.available().await;
    b.available().await;
    assert!(server.stop(), "clean exit:\n{}", server.log());
    assert_eq!(a.closed().await, Closed::Error("system-shutdown".into()));
    assert_eq!(b.closed().await, Closed::Error("system-shutdown".into()));
    assert!(server.log().contains("stopped"));
}
