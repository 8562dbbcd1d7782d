//! Message Archive Management (XEP-0313) and stanza ids (XEP-0359), on the
//! wire: what a client syncing its history sees, on one node and across a
//! cluster.

mod common;
use common::cluster::TestCluster;
use common::mam::{query, Page, MAM, RSM};
use common::steps::{body, disco_features, error_condition};
use common::{Client, TestServer};
use std::time::Duration;
use zkfire_xml::{ns, Element};

fn users(extra: &[(&str, &str)]) -> TestServer {
    let server = TestServer::with_config(extra);
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, "pw");
    }
    server
}

async fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = Client::login(server, user, "pw", resource).await;
    c.available().await;
    c
}

fn is_chat(e: &Element) -> bool {
    e.name() == "message" && body(e).is_some()
}

/// The archive id a delivered message carries for `by`.
fn stanza_id(e: &Element, by: &str) -> Option<String> {
    e.children()
        .find(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .map(str::to_string)
}

async fn page(c: &mut Client, inner: &str) -> Page {
    query(c, None, inner).await.expect("a result")
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x>");
    x
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='{RSM}'>{inner}</set>")
}

async fn chat(from: &mut Client, to: &mut Client, to_jid: &str, text: &str) -> Element {
    from.send(&format!(
        "<message to='{to_jid}' type='chat'><body>{text}</body></message>"
    ))
    .await;
    to.next_matching(is_chat).await
}

#[tokio::test]
async fn accounts_advertise_mam_and_stanza_ids() {
    let server = users(&[]);
    let mut c = online(&server, "bob", "r").await;
    let features = disco_features(&mut c, "bob@localhost").await;
    for f in [MAM, "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"] {
        assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
    }
    // And on the server, where some clients (profanity) look for it.
    let server_features = disco_features(&mut c, "localhost").await;
    assert!(
        server_features.iter().any(|x| x == MAM),
        "{server_features:?}"
    );
    // The form's fields.
    let fields = c
        .iq(
            &format!("<iq type='get' id='f'><query xmlns='{MAM}'/></iq>"),
            "f",
        )
        .await;
    let vars: Vec<&str> = fields
        .child("query", MAM)
        .and_then(|q| q.child("x", "jabber:x:data"))
        .map(|x| x.children().filter_map(|f| f.attr("var")).collect())
        .unwrap_or_default();
    assert_eq!(
        vars,
        [
            "FORM_TYPE",
            "with",
            "start",
            "end",
            "after-id",
            "before-id",
            "ids"
        ]
    );
}

#[tokio::test]
async fn both_archives_hold_a_chat_and_the_copy_carries_the_archive_id() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    let mut delivered = Vec::new();
    for i in 0..3 {
        let got = chat(&mut alice, &mut bob, "bob@localhost", &format!("m{i}")).await;
        delivered.push(stanza_id(&got, "bob@localhost").expect("a stanza-id by bob's account"));
        // The sender's archive id is not the recipient's business.
        assert_eq!(stanza_id(&got, "alice@localhost"), None, "{got:?}");
    }
    let p = page(&mut bob, "").await;
    assert_eq!(p.bodies(), ["m0", "m1", "m2"]);
    assert_eq!(p.ids(), delivered);
    assert!(p.complete());
    let (_, first) = &p.items[0];
    assert_eq!(first.attr("from"), Some("alice@localhost/desk"));
    assert_eq!(first.attr("to"), Some("bob@localhost"));

    let p = page(&mut alice, &form(&[("with", "bob@localhost")])).await;
    assert_eq!(p.bodies(), ["m0", "m1", "m2"]);
    let (_, first) = &p.items[0];
    assert_eq!(first.attr("from"), Some("alice@localhost/desk"));
    // Carol's archive has none of it.
    let mut carol = online(&server, "carol", "r").await;
    assert!(page(&mut carol, "").await.items.is_empty());
}

