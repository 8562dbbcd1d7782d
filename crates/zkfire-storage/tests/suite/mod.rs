//! The storage test suite, written once against `Arc<dyn Storage>` and run on
//! every backend: each backend's test file defines a fixture and invokes
//! `storage_suite!(fixture)`, which makes one `#[tokio::test]` per case here.

mod archive;
mod pep;
pub use archive::*;
pub use pep::*;

use std::collections::HashSet;
use std::sync::Arc;
use zkfire_sasl::{ScramCredentials, ScramHash, UserCredentials};
use zkfire_storage::{Limit, PrivateXmlLimits, RosterItem, Storage, StorageError, Subscription};

/// Private XML bounds no case here comes near.
const ROOMY: PrivateXmlLimits = PrivateXmlLimits {
    max_items: 1000,
    max_bytes: 1 << 20,
};

/// A storage opened on a fresh, empty database, and whatever keeps that
/// database alive (temporary folder, PostgreSQL instance).
pub struct Fixture {
    pub storage: Arc<dyn Storage>,
    pub _keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Makes one test per case for the fixture `$fixture` (an async fn returning
/// a [`Fixture`]). Every case of this module must be listed here.
macro_rules! storage_suite {
    ($fixture:path) => {
        storage_suite!(@cases $fixture;
            account_create_and_exists,
            account_duplicate,
            credentials_round_trip,
            set_credentials_replaces,
            delete_account_removes_everything,
            list_accounts_sorted,
            untouched_account_is_empty,
            roster_put_update_remove,
            roster_groups,
            roster_update_is_atomic,
            roster_accounts_are_separate,
            roster_concurrent_changes,
            pending_subscriptions,
            pending_subscriptions_limit,
            pending_subscriptions_concurrent_limit,
            roster_limit_on_new_items,
            roster_limit_concurrent,
            offline_respects_max,
            offline_concurrent_limit,
            offline_order_and_delete,
            offline_delete_many_ids,
            vcard_set_and_overwrite,
            private_xml_set_and_overwrite,
            private_xml_limits,
            private_xml_concurrent_limit,
            blocklist,
            last_activity,
            text_round_trip,
            closed_storage_errors,
            archive_pages_forward_without_gaps,
            archive_last_page_and_backwards,
            archive_filters,
            archive_rewrite_is_no_duplicate,
            archive_bounds_contains_and_purge,
            archive_prefs_round_trip,
            pep_nodes_and_their_bound,
            pep_items_order_replace_and_trim,
            caps_round_trip,
        );
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $fixture().await;
                suite::$case(fixture.storage.clone()).await;
                fixture.storage.close().await;
            }
        )*
    };
}

fn scram(hash: ScramHash, seed: u8) -> ScramCredentials {
    // Bytes 0x00 and 0xff included, to catch text-encoding accidents.
    ScramCredentials {
        hash,
        salt: vec![seed, 0x00, 0xff, 0x80, seed.wrapping_mul(3)],
        iterations: 4096 + u32::from(seed),
        stored_key: (0..32).map(|i| i ^ seed).collect(),
        server_key: (0..32).map(|i| 255 - (i ^ seed)).collect(),
    }
}

pub fn creds(seed: u8) -> UserCredentials {
    UserCredentials {
        sha1: scram(ScramHash::Sha1, seed),
        sha256: scram(ScramHash::Sha256, seed.wrapping_add(100)),
    }
}

