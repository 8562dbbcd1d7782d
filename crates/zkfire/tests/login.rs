//! Logging in: STARTTLS and direct TLS, SCRAM, binding, and refusals.

mod common;
use common::client::Closed;
use common::{Client, TestServer};
use zkfire_xml::ns;

#[tokio::test]
async fn scram_over_starttls_and_direct_tls() {
    let server = TestServer::start();
    server.add_user("alice", "secret");

    let mut c = Client::connect(server.port).await;
    let features = c.open().await;
    let starttls = features
        .child("starttls", ns::TLS)
        .expect("STARTTLS offered");
    assert!(
        starttls.child("required", ns::TLS).is_some(),
        "TLS required by default"
    );
    assert!(
        features.child("mechanisms", ns::SASL).is_none(),
        "no SASL before TLS"
    );
    let mut c = c.starttls(&server.cert_path()).await;
    let features = c.open().await;
    let mechs: Vec<String> = features
        .child("mechanisms", ns::SASL)
        .expect("mechanisms")
        .children()
        .map(|m| m.text())
        .collect();
    for m in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        assert!(mechs.iter().any(|x| x == m), "{m} offered: {mechs:?}");
    }
    c.auth("SCRAM-SHA-1", "alice", "secret")
        .await
        .expect("SCRAM-SHA-1");
    let features = c.open().await;
    assert!(features.child("bind", ns::BIND).is_some());
    assert!(features.child("sm", ns::SM).is_some());
    let jid = c.bind(None).await;
    assert!(jid.starts_with("alice@localhost/"), "{jid}");

    let mut d = Client::connect_tls(server.tls_port, &server.cert_path()).await;
    assert!(d.is_tls());
    d.open().await;
    d.auth("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("direct TLS login");
    d.open().await;
    assert_eq!(d.bind(Some("phone")).await, "alice@localhost/phone");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_not_authorized() {
    let server = TestServer::start();
    server.add_user("alice", "secret");
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    assert_eq!(
        c.auth("SCRAM-SHA-256", "alice", "wrong").await,
        Err("not-authorized".into())
    );
    assert_eq!(
        c.auth("SCRAM-SHA-256", "nobody", "secret").await,
        Err("not-authorized".into())
    );
    // The same connection may still log in correctly.
    c.auth("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("login after failures");
}

#[tokio::test]
async fn auth_before_tls_is_refused() {
    let server = TestServer::start();
    server.add_user("alice", "secret");
    let mut c = Client::connect(server.port).await;
    c.open().await;
    assert_eq!(
        c.auth("SCRAM-SHA-256", "alice", "secret").await,
        Err("encryption-required".into())
    );
}

#[tokio::test]
async fn same_full_jid_replaces_older_session() {
    let server = TestServer::start();
    server.add_user("alice", "secret");
    let mut first = Client::login(&server, "alice", "secret", "desk").await;
    let _second = Client::login(&server, "alice", "secret", "desk").await;
    assert_eq!(first.closed().await, Closed::Error("conflict".into()));
}

#[tokio::test]
async fn wrong_domain_is_host_unknown() {
    let server = TestServer::start();
    let mut c = Client::connect(server.port).await;
    c.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>").await;
    assert_eq!(c.closed().await, Closed::Error("host-unknown".into()));
}

#[tokio::test]
async fn channel_binding_and_plain() {
    use zkfire_sasl::client::ClientBinding;
    let server = TestServer::start();
    server.add_user("alice", "secret");
    for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
        let mut c = Client::connect(server.port).await;
        c.open().await;
        let mut c = c.starttls(&server.cert_path()).await;
        let features = c.open().await;
        let cb = features
            .child("sasl-channel-binding", ns::SASL_CB)
            .expect("XEP-0440");
        assert_eq!(
            cb.child("channel-binding", ns::SASL_CB)
                .and_then(|b| b.attr("type")),
            Some("tls-exporter")
        );
        c.auth(mechanism, "alice", "secret").await.expect(mechanism);
    }
    // Binding data from another connection is refused.
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    let wrong = ClientBinding::TlsExporter(vec![7u8; 32]);
    assert_eq!(
        c.auth_with("SCRAM-SHA-256-PLUS", "alice", "secret", wrong)
            .await,
        Err("not-authorized".into())
    );
    // A client that supports binding but saw no -PLUS ('y') is a downgrade here.
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    assert_eq!(
        c.auth_with(
            "SCRAM-SHA-256",
            "alice",
            "secret",
            ClientBinding::NotAdvertised
        )
        .await,
        Err("not-authorized".into())
    );
    // PLAIN over TLS works, and is not offered without it.
    let mut c = Client::connect_tls(server.tls_port, &server.cert_path()).await;
    c.open().await;
    assert_eq!(
        c.auth_plain("alice", "wrong").await,
        Err("not-authorized".into())
    );
    c.auth_plain("alice", "secret").await.expect("PLAIN");
}

#[tokio::test]
async fn plain_is_not_offered_without_tls() {
    let server = TestServer::with_config(&[("c2s", "require_tls = false")]);
    server.add_user("alice", "secret");
    let mut c = Client::connect(server.port).await;
    let features = c.open().await;
    let mechs: Vec<String> = features
        .child("mechanisms", ns::SASL)
        .expect("SASL offered without TLS when not required")
        .children()
        .map(|m| m.text())
        .collect();
    assert!(
        !mechs.iter().any(|m| m == "PLAIN" || m.ends_with("-PLUS")),
        "{mechs:?}"
    );
    assert_eq!(
        c.auth_plain("alice", "secret").await,
        Err("invalid-mechanism".into())
    );
    c.auth("SCRAM-SHA-256", "alice", "secret")
        .await
        .expect("SCRAM without TLS");
}
