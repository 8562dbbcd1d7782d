//! RFC 6121 behaviour: roster versioning and pushes, the subscription state
//! machine, presence on disconnect, and the message delivery rules.

mod common;
use common::steps::{befriend, body, error_condition, presence_from};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::ns;

/// Creates the accounts alice and bob (not subscribed to each other).
fn users(server: &TestServer) {
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
}

/// A server with alice (resource `a`) and bob (`b`) logged in, and with
/// initial presence sent when `available`.
async fn alice_and_bob(available: bool) -> (TestServer, Client, Client) {
    let server = TestServer::start();
    users(&server);
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    if available {
        a.available().await;
        b.available().await;
    }
    (server, a, b)
}

#[tokio::test]
async fn roster_versioning_and_pushes_to_every_resource() {
    let server = TestServer::start();
    users(&server);
    let mut a1 = Client::login(&server, "alice", "pw", "one").await;
    let mut a2 = Client::login(&server, "alice", "pw", "two").await;
    let r = a1
        .iq(
            "<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>",
            "g1",
        )
        .await;
    let ver0 = r
        .child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("ver")
        .to_string();
    // The result and the push may come in either order: send, then look for the push.
    a1.send("<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>")
        .await;
    for c in [&mut a1, &mut a2] {
        let push = c
            .next_matching(|e| e.name() == "iq" && e.attr("type") == Some("set"))
            .await;
        let q = push.child("query", ns::ROSTER).expect("push");
        assert_ne!(q.attr("ver"), Some(ver0.as_str()));
        let item = q.child("item", ns::ROSTER).expect("item");
        assert_eq!(item.attr("name"), Some("Bob"));
        assert_eq!(
            item.child_text("group", ns::ROSTER).as_deref(),
            Some("Friends")
        );
        assert_eq!(item.attr("subscription"), Some("none"));
    }
    let r = a1
        .iq(
            "<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver=''/></iq>",
            "g2",
        )
        .await;
    let ver1 = r
        .child("query", ns::ROSTER)
        .and_then(|q| q.attr("ver"))
        .expect("ver")
        .to_string();
    // Unchanged since ver1: an empty result (XEP-0237).
    let r = a1
        .iq(
            &format!("<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='{ver1}'/></iq>"),
            "g3",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(r.children().next().is_none(), "{r:?}");
    let r = a1
        .iq("<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>", "s2")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let push = a2
        .next_matching(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .await;
    let item = push
        .child("query", ns::ROSTER)
        .and_then(|q| q.child("item", ns::ROSTER))
        .unwrap();
    assert_eq!(item.attr("subscription"), Some("remove"));
}

#[tokio::test]
async fn pending_subscription_request_comes_again_at_login() {
    let server = TestServer::start();
    users(&server);
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    a.available().await;
    a.send("<presence to='bob@localhost' type='subscribe'><status>it is alice</status></presence>")
        .await;
    a.iq(
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p",
    )
    .await;
    let mut b = Client::login(&server, "bob", "pw", "b").await;
    b.send("<presence/>").await;
    b.next_matching(presence_from("alice@localhost", Some("subscribe")))
        .await;
    drop(b);
    // Not answered: it comes again at the next login.
    let mut b = Client::login(&server, "bob", "pw", "b2").await;
    b.send("<presence/>").await;
    b.next_matching(presence_from("alice@localhost", Some("subscribe")))
        .await;
    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    a.next_matching(presence_from("bob@localhost", Some("subscribed")))
        .await;
    // Alice now gets bob's presence.
    a.next_matching(presence_from("bob@localhost/b2", None))
        .await;
}

#[tokio::test]
async fn pre_approved_subscription_is_accepted_at_once() {
    let (_server, mut a, mut b) = alice_and_bob(true).await;
    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let push = b.next_matching(|e| e.name() == "iq").await;
    let item = push
        .child("query", ns::ROSTER)
        .and_then(|q| q.child("item", ns::ROSTER))
        .unwrap();
    assert_eq!(item.attr("approved"), Some("true"));
    a.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    a.next_matching(presence_from("bob@localhost", Some("subscribed")))
        .await;
    let asked = b
        .none_within(
            Duration::from_millis(300),
            presence_from("alice@localhost", Some("subscribe")),
        )
        .await;
    assert!(
        asked.is_ok(),
        "a pre-approved request is not shown: {asked:?}"
    );
}

#[tokio::test]
async fn contacts_see_unavailable_when_connection_drops() {
    let (_server, mut a, mut b) = alice_and_bob(true).await;
    befriend(&mut a, &mut b).await;
    drop(b); // no stream close, the socket just goes
    a.next_matching(presence_from("bob@localhost/b", Some("unavailable")))
        .await;
}

#[tokio::test]
async fn directed_presence_is_followed_by_unavailable() {
    let (_server, mut a, mut b) = alice_and_bob(true).await;
    a.send("<presence to='bob@localhost/b'/>").await;
    b.next_matching(presence_from("alice@localhost/a", None))
        .await;
    a.send("</stream:stream>").await;
    b.next_matching(presence_from("alice@localhost/a", Some("unavailable")))
        .await;
}

#[tokio::test]
async fn bare_jid_messages_go_to_highest_priority_and_never_to_negative() {
    let server = TestServer::start();
    users(&server);
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    let mut hi = Client::login(&server, "bob", "pw", "hi").await;
    let mut lo = Client::login(&server, "bob", "pw", "lo").await;
    hi.send("<presence><priority>5</priority></presence>").await;
    lo.send("<presence><priority>1</priority></presence>").await;
    hi.next_matching(presence_from("bob@localhost/lo", None))
        .await;
    a.send("<message to='bob@localhost' type='chat'><body>to bare</body></message>")
        .await;
    assert_eq!(
        body(&hi.next_matching(|e| e.name() == "message").await).as_deref(),
        Some("to bare")
    );
    let got = lo
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(got.is_ok(), "lower priority got it: {got:?}");
    // Full JID of a resource that is gone: treated as bare.
    a.send("<message to='bob@localhost/gone' type='chat'><body>to gone</body></message>")
        .await;
    assert_eq!(
        body(&hi.next_matching(|e| e.name() == "message").await).as_deref(),
        Some("to gone")
    );
    // Only negative priority left: offline storage.
    hi.send("<presence><priority>-1</priority></presence>")
        .await;
    lo.send("<presence><priority>-1</priority></presence>")
        .await;
    a.iq(
        "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        "p",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send("<message to='bob@localhost' type='chat'><body>later</body></message>")
        .await;
    let got = hi
        .none_within(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    assert!(got.is_ok(), "{got:?}");
    let mut c = Client::login(&server, "bob", "pw", "third").await;
    c.send("<presence/>").await;
    let m = c.next_matching(|e| e.name() == "message").await;
    assert_eq!(body(&m).as_deref(), Some("later"));
}

#[tokio::test]
async fn delivery_errors() {
    let server = TestServer::with_config(&[("limits", "max_offline_messages = 2")]);
    users(&server);
    let mut a = Client::login(&server, "alice", "pw", "a").await;
    a.send("<message to='nobody@localhost' type='chat' id='n1'><body>x</body></message>")
        .await;
    let e = a.next_matching(|e| e.attr("id") == Some("n1")).await;
    assert_eq!(error_condition(&e).as_deref(), Some("service-unavailable"));
    a.send("<message to='bob@localhost' type='groupchat' id='g1'><body>x</body></message>")
        .await;
    let e = a.next_matching(|e| e.attr("id") == Some("g1")).await;
    assert_eq!(error_condition(&e).as_deref(), Some("service-unavailable"));
    a.send("<message to='someone@elsewhere.example' type='chat' id='r1'><body>x</body></message>")
        .await;
    let e = a.next_matching(|e| e.attr("id") == Some("r1")).await;
    assert_eq!(
        error_condition(&e).as_deref(),
        Some("remote-server-not-found")
    );
    let r = a
        .iq(
            "<iq type='get' id='i1' to='bob@localhost/none'><ping xmlns='urn:xmpp:ping'/></iq>",
            "i1",
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("service-unavailable"));
    // Offline storage holds two; the third is refused with an error.
    for i in 0..3 {
        a.send(&format!(
            "<message to='bob@localhost' type='chat' id='o{i}'><body>{i}</body></message>"
        ))
        .await;
    }
    let e = a.next_matching(|e| e.attr("id") == Some("o2")).await;
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(error_condition(&e).as_deref(), Some("service-unavailable"));
    let ok = a
        .none_within(Duration::from_millis(300), |e| {
            matches!(e.attr("id"), Some("o0") | Some("o1"))
        })
        .await;
    assert!(ok.is_ok(), "stored messages bounced: {ok:?}");
}

#[tokio::test]
async fn iq_to_full_jid_is_routed_and_answered() {
    let (_server, mut a, mut b) = alice_and_bob(false).await;
    a.send("<iq type='get' id='q1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let q = b.next_matching(|e| e.name() == "iq").await;
    assert_eq!(q.attr("from"), Some("alice@localhost/a"));
    b.send("<iq type='result' id='q1' to='alice@localhost/a'><query xmlns='jabber:iq:version'><name>test</name></query></iq>").await;
    let r = a.next_matching(|e| e.attr("id") == Some("q1")).await;
    assert_eq!(r.attr("from"), Some("bob@localhost/b"));
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test]
async fn simultaneous_mutual_subscriptions_both_end_as_both() {
    let server = TestServer::start();
    for round in 0..5 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        server.add_user(&x, "pw");
        server.add_user(&y, "pw");
        let mut a = Client::login(&server, &x, "pw", "r").await;
        let mut b = Client::login(&server, &y, "pw", "r").await;
        a.available().await;
        b.available().await;
        let (xj, yj) = (format!("{x}@localhost"), format!("{y}@localhost"));
        // Both ask at once, then both approve at once.
        a.send(&format!("<presence to='{yj}' type='subscribe'/>"))
            .await;
        b.send(&format!("<presence to='{xj}' type='subscribe'/>"))
            .await;
        b.next_matching(presence_from(&xj, Some("subscribe"))).await;
        a.next_matching(presence_from(&yj, Some("subscribe"))).await;
        a.send(&format!("<presence to='{yj}' type='subscribed'/>"))
            .await;
        b.send(&format!("<presence to='{xj}' type='subscribed'/>"))
            .await;
        a.next_matching(presence_from(&yj, Some("subscribed")))
            .await;
        b.next_matching(presence_from(&xj, Some("subscribed")))
            .await;
        for (c, other) in [(&mut a, &yj), (&mut b, &xj)] {
            let r = c
                .iq(
                    "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>",
                    "rg",
                )
                .await;
            let item = r
                .child("query", ns::ROSTER)
                .and_then(|q| q.children().find(|i| i.attr("jid") == Some(other.as_str())))
                .cloned()
                .expect("item");
            assert_eq!(
                item.attr("subscription"),
                Some("both"),
                "round {round}: {item:?}"
            );
            assert_eq!(item.attr("ask"), None, "round {round}: {item:?}");
        }
    }
}

/// RFC 6121 4.2.2: a user is subscribed to its own presence, so a resource
/// coming online sees the user's other available resources, and they see it.
#[tokio::test]
async fn a_new_resource_sees_the_users_other_resources() {
    let server = TestServer::start();
    server.add_user("bob", "pw");
    let mut r1 = Client::login(&server, "bob", "pw", "r1").await;
    r1.send("<presence><show>away</show></presence>").await;
    r1.next_matching(presence_from("bob@localhost/r1", None))
        .await;
    let mut r2 = Client::login(&server, "bob", "pw", "r2").await;
    r2.available().await;
    r1.next_matching(presence_from("bob@localhost/r2", None))
        .await;
    let seen = r2
        .next_matching(presence_from("bob@localhost/r1", None))
        .await;
    assert_eq!(seen.child_text("show", ns::CLIENT).as_deref(), Some("away"));
    // One that is not available is not shown.
    let _r3 = Client::login(&server, "bob", "pw", "r3").await;
    let mut r4 = Client::login(&server, "bob", "pw", "r4").await;
    r4.available().await;
    let r3 = r4
        .none_within(
            Duration::from_millis(500),
            presence_from("bob@localhost/r3", None),
        )
        .await;
    assert!(r3.is_ok(), "{r3:?}");
}
