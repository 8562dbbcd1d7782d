//! The per-account lock that every writer of an account's rows takes
//! first (`sql.rs`, `pep_sql.rs`), in one place so the lock order is one.

use crate::error::db;
use crate::Result;
use sqlx::{Any, Transaction};

pub(crate) type Tx = Transaction<'static, Any>;

/// Takes the per-account lock: upserts the account's `account_state` row,
/// which on PostgreSQL row-locks it until the transaction ends. (On SQLite
/// the whole write transaction is already exclusive.) Works whether or not
/// the row or the account exists.
pub(crate) async fn lock_account(tx: &mut Tx, username: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO account_state (username) VALUES ($1) \
         ON CONFLICT (username) DO UPDATE SET roster_version = account_state.roster_version",
    )
    .bind(username)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}
