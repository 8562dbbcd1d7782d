//! Storage cases of the message archive (XEP-0313), for every backend.

use std::sync::Arc;
use zkfire_storage::{
    ArchiveFilter, ArchivePage, ArchivePolicy, ArchivePrefs, ArchiveWith, ArchivedMessage, Storage,
};

/// Message `n` of a test archive: ids of one length, ordered by `n`.
fn msg(n: u32, with_full: &str) -> ArchivedMessage {
    let with_bare = with_full.split('/').next().unwrap_or(with_full).to_string();
    ArchivedMessage {
        id: format!("{n:08}"),
        ts_ms: 1_000 * i64::from(n),
        with_bare,
        with_full: with_full.to_string(),
        stanza: format!("<message><body>{n} ünïcødé &amp;</body></message>"),
    }
}

async fn fill(s: &dyn Storage, user: &str, range: std::ops::Range<u32>, with: &str) {
    let batch: Vec<_> = range.map(|n| (user.to_string(), msg(n, with))).collect();
    s.archive_messages(&batch).await.unwrap();
}

fn page(max: usize) -> ArchivePage {
    ArchivePage {
        max,
        after: None,
        before: None,
        from_end: false,
        count: true,
    }
}

fn ids(r: &zkfire_storage::ArchiveResult) -> Vec<u32> {
    r.messages.iter().map(|m| m.id.parse().unwrap()).collect()
}

pub async fn archive_pages_forward_without_gaps(s: Arc<dyn Storage>) {
    fill(&*s, "alice", 0..25, "bob@x/phone").await;
    fill(&*s, "carol", 100..105, "bob@x").await;
    let all = ArchiveFilter::default();
    let mut seen = Vec::new();
    let mut after = None;
    for expected_index in [0, 10, 20] {
        let mut p = page(10);
        p.after = after.clone();
        let r = s.query_archive("alice", &all, &p).await.unwrap();
        assert_eq!(r.count, Some(25));
        assert_eq!(r.first_index, Some(expected_index));
        assert_eq!(r.complete, expected_index == 20, "page at {expected_index}");
        seen.extend(ids(&r));
        after = r.messages.last().map(|m| m.id.clone());
    }
    assert_eq!(seen, (0..25).collect::<Vec<_>>());
    // What was stored comes back as it was.
    let r = s.query_archive("alice", &all, &page(1)).await.unwrap();
    assert_eq!(r.messages[0], msg(0, "bob@x/phone"));
}

pub async fn archive_last_page_and_backwards(s: Arc<dyn Storage>) {
    fill(&*s, "alice", 0..25, "bob@x").await;
    let all = ArchiveFilter::default();
    let mut p = page(10);
    p.from_end = true;
    let r = s.query_archive("alice", &all, &p).await.unwrap();
    assert_eq!(ids(&r), (15..25).collect::<Vec<_>>());
    assert_eq!((r.complete, r.first_index), (false, Some(15)));
    p.before = Some(r.messages[0].id.clone());
    let r = s.query_archive("alice", &all, &p).await.unwrap();
    assert_eq!(ids(&r), (5..15).collect::<Vec<_>>());
    p.before = Some(r.messages[0].id.clone());
    let r = s.query_archive("alice", &all, &p).await.unwrap();
    assert_eq!(ids(&r), (0..5).collect::<Vec<_>>());
    assert!(r.complete);
}