fn item(jid: &str, groups: &[&str]) -> RosterItem {
    RosterItem {
        jid: jid.to_string(),
        name: None,
        subscription: Subscription::None,
        ask: false,
        approved: false,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub async fn account_create_and_exists(s: Arc<dyn Storage>) {
    assert!(!s.account_exists("alice").await.unwrap());
    s.create_account("alice", &creds(1)).await.unwrap();
    assert!(s.account_exists("alice").await.unwrap());
    assert!(!s.account_exists("bob").await.unwrap());
    assert_eq!(s.list_accounts().await.unwrap(), strings(&["alice"]));
}

pub async fn account_duplicate(s: Arc<dyn Storage>) {
    s.create_account("alice", &creds(1)).await.unwrap();
    let err = s.create_account("alice", &creds(2)).await.unwrap_err();
    assert!(matches!(err, StorageError::AccountExists), "{err:?}");
    // The first credentials are untouched.
    assert_eq!(s.credentials("alice").await.unwrap(), Some(creds(1)));
    assert_eq!(s.list_accounts().await.unwrap(), strings(&["alice"]));
}

pub async fn credentials_round_trip(s: Arc<dyn Storage>) {
    assert_eq!(s.credentials("alice").await.unwrap(), None);
    let mut c = creds(7);
    c.sha256.iterations = u32::MAX;
    s.create_account("alice", &c).await.unwrap();
    s.create_account("bob", &creds(8)).await.unwrap();
    assert_eq!(s.credentials("alice").await.unwrap(), Some(c));
    assert_eq!(s.credentials("bob").await.unwrap(), Some(creds(8)));
}

pub async fn set_credentials_replaces(s: Arc<dyn Storage>) {
    let err = s.set_credentials("alice", &creds(1)).await.unwrap_err();
    assert!(matches!(err, StorageError::NoSuchAccount), "{err:?}");
    assert!(!s.account_exists("alice").await.unwrap());

    s.create_account("alice", &creds(1)).await.unwrap();
    s.create_account("bob", &creds(2)).await.unwrap();
    s.set_credentials("alice", &creds(3)).await.unwrap();
    assert_eq!(s.credentials("alice").await.unwrap(), Some(creds(3)));
    assert_eq!(s.credentials("bob").await.unwrap(), Some(creds(2)));
}

/// Fills every kind of row for `user`.
async fn fill_account(s: &dyn Storage, user: &str) {
    s.put_roster_item(user, &item("c@x", &["g1", "g2"]))
        .await
        .unwrap();
    s.add_pending_subscription(user, "p@x", 10).await.unwrap();
    assert!(s.store_offline(user, "<message/>", 10).await.unwrap());
    s.set_vcard(user, "<vCard/>").await.unwrap();
    s.set_private_xml(user, &[("ns", "<x/>")], ROOMY)
        .await
        .unwrap();
    s.block(user, &strings(&["b@x"])).await.unwrap();
    s.set_last_activity(user, 5, "gone").await.unwrap();
    let m = zkfire_storage::ArchivedMessage {
        id: "00000001".into(),
        ts_ms: 1,
        with_bare: "c@x".into(),
        with_full: "c@x".into(),
        stanza: "<message/>".into(),
    };
    s.archive_messages(&[(user.to_string(), m)]).await.unwrap();
    let prefs = zkfire_storage::ArchivePrefs {
        default: zkfire_storage::ArchivePolicy::Never,
        always: strings(&["c@x"]),
        never: vec![],
    };
    s.set_archive_prefs(user, &prefs).await.unwrap();
    let limits = zkfire_storage::PepLimits { max_nodes: 10 };
    s.pep_put_node(user, "n", "", limits).await.unwrap();
    let item = zkfire_storage::PepItem {
        id: "i".into(),
        payload: "<x/>".into(),
        published_ms: 1,
    };
    s.pep_publish(user, "n", &item, 1).await.unwrap();
}

/// Nothing kept for `user` but possibly the account and its credentials.
async fn assert_empty(s: &dyn Storage, user: &str) {
    assert_eq!(s.roster(user).await.unwrap(), (0, vec![]));
    assert_eq!(s.roster_version(user).await.unwrap(), 0);
    assert_eq!(s.roster_item(user, "c@x").await.unwrap(), None);
    assert_eq!(s.pending_subscriptions(user).await.unwrap(), strings(&[]));
    assert_eq!(s.offline_messages(user).await.unwrap(), vec![]);
    assert_eq!(s.count_offline_messages(user).await.unwrap(), 0);
    assert_eq!(s.vcard(user).await.unwrap(), None);
    assert_eq!(s.private_xml(user, "ns").await.unwrap(), None);
    assert_eq!(s.blocklist(user).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.last_activity(user).await.unwrap(), None);
    assert_eq!(s.archive_bounds(user).await.unwrap(), None);
    assert_eq!(s.archive_prefs(user).await.unwrap(), None);
    assert_eq!(s.pep_nodes(user).await.unwrap(), vec![]);
    assert_eq!(s.pep_items(user, "n", None, None).await.unwrap(), vec![]);
}

pub async fn delete_account_removes_everything(s: Arc<dyn Storage>) {
    for user in ["alice", "bob"] {
        s.create_account(user, &creds(1)).await.unwrap();
        fill_account(&*s, user).await;
    }
    assert!(s.delete_account("alice").await.unwrap());
    assert!(!s.account_exists("alice").await.unwrap());
    assert_eq!(s.credentials("alice").await.unwrap(), None);
    assert_empty(&*s, "alice").await;
    assert!(!s.delete_account("alice").await.unwrap());

    // bob keeps everything.
    assert_eq!(s.list_accounts().await.unwrap(), strings(&["bob"]));
    assert_eq!(s.credentials("bob").await.unwrap(), Some(creds(1)));
    let (version, items) = s.roster("bob").await.unwrap();
    assert_eq!((version, items.len()), (1, 1));
    assert_eq!(s.pending_subscriptions("bob").await.unwrap().len(), 1);
    assert_eq!(s.count_offline_messages("bob").await.unwrap(), 1);
    assert!(s.vcard("bob").await.unwrap().is_some());
    assert!(s.private_xml("bob", "ns").await.unwrap().is_some());
    assert_eq!(s.blocklist("bob").await.unwrap(), strings(&["b@x"]));
    assert!(s.last_activity("bob").await.unwrap().is_some());

    // The name can be registered again, from scratch.
    s.create_account("alice", &creds(2)).await.unwrap();
    assert_eq!(s.credentials("alice").await.unwrap(), Some(creds(2)));
    assert_eq!(s.roster("alice").await.unwrap(), (0, vec![]));

    // Rows kept for a name without an account go too.
    fill_account(&*s, "ghost").await;
    assert!(!s.delete_account("ghost").await.unwrap());
    assert_empty(&*s, "ghost").await;
}

pub async fn list_accounts_sorted(s: Arc<dyn Storage>) {
    assert_eq!(s.list_accounts().await.unwrap(), Vec::<String>::new());
    let names = [
        "zoe", "alice", "émile", "bob", "a_b", "a-b", "ab", "Zed", "10", "9",
    ];
    for name in names {
        s.create_account(name, &creds(1)).await.unwrap();
    }
    let mut expected = strings(&names);
    expected.sort(); // by bytes, on every backend
    assert_eq!(s.list_accounts().await.unwrap(), expected);
}

pub async fn untouched_account_is_empty(s: Arc<dyn Storage>) {
    assert_eq!(s.credentials("nobody").await.unwrap(), None);
    assert_empty(&*s, "nobody").await;
    s.create_account("alice", &creds(1)).await.unwrap();
    assert_empty(&*s, "alice").await;
    // Removals on nothing are fine.
    assert_eq!(s.remove_roster_item("alice", "c@x").await.unwrap(), None);
    assert!(!s.remove_pending_subscription("alice", "p@x").await.unwrap());
    s.delete_offline_messages("alice", &[1, 2, 3])
        .await
        .unwrap();
    s.delete_offline_messages("alice", &[]).await.unwrap();
    s.unblock("alice", &strings(&["b@x"])).await.unwrap();
    s.unblock_all("alice").await.unwrap();
    s.block("alice", &[]).await.unwrap();
    assert_empty(&*s, "alice").await;
}

pub async fn roster_put_update_remove(s: Arc<dyn Storage>) {
    s.create_account("alice", &creds(1)).await.unwrap();
    let mut bob = item("bob@example.com", &[]);
    assert_eq!(s.put_roster_item("alice", &bob).await.unwrap(), 1);
    assert_eq!(s.roster_version("alice").await.unwrap(), 1);
    assert_eq!(
        s.roster_item("alice", "bob@example.com").await.unwrap(),
        Some(bob.clone())
    );

    // Every field is stored, and an update replaces every field.
    bob.name = Some("Bob".into());
    bob.subscription = Subscription::To;
    bob.ask = true;
    bob.approved = true;
    assert_eq!(s.put_roster_item("alice", &bob).await.unwrap(), 2);
    assert_eq!(
        s.roster_item("alice", "bob@example.com").await.unwrap(),
        Some(bob.clone())
    );
    for sub in [Subscription::From, Subscription::Both, Subscription::None] {
        bob.subscription = sub;
        bob.ask = !bob.ask;
        bob.name = None;
        s.put_roster_item("alice", &bob).await.unwrap();
        assert_eq!(
            s.roster_item("alice", "bob@example.com").await.unwrap(),
            Some(bob.clone())
        );
    }
    assert_eq!(s.roster_version("alice").await.unwrap(), 5);

    let carol = item("carol@example.com", &[]);
    assert_eq!(s.put_roster_item("alice", &carol).await.unwrap(), 6);
    let (version, items) = s.roster("alice").await.unwrap();
    assert_eq!(version, 6);
    assert_eq!(items, vec![bob.clone(), carol.clone()]);

    assert_eq!(
        s.remove_roster_item("alice", "bob@example.com")
            .await
            .unwrap(),
        Some(7)
    );
    // Removing what is not there changes nothing, not even the version.
    assert_eq!(
        s.remove_roster_item("alice", "bob@example.com")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.roster("alice").await.unwrap(), (7, vec![carol]));
    assert_eq!(
        s.roster_item("alice", "bob@example.com").await.unwrap(),
        None
    );
}

pub async fn roster_groups(s: Arc<dyn Storage>) {
    // Groups come back deduplicated and sorted.
    let mut it = item("bob@x", &["Work", "Friends", "Work", "émigrés"]);
    s.put_roster_item("alice", &it).await.unwrap();
    let stored = s.roster_item("alice", "bob@x").await.unwrap().unwrap();
    assert_eq!(stored.groups, strings(&["Friends", "Work", "émigrés"]));

    // Replaced wholesale on update.
    it.groups = strings(&["Family"]);
    s.put_roster_item("alice", &it).await.unwrap();
    let stored = s.roster_item("alice", "bob@x").await.unwrap().unwrap();
    assert_eq!(stored.groups, strings(&["Family"]));

    // Each item has its own; the same group name on two items.
    s.put_roster_item("alice", &item("carol@x", &["Family", "Zoo"]))
        .await
        .unwrap();
    s.put_roster_item("alice", &item("dave@x", &[]))
        .await
        .unwrap();
    let (_, items) = s.roster("alice").await.unwrap();
    let groups: Vec<(String, Vec<String>)> = items.into_iter().map(|i| (i.jid, i.groups)).collect();
    assert_eq!(
        groups,
        vec![
            ("bob@x".to_string(), strings(&["Family"])),
            ("carol@x".to_string(), strings(&["Family", "Zoo"])),
            ("dave@x".to_string(), vec![]),
        ]
    );

    // Cleared, then removal takes the item's groups away with it.
    it.groups.clear();
    s.put_roster_item("alice", &it).await.unwrap();
    assert_eq!(
        s.roster_item("alice", "bob@x")
            .await
            .unwrap()
            .unwrap()
            .groups,
        Vec::<String>::new()
    );
    s.remove_roster_item("alice", "carol@x").await.unwrap();
    s.put_roster_item("alice", &item("carol@x", &[]))
        .await
        .unwrap();
    assert_eq!(
        s.roster_item("alice", "carol@x")
            .await
            .unwrap()
            .unwrap()
            .groups,
        Vec::<String>::new()
    );
}

pub async fn roster_accounts_are_separate(s: Arc<dyn Storage>) {
    s.put_roster_item("alice", &item("carol@x", &["A"]))
        .await
        .unwrap();
    s.put_roster_item("alice", &item("dave@x", &[]))
        .await
        .unwrap();
    let mut for_bob = item("carol@x", &["B"]);
    for_bob.subscription = Subscription::Both;
    assert_eq!(s.put_roster_item("bob", &for_bob).await.unwrap(), 1);
    assert_eq!(s.roster("bob").await.unwrap(), (1, vec![for_bob]));
    let (version, items) = s.roster("alice").await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(items[0].groups, strings(&["A"]));
    assert_eq!(items[0].subscription, Subscription::None);
    s.remove_roster_item("bob", "carol@x").await.unwrap();
    assert_eq!(s.roster("alice").await.unwrap().1.len(), 2);
}

/// Versions are handed out once each, even when changes race.
pub async fn roster_concurrent_changes(s: Arc<dyn Storage>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let jid = format!("c{i}@x");
                let v1 = s.put_roster_item("alice", &item(&jid, &["g"])).await?;
                let v2 = if i % 2 == 0 {
                    s.remove_roster_item("alice", &jid).await?.unwrap_or(-1)
                } else {
                    s.put_roster_item("alice", &item(&jid, &["h"])).await?
                };
                Ok::<_, StorageError>([v1, v2])
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.extend(t.await.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=40).collect::<Vec<i64>>());
    let (version, items) = s.roster("alice").await.unwrap();
    assert_eq!(version, 40);
    assert_eq!(items.len(), 10);
    assert!(items.iter().all(|i| i.groups == strings(&["h"])));
}

/// `update_roster_item` is a read-modify-write under the account's lock:
/// concurrent changes to one item all take effect, none overwrites another.
pub async fn roster_update_is_atomic(s: Arc<dyn Storage>) {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let change: zkfire_storage::RosterChange = Box::new(move |old: Option<&RosterItem>| {
                let mut item = old.cloned().unwrap_or(RosterItem {
                    jid: "bob@example.org".into(),
                    name: None,
                    subscription: Subscription::None,
                    ask: false,
                    approved: false,
                    groups: Vec::new(),
                });
                item.groups.push(format!("g{i:02}"));
                Some(item)
            });
            s.update_roster_item("alice", "bob@example.org", change, usize::MAX)
                .await
        }));
    }
    for t in tasks {
        let (_, after) = t.await.unwrap().unwrap();
        assert!(after.is_some());
    }
    let item = s
        .roster_item("alice", "bob@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.groups.len(), 20, "{:?}", item.groups);
    assert_eq!(s.roster_version("alice").await.unwrap(), 20);
    // No change: nothing written, version unchanged.
    let (before, after) = s
        .update_roster_item("alice", "bob@example.org", Box::new(|_| None), usize::MAX)
        .await
        .unwrap();
    assert!(before.is_some() && after.is_none());
    assert_eq!(s.roster_version("alice").await.unwrap(), 20);
}

