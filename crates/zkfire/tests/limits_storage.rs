//! What an account may keep on the server is bounded: private XML storage,
//! the roster (on every path that adds an item, and the size of each item),
//! pending subscription requests; and offline messages carry the server's
//! own delay stamp, whatever the sender put in them.

mod common;
use common::steps::{error_condition, is_result, presence_from};
use common::{Client, TestServer};
use std::time::{Duration, SystemTime};
use zkfire_xml::{ns, Element};

/// The `<text/>` of a stanza error.
fn error_text(e: &Element) -> String {
    e.child("error", ns::CLIENT)
        .and_then(|err| err.child_text("text", ns::STANZA_ERRORS))
        .unwrap_or_default()
}

fn private_set(id: &str, elements: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>{elements}</query></iq>")
}

/// The text stored under `namespace`, or None when nothing is stored there.
async fn private_get(c: &mut Client, namespace: &str) -> Option<String> {
    let r = c
        .iq(
            &format!("<iq type='get' id='g'><query xmlns='jabber:iq:private'><x xmlns='{namespace}'/></query></iq>"),
            "g",
        )
        .await;
    assert!(is_result(&r), "{r:?}");
    let stored = r.child("query", ns::PRIVATE)?.children().next()?.text();
    (!stored.is_empty()).then_some(stored)
}

/// Defaults: 100 namespaces and 1 MiB per account.
#[tokio::test]
async fn private_storage_is_bounded_in_namespaces_and_bytes() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;

    let hundred: String = (0..100)
        .map(|i| format!("<x xmlns='urn:example:n{i}'>v{i}</x>"))
        .collect();
    let r = a.iq(&private_set("s1", &hundred), "s1").await;
    assert!(is_result(&r), "{r:?}");
    let r = a
        .iq(
            &private_set("s2", "<x xmlns='urn:example:one-more'>v</x>"),
            "s2",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("resource-constraint"));
    assert!(error_text(&r).contains("namespaces"), "{r:?}");
    assert_eq!(private_get(&mut a, "urn:example:one-more").await, None);
    // Replacing an existing namespace is still fine when full.
    let r = a
        .iq(
            &private_set("s3", "<x xmlns='urn:example:n7'>new</x>"),
            "s3",
        )
        .await;
    assert!(is_result(&r), "{r:?}");
    assert_eq!(
        private_get(&mut a, "urn:example:n7").await.as_deref(),
        Some("new")
    );

    // Bytes: five of the hundred replaced by 200 KiB each come near 1 MiB.
    let big = |i: usize, c: char| {
        format!(
            "<x xmlns='urn:example:n{i}'>{}</x>",
            c.to_string().repeat(200 * 1024)
        )
    };
    for i in 0..5 {
        let id = format!("b{i}");
        let r = a.iq(&private_set(&id, &big(i, 'a')), &id).await;
        assert!(is_result(&r), "{i}: {r:?}");
    }
    // A sixth is past 1 MiB, and the old content stays.
    let r = a.iq(&private_set("b5", &big(5, 'a')), "b5").await;
    assert_eq!(error_condition(&r).as_deref(), Some("resource-constraint"));
    assert!(error_text(&r).contains("bytes"), "{r:?}");
    assert_eq!(
        private_get(&mut a, "urn:example:n5").await.as_deref(),
        Some("v5")
    );
    // Replacing a big one by another as big stays within the bound.
    let r = a.iq(&private_set("b6", &big(0, 'b')), "b6").await;
    assert!(is_result(&r), "{r:?}");
    let stored = private_get(&mut a, "urn:example:n0").await.unwrap();
    assert!(stored.starts_with('b') && stored.len() == 200 * 1024);
}

/// A set with several elements is stored whole or not at all.
#[tokio::test]
async fn private_storage_set_past_the_bound_stores_nothing() {
    let server = TestServer::with_config(&[("limits", "max_private_items = 2")]);
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let r = a
        .iq(&private_set("s1", "<x xmlns='urn:example:a'>a</x>"), "s1")
        .await;
    assert!(is_result(&r), "{r:?}");
    let r = a
        .iq(
            &private_set(
                "s2",
                "<x xmlns='urn:example:a'>a2</x><x xmlns='urn:example:b'>b</x><x xmlns='urn:example:c'>c</x>",
            ),
            "s2",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("resource-constraint"));
    assert_eq!(
        private_get(&mut a, "urn:example:a").await.as_deref(),
        Some("a")
    );
    assert_eq!(private_get(&mut a, "urn:example:b").await, None);
}

fn roster_set(id: &str, item: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>")
}

async fn roster_jids(c: &mut Client) -> Vec<String> {
    let r = c
        .iq(
            "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>",
            "rg",
        )
        .await;
    let mut jids: Vec<String> = r
        .child("query", ns::ROSTER)
        .expect("roster")
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect();
    jids.sort();
    jids
}

