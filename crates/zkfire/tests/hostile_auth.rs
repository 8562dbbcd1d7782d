//! Hostile clients against accounts: racing in-band registrations, telling
//! which accounts exist from SCRAM salts, guessing passwords from several
//! addresses or in parallel, and changing a password without end.

mod common;
use common::steps::{error_condition, is_result, secured_from};
use common::{Client, TestServer};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::time::Instant;
use zkfire_xml::{ns, Element};

/// The `type` of a stanza error.
fn error_type(e: &Element) -> Option<String> {
    e.child("error", ns::CLIENT)?
        .attr("type")
        .map(str::to_string)
}

fn register_iq(id: &str, user: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
         <username>{user}</username><password>{password}</password></query></iq>"
    )
}

// [registration] max_per_address is a hard cap even when the requests race:
// 30 registrations sent at the same moment from 30 connections of one
// address create exactly 10 accounts; the other 20 get resource-constraint
// (type wait), and the database holds 10 accounts.
#[tokio::test]
async fn thirty_concurrent_registrations_from_one_address_create_exactly_the_cap() {
    const N: usize = 30;
    let server = Arc::new(TestServer::with_config(&[
        ("registration", "allow = true"),
        ("registration", "max_per_address = 10"),
    ]));
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let server = server.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = secured_from(&server, None).await;
            barrier.wait().await;
            let id = format!("reg{i}");
            c.iq(&register_iq(&id, &format!("racer{i}"), "pass"), &id)
                .await
        }));
    }
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        let reply = t.await.expect("task");
        if is_result(&reply) {
            created += 1;
        } else {
            assert_eq!(
                error_condition(&reply).as_deref(),
                Some("resource-constraint"),
                "{reply:?}"
            );
            assert_eq!(error_type(&reply).as_deref(), Some("wait"), "{reply:?}");
            refused += 1;
        }
    }
    assert_eq!((created, refused), (10, 20));
    let out = server.cli(&["user", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("racer"))
        .count();
    assert_eq!(listed, 10, "accounts in the database");
}

/// One SCRAM attempt from a fresh connection: how long it took, how it ended.
async fn attempt_from(
    server: &TestServer,
    from: Option<IpAddr>,
    user: &str,
    password: &str,
) -> (Duration, Result<(), String>) {
    let mut c = secured_from(server, from).await;
    let start = Instant::now();
    let r = c.auth("SCRAM-SHA-256", user, password).await;
    (start.elapsed(), r)
}

fn password_change(id: &str, password: &str) -> String {
    register_iq(id, "alice", password)
}

// In-band password changes are bounded per account ([registration]
// password_changes_per_window): each is a full key derivation. The first
// three of a burst succeed, the fourth is refused with resource-constraint
// (type wait) and does not change the password.
#[tokio::test]
async fn password_changes_are_rate_limited_per_account() {
    let server = TestServer::with_config(&[("registration", "password_changes_per_window = 3")]);
    server.add_user("alice", "p0");
    let mut alice = Client::login(&server, "alice", "p0", "r").await;
    for i in 1..=3 {
        let id = format!("pw{i}");
        let reply = alice.iq(&password_change(&id, &format!("p{i}")), &id).await;
        assert!(is_result(&reply), "change {i}: {reply:?}");
    }
    let reply = alice.iq(&password_change("pw4", "p4"), "pw4").await;
    assert_eq!(
        error_condition(&reply).as_deref(),
        Some("resource-constraint"),
        "{reply:?}"
    );
    assert_eq!(error_type(&reply).as_deref(), Some("wait"), "{reply:?}");

    let (_, r) = attempt_from(&server, None, "alice", "p4").await;
    assert_eq!(
        r,
        Err("not-authorized".to_string()),
        "the refused change took"
    );
    let (_, r) = attempt_from(&server, None, "alice", "p3").await;
    assert_eq!(r, Ok(()), "the last accepted password");
}