pub async fn pending_subscriptions(s: Arc<dyn Storage>) {
    s.add_pending_subscription("alice", "zed@x", 10)
        .await
        .unwrap();
    s.add_pending_subscription("alice", "bob@x", 10)
        .await
        .unwrap();
    s.add_pending_subscription("carol", "bob@x", 10)
        .await
        .unwrap();
    // A repeated request is the same one.
    s.add_pending_subscription("alice", "bob@x", 10)
        .await
        .unwrap();
    let expected = strings(&["bob@x", "zed@x"]);
    assert_eq!(s.pending_subscriptions("alice").await.unwrap(), expected);

    assert!(s
        .remove_pending_subscription("alice", "bob@x")
        .await
        .unwrap());
    assert!(!s
        .remove_pending_subscription("alice", "bob@x")
        .await
        .unwrap());
    assert_eq!(
        s.pending_subscriptions("alice").await.unwrap(),
        expected[1..].to_vec()
    );
    assert_eq!(s.pending_subscriptions("carol").await.unwrap().len(), 1);
}

fn is_limit(r: zkfire_storage::Result<()>, limit: Limit) -> bool {
    matches!(r, Err(StorageError::LimitReached(l)) if l == limit)
}

/// At most `max` requesters per account; one already waiting may ask again;
/// a removed one makes room.
pub async fn pending_subscriptions_limit(s: Arc<dyn Storage>) {
    for from in ["a@x", "b@x"] {
        s.add_pending_subscription("alice", from, 2).await.unwrap();
    }
    let r = s.add_pending_subscription("alice", "c@x", 2).await;
    assert!(is_limit(r, Limit::PendingSubscriptions));
    s.add_pending_subscription("alice", "a@x", 2).await.unwrap();
    // Another account has its own.
    s.add_pending_subscription("bob", "c@x", 2).await.unwrap();
    assert_eq!(
        s.pending_subscriptions("alice").await.unwrap(),
        strings(&["a@x", "b@x"])
    );
    s.remove_pending_subscription("alice", "a@x").await.unwrap();
    s.add_pending_subscription("alice", "c@x", 2).await.unwrap();
    assert_eq!(
        s.pending_subscriptions("alice").await.unwrap(),
        strings(&["b@x", "c@x"])
    );
}

