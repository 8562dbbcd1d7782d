//! Connection pools per backend, and how transactions begin on each.
//!
//! SQLite allows one writer at a time. Rather than letting many connections
//! race for the write lock (and fail with SQLITE_BUSY once the busy timeout
//! runs out under load), every write goes through a pool of exactly one
//! connection, so writers queue inside the process; reads use a separate
//! pool and run concurrently thanks to WAL. PostgreSQL uses one pool for
//! both.

use crate::error::db;
use crate::url::Target;
use crate::{Result, StorageError};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

pub(crate) struct Pools {
    pub(crate) backend: Backend,
    /// For statements that only read (on SQLite its connections are
    /// `query_only`, so a write sent here by mistake fails loudly).
    pub(crate) read: AnyPool,
    /// For everything that writes.
    pub(crate) write: AnyPool,
}

/// PostgreSQL connections per server process.
const POSTGRES_CONNECTIONS: u32 = 10;
/// How long a query waits for a free PostgreSQL connection, and how long
/// `open` keeps retrying a server that refuses connections (sqlx retries
/// "connection refused" until this runs out, e.g. while the server boots).
const POSTGRES_WAIT: Duration = Duration::from_secs(10);
/// Queued SQLite writers wait this long for the writer connection; only a
/// badly overloaded server reaches it.
const SQLITE_WRITE_WAIT: Duration = Duration::from_secs(60);

/// Set on every SQLite connection. The busy timeout only matters when
/// another process (e.g. an admin tool) holds the file's write lock.
/// synchronous=NORMAL is the usual WAL setting: durable across a crash of
/// the process, may lose the last commits on power loss.
const SQLITE_COMMON_PRAGMAS: &[&str] = &[
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA synchronous = NORMAL",
];

impl Pools {
    pub(crate) async fn open(target: &Target) -> Result<Pools> {
        // Idempotent; needed before any Any pool can connect.
        sqlx::any::install_default_drivers();
        match target {
            Target::Postgres(url) => open_postgres(url).await,
            Target::SqliteFile(path) => open_sqlite_file(path).await,
            Target::SqliteMemory => open_sqlite_memory().await,
        }
    }

    /// Begins a transaction that will write.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            // IMMEDIATE takes the write lock at BEGIN (waiting with the busy
            // timeout), instead of upgrading a read lock later, which can
            // fail at once with SQLITE_BUSY.
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            // READ COMMITTED; the statements that must serialize per account
            // lock that account's `account_state` row first.
            Backend::Postgres => self.write.begin().await,
        }
        .map_err(db)
    }

    /// Begins a read-only transaction: several queries seeing one snapshot.
    pub(crate) async fn begin_read(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            // A deferred transaction reads one WAL snapshot throughout.
            Backend::Sqlite => self.read.begin().await,
            Backend::Postgres => {
                self.read
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        }
        .map_err(db)
    }

    pub(crate) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

async fn open_postgres(url: &str) -> Result<Pools> {
    let pool = AnyPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .acquire_timeout(POSTGRES_WAIT)
        .connect(url)
        .await
        .map_err(|e| match e {
            sqlx::Error::Configuration(_) => StorageError::BadUrl(crate::url::redact(url)),
            e => db(e),
        })?;
    Ok(Pools {
        backend: Backend::Postgres,
        read: pool.clone(),
        write: pool,
    })
}

async fn open_sqlite_file(path: &Path) -> Result<Pools> {
    let url = sqlite_file_url(path)?;
    // The writer connects first (eagerly, so a bad path fails here) and
    // switches the file to WAL; the mode is stored in the file, and readers
    // opened afterwards find it.
    // No ping before each use (sqlx's default): a connection to a local
    // file does not go stale, and the ping is one more trip to the
    // connection's thread for every statement.
    let write = AnyPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(SQLITE_WRITE_WAIT)
        .after_connect(|conn, _| Box::pin(async move { sqlite_setup(conn, false).await }))
        .connect(&url)
        .await
        .map_err(db)?;
    let read = AnyPoolOptions::new()
        .max_connections(sqlite_readers())
        .test_before_acquire(false)
        .after_connect(|conn, _| Box::pin(async move { sqlite_setup(conn, true).await }))
        .connect_lazy(&url)
        .map_err(db)?;
    Ok(Pools {
        backend: Backend::Sqlite,
        read,
        write,
    })
}

/// One connection that is never recycled, since the database lives and dies
/// with it; it serves reads and writes alike.
async fn open_sqlite_memory() -> Result<Pools> {
    let pool = AnyPoolOptions::new()
        .min_connections(1)
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(SQLITE_WRITE_WAIT)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in SQLITE_COMMON_PRAGMAS {
                    conn.execute(*pragma).await?;
                }
                Ok(())
            })
        })
        .connect("sqlite::memory:")
        .await
        .map_err(db)?;
    Ok(Pools {
        backend: Backend::Sqlite,
        read: pool.clone(),
        write: pool,
    })
}

async fn sqlite_setup(conn: &mut AnyConnection, reader: bool) -> sqlx::Result<()> {
    for pragma in SQLITE_COMMON_PRAGMAS {
        conn.execute(*pragma).await?;
    }
    if reader {
        conn.execute("PRAGMA query_only = ON").await?;
    } else {
        conn.execute("PRAGMA journal_mode = WAL").await?;
        // The writer touches the newest pages of every index on every
        // archived message: 16 MiB of page cache (the default is 2 MiB)
        // keeps them in memory instead of reading them back each time.
        conn.execute("PRAGMA cache_size = -16384").await?;
    }
    Ok(())
}

/// Readers run in parallel in WAL mode; about one per core is plenty, as
/// reads are short and mostly served from the page cache.
fn sqlite_readers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .clamp(4, 8) as u32
}

/// The URL given to sqlx for a SQLite file: creates the parent folder when
/// missing, and makes the path absolute and canonical, since sqlx goes through
/// a URL parser that would otherwise fold `..` segments and mis-read
/// characters such as `%`, `?` or `#`.
fn sqlite_file_url(path: &Path) -> Result<String> {
    let file_name = path.file_name().ok_or_else(|| {
        StorageError::BadUrl(format!("sqlite://{} (no file name)", path.display()))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| {
        StorageError::Database(format!("cannot create folder {}: {e}", parent.display()))
    })?;
    let dir = parent.canonicalize().map_err(|e| {
        StorageError::Database(format!("cannot resolve folder {}: {e}", parent.display()))
    })?;
    let full = dir.join(file_name);
    let full = full
        .to_str()
        .ok_or_else(|| StorageError::Database(format!("path is not UTF-8: {}", full.display())))?;
    // mode=rwc: create the file when missing.
    Ok(format!("sqlite://{}?mode=rwc", percent_encode_path(full)))
}

/// Percent-encodes every byte but unreserved URL characters and `/`.
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode_path;

    #[test]
    fn encodes_special_characters() {
        assert_eq!(percent_encode_path("/a/b-c_d.e~"), "/a/b-c_d.e~");
        assert_eq!(percent_encode_path("/a b/%?#é"), "/a%20b/%25%3F%23%C3%A9");
    }
}
