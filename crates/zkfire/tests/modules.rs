//! Server modules over the wire: disco, ping, version, time, last activity,
//! vCard, private XML, blocking, registration and password change.

mod common;
use common::client::Closed;
use common::steps::{error_condition, is_result};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::ns;

#[tokio::test]
async fn disco_lists_module_features() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let r = a
        .iq("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d1")
        .await;
    assert!(is_result(&r), "{r:?}");
    let q = r.child("query", ns::DISCO_INFO).expect("query");
    let identity = q.child("identity", ns::DISCO_INFO).expect("identity");
    assert_eq!(identity.attr("category"), Some("server"));
    let features: Vec<&str> = q.children().filter_map(|f| f.attr("var")).collect();
    for f in [
        ns::DISCO_INFO,
        ns::PING,
        ns::VERSION,
        ns::TIME,
        ns::LAST,
        ns::VCARD,
        ns::PRIVATE,
        ns::BLOCKING,
        ns::MSGOFFLINE,
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
}

#[tokio::test]
async fn ping_version_time_and_uptime() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let r = a
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert!(is_result(&r));
    let r = a
        .iq(
            "<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
            "v",
        )
        .await;
    let q = r.child("query", ns::VERSION).expect("version");
    assert_eq!(q.child_text("name", ns::VERSION).as_deref(), Some("zkfire"));
    let r = a
        .iq(
            "<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
            "t",
        )
        .await;
    let utc = r
        .child("time", ns::TIME)
        .and_then(|t| t.child_text("utc", ns::TIME))
        .expect("utc");
    assert!(utc.ends_with('Z'), "{utc}");
    let r = a
        .iq(
            "<iq type='get' id='l' to='localhost'><query xmlns='jabber:iq:last'/></iq>",
            "l",
        )
        .await;
    assert!(
        r.child("query", ns::LAST)
            .and_then(|q| q.attr("seconds"))
            .is_some(),
        "{r:?}"
    );
}

#[tokio::test]
async fn vcard_set_get_and_privacy_of_other_modules() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    let r = a
        .iq(
            "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN></vCard></iq>",
            "v1",
        )
        .await;
    assert!(is_result(&r), "{r:?}");
    let r = b
        .iq(
            "<iq type='get' id='v2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
            "v2",
        )
        .await;
    let fn_ = r
        .child("vCard", ns::VCARD)
        .and_then(|v| v.child_text("FN", ns::VCARD));
    assert_eq!(fn_.as_deref(), Some("Alice Liddell"));
    // Bob may not write Alice's vCard nor read her private storage or roster.
    let r = b
        .iq("<iq type='set' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>x</FN></vCard></iq>", "v3")
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"));
    let r = b
        .iq(
            "<iq type='get' id='r1' to='alice@localhost'><query xmlns='jabber:iq:roster'/></iq>",
            "r1",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"));
    // Last activity of a non-contact is refused.
    let r = b
        .iq(
            "<iq type='get' id='l1' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>",
            "l1",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn private_xml_round_trip() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let r = a
        .iq("<iq type='set' id='s'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><color>blue</color></prefs></query></iq>", "s")
        .await;
    assert!(is_result(&r), "{r:?}");
    let r = a
        .iq("<iq type='get' id='g'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>", "g")
        .await;
    let color = r
        .child("query", ns::PRIVATE)
        .and_then(|q| q.child("prefs", "urn:example:prefs"))
        .and_then(|p| p.child_text("color", "urn:example:prefs"));
    assert_eq!(color.as_deref(), Some("blue"));
}

#[tokio::test]
async fn blocking_stops_messages_both_ways_until_unblocked() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    a.available().await;
    b.available().await;
    let r = b
        .iq("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>", "b1")
        .await;
    assert!(is_result(&r), "{r:?}");
    let r = b
        .iq(
            "<iq type='get' id='b2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
            "b2",
        )
        .await;
    let items: Vec<&str> = r
        .child("blocklist", ns::BLOCKING)
        .expect("blocklist")
        .children()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(items, ["alice@localhost"]);
    // Alice's message does not reach bob; she gets an error.
    a.send("<message to='bob@localhost' type='chat' id='x1'><body>blocked?</body></message>")
        .await;
    let err = a
        .next_matching(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("id"), Some("x1"));
    let leaked = b
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(leaked.is_ok(), "{leaked:?}");
    // Bob cannot write to alice either (XEP-0191 section 3.6).
    b.send("<message to='alice@localhost' type='chat' id='x2'><body>hi</body></message>")
        .await;
    let err = b
        .next_matching(|e| e.name() == "message" && e.attr("id") == Some("x2"))
        .await;
    assert_eq!(error_condition(&err).as_deref(), Some("not-acceptable"));
    let r = b
        .iq(
            "<iq type='set' id='b3'><unblock xmlns='urn:xmpp:blocking'/></iq>",
            "b3",
        )
        .await;
    assert!(is_result(&r));
    a.send("<message to='bob@localhost' type='chat'><body>now?</body></message>")
        .await;
    let m = b.next_matching(|e| e.name() == "message").await;
    assert_eq!(m.child_text("body", ns::CLIENT).as_deref(), Some("now?"));
}

