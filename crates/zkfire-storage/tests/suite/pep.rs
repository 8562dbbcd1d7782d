//! Storage cases of personal eventing (XEP-0163) and entity capabilities.

use std::sync::Arc;
use zkfire_storage::{Limit, PepItem, PepLimits, Storage, StorageError};

const ROOMY: PepLimits = PepLimits { max_nodes: 100 };

fn item(id: &str, n: i64) -> PepItem {
    PepItem {
        id: id.to_string(),
        payload: format!("<nick xmlns='http://jabber.org/protocol/nick'>ñ{n}</nick>"),
        published_ms: n,
    }
}

fn ids(items: &[PepItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

pub async fn pep_nodes_and_their_bound(s: Arc<dyn Storage>) {
    assert!(s.pep_put_node("alice", "n1", "a=1", ROOMY).await.unwrap());
    assert!(!s.pep_put_node("alice", "n1", "a=2", ROOMY).await.unwrap());
    assert_eq!(
        s.pep_node("alice", "n1").await.unwrap().unwrap().config,
        "a=2"
    );
    assert_eq!(s.pep_node("bob", "n1").await.unwrap(), None);
    let two = PepLimits { max_nodes: 2 };
    assert!(s.pep_put_node("alice", "n2", "", two).await.unwrap());
    match s.pep_put_node("alice", "n3", "", two).await {
        Err(StorageError::LimitReached(Limit::PepNodes)) => {}
        other => panic!("{other:?}"),
    }
    // An existing node can still be configured at the bound.
    assert!(!s.pep_put_node("alice", "n2", "b", two).await.unwrap());
    let names: Vec<String> = s
        .pep_nodes("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["n1", "n2"]);
    s.pep_publish("alice", "n1", &item("i", 1), 10)
        .await
        .unwrap();
    assert!(s.pep_delete_node("alice", "n1").await.unwrap());
    assert!(!s.pep_delete_node("alice", "n1").await.unwrap());
    assert!(s
        .pep_items("alice", "n1", None, None)
        .await
        .unwrap()
        .is_empty());
}

pub async fn pep_items_order_replace_and_trim(s: Arc<dyn Storage>) {
    s.pep_put_node("alice", "n", "", ROOMY).await.unwrap();
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        s.pep_publish("alice", "n", &item(id, k as i64), 10)
            .await
            .unwrap();
    }
    // Republishing "a" makes it the newest, with its new payload.
    s.pep_publish("alice", "n", &item("a", 9), 10)
        .await
        .unwrap();
    let all = s.pep_items("alice", "n", None, None).await.unwrap();
    assert_eq!(ids(&all), ["b", "c", "a"]);
    assert_eq!(all[2], item("a", 9));
    assert_eq!(
        ids(&s.pep_items("alice", "n", None, Some(2)).await.unwrap()),
        ["c", "a"]
    );
    let wanted = vec!["a".to_string(), "b".to_string(), "zz".to_string()];
    assert_eq!(
        ids(&s
            .pep_items("alice", "n", Some(&wanted), None)
            .await
            .unwrap()),
        ["b", "a"]
    );
    // A smaller max_items drops the oldest.
    s.pep_publish("alice", "n", &item("d", 10), 2)
        .await
        .unwrap();
    assert_eq!(
        ids(&s.pep_items("alice", "n", None, None).await.unwrap()),
        ["a", "d"]
    );
    assert!(s.pep_retract("alice", "n", "a").await.unwrap());
    assert!(!s.pep_retract("alice", "n", "a").await.unwrap());
    assert_eq!(
        ids(&s.pep_items("alice", "n", None, None).await.unwrap()),
        ["d"]
    );
    // Another account's node of the same name is another node.
    assert!(s
        .pep_items("bob", "n", None, None)
        .await
        .unwrap()
        .is_empty());
}

pub async fn caps_round_trip(s: Arc<dyn Storage>) {
    assert_eq!(s.caps_features("sha-1:abc=").await.unwrap(), None);
    let f = vec![
        "http://jabber.org/protocol/nick+notify".to_string(),
        "urn:x".to_string(),
    ];
    s.set_caps_features("sha-1:abc=", &f).await.unwrap();
    assert_eq!(s.caps_features("sha-1:abc=").await.unwrap(), Some(f));
    s.set_caps_features("sha-1:abc=", &[]).await.unwrap();
    assert_eq!(s.caps_features("sha-1:abc=").await.unwrap(), Some(vec![]));
}
