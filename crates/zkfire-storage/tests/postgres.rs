//! The storage suite on PostgreSQL: a private server started by the testkit
//! (shared by the tests of this file while they run), a fresh database per
//! test. Needs the Debian package `postgresql`; without it every test here
//! fails with a message saying to install it.

#[macro_use]
mod suite;

use std::sync::Arc;
use suite::{creds, Fixture};
use zkfire_storage::{open, StorageError};
use zkfire_testkit::postgres::PostgresInstance;

/// A fresh database on the shared instance, and its URL.
fn fresh_database() -> (Arc<PostgresInstance>, String) {
    let pg = PostgresInstance::shared()
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e:#}"));
    let url = pg
        .fresh_database()
        .unwrap_or_else(|e| panic!("cannot create a test database: {e:#}"));
    (pg, url)
}

async fn postgres_fixture() -> Fixture {
    let (pg, url) = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let storage = open(&url).await.unwrap();
    Fixture {
        storage,
        _keep: Box::new(pg),
    }
}

storage_suite!(postgres_fixture);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reopen_keeps_data_and_migrations_are_harmless() {
    let (_pg, url) = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let s = open(&url).await.unwrap();
    s.create_account("alice", &creds(1)).await.unwrap();
    s.close().await;
    let s = open(&url).await.unwrap();
    assert_eq!(s.credentials("alice").await.unwrap(), Some(creds(1)));
    s.close().await;
}

/// Cluster nodes starting together on a new database: the migrations run
/// once, and every node opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_opens() {
    let (_pg, url) = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { open(&url).await })
        })
        .collect();
    let mut opened = Vec::new();
    for t in tasks {
        opened.push(t.await.unwrap().unwrap());
    }
    opened[0].create_account("alice", &creds(1)).await.unwrap();
    for s in &opened {
        assert!(s.account_exists("alice").await.unwrap());
        s.close().await;
    }
}

#[tokio::test]
async fn unreachable_server_is_a_database_error() {
    let port = zkfire_testkit::ports::free_port();
    match open(&format!("postgres://postgres@127.0.0.1:{port}/zkfire")).await {
        Err(StorageError::Database(_)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

#[tokio::test]
async fn missing_database_is_a_database_error() {
    let (pg, _) = tokio::task::spawn_blocking(fresh_database).await.unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/no_such_db", pg.port());
    match open(&url).await {
        Err(StorageError::Database(e)) => assert!(e.contains("no_such_db"), "{e}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened a missing database"),
    }
}
