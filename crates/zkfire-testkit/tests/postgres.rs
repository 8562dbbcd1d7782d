//! Starts a real private PostgreSQL (the Debian package `postgresql` must be
//! installed; without it these tests fail, saying so).

use std::net::TcpStream;
use zkfire_testkit::postgres::PostgresInstance;

fn start() -> PostgresInstance {
    PostgresInstance::start().unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn starts_serves_and_cleans_up() {
    let pg = start();
    let port = pg.port();
    let folder = pg.folder().to_path_buf();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/zkfire")
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert_eq!(
        pg.create_database("other_db")
            .unwrap_or_else(|e| panic!("{e:#}")),
        format!("postgres://postgres@127.0.0.1:{port}/other_db")
    );
    assert!(pg.create_database("other_db").is_err(), "created twice");
    assert!(pg.create_database("bad name").is_err());
    let a = pg.fresh_database().unwrap_or_else(|e| panic!("{e:#}"));
    let b = pg.fresh_database().unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(a, b);

    drop(pg);
    assert!(!folder.exists(), "folder left behind");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening"
    );
}

#[test]
fn shared_instance_is_reused_while_held() {
    let a = PostgresInstance::shared().unwrap_or_else(|e| panic!("{e:#}"));
    let b = PostgresInstance::shared().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(a.port(), b.port());
    let folder = a.folder().to_path_buf();
    drop(a);
    assert!(folder.exists());
    drop(b);
    assert!(!folder.exists(), "last holder did not stop it");
}