/// Requests arriving together cannot pass the bound between them.
pub async fn pending_subscriptions_concurrent_limit(s: Arc<dyn Storage>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.add_pending_subscription("alice", &format!("c{i}@x"), 5)
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StorageError::LimitReached(Limit::PendingSubscriptions)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(stored, 5);
    assert_eq!(s.pending_subscriptions("alice").await.unwrap().len(), 5);
}

/// A change adding a contact to a roster of `max_items` fails and writes
/// nothing; changes to items already there still work.
pub async fn roster_limit_on_new_items(s: Arc<dyn Storage>) {
    let add = |jid: &str| -> zkfire_storage::RosterChange {
        let it = item(jid, &["g"]);
        Box::new(move |_| Some(it))
    };
    for jid in ["a@x", "b@x"] {
        let (_, after) = s
            .update_roster_item("alice", jid, add(jid), 2)
            .await
            .unwrap();
        assert!(after.is_some());
    }
    let r = s.update_roster_item("alice", "c@x", add("c@x"), 2).await;
    assert!(
        matches!(r, Err(StorageError::LimitReached(Limit::RosterItems))),
        "{r:?}"
    );
    assert_eq!(s.roster_item("alice", "c@x").await.unwrap(), None);
    assert_eq!(s.roster_version("alice").await.unwrap(), 2);
    // An existing item changes, and a change that creates nothing is fine.
    let renamed: zkfire_storage::RosterChange = Box::new(|old| {
        let mut it = old.cloned()?;
        it.name = Some("A".into());
        Some(it)
    });
    let (_, after) = s
        .update_roster_item("alice", "a@x", renamed, 2)
        .await
        .unwrap();
    assert_eq!(after.map(|(_, i)| i.name), Some(Some("A".to_string())));
    let (before, after) = s
        .update_roster_item("alice", "d@x", Box::new(|_| None), 2)
        .await
        .unwrap();
    assert!(before.is_none() && after.is_none());
    // Room again after a removal.
    s.remove_roster_item("alice", "b@x").await.unwrap();
    s.update_roster_item("alice", "c@x", add("c@x"), 2)
        .await
        .unwrap();
    let (_, items) = s.roster("alice").await.unwrap();
    let jids: Vec<&str> = items.iter().map(|i| i.jid.as_str()).collect();
    assert_eq!(jids, ["a@x", "c@x"]);
}