pub async fn archive_filters(s: Arc<dyn Storage>) {
    fill(&*s, "alice", 0..5, "bob@x/phone").await;
    fill(&*s, "alice", 5..10, "bob@x/laptop").await;
    fill(&*s, "alice", 10..15, "carol@x").await;
    let q = |filter: ArchiveFilter| {
        let s = s.clone();
        async move { ids(&s.query_archive("alice", &filter, &page(100)).await.unwrap()) }
    };
    let bob = ArchiveWith::Bare("bob@x".into());
    assert_eq!(
        q(ArchiveFilter {
            with: Some(bob.clone()),
            ..Default::default()
        })
        .await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        q(ArchiveFilter {
            with: Some(ArchiveWith::Full {
                bare: "bob@x".into(),
                full: "bob@x/laptop".into()
            }),
            ..Default::default()
        })
        .await,
        (5..10).collect::<Vec<_>>()
    );
    // Range bounds are exclusive, and combine with `with`.
    assert_eq!(
        q(ArchiveFilter {
            with: Some(bob),
            after: Some(msg(3, "").id),
            before: Some(msg(12, "").id),
            ..Default::default()
        })
        .await,
        (4..10).collect::<Vec<_>>()
    );
    assert_eq!(
        q(ArchiveFilter {
            ids: Some(vec![msg(7, "").id, msg(2, "").id, "nope".into()]),
            ..Default::default()
        })
        .await,
        vec![2, 7]
    );
    assert_eq!(
        q(ArchiveFilter {
            ids: Some(vec![]),
            ..Default::default()
        })
        .await,
        Vec::<u32>::new()
    );
    // Counting only (RSM max=0).
    let r = s
        .query_archive("alice", &ArchiveFilter::default(), &page(0))
        .await
        .unwrap();
    assert_eq!(
        (r.messages.len(), r.count, r.complete),
        (0, Some(15), false)
    );
}

pub async fn archive_rewrite_is_no_duplicate(s: Arc<dyn Storage>) {
    fill(&*s, "alice", 0..3, "bob@x").await;
    fill(&*s, "alice", 0..5, "bob@x").await;
    let r = s
        .query_archive("alice", &ArchiveFilter::default(), &page(100))
        .await
        .unwrap();
    assert_eq!(ids(&r), (0..5).collect::<Vec<_>>());
    // A batch larger than one INSERT statement.
    fill(&*s, "bob", 0..350, "alice@x").await;
    let r = s
        .query_archive("bob", &ArchiveFilter::default(), &page(1000))
        .await
        .unwrap();
    assert_eq!(r.messages.len(), 350);
}

pub async fn archive_bounds_contains_and_purge(s: Arc<dyn Storage>) {
    assert_eq!(s.archive_bounds("alice").await.unwrap(), None);
    fill(&*s, "alice", 3..10, "bob@x").await;
    fill(&*s, "bob", 0..10, "alice@x").await;
    let (first, last) = s.archive_bounds("alice").await.unwrap().unwrap();
    assert_eq!((first.id, last.id), (msg(3, "").id, msg(9, "").id));
    assert!(s.archive_contains("alice", &msg(5, "").id).await.unwrap());
    assert!(!s.archive_contains("alice", &msg(1, "").id).await.unwrap());
    assert!(!s.archive_contains("carol", &msg(5, "").id).await.unwrap());
    // Everything before 6 s, in batches of 4: alice 3, 4, 5 and bob 0..6.
    let mut purged = 0;
    loop {
        let n = s.purge_archive(6_000, 4).await.unwrap();
        assert!(n <= 4);
        purged += n;
        if n == 0 {
            break;
        }
    }
    assert_eq!(purged, 9);
    let (first, _) = s.archive_bounds("alice").await.unwrap().unwrap();
    assert_eq!(first.id, msg(6, "").id);
    let (first, _) = s.archive_bounds("bob").await.unwrap().unwrap();
    assert_eq!(first.id, msg(6, "").id);
}

pub async fn archive_prefs_round_trip(s: Arc<dyn Storage>) {
    assert_eq!(s.archive_prefs("alice").await.unwrap(), None);
    let prefs = ArchivePrefs {
        default: ArchivePolicy::Roster,
        always: vec!["a@x".into(), "b@x".into()],
        never: vec!["n@x".into()],
    };
    s.set_archive_prefs("alice", &prefs).await.unwrap();
    assert_eq!(s.archive_prefs("alice").await.unwrap(), Some(prefs));
    let prefs = ArchivePrefs {
        default: ArchivePolicy::Never,
        always: vec![],
        never: vec![],
    };
    s.set_archive_prefs("alice", &prefs).await.unwrap();
    assert_eq!(s.archive_prefs("alice").await.unwrap(), Some(prefs));
    assert_eq!(s.archive_prefs("bob").await.unwrap(), None);
}
