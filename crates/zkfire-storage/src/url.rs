//! Parsing of the storage URL given to [`crate::open`].

use crate::{Result, StorageError};
use std::path::PathBuf;

/// Which database a URL designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file, relative to the working directory unless absolute.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (`sqlite::memory:`), gone at close.
    SqliteMemory,
    /// A PostgreSQL URL, passed to the driver unchanged.
    Postgres(String),
}

/// Accepts `sqlite://PATH`, `sqlite:PATH`, `sqlite::memory:`,
/// `postgres://...` and `postgresql://...`.
///
/// For SQLite, `sqlite://data/zkfire.db` is the relative path
/// `data/zkfire.db` and `sqlite:///var/lib/zkfire.db` the absolute one (as
/// sqlx reads them). Query parameters are refused rather than silently
/// ignored: the connection settings are fixed by this crate.
pub(crate) fn parse(url: &str) -> Result<Target> {
    let bad = || StorageError::BadUrl(url.to_string());
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_string()));
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(bad)?;
    if rest.is_empty() || rest.contains('?') || rest.contains('#') {
        return Err(bad());
    }
    if rest == ":memory:" {
        return Ok(Target::SqliteMemory);
    }
    Ok(Target::SqliteFile(PathBuf::from(rest)))
}

/// The URL with its password, if any, replaced by `***`, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}***{}",
        &url[..scheme_end + colon + 1],
        &url[scheme_end + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Target {
        Target::SqliteFile(PathBuf::from(p))
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(parse("sqlite://data/z.db").ok(), Some(file("data/z.db")));
        assert_eq!(parse("sqlite:data/z.db").ok(), Some(file("data/z.db")));
        assert_eq!(parse("sqlite:///var/z.db").ok(), Some(file("/var/z.db")));
        assert_eq!(parse("sqlite:/var/z.db").ok(), Some(file("/var/z.db")));
        assert_eq!(parse("sqlite::memory:").ok(), Some(Target::SqliteMemory));
        assert_eq!(parse("sqlite://:memory:").ok(), Some(Target::SqliteMemory));
    }

    #[test]
    fn postgres_forms() {
        let u = "postgres://zk:pw@db.example:5432/zkfire";
        assert_eq!(parse(u).ok(), Some(Target::Postgres(u.to_string())));
        let u = "postgresql://localhost/zkfire";
        assert_eq!(parse(u).ok(), Some(Target::Postgres(u.to_string())));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://zk:secret@h:5432/db"),
            "postgres://zk:***@h:5432/db"
        );
        assert_eq!(redact("postgres://zk@h/db"), "postgres://zk@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn refused() {
        for u in [
            "",
            "sqlite:",
            "sqlite://",
            "sqlite://z.db?mode=ro",
            "mysql://localhost/zkfire",
            "postgres:zkfire",
            "/var/z.db",
            "SQLITE://z.db",
        ] {
            assert!(
                matches!(parse(u), Err(StorageError::BadUrl(ref s)) if s == u),
                "{u:?} accepted"
            );
        }
    }
}
