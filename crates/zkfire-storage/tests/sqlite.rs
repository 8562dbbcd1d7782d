//! The storage suite on SQLite (a file in a temporary folder per test), and
//! what is particular to SQLite: URL forms, reopening, WAL, busy writers.

#[macro_use]
mod suite;

use std::sync::Arc;
use suite::{creds, Fixture};
use tempfile::TempDir;
use zkfire_storage::{open, RosterItem, Storage, StorageError, Subscription};

async fn sqlite_fixture() -> Fixture {
    let dir = TempDir::new().unwrap();
    let storage = open(&file_url(&dir, "zkfire.db")).await.unwrap();
    Fixture {
        storage,
        _keep: Box::new(dir),
    }
}

storage_suite!(sqlite_fixture);

fn file_url(dir: &TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

#[tokio::test]
async fn reopen_keeps_data_and_migrations_are_harmless() {
    let dir = TempDir::new().unwrap();
    let url = file_url(&dir, "zkfire.db");
    let s = open(&url).await.unwrap();
    s.create_account("alice", &creds(1)).await.unwrap();
    assert!(s.store_offline("alice", "<m/>", 5).await.unwrap());
    let v = s
        .put_roster_item(
            "alice",
            &RosterItem {
                jid: "bob@x".into(),
                name: None,
                subscription: Subscription::Both,
                ask: false,
                approved: false,
                groups: vec!["g".into()],
            },
        )
        .await
        .unwrap();
    s.close().await;

    // Twice, the second while the first is still open.
    let s1 = open(&url).await.unwrap();
    let s2 = open(&url).await.unwrap();
    for s in [&s1, &s2] {
        assert_eq!(s.credentials("alice").await.unwrap(), Some(creds(1)));
        assert_eq!(s.count_offline_messages("alice").await.unwrap(), 1);
        assert_eq!(s.roster_version("alice").await.unwrap(), v);
        assert_eq!(
            s.roster("alice").await.unwrap().1[0].groups,
            vec!["g".to_string()]
        );
    }
    s1.close().await;
    s2.close().await;
}

#[tokio::test]
async fn creates_missing_folders_and_accepts_both_url_forms() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a/b c/%x é/z.db");
    let s = open(&format!("sqlite:{}", path.display())).await.unwrap();
    s.create_account("alice", &creds(1)).await.unwrap();
    s.close().await;
    assert!(path.is_file());
    let s = open(&format!("sqlite://{}", path.display())).await.unwrap();
    assert!(s.account_exists("alice").await.unwrap());
    s.close().await;
}

#[tokio::test]
async fn file_is_in_wal_mode() {
    use sqlx::Connection;
    let dir = TempDir::new().unwrap();
    let s = open(&file_url(&dir, "zkfire.db")).await.unwrap();
    s.set_vcard("alice", "<v/>").await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&file_url(&dir, "zkfire.db"))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    s.close().await;
}

/// Many tasks writing at once, through two storages open on one file (as
/// an admin tool next to the server would be): no SQLITE_BUSY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_do_not_fail() {
    let dir = TempDir::new().unwrap();
    let url = file_url(&dir, "zkfire.db");
    let a = open(&url).await.unwrap();
    let b = open(&url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s: Arc<dyn Storage> = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let user = format!("u{}", i % 10);
            s.set_vcard(&user, &format!("<v{i}/>")).await?;
            s.block(&user, &[format!("b{i}@x")]).await?;
            s.store_offline(&user, "<m/>", 1000).await?;
            s.set_last_activity(&user, i, "").await?;
            s.roster(&user).await?;
            Ok::<_, StorageError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut total = 0;
    for u in 0..10 {
        total += a.count_offline_messages(&format!("u{u}")).await.unwrap();
        assert_eq!(b.blocklist(&format!("u{u}")).await.unwrap().len(), 20);
    }
    assert_eq!(total, 200);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn in_memory_database() {
    let s = open("sqlite::memory:").await.unwrap();
    s.create_account("alice", &creds(1)).await.unwrap();
    assert!(s.store_offline("alice", "<m/>", 5).await.unwrap());
    assert_eq!(s.list_accounts().await.unwrap(), vec!["alice".to_string()]);
    // Another one is another database.
    let other = open("sqlite::memory:").await.unwrap();
    assert!(!other.account_exists("alice").await.unwrap());
    s.close().await;
    other.close().await;
}

#[tokio::test]
async fn bad_urls() {
    for url in [
        "",
        "mysql://localhost/zkfire",
        "zkfire.db",
        "sqlite:",
        "sqlite://z.db?mode=ro",
        "file:///tmp/z.db",
    ] {
        match open(url).await {
            Err(StorageError::BadUrl(u)) => assert_eq!(u, url),
            Err(e) => panic!("{url:?}: {e:?}"),
            Ok(_) => panic!("{url:?} accepted"),
        }
    }
}

#[tokio::test]
async fn unusable_path_is_a_database_error() {
    let dir = TempDir::new().unwrap();
    // A folder where the file should be.
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    match open(&file_url(&dir, "taken")).await {
        Err(StorageError::Database(_)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened a folder"),
    }
}
