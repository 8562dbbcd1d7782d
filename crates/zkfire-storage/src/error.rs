//! Conversion of driver errors into [`StorageError`], so that no sqlx type
//! leaks through the public interface.

use crate::StorageError;

pub(crate) fn db(e: sqlx::Error) -> StorageError {
    StorageError::Database(e.to_string())
}

pub(crate) fn migration(e: sqlx::migrate::MigrateError) -> StorageError {
    StorageError::Database(format!("migration failed: {e}"))
}

/// A value read back that the schema's checks should have made impossible.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StorageError {
    StorageError::Database(format!("unexpected stored data: {what}"))
}