/// Defaults: names and group names of 256 bytes at most, 16 groups per item.
#[tokio::test]
async fn roster_item_name_and_groups_are_bounded() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let groups = |n: usize, len: usize| -> String {
        (0..n)
            .map(|i| format!("<group>{i:03}{}</group>", "g".repeat(len - 3)))
            .collect()
    };
    let ok = format!(
        "<item jid='bob@localhost' name='{}'>{}</item>",
        "n".repeat(256),
        groups(16, 256)
    );
    let r = a.iq(&roster_set("ok", &ok), "ok").await;
    assert!(is_result(&r), "{r:?}");

    let cases = [
        (
            "name",
            format!("<item jid='c@localhost' name='{}'/>", "n".repeat(257)),
        ),
        (
            "groups",
            format!("<item jid='c@localhost'>{}</item>", groups(17, 8)),
        ),
        (
            "group",
            format!("<item jid='c@localhost'>{}</item>", groups(1, 257)),
        ),
    ];
    for (what, item) in cases {
        let r = a.iq(&roster_set(what, &item), what).await;
        assert_eq!(
            error_condition(&r).as_deref(),
            Some("not-acceptable"),
            "{what}: {r:?}"
        );
        assert!(!error_text(&r).is_empty(), "{what}: {r:?}");
    }
    assert_eq!(roster_jids(&mut a).await, vec!["bob@localhost"]);
}

/// `max_roster_items` holds for roster sets, outbound subscription requests,
/// pre-approvals and approvals of a request alike.
#[tokio::test]
async fn roster_cap_holds_on_every_path_that_adds_an_item() {
    let server = TestServer::with_config(&[("limits", "max_roster_items = 2")]);
    for u in ["alice", "carol", "dave", "erin"] {
        server.add_user(u, "pw");
    }
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    a.available().await;
    let mut c = Client::login(&server, "carol", "pw", "c").await;
    c.available().await;
    let mut e = Client::login(&server, "erin", "pw", "e").await;
    e.available().await;
    // erin asks alice before alice's roster is full.
    e.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    a.next_matching(presence_from("erin@localhost", Some("subscribe")))
        .await;

    let r = a
        .iq(&roster_set("r1", "<item jid='bob@localhost'/>"), "r1")
        .await;
    assert!(is_result(&r), "{r:?}");
    a.send("<presence to='dave@localhost' type='subscribe' id='sub1'/>")
        .await;
    // Full now (bob, dave).
    a.send("<presence to='carol@localhost' type='subscribe' id='sub2'/>")
        .await;
    let err = a
        .next_matching(|e| e.name() == "presence" && e.attr("id") == Some("sub2"))
        .await;
    assert_eq!(err.attr("type"), Some("error"), "{err:?}");
    assert_eq!(
        error_condition(&err).as_deref(),
        Some("resource-constraint")
    );
    assert!(c
        .none_within(
            Duration::from_millis(500),
            presence_from("alice@localhost", Some("subscribe"))
        )
        .await
        .is_ok());

    // A pre-approval of a stranger would add an item too.
    a.send("<presence to='frank@localhost' type='subscribed' id='pre'/>")
        .await;
    let err = a
        .next_matching(|e| e.name() == "presence" && e.attr("id") == Some("pre"))
        .await;
    assert_eq!(
        error_condition(&err).as_deref(),
        Some("resource-constraint")
    );

    // So would approving erin's request; it stays pending.
    a.send("<presence to='erin@localhost' type='subscribed' id='ok-erin'/>")
        .await;
    let err = a
        .next_matching(|e| e.name() == "presence" && e.attr("id") == Some("ok-erin"))
        .await;
    assert_eq!(
        error_condition(&err).as_deref(),
        Some("resource-constraint")
    );
    assert!(e
        .none_within(
            Duration::from_millis(500),
            presence_from("alice@localhost", Some("subscribed"))
        )
        .await
        .is_ok());

    let r = a
        .iq(&roster_set("r2", "<item jid='gina@localhost'/>"), "r2")
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("resource-constraint"));
    assert!(error_text(&r).contains("roster"), "{r:?}");

    assert_eq!(
        roster_jids(&mut a).await,
        vec!["bob@localhost", "dave@localhost"]
    );
    // Changing an item already there still works when full.
    let r = a
        .iq(
            &roster_set("r3", "<item jid='bob@localhost' name='Bob'/>"),
            "r3",
        )
        .await;
    assert!(is_result(&r), "{r:?}");
    drop(a);

    // erin's request is still pending: alice gets it again at login.
    let mut a = Client::login(&server, "alice", "pw", "a2").await;
    a.send("<presence/>").await;
    a.next_matching(presence_from("erin@localhost", Some("subscribe")))
        .await;
}