#[tokio::test]
async fn forged_stanza_ids_are_removed_and_origin_ids_kept() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    alice
        .send(
            "<message to='bob@localhost' type='chat'><body>trust me</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged-too'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='alice-own-1'/></message>",
        )
        .await;
    let got = bob.next_matching(is_chat).await;
    let ids: Vec<(&str, Option<&str>, Option<&str>)> = got
        .children()
        .filter(|c| c.ns() == ns::SID)
        .map(|c| (c.name(), c.attr("by"), c.attr("id")))
        .collect();
    let real = stanza_id(&got, "bob@localhost").expect("the server's stanza-id");
    assert_ne!(real, "forged");
    assert_eq!(
        ids,
        [
            ("origin-id", None, Some("alice-own-1")),
            ("stanza-id", Some("bob@localhost"), Some(real.as_str()))
        ]
    );
    // The archived copy keeps the origin id and holds no forged id.
    for c in [&mut bob, &mut alice] {
        let p = page(c, "").await;
        let (_, m) = &p.items[0];
        assert_eq!(
            m.child("origin-id", ns::SID).and_then(|o| o.attr("id")),
            Some("alice-own-1")
        );
        assert!(m.child("stanza-id", ns::SID).is_none(), "{m:?}");
    }
}

#[tokio::test]
async fn a_message_to_an_offline_user_is_archived_and_delivered_later_with_its_id() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>while you were out</body></message>")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bob = Client::login(&server, "bob", "pw", "phone").await;
    // A client syncing by MAM sees it before it sends presence...
    let p = page(&mut bob, "").await;
    assert_eq!(p.bodies(), ["while you were out"]);
    // ... and XEP-0160 still delivers it, with the same id.
    bob.send("<presence/>").await;
    let offline = bob.next_matching(is_chat).await;
    assert_eq!(
        stanza_id(&offline, "bob@localhost"),
        Some(p.ids()[0].clone())
    );
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_repeats() {
    let server = users(&[("mam", "max_page = 10"), ("mam", "count_results = true")]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    for i in 0..25 {
        chat(&mut alice, &mut bob, "bob@localhost", &format!("{i:02}")).await;
    }
    let all: Vec<String> = (0..25).map(|i| format!("{i:02}")).collect();
    // Forward, ten at a time; a client asking for more gets max_page.
    let mut seen = Vec::new();
    let mut after = String::new();
    for n in 0..3 {
        let p = page(&mut bob, &rsm(&format!("<max>50</max>{after}"))).await;
        assert_eq!(p.complete(), n == 2, "page {n}");
        assert_eq!(p.rsm("count").as_deref(), Some("25"));
        assert_eq!(p.rsm("first"), p.ids().first().cloned());
        assert_eq!(p.rsm("last"), p.ids().last().cloned());
        seen.extend(p.bodies());
        after = format!("<after>{}</after>", p.rsm("last").unwrap());
    }
    assert_eq!(seen, all);
    // Backwards from the end, as clients fetch recent history.
    let p = page(&mut bob, &rsm("<max>10</max><before/>")).await;
    assert_eq!(p.bodies(), all[15..]);
    assert!(!p.complete());
    let p2 = page(
        &mut bob,
        &rsm(&format!("<max>10</max><before>{}</before>", p.ids()[0])),
    )
    .await;
    assert_eq!(p2.bodies(), all[5..15]);
    // Flipped: newest first.
    let p = page(
        &mut bob,
        &format!("{}<flip-page/>", rsm("<max>3</max><before/>")),
    )
    .await;
    assert_eq!(p.bodies(), ["24", "23", "22"]);
    // Only the count.
    let p = page(&mut bob, &rsm("<max>0</max>")).await;
    assert!(p.items.is_empty());
    assert_eq!(p.rsm("count").as_deref(), Some("25"));
}

#[tokio::test]
async fn filters_narrow_by_contact_time_and_id() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut carol = online(&server, "carol", "tab").await;
    let mut bob = online(&server, "bob", "phone").await;
    chat(&mut alice, &mut bob, "bob@localhost", "a1").await;
    chat(&mut carol, &mut bob, "bob@localhost", "c1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    chat(&mut alice, &mut bob, "bob@localhost", "a2").await;
    chat(&mut carol, &mut bob, "bob@localhost/phone", "c2").await;

    let p = page(&mut bob, &form(&[("with", "alice@localhost")])).await;
    assert_eq!(p.bodies(), ["a1", "a2"]);
    let p = page(&mut bob, &form(&[("with", "carol@localhost/tab")])).await;
    assert_eq!(p.bodies(), ["c1", "c2"]);
    let p = page(&mut bob, &form(&[("start", &middle)])).await;
    assert_eq!(p.bodies(), ["a2", "c2"]);
    let p = page(&mut bob, &form(&[("end", &middle)])).await;
    assert_eq!(p.bodies(), ["a1", "c1"]);
    let p = page(
        &mut bob,
        &form(&[("with", "alice@localhost"), ("start", &middle)]),
    )
    .await;
    assert_eq!(p.bodies(), ["a2"]);

    let all = page(&mut bob, "").await;
    let ids = all.ids();
    let p = page(
        &mut bob,
        &form(&[("after-id", &ids[0]), ("before-id", &ids[3])]),
    )
    .await;
    assert_eq!(p.bodies(), ["c1", "a2"]);
    let wanted = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>{MAM}</value></field>\
         <field var='ids'><value>{}</value><value>{}</value></field></x>",
        ids[3], ids[1]
    );
    let p = page(&mut bob, &wanted).await;
    assert_eq!(p.bodies(), ["c1", "c2"]);

    // What cannot be answered is an error, not an empty page.
    let e = query(
        &mut bob,
        None,
        &form(&[("after-id", "01ARZ3NDEKTSV4RRFFQ69G5FAV")]),
    )
    .await
    .err()
    .expect("an error");
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
    let e = query(&mut bob, None, &rsm("<after>no-such-id</after>"))
        .await
        .err()
        .expect("an error");
    assert_eq!(error_condition(&e).as_deref(), Some("item-not-found"));
    let e = query(&mut bob, None, &form(&[("colour", "blue")]))
        .await
        .err()
        .expect("an error");
    assert_eq!(error_condition(&e).as_deref(), Some("bad-request"));
    let e = query(&mut bob, None, &form(&[("start", "last tuesday")]))
        .await
        .err()
        .expect("an error");
    assert_eq!(error_condition(&e).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn only_conversations_are_archived() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    let sends = [
        "<message to='bob@localhost' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message to='bob@localhost' type='headline'><body>news</body></message>",
        "<message to='bob@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>",
        "<message to='bob@localhost'><body>normal with body</body></message>",
        "<message to='bob@localhost' type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='x1'/></message>",
        "<message to='bob@localhost' type='chat'><body>kept</body></message>",
    ];
    for s in sends {
        alice.send(s).await;
    }
    bob.next_matching(|e| body(e).as_deref() == Some("kept"))
        .await;
    let p = page(&mut bob, "").await;
    assert_eq!(p.bodies(), ["normal with body", "kept"]);
    assert_eq!(p.items.len(), 3, "with the displayed marker");
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut carol = online(&server, "carol", "tab").await;
    let mut bob = online(&server, "bob", "phone").await;
    let prefs = bob
        .iq(
            &format!("<iq type='get' id='p0'><prefs xmlns='{MAM}'/></iq>"),
            "p0",
        )
        .await;
    assert_eq!(
        prefs.child("prefs", MAM).and_then(|p| p.attr("default")),
        Some("always")
    );
    let set = bob
        .iq(
            &format!(
                "<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'>\
                 <always><jid>carol@localhost</jid></always><never/></prefs></iq>"
            ),
            "p1",
        )
        .await;
    let stored = set.child("prefs", MAM).expect("the stored prefs");
    assert_eq!(stored.attr("default"), Some("never"));
    let got = chat(&mut alice, &mut bob, "bob@localhost", "not kept").await;
    assert_eq!(
        stanza_id(&got, "bob@localhost"),
        None,
        "no id when not archived"
    );
    let got = chat(
        &mut carol,
        &mut bob,
        "bob@localhost",
        "kept, carol is always",
    )
    .await;
    assert!(stanza_id(&got, "bob@localhost").is_some());
    assert_eq!(page(&mut bob, "").await.bodies(), ["kept, carol is always"]);
    // Alice's own archive goes by her own preferences.
    assert_eq!(page(&mut alice, "").await.bodies(), ["not kept"]);

    let bad = bob
        .iq(
            &format!("<iq type='set' id='p2'><prefs xmlns='{MAM}' default='sometimes'/></iq>"),
            "p2",
        )
        .await;
    assert_eq!(error_condition(&bad).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn another_users_archive_is_refused() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    chat(&mut alice, &mut bob, "bob@localhost", "private").await;
    let e = query(&mut alice, Some("bob@localhost"), "")
        .await
        .err()
        .expect("refused");
    assert_eq!(error_condition(&e).as_deref(), Some("forbidden"));
    let e = alice
        .iq(
            &format!("<iq type='get' id='p' to='bob@localhost'><prefs xmlns='{MAM}'/></iq>"),
            "p",
        )
        .await;
    assert_eq!(e.attr("type"), Some("error"));
}

#[tokio::test]
async fn sent_carbons_carry_the_senders_archive_id() {
    let server = users(&[]);
    let mut desk = online(&server, "alice", "desk").await;
    let mut phone = online(&server, "alice", "phone").await;
    for c in [&mut desk, &mut phone] {
        let r = c
            .iq(
                "<iq type='set' id='cc'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
                "cc",
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let mut bob = online(&server, "bob", "r").await;
    chat(&mut desk, &mut bob, "bob@localhost", "hello").await;
    let carbon = phone
        .next_matching(|e| e.child("sent", ns::CARBONS).is_some())
        .await;
    let inner = carbon
        .child("sent", ns::CARBONS)
        .and_then(|s| s.child("forwarded", ns::FORWARD))
        .and_then(|f| f.child("message", ns::CLIENT))
        .expect("the sent message");
    let id = stanza_id(inner, "alice@localhost").expect("alice's archive id in the carbon");
    assert_eq!(page(&mut phone, "").await.ids(), [id]);
}

#[tokio::test]
async fn metadata_gives_the_first_and_last_ids() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    let empty = bob
        .iq(
            &format!("<iq type='get' id='m0'><metadata xmlns='{MAM}'/></iq>"),
            "m0",
        )
        .await;
    assert!(empty
        .child("metadata", MAM)
        .expect("metadata")
        .children()
        .next()
        .is_none());
    for i in 0..3 {
        chat(&mut alice, &mut bob, "bob@localhost", &format!("m{i}")).await;
    }
    let ids = page(&mut bob, "").await.ids();
    let meta = bob
        .iq(
            &format!("<iq type='get' id='m1'><metadata xmlns='{MAM}'/></iq>"),
            "m1",
        )
        .await;
    let meta = meta.child("metadata", MAM).expect("metadata");
    let id = |n: &str| {
        meta.child(n, MAM)
            .and_then(|e| e.attr("id"))
            .map(str::to_string)
    };
    assert_eq!(id("start"), Some(ids[0].clone()));
    assert_eq!(id("end"), Some(ids[2].clone()));
}

#[tokio::test]
async fn deleting_the_user_deletes_the_archive() {
    let server = users(&[]);
    {
        let mut alice = online(&server, "alice", "desk").await;
        let mut bob = online(&server, "bob", "phone").await;
        chat(&mut alice, &mut bob, "bob@localhost", "gone soon").await;
        assert_eq!(page(&mut bob, "").await.items.len(), 1);
    }
    let out = server.cli(&["user", "delete", "bob"]);
    assert!(out.status.success(), "{out:?}");
    server.add_user("bob", "pw");
    let mut bob = online(&server, "bob", "phone").await;
    assert!(page(&mut bob, "").await.items.is_empty());
}

#[tokio::test]
async fn messages_older_than_the_retention_are_purged() {
    let mut server = users(&[("mam", "retention_days = 30")]);
    {
        let mut alice = online(&server, "alice", "desk").await;
        let mut bob = online(&server, "bob", "phone").await;
        chat(&mut alice, &mut bob, "bob@localhost", "recent").await;
    }
    // Two messages from long ago, written while the server is down.
    assert!(server.stop());
    let url = format!(
        "sqlite://{}",
        server.dir.path().join("data/zkfire.db").display()
    );
    let storage = zkfire_storage::open(&url).await.unwrap();
    let day_ms = 86_400_000u64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let old: Vec<_> = [40u64, 31]
        .iter()
        .map(|days| {
            let ts = now_ms - days * day_ms;
            let m = zkfire_storage::ArchivedMessage {
                id: ulid::Ulid::from_parts(ts, 7).to_string(),
                ts_ms: ts as i64,
                with_bare: "alice@localhost".into(),
                with_full: "alice@localhost/desk".into(),
                stanza: format!(
                    "<message xmlns='jabber:client' from='alice@localhost/desk' to='bob@localhost' type='chat'><body>{days} days ago</body></message>"
                ),
            };
            ("bob".to_string(), m)
        })
        .collect();
    storage.archive_messages(&old).await.unwrap();
    storage.close().await;
    server.restart();
    let mut bob = online(&server, "bob", "phone").await;
    let mut bodies = Vec::new();
    for _ in 0..50 {
        bodies = page(&mut bob, "").await.bodies();
        if bodies.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bodies, ["recent"]);
}

#[tokio::test]
async fn without_mam_there_are_no_archives_and_no_ids() {
    let server = users(&[("mam", "enabled = false")]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    alice
        .send(
            "<message to='bob@localhost' type='chat'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/></message>",
        )
        .await;
    let got = bob.next_matching(is_chat).await;
    assert_eq!(stanza_id(&got, "bob@localhost").as_deref(), Some("forged"));
    let e = query(&mut bob, None, "").await.err().expect("no archive");
    assert_eq!(error_condition(&e).as_deref(), Some("service-unavailable"));
}

/// alice on node 1 and bob on nodes 2 and 3: each archive has the chat, the
/// copy on every node carries bob's archive id, and bob's query through any
/// node gives the same page.
#[tokio::test(flavor = "multi_thread")]
async fn archives_are_the_same_through_every_node() {
    let cluster = TestCluster::start(3);
    cluster.wait_connected();
    for u in ["alice", "bob"] {
        cluster.add_user(u, "pw");
    }
    let mut alice = online(cluster.node(0), "alice", "desk").await;
    let mut phone = online(cluster.node(1), "bob", "phone").await;
    let mut laptop = online(cluster.node(2), "bob", "laptop").await;
    // Node 1 has heard of both of bob's resources.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat'><body>x{i}</body></message>"
            ))
            .await;
        let a = phone.next_matching(is_chat).await;
        let b = laptop.next_matching(is_chat).await;
        let id = stanza_id(&a, "bob@localhost").expect("an id on node 2");
        assert_eq!(
            stanza_id(&b, "bob@localhost"),
            Some(id.clone()),
            "the same on node 3"
        );
        ids.push(id);
    }
    let on_2 = page(&mut phone, "").await;
    let on_3 = page(&mut laptop, "").await;
    assert_eq!(on_2.bodies(), ["x0", "x1", "x2"]);
    assert_eq!(on_2.ids(), ids);
    assert_eq!(on_3.ids(), ids);
    let sent = page(&mut alice, "").await;
    assert_eq!(sent.bodies(), ["x0", "x1", "x2"]);
    // bob answers from node 3: alice's archive on node 1 has it at once.
    laptop
        .send("<message to='alice@localhost/desk' type='chat'><body>back</body></message>")
        .await;
    alice.next_matching(is_chat).await;
    assert_eq!(
        page(&mut alice, "").await.bodies(),
        ["x0", "x1", "x2", "back"]
    );
}

#[tokio::test]
async fn pages_are_not_counted_unless_asked() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    let mut bob = online(&server, "bob", "phone").await;
    for i in 0..3 {
        chat(&mut alice, &mut bob, "bob@localhost", &format!("m{i}")).await;
    }
    let p = page(&mut bob, "").await;
    assert_eq!(p.items.len(), 3);
    assert_eq!(p.rsm("count"), None, "counting is off by default");
    assert!(p.rsm("first").is_some() && p.rsm("last").is_some());
    let p = page(&mut bob, &rsm("<max>0</max>")).await;
    assert_eq!(
        p.rsm("count").as_deref(),
        Some("3"),
        "a count request is answered"
    );
}

#[tokio::test]
async fn a_message_to_no_account_is_not_archived_for_it() {
    let server = users(&[]);
    let mut alice = online(&server, "alice", "desk").await;
    alice
        .send("<message to='nobody@localhost' type='chat'><body>hello?</body></message>")
        .await;
    let bounce = alice
        .next_matching(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(
        error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
    // If the name is registered later, its archive starts empty.
    server.add_user("nobody", "pw");
    let mut nobody = online(&server, "nobody", "r").await;
    assert!(page(&mut nobody, "").await.items.is_empty());
    // The sender's own archive keeps what she sent.
    assert_eq!(page(&mut alice, "").await.bodies(), ["hello?"]);
}