/// New contacts added together cannot pass the bound between them.
pub async fn roster_limit_concurrent(s: Arc<dyn Storage>) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let jid = format!("c{i}@x");
                let it = item(&jid, &[]);
                s.update_roster_item("alice", &jid, Box::new(move |_| Some(it)), 5)
                    .await
            })
        })
        .collect();
    let mut added = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => added += 1,
            Err(StorageError::LimitReached(Limit::RosterItems)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(added, 5);
    assert_eq!(s.roster("alice").await.unwrap().1.len(), 5);
}

pub async fn offline_respects_max(s: Arc<dyn Storage>) {
    assert!(!s.store_offline("alice", "<m0/>", 0).await.unwrap());
    for i in 0..3 {
        assert!(s
            .store_offline("alice", &format!("<m{i}/>"), 3)
            .await
            .unwrap());
    }
    assert!(!s.store_offline("alice", "<m3/>", 3).await.unwrap());
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 3);
    // A lower limit than what is stored: refused, nothing removed.
    assert!(!s.store_offline("alice", "<m3/>", 1).await.unwrap());
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 3);
    // The limit is per account.
    assert!(s.store_offline("bob", "<m/>", 3).await.unwrap());
    // Room again after a delete.
    let first = s.offline_messages("alice").await.unwrap()[0].id;
    s.delete_offline_messages("alice", &[first]).await.unwrap();
    assert!(s.store_offline("alice", "<m4/>", 3).await.unwrap());
    assert!(!s.store_offline("alice", "<m5/>", 3).await.unwrap());
    let stanzas: Vec<String> = s
        .offline_messages("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.stanza)
        .collect();
    assert_eq!(stanzas, strings(&["<m1/>", "<m2/>", "<m4/>"]));
}