#[tokio::test]
async fn in_band_registration_is_capped_per_address() {
    let server = TestServer::with_config(&[(
        "registration",
        "allow = true\nmax_per_address = 2\nper_address_window_secs = 600",
    )]);
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    let register = |id: &str, user: &str| {
        format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:register'><username>{user}</username><password>pw</password></query></iq>")
    };
    assert!(is_result(&c.iq(&register("r1", "u1"), "r1").await));
    // A refused registration (the name is taken) does not use the quota.
    let r = c.iq(&register("r2", "u1"), "r2").await;
    assert_eq!(error_condition(&r).as_deref(), Some("conflict"));
    assert!(is_result(&c.iq(&register("r3", "u2"), "r3").await));
    let r = c.iq(&register("r4", "u3"), "r4").await;
    assert_eq!(error_condition(&r).as_deref(), Some("resource-constraint"));
    let error = r.child("error", ns::CLIENT).expect("error child");
    assert_eq!(error.attr("type"), Some("wait"));
    // The refused account does not exist; the others log in.
    drop(c);
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    assert!(c.auth("SCRAM-SHA-256", "u3", "pw").await.is_err());
    Client::login(&server, "u2", "pw", "x").await;
}

#[tokio::test]
async fn in_band_registration_password_change_and_removal() {
    let server = TestServer::with_config(&[("registration", "allow = true")]);
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    let features = c.open().await;
    assert!(features.child("register", ns::REGISTER_FEATURE).is_some());
    let r = c
        .iq("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>carol</username><password>first</password></query></iq>", "r1")
        .await;
    assert!(is_result(&r), "{r:?}");
    let r = c
        .iq("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>carol</username><password>again</password></query></iq>", "r2")
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("conflict"));
    c.auth("SCRAM-SHA-256", "carol", "first")
        .await
        .expect("login");
    c.open().await;
    c.bind(Some("x")).await;
    let r = c
        .iq("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>carol</username><password>second</password></query></iq>", "r3")
        .await;
    assert!(is_result(&r), "{r:?}");
    drop(c);
    let mut c = Client::login(&server, "carol", "second", "y").await;
    let r = c
        .iq(
            "<iq type='set' id='r4'><query xmlns='jabber:iq:register'><remove/></query></iq>",
            "r4",
        )
        .await;
    assert!(is_result(&r), "{r:?}");
    assert_eq!(c.closed().await, Closed::Error("not-authorized".into()));
    let out = server.cli(&["user", "list"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("carol"));
}

#[tokio::test]
async fn registration_is_off_by_default() {
    let server = TestServer::start();
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    let features = c.open().await;
    assert!(features.child("register", ns::REGISTER_FEATURE).is_none());
    let r = c
        .iq("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>eve</username><password>x</password></query></iq>", "r1")
        .await;
    assert_eq!(r.attr("type"), Some("error"));
}