/// Size of the SQLite database with its write-ahead log.
fn database_bytes(server: &TestServer) -> u64 {
    let data = server.dir.path().join("data");
    ["zkfire.db", "zkfire.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// A pending request keeps who asked, not the stanza it came in: 240 KiB of
/// status and payload do not reach the disk, nor the request delivered
/// again at login.
#[tokio::test]
async fn pending_subscription_keeps_only_the_requester() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    b.available().await;
    let before = database_bytes(&server);
    let status = "s".repeat(120 * 1024);
    b.send(&format!(
        "<presence to='alice@localhost' type='subscribe'><status>{status}</status><x xmlns='urn:example:junk'>{status}</x></presence>"
    ))
    .await;
    // Stored by the time alice logs in (bob's stanzas are handled in order).
    let r = b
        .iq(
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert!(is_result(&r));
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    a.send("<presence/>").await;
    let req = a
        .next_matching(presence_from("bob@localhost", Some("subscribe")))
        .await;
    assert_eq!(req.children().count(), 0, "{req:?}");
    let grown = database_bytes(&server).saturating_sub(before);
    assert!(grown < 100 * 1024, "the database grew by {grown} bytes");
}

/// `max_pending_subscriptions` per recipient: past it the request is
/// refused with an error to its sender, and not delivered.
#[tokio::test]
async fn pending_subscriptions_are_capped_per_recipient() {
    let server = TestServer::with_config(&[("limits", "max_pending_subscriptions = 2")]);
    for u in ["alice", "s1", "s2", "s3"] {
        server.add_user(u, "pw");
    }
    for u in ["s1", "s2"] {
        let mut s = Client::login(&server, u, "pw", "r").await;
        s.send("<presence to='alice@localhost' type='subscribe'/>")
            .await;
        let r = s
            .iq(
                "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
                "p",
            )
            .await;
        assert!(is_result(&r));
    }
    let mut s3 = Client::login(&server, "s3", "pw", "r").await;
    s3.available().await;
    s3.send("<presence to='alice@localhost' type='subscribe' id='third'/>")
        .await;
    let err = s3
        .next_matching(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("from"), Some("alice@localhost"), "{err:?}");
    assert_eq!(
        error_condition(&err).as_deref(),
        Some("resource-constraint")
    );
    assert!(!error_text(&err).is_empty(), "{err:?}");
    // A repeated request from someone already waiting is no new one.
    let mut s1 = Client::login(&server, "s1", "pw", "again").await;
    s1.available().await;
    s1.send("<presence to='alice@localhost' type='subscribe' id='again'/>")
        .await;
    assert!(s1
        .none_within(Duration::from_millis(500), |e| e.attr("type")
            == Some("error"))
        .await
        .is_ok());

    let mut a = Client::login(&server, "alice", "pw", "a").await;
    a.send("<presence/>").await;
    let mut from = Vec::new();
    while from.len() < 2 {
        let p = a
            .next_matching(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
            .await;
        from.push(p.attr("from").unwrap_or_default().to_string());
    }
    from.sort();
    assert_eq!(from, vec!["s1@localhost", "s2@localhost"]);
    assert!(a
        .none_within(
            Duration::from_millis(500),
            presence_from("s3@localhost", Some("subscribe"))
        )
        .await
        .is_ok());
    assert!(server.log().contains("pending subscription"), "no log line");
}

/// XEP-0203: the delay the recipient sees from the server's domain is the
/// server's, stamped when the message was stored, never the sender's.
#[tokio::test]
async fn offline_message_has_the_server_delay_only() {
    let server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let sent_at = SystemTime::now() - Duration::from_secs(1);
    a.send("<message to='bob@localhost' type='chat' id='m1'><body>hi</body><delay xmlns='urn:xmpp:delay' from='localhost' stamp='2001-01-01T00:00:00Z'/><x xmlns='jabber:x:delay' from='localhost' stamp='20010101T00:00:00'/></message>")
        .await;
    let r = a
        .iq(
            "<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert!(is_result(&r));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut b = Client::login(&server, "bob", "pw", "b").await;
    b.send("<presence/>").await;
    let m = b
        .next_matching(|e| e.name() == "message" && e.attr("id") == Some("m1"))
        .await;
    let received_at = SystemTime::now() + Duration::from_secs(1);
    let ours: Vec<&Element> = m
        .children()
        .filter(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some("localhost"))
        .collect();
    assert_eq!(ours.len(), 1, "{m:?}");
    let stamp = humantime::parse_rfc3339(ours[0].attr("stamp").unwrap_or_default()).expect("stamp");
    assert!(sent_at <= stamp && stamp <= received_at, "{m:?}");
    assert!(m.child("x", "jabber:x:delay").is_none(), "{m:?}");
}