pub async fn offline_concurrent_limit(s: Arc<dyn Storage>) {
    s.create_account("alice", &creds(1)).await.unwrap();
    for round in 0..3 {
        let user = format!("user{round}");
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (s, user) = (s.clone(), user.clone());
                tokio::spawn(async move { s.store_offline(&user, &format!("<m{i}/>"), 5).await })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                stored += 1;
            }
        }
        assert_eq!(stored, 5, "round {round}");
        assert_eq!(s.count_offline_messages(&user).await.unwrap(), 5);
        assert_eq!(s.offline_messages(&user).await.unwrap().len(), 5);
    }
    // Same with an existing account.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.store_offline("alice", &format!("<m{i}/>"), 5).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 5);
}

pub async fn offline_order_and_delete(s: Arc<dyn Storage>) {
    let before = now();
    for i in 0..6 {
        assert!(s
            .store_offline("alice", &format!("<m{i}/>"), 100)
            .await
            .unwrap());
        assert!(s
            .store_offline("bob", &format!("<b{i}/>"), 100)
            .await
            .unwrap());
    }
    let after = now();
    let msgs = s.offline_messages("alice").await.unwrap();
    let stanzas: Vec<&str> = msgs.iter().map(|m| m.stanza.as_str()).collect();
    assert_eq!(
        stanzas,
        ["<m0/>", "<m1/>", "<m2/>", "<m3/>", "<m4/>", "<m5/>"]
    );
    let ids: HashSet<i64> = msgs.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 6);
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));
    assert!(msgs
        .iter()
        .all(|m| m.stored_at >= before && m.stored_at <= after));
    // Reading does not remove.
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 6);

    // Delete some, plus an unknown id and one of bob's (which must stay).
    let bob_first = s.offline_messages("bob").await.unwrap()[0].id;
    s.delete_offline_messages("alice", &[msgs[1].id, msgs[4].id, -5, bob_first])
        .await
        .unwrap();
    let left: Vec<String> = s
        .offline_messages("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.stanza)
        .collect();
    assert_eq!(left, strings(&["<m0/>", "<m2/>", "<m3/>", "<m5/>"]));
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 4);
    assert_eq!(s.count_offline_messages("bob").await.unwrap(), 6);

    // Ids are not reused after deletion.
    let all: Vec<i64> = s
        .offline_messages("alice")
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    s.delete_offline_messages("alice", &all).await.unwrap();
    assert_eq!(s.count_offline_messages("alice").await.unwrap(), 0);
    s.store_offline("alice", "<new/>", 100).await.unwrap();
    let new = &s.offline_messages("alice").await.unwrap()[0];
    assert!(!ids.contains(&new.id));
}

