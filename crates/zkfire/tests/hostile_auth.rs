//! Hostile clients against accounts: racing in-band registrations, telling
//! which accounts exist from SCRAM salts, guessing passwords from several
//! addresses or in parallel, and changing a password without end.

mod common;
use base64::Engine;
use common::steps::{error_condition, is_result, secured_from};
use common::{Client, TestServer};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::time::Instant;
use zkfire_sasl::client::ClientBinding;
use zkfire_xml::{ns, Element};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const ELSEWHERE: [u8; 4] = [127, 0, 0, 3];

fn addr(a: [u8; 4]) -> Option<IpAddr> {
    Some(IpAddr::from(a))
}

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

/// The salt (base64) and iteration count of the server-first-message for
/// `user`; the exchange is then aborted.
async fn salt_of(server: &TestServer, mechanism: &str, user: &str) -> (String, u32) {
    let mut c = secured_from(server, None).await;
    let (_, server_first) = c
        .auth_begin(mechanism, user, "whatever", ClientBinding::None)
        .await
        .expect("server-first-message");
    let text = String::from_utf8(server_first).expect("UTF-8");
    let field = |name: &str| {
        text.split(',')
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let salt = field("s=");
    let iterations = field("i=").parse().expect("iteration count");
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    (salt, iterations)
}

fn salt_len(b64: &str) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("salt is base64")
        .len()
}

// Decoy salts for accounts that do not exist stay the same across a restart
// (so comparing salts before and after does not tell which accounts exist),
// look like real ones (same length, same iteration count), and come from a
// key kept in the data dir, readable by the owner only.
#[tokio::test]
async fn decoy_salts_survive_a_restart_and_look_like_real_ones() {
    let mut server = TestServer::start();
    server.add_user("alice", "alice-pass");
    let mut before = Vec::new();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-1"] {
        let real = salt_of(&server, mechanism, "alice").await;
        let decoy = salt_of(&server, mechanism, "nobody").await;
        assert_eq!(decoy.1, real.1, "{mechanism}: iteration counts differ");
        assert_eq!(
            salt_len(&decoy.0),
            salt_len(&real.0),
            "{mechanism}: salt lengths differ"
        );
        assert_ne!(decoy.0, real.0);
        before.push((mechanism, real, decoy));
    }
    server.restart();
    for (mechanism, real, decoy) in before {
        assert_eq!(salt_of(&server, mechanism, "alice").await, real);
        assert_eq!(
            salt_of(&server, mechanism, "nobody").await,
            decoy,
            "{mechanism}: the decoy salt changed with the restart"
        );
    }
    let key = server.dir.path().join("data").join("decoy-salt.key");
    let meta = std::fs::metadata(&key).expect("the decoy key file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key:?}");
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

// An attacker guessing dave's password from 127.0.0.2 is slowed, but dave
// himself, from 127.0.0.3 where nothing failed, logs in at once: the guesser
// cannot lock the real user out. failed_logins_before_delay = 8 and ten
// guesses: the ninth and tenth wait (1 s, 2 s); under a per-account count
// dave would wait 4 s.
#[tokio::test]
async fn a_guessing_address_does_not_slow_the_real_user_elsewhere() {
    let server = TestServer::with_config(&[("limits", "failed_logins_before_delay = 8")]);
    server.add_user("dave", "dave-pass");
    let mut times = Vec::new();
    for _ in 0..10 {
        let (t, r) = attempt_from(&server, addr(ATTACKER), "dave", "guess").await;
        assert_eq!(r, Err("not-authorized".to_string()));
        times.push(t);
    }
    assert!(
        times[8] >= Duration::from_millis(900) && times[9] >= Duration::from_millis(1900),
        "the guesser was not slowed: {times:?}"
    );
    let (t, r) = attempt_from(&server, addr(ELSEWHERE), "dave", "dave-pass").await;
    assert_eq!(r, Ok(()));
    assert!(
        t < Duration::from_secs(1),
        "dave waited {t:?} for the guesser"
    );
    // The guesser is still slowed after dave's success.
    let (t, r) = attempt_from(&server, addr(ATTACKER), "dave", "guess").await;
    assert_eq!(r, Err("not-authorized".to_string()));
    assert!(
        t >= Duration::from_millis(3900),
        "guesser not slowed: {t:?}"
    );
}

// Parallel guesses for one account from one address: one SASL exchange at a
// time. Twelve connections from 127.0.0.2 start SCRAM for dave together;
// one gets the server-first-message, the other eleven temporary-auth-failure
// at once. Meanwhile dave logs in from another address, and once the
// guesser's exchange is over its address may try again.
#[tokio::test]
async fn parallel_guesses_for_one_account_from_one_address_are_one_at_a_time() {
    const N: usize = 12;
    let server = Arc::new(TestServer::start());
    server.add_user("dave", "dave-pass");
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let server = server.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = secured_from(&server, addr(ATTACKER)).await;
            barrier.wait().await;
            let begun = c
                .auth_begin("SCRAM-SHA-256", "dave", "guess", ClientBinding::None)
                .await;
            (c, begun)
        }));
    }
    let mut running = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (c, begun) = t.await.expect("task");
        match begun {
            Ok(exchange) => running.push((c, exchange)),
            Err(condition) => {
                assert_eq!(condition, "temporary-auth-failure");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (running.len(), refused),
        (1, N - 1),
        "guesses in flight at once"
    );

    let (t, r) = attempt_from(&server, addr(ELSEWHERE), "dave", "dave-pass").await;
    assert_eq!(r, Ok(()), "dave from another address");
    assert!(t < Duration::from_secs(1), "dave waited {t:?}");

    let (mut c, (scram, server_first)) = running.pop().expect("one exchange");
    assert_eq!(
        c.auth_finish(scram, &server_first).await,
        Err("not-authorized".to_string())
    );
    let (_, r) = attempt_from(&server, addr(ATTACKER), "dave", "guess").await;
    assert_eq!(
        r,
        Err("not-authorized".to_string()),
        "the slot was not freed"
    );
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