/// More ids than go into one statement.
pub async fn offline_delete_many_ids(s: Arc<dyn Storage>) {
    for i in 0..1100 {
        assert!(s
            .store_offline("alice", &format!("<m{i}/>"), 2000)
            .await
            .unwrap());
    }
    let msgs = s.offline_messages("alice").await.unwrap();
    assert_eq!(msgs.len(), 1100);
    let ids: Vec<i64> = msgs.iter().take(1050).map(|m| m.id).collect();
    s.delete_offline_messages("alice", &ids).await.unwrap();
    let left = s.offline_messages("alice").await.unwrap();
    assert_eq!(left.len(), 50);
    assert_eq!(left[0].stanza, "<m1050/>");
}

pub async fn vcard_set_and_overwrite(s: Arc<dyn Storage>) {
    assert_eq!(s.vcard("alice").await.unwrap(), None);
    s.set_vcard("alice", "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
        .await
        .unwrap();
    s.set_vcard("bob", "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    s.set_vcard("alice", "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
        .await
        .unwrap();
    assert_eq!(
        s.vcard("alice").await.unwrap().as_deref(),
        Some("<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>")
    );
    assert_eq!(
        s.vcard("bob").await.unwrap().as_deref(),
        Some("<vCard xmlns='vcard-temp'/>")
    );
}

pub async fn private_xml_set_and_overwrite(s: Arc<dyn Storage>) {
    assert_eq!(
        s.private_xml("alice", "storage:bookmarks").await.unwrap(),
        None
    );
    let bookmarks = "<storage xmlns='storage:bookmarks'/>";
    s.set_private_xml("alice", &[("storage:bookmarks", bookmarks)], ROOMY)
        .await
        .unwrap();
    s.set_private_xml("alice", &[("exodus:prefs", "<prefs/>")], ROOMY)
        .await
        .unwrap();
    s.set_private_xml("bob", &[("storage:bookmarks", "<bob/>")], ROOMY)
        .await
        .unwrap();
    s.set_private_xml("alice", &[("storage:bookmarks", "<v2/>")], ROOMY)
        .await
        .unwrap();
    assert_eq!(
        s.private_xml("alice", "storage:bookmarks")
            .await
            .unwrap()
            .as_deref(),
        Some("<v2/>")
    );
    assert_eq!(
        s.private_xml("alice", "exodus:prefs")
            .await
            .unwrap()
            .as_deref(),
        Some("<prefs/>")
    );
    assert_eq!(
        s.private_xml("bob", "storage:bookmarks")
            .await
            .unwrap()
            .as_deref(),
        Some("<bob/>")
    );
    assert_eq!(s.private_xml("bob", "exodus:prefs").await.unwrap(), None);
}

/// Bounds on namespaces and bytes hold after the write, all or nothing:
/// replacing within them works, passing them writes nothing.
pub async fn private_xml_limits(s: Arc<dyn Storage>) {
    let limits = PrivateXmlLimits {
        max_items: 2,
        max_bytes: 20,
    };
    // "<a>é</a>" is 9 bytes (é is two).
    s.set_private_xml("alice", &[("a", "<a>é</a>"), ("b", "<b/>")], limits)
        .await
        .unwrap();
    let r = s.set_private_xml("alice", &[("c", "<c/>")], limits).await;
    assert!(is_limit(r, Limit::PrivateXmlItems));
    assert_eq!(s.private_xml("alice", "c").await.unwrap(), None);
    // 9 + 11 = 20: fits exactly.
    s.set_private_xml("alice", &[("b", "<b>xxxx</b>")], limits)
        .await
        .unwrap();
    let r = s
        .set_private_xml("alice", &[("a", "<a>éé</a>")], limits)
        .await;
    assert!(is_limit(r, Limit::PrivateXmlBytes));
    // Several at once: none kept when the whole is too much.
    let r = s
        .set_private_xml("alice", &[("a", "<a/>"), ("b", &"x".repeat(30))], limits)
        .await;
    assert!(is_limit(r, Limit::PrivateXmlBytes));
    assert_eq!(
        s.private_xml("alice", "a").await.unwrap().as_deref(),
        Some("<a>é</a>")
    );
    assert_eq!(
        s.private_xml("alice", "b").await.unwrap().as_deref(),
        Some("<b>xxxx</b>")
    );
    // Another account has its own room.
    s.set_private_xml("bob", &[("c", "<c/>")], limits)
        .await
        .unwrap();
}

/// Writers racing for the last room cannot pass the bound between them.
pub async fn private_xml_concurrent_limit(s: Arc<dyn Storage>) {
    let limits = PrivateXmlLimits {
        max_items: 5,
        max_bytes: 1 << 20,
    };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let ns = format!("urn:n{i}");
                s.set_private_xml("alice", &[(ns.as_str(), "<x/>")], limits)
                    .await
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StorageError::LimitReached(Limit::PrivateXmlItems)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(stored, 5);
    let mut found = 0;
    for i in 0..20 {
        if s.private_xml("alice", &format!("urn:n{i}"))
            .await
            .unwrap()
            .is_some()
        {
            found += 1;
        }
    }
    assert_eq!(found, 5);
}

pub async fn blocklist(s: Arc<dyn Storage>) {
    s.block(
        "alice",
        &strings(&["spam@x", "example.org", "bob@x/phone", "spam@x"]),
    )
    .await
    .unwrap();
    s.block("alice", &strings(&["spam@x", "eve@x"]))
        .await
        .unwrap();
    s.block("carol", &strings(&["spam@x"])).await.unwrap();
    assert_eq!(
        s.blocklist("alice").await.unwrap(),
        strings(&["bob@x/phone", "eve@x", "example.org", "spam@x"])
    );
    s.unblock("alice", &strings(&["spam@x", "nobody@x", "eve@x"]))
        .await
        .unwrap();
    assert_eq!(
        s.blocklist("alice").await.unwrap(),
        strings(&["bob@x/phone", "example.org"])
    );
    s.unblock_all("alice").await.unwrap();
    assert_eq!(s.blocklist("alice").await.unwrap(), Vec::<String>::new());
    assert_eq!(s.blocklist("carol").await.unwrap(), strings(&["spam@x"]));
    s.block("alice", &strings(&["spam@x"])).await.unwrap();
    assert_eq!(s.blocklist("alice").await.unwrap(), strings(&["spam@x"]));
}

pub async fn last_activity(s: Arc<dyn Storage>) {
    assert_eq!(s.last_activity("alice").await.unwrap(), None);
    s.set_last_activity("alice", 1_700_000_000, "Gone fishing")
        .await
        .unwrap();
    s.set_last_activity("bob", 1, "").await.unwrap();
    assert_eq!(
        s.last_activity("alice").await.unwrap(),
        Some((1_700_000_000, "Gone fishing".to_string()))
    );
    s.set_last_activity("alice", 1_800_000_000, "")
        .await
        .unwrap();
    assert_eq!(
        s.last_activity("alice").await.unwrap(),
        Some((1_800_000_000, String::new()))
    );
    assert_eq!(
        s.last_activity("bob").await.unwrap(),
        Some((1, String::new()))
    );
}

/// Text survives unchanged: non-ASCII, quotes, SQL-looking content, size.
pub async fn text_round_trip(s: Arc<dyn Storage>) {
    let user = "ünïcødé_用户";
    let big = format!(
        "<message><body>{}</body></message>",
        "xé'\"\\%_;".repeat(20_000)
    );
    let tricky = "<m>'); DROP TABLE accounts; -- \u{1F600} \t\r\n</m>";
    s.create_account(user, &creds(9)).await.unwrap();
    assert!(s.store_offline(user, &big, 10).await.unwrap());
    assert!(s.store_offline(user, tricky, 10).await.unwrap());
    let msgs = s.offline_messages(user).await.unwrap();
    assert_eq!(msgs[0].stanza, big);
    assert_eq!(msgs[1].stanza, tricky);
    s.set_vcard(user, tricky).await.unwrap();
    assert_eq!(s.vcard(user).await.unwrap().as_deref(), Some(tricky));
    let mut it = item("жук@пример.рф", &["группа", "'quoted'"]);
    it.name = Some("Жук \"the bug\"".into());
    s.put_roster_item(user, &it).await.unwrap();
    let mut expected = it.clone();
    expected.groups.sort();
    assert_eq!(
        s.roster_item(user, "жук@пример.рф").await.unwrap(),
        Some(expected)
    );
    assert_eq!(s.list_accounts().await.unwrap(), strings(&[user]));
    assert_eq!(s.credentials(user).await.unwrap(), Some(creds(9)));
}

pub async fn closed_storage_errors(s: Arc<dyn Storage>) {
    s.create_account("alice", &creds(1)).await.unwrap();
    s.close().await;
    let err = s.account_exists("alice").await.unwrap_err();
    assert!(matches!(err, StorageError::Database(_)), "{err:?}");
    let err = s.set_vcard("alice", "<v/>").await.unwrap_err();
    assert!(matches!(err, StorageError::Database(_)), "{err:?}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}
