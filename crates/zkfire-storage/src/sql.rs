//! The one implementation of [`Storage`], for both backends.
//!
//! Why `sqlx::Any`: with it both backends share every query string and every
//! line of Rust here. Each query is written once, in the SQL common to SQLite
//! and PostgreSQL (`$N` placeholders, which sqlx's SQLite driver accepts;
//! `INSERT ... ON CONFLICT` upserts; `RETURNING`). What differs lives
//! elsewhere: column types, id generation and collation in the per-backend
//! migrations, pool setup and the `BEGIN` statements in `pool.rs`.
//! `Any` carries only booleans, integers, floats, text and bytes, which is
//! all we need: i64 for times, ids and counters, i32 0/1 for flags, TEXT, and
//! SCRAM keys as bytes (BLOB on SQLite, BYTEA on PostgreSQL; `Any` maps both).
//! The price is a copy of each row into `Any`'s representation, negligible
//! next to the query itself.

use crate::account_lock::{lock_account, Tx};
use crate::archive_sql;
use crate::error::{corrupt, db};
use crate::pep_sql;
use crate::pool::Pools;
use crate::{
    ArchiveFilter, ArchivePage, ArchivePrefs, ArchiveResult, ArchivedMessage, Limit,
    OfflineMessage, PepItem, PepLimits, PepNode, PrivateXmlLimits, Result, RosterItem, Storage,
    StorageError, Subscription,
};
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use zkfire_sasl::{ScramCredentials, ScramHash, UserCredentials};

pub(crate) struct SqlStorage {
    pools: Pools,
}

impl SqlStorage {
    pub(crate) fn new(pools: Pools) -> Self {
        SqlStorage { pools }
    }
}

/// Most ids bound in one `IN (...)` list (well under both backends' limits
/// on bound parameters).
const IDS_PER_STATEMENT: usize = 500;

/// Rows of one account, deleted by `delete_account` in this order:
/// `account_state` first, as every per-account writer locks it first too
/// (same lock order everywhere, so no deadlock on PostgreSQL).
const ACCOUNT_TABLES: &[&str] = &[
    "DELETE FROM account_state WHERE username = $1",
    "DELETE FROM roster_groups WHERE username = $1",
    "DELETE FROM roster_items WHERE username = $1",
    "DELETE FROM pending_subscriptions WHERE username = $1",
    "DELETE FROM offline_messages WHERE username = $1",
    "DELETE FROM vcards WHERE username = $1",
    "DELETE FROM private_xml WHERE username = $1",
    "DELETE FROM blocklist WHERE username = $1",
    "DELETE FROM last_activity WHERE username = $1",
    "DELETE FROM archive WHERE username = $1",
    "DELETE FROM archive_prefs WHERE username = $1",
    "DELETE FROM archive_prefs_jids WHERE username = $1",
    "DELETE FROM pep_items WHERE username = $1",
    "DELETE FROM pep_nodes WHERE username = $1",
    "DELETE FROM credentials WHERE username = $1",
];

const ROSTER_ITEMS: &str = "SELECT contact, name, subscription, ask, approved \
     FROM roster_items WHERE username = $1 ORDER BY contact";
const ROSTER_GROUPS: &str =
    "SELECT contact, name FROM roster_groups WHERE username = $1 ORDER BY contact, name";
const ROSTER_ITEM: &str = "SELECT contact, name, subscription, ask, approved \
     FROM roster_items WHERE username = $1 AND contact = $2";
const ROSTER_ITEM_GROUPS: &str =
    "SELECT contact, name FROM roster_groups WHERE username = $1 AND contact = $2 ORDER BY name";

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Bumps the roster version (taking the per-account lock) and returns it.
async fn bump_roster_version(tx: &mut Tx, username: &str) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO account_state (username, roster_version) VALUES ($1, 1) \
         ON CONFLICT (username) DO UPDATE SET roster_version = account_state.roster_version + 1 \
         RETURNING roster_version",
    )
    .bind(username)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)
}

/// Writes one roster item and its groups inside a transaction.
async fn write_roster_item(tx: &mut Tx, username: &str, item: &RosterItem) -> Result<()> {
    sqlx::query(
        "INSERT INTO roster_items (username, contact, name, subscription, ask, approved) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (username, contact) DO UPDATE SET name = excluded.name, \
         subscription = excluded.subscription, ask = excluded.ask, \
         approved = excluded.approved",
    )
    .bind(username)
    .bind(&item.jid)
    .bind(item.name.as_deref())
    .bind(item.subscription.as_str())
    .bind(flag(item.ask))
    .bind(flag(item.approved))
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM roster_groups WHERE username = $1 AND contact = $2")
        .bind(username)
        .bind(&item.jid)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    for group in &item.groups {
        // DO NOTHING drops duplicate group names.
        sqlx::query(
            "INSERT INTO roster_groups (username, contact, name) VALUES ($1, $2, $3) \
             ON CONFLICT (username, contact, name) DO NOTHING",
        )
        .bind(username)
        .bind(&item.jid)
        .bind(group)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

async fn roster_version_on(conn: &mut AnyConnection, username: &str) -> Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT roster_version FROM account_state WHERE username = $1")
            .bind(username)
            .fetch_optional(conn)
            .await
            .map_err(db)?;
    Ok(v.unwrap_or(0))
}

/// Runs a `SELECT COUNT(*) ... WHERE username = $1` inside a transaction.
async fn count(tx: &mut Tx, sql: &str, username: &str) -> Result<usize> {
    let n: i64 = sqlx::query_scalar(sql)
        .bind(username)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    usize::try_from(n).map_err(|_| corrupt(format!("count {n}")))
}

/// Ends a transaction that would pass `limit`: nothing of it is kept.
async fn refuse<T>(tx: Tx, limit: Limit) -> Result<T> {
    tx.rollback().await.map_err(db)?;
    Err(StorageError::LimitReached(limit))
}

fn flag(b: bool) -> i32 {
    i32::from(b)
}

fn roster_item_from_row(row: &AnyRow) -> Result<RosterItem> {
    let subscription: String = row.try_get("subscription").map_err(db)?;
    let ask: i32 = row.try_get("ask").map_err(db)?;
    let approved: i32 = row.try_get("approved").map_err(db)?;
    Ok(RosterItem {
        jid: row.try_get("contact").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        subscription: Subscription::parse(&subscription)
            .ok_or_else(|| corrupt(format!("subscription {subscription:?}")))?,
        ask: ask != 0,
        approved: approved != 0,
        groups: Vec::new(),
    })
}

/// Reads roster items and their groups (two queries, so the caller runs them
/// in one read transaction) and puts each group under its item.
async fn load_roster(
    conn: &mut AnyConnection,
    username: &str,
    contact: Option<&str>,
) -> Result<Vec<RosterItem>> {
    let (items_sql, groups_sql) = match contact {
        None => (ROSTER_ITEMS, ROSTER_GROUPS),
        Some(_) => (ROSTER_ITEM, ROSTER_ITEM_GROUPS),
    };
    let mut q = sqlx::query(items_sql).bind(username);
    if let Some(c) = contact {
        q = q.bind(c);
    }
    let rows = q.fetch_all(&mut *conn).await.map_err(db)?;
    let mut items = rows
        .iter()
        .map(roster_item_from_row)
        .collect::<Result<Vec<_>>>()?;
    if items.is_empty() {
        return Ok(items);
    }

    let mut q = sqlx::query(groups_sql).bind(username);
    if let Some(c) = contact {
        q = q.bind(c);
    }
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for row in q.fetch_all(&mut *conn).await.map_err(db)? {
        let contact: String = row.try_get("contact").map_err(db)?;
        let name: String = row.try_get("name").map_err(db)?;
        groups.entry(contact).or_default().push(name);
    }
    for item in &mut items {
        item.groups = groups.remove(&item.jid).unwrap_or_default();
    }
    Ok(items)
}

async fn put_credentials(tx: &mut Tx, username: &str, creds: &UserCredentials) -> Result<()> {
    for c in [&creds.sha1, &creds.sha256] {
        sqlx::query(
            "INSERT INTO credentials (username, hash, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (username, hash) DO UPDATE SET salt = excluded.salt, \
             iterations = excluded.iterations, stored_key = excluded.stored_key, \
             server_key = excluded.server_key",
        )
        .bind(username)
        .bind(c.hash.name())
        .bind(c.salt.as_slice())
        .bind(i64::from(c.iterations))
        .bind(c.stored_key.as_slice())
        .bind(c.server_key.as_slice())
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    }
    Ok(())
}

fn scram_from_row(row: &AnyRow) -> Result<ScramCredentials> {
    let hash: String = row.try_get("hash").map_err(db)?;
    let iterations: i64 = row.try_get("iterations").map_err(db)?;
    Ok(ScramCredentials {
        hash: ScramHash::from_name(&hash).ok_or_else(|| corrupt(format!("hash {hash:?}")))?,
        salt: row.try_get("salt").map_err(db)?,
        iterations: u32::try_from(iterations)
            .map_err(|_| corrupt(format!("iteration count {iterations}")))?,
        stored_key: row.try_get("stored_key").map_err(db)?,
        server_key: row.try_get("server_key").map_err(db)?,
    })
}

#[async_trait]
impl Storage for SqlStorage {
    async fn create_account(&self, username: &str, creds: &UserCredentials) -> Result<()> {
        let mut tx = self.pools.begin_write().await?;
        // DO NOTHING rather than catching a unique violation: no need to
        // tell driver error codes apart, and PostgreSQL's transaction stays usable.
        let inserted = sqlx::query(
            "INSERT INTO accounts (username, created_at) VALUES ($1, $2) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(username)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await.map_err(db)?;
            return Err(StorageError::AccountExists);
        }
        put_credentials(&mut tx, username, creds).await?;
        tx.commit().await.map_err(db)
    }

    async fn credentials(&self, username: &str) -> Result<Option<UserCredentials>> {
        let rows = sqlx::query(
            "SELECT hash, salt, iterations, stored_key, server_key \
             FROM credentials WHERE username = $1",
        )
        .bind(username)
        .fetch_all(&self.pools.read)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let (mut sha1, mut sha256) = (None, None);
        for row in &rows {
            let c = scram_from_row(row)?;
            match c.hash {
                ScramHash::Sha1 => sha1 = Some(c),
                ScramHash::Sha256 => sha256 = Some(c),
            }
        }
        match (sha1, sha256) {
            (Some(sha1), Some(sha256)) => Ok(Some(UserCredentials { sha1, sha256 })),
            _ => Err(corrupt(format!("incomplete credentials of {username:?}"))),
        }
    }

    async fn set_credentials(&self, username: &str, creds: &UserCredentials) -> Result<()> {
        let mut tx = self.pools.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if !exists {
            tx.rollback().await.map_err(db)?;
            return Err(StorageError::NoSuchAccount);
        }
        put_credentials(&mut tx, username, creds).await?;
        tx.commit().await.map_err(db)
    }

    async fn delete_account(&self, username: &str) -> Result<bool> {
        let mut tx = self.pools.begin_write().await?;
        for sql in ACCOUNT_TABLES {
            sqlx::query(sql)
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let deleted = sqlx::query("DELETE FROM accounts WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(deleted > 0)
    }

    async fn account_exists(&self, username: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pools.read)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT username FROM accounts ORDER BY username")
            .fetch_all(&self.pools.read)
            .await
            .map_err(db)
    }

    async fn roster(&self, username: &str) -> Result<(i64, Vec<RosterItem>)> {
        let mut tx = self.pools.begin_read().await?;
        let version = roster_version_on(&mut tx, username).await?;
        let items = load_roster(&mut tx, username, None).await?;
        tx.commit().await.map_err(db)?;
        Ok((version, items))
    }

    async fn roster_version(&self, username: &str) -> Result<i64> {
        let mut conn = self.pools.read.acquire().await.map_err(db)?;
        roster_version_on(&mut conn, username).await
    }

    async fn roster_item(&self, username: &str, contact: &str) -> Result<Option<RosterItem>> {
        let mut tx = self.pools.begin_read().await?;
        let items = load_roster(&mut tx, username, Some(contact)).await?;
        tx.commit().await.map_err(db)?;
        Ok(items.into_iter().next())
    }

    async fn put_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64> {
        let mut tx = self.pools.begin_write().await?;
        // First, so the per-account lock is taken before any item row.
        let version = bump_roster_version(&mut tx, username).await?;
        write_roster_item(&mut tx, username, item).await?;
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    async fn update_roster_item(
        &self,
        username: &str,
        contact: &str,
        change: crate::RosterChange,
        max_items: usize,
    ) -> Result<(Option<RosterItem>, Option<(i64, RosterItem)>)> {
        let mut tx = self.pools.begin_write().await?;
        lock_account(&mut tx, username).await?;
        let before = load_roster(&mut tx, username, Some(contact))
            .await?
            .into_iter()
            .next();
        let after = match change(before.as_ref()) {
            Some(item) if Some(&item) != before.as_ref() => item,
            _ => {
                tx.commit().await.map_err(db)?;
                return Ok((before, None));
            }
        };
        if before.is_none() {
            let items = count(
                &mut tx,
                "SELECT COUNT(*) FROM roster_items WHERE username = $1",
                username,
            )
            .await?;
            if items >= max_items {
                return refuse(tx, Limit::RosterItems).await;
            }
        }
        let version = bump_roster_version(&mut tx, username).await?;
        write_roster_item(&mut tx, username, &after).await?;
        tx.commit().await.map_err(db)?;
        Ok((before, Some((version, after))))
    }

    async fn remove_roster_item(&self, username: &str, contact: &str) -> Result<Option<i64>> {
        let mut tx = self.pools.begin_write().await?;
        // Bump first for the lock order; rolled back when there is no item.
        let version = bump_roster_version(&mut tx, username).await?;
        sqlx::query("DELETE FROM roster_groups WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let removed = sqlx::query("DELETE FROM roster_items WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if removed == 0 {
            tx.rollback().await.map_err(db)?;
            return Ok(None);
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(version))
    }

    async fn add_pending_subscription(&self, username: &str, from: &str, max: usize) -> Result<()> {
        let mut tx = self.pools.begin_write().await?;
        // Count and insert under the account lock, so concurrent requests
        // cannot both see room for one more.
        lock_account(&mut tx, username).await?;
        let known =
            sqlx::query("SELECT 1 FROM pending_subscriptions WHERE username = $1 AND contact = $2")
                .bind(username)
                .bind(from)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .is_some();
        if known {
            return tx.commit().await.map_err(db);
        }
        let waiting = count(
            &mut tx,
            "SELECT COUNT(*) FROM pending_subscriptions WHERE username = $1",
            username,
        )
        .await?;
        if waiting >= max {
            return refuse(tx, Limit::PendingSubscriptions).await;
        }
        sqlx::query("INSERT INTO pending_subscriptions (username, contact) VALUES ($1, $2)")
            .bind(username)
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn remove_pending_subscription(&self, username: &str, from: &str) -> Result<bool> {
        let removed =
            sqlx::query("DELETE FROM pending_subscriptions WHERE username = $1 AND contact = $2")
                .bind(username)
                .bind(from)
                .execute(&self.pools.write)
                .await
                .map_err(db)?
                .rows_affected();
        Ok(removed > 0)
    }

    async fn pending_subscriptions(&self, username: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT contact FROM pending_subscriptions WHERE username = $1 ORDER BY contact",
        )
        .bind(username)
        .fetch_all(&self.pools.read)
        .await
        .map_err(db)
    }

    async fn store_offline(&self, username: &str, stanza: &str, max: usize) -> Result<bool> {
        if max == 0 {
            return Ok(false);
        }
        let mut tx = self.pools.begin_write().await?;
        // Count and insert under the account lock, so concurrent calls for
        // the same account cannot both see room for one more.
        lock_account(&mut tx, username).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = $1")
                .bind(username)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max {
            tx.rollback().await.map_err(db)?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO offline_messages (username, stanza, stored_at) VALUES ($1, $2, $3)",
        )
        .bind(username)
        .bind(stanza)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn offline_messages(&self, username: &str) -> Result<Vec<OfflineMessage>> {
        let rows = sqlx::query(
            "SELECT id, stanza, stored_at FROM offline_messages WHERE username = $1 ORDER BY id",
        )
        .bind(username)
        .fetch_all(&self.pools.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(OfflineMessage {
                    id: row.try_get("id").map_err(db)?,
                    stanza: row.try_get("stanza").map_err(db)?,
                    stored_at: row.try_get("stored_at").map_err(db)?,
                })
            })
            .collect()
    }

    async fn delete_offline_messages(&self, username: &str, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pools.begin_write().await?;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            // `IN ($2, $3, ...)`: `= ANY($2)` would need arrays, which Any lacks.
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|n| format!("${n}")).collect();
            let sql = format!(
                "DELETE FROM offline_messages WHERE username = $1 AND id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(username);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn count_offline_messages(&self, username: &str) -> Result<usize> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE username = $1")
                .bind(username)
                .fetch_one(&self.pools.read)
                .await
                .map_err(db)?;
        usize::try_from(count).map_err(|_| corrupt(format!("count {count}")))
    }

    async fn vcard(&self, username: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT vcard FROM vcards WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pools.read)
            .await
            .map_err(db)
    }

    async fn set_vcard(&self, username: &str, vcard: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO vcards (username, vcard) VALUES ($1, $2) \
             ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard",
        )
        .bind(username)
        .bind(vcard)
        .execute(&self.pools.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn private_xml(&self, username: &str, namespace: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT xml FROM private_xml WHERE username = $1 AND namespace = $2")
            .bind(username)
            .bind(namespace)
            .fetch_optional(&self.pools.read)
            .await
            .map_err(db)
    }

    async fn set_private_xml(
        &self,
        username: &str,
        elements: &[(&str, &str)],
        limits: PrivateXmlLimits,
    ) -> Result<()> {
        let mut tx = self.pools.begin_write().await?;
        // Write, then measure the result, under the account lock: a
        // replacement is judged by what the account holds after it, and
        // concurrent writes cannot both fit in the room left for one.
        lock_account(&mut tx, username).await?;
        for (namespace, xml) in elements {
            sqlx::query(
                "INSERT INTO private_xml (username, namespace, xml) VALUES ($1, $2, $3) \
                 ON CONFLICT (username, namespace) DO UPDATE SET xml = excluded.xml",
            )
            .bind(username)
            .bind(namespace)
            .bind(xml)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(SUM(octet_length(xml)), 0) FROM private_xml \
             WHERE username = $1",
        )
        .bind(username)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let items: i64 = row.try_get(0).map_err(db)?;
        let bytes: i64 = row.try_get(1).map_err(db)?;
        let over = |n: i64, max: usize| usize::try_from(n).map_or(true, |n| n > max);
        if over(items, limits.max_items) {
            return refuse(tx, Limit::PrivateXmlItems).await;
        }
        if over(bytes, limits.max_bytes) {
            return refuse(tx, Limit::PrivateXmlBytes).await;
        }
        tx.commit().await.map_err(db)
    }

    async fn blocklist(&self, username: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT jid FROM blocklist WHERE username = $1 ORDER BY jid")
            .bind(username)
            .fetch_all(&self.pools.read)
            .await
            .map_err(db)
    }

    async fn block(&self, username: &str, jids: &[String]) -> Result<()> {
        if jids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pools.begin_write().await?;
        for jid in jids {
            sqlx::query(
                "INSERT INTO blocklist (username, jid) VALUES ($1, $2) \
                 ON CONFLICT (username, jid) DO NOTHING",
            )
            .bind(username)
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn unblock(&self, username: &str, jids: &[String]) -> Result<()> {
        if jids.is_empty() {
            return Ok(());
        }
        let mut tx = self.pools.begin_write().await?;
        for jid in jids {
            sqlx::query("DELETE FROM blocklist WHERE username = $1 AND jid = $2")
                .bind(username)
                .bind(jid)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn unblock_all(&self, username: &str) -> Result<()> {
        sqlx::query("DELETE FROM blocklist WHERE username = $1")
            .bind(username)
            .execute(&self.pools.write)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn set_last_activity(&self, username: &str, at: i64, status: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO last_activity (username, at, status) VALUES ($1, $2, $3) \
             ON CONFLICT (username) DO UPDATE SET at = excluded.at, status = excluded.status",
        )
        .bind(username)
        .bind(at)
        .bind(status)
        .execute(&self.pools.write)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn last_activity(&self, username: &str) -> Result<Option<(i64, String)>> {
        let row = sqlx::query("SELECT at, status FROM last_activity WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pools.read)
            .await
            .map_err(db)?;
        row.map(|row| Ok((row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?)))
            .transpose()
    }

    async fn archive_messages(&self, batch: &[(String, ArchivedMessage)]) -> Result<()> {
        archive_sql::append(&self.pools, batch).await
    }

    async fn query_archive(
        &self,
        username: &str,
        filter: &ArchiveFilter,
        page: &ArchivePage,
    ) -> Result<ArchiveResult> {
        archive_sql::query(&self.pools, username, filter, page).await
    }

    async fn archive_contains(&self, username: &str, id: &str) -> Result<bool> {
        archive_sql::contains(&self.pools, username, id).await
    }

    async fn archive_bounds(
        &self,
        username: &str,
    ) -> Result<Option<(ArchivedMessage, ArchivedMessage)>> {
        archive_sql::bounds(&self.pools, username).await
    }

    async fn purge_archive(&self, before_ts_ms: i64, limit: usize) -> Result<u64> {
        archive_sql::purge(&self.pools, before_ts_ms, limit).await
    }

    async fn archive_prefs(&self, username: &str) -> Result<Option<ArchivePrefs>> {
        archive_sql::prefs(&self.pools, username).await
    }

    async fn set_archive_prefs(&self, username: &str, prefs: &ArchivePrefs) -> Result<()> {
        archive_sql::set_prefs(&self.pools, username, prefs).await
    }

    async fn pep_nodes(&self, username: &str) -> Result<Vec<PepNode>> {
        pep_sql::nodes(&self.pools, username).await
    }

    async fn pep_node(&self, username: &str, node: &str) -> Result<Option<PepNode>> {
        pep_sql::node(&self.pools, username, node).await
    }

    async fn pep_put_node(
        &self,
        username: &str,
        node: &str,
        config: &str,
        limits: PepLimits,
    ) -> Result<bool> {
        pep_sql::put_node(&self.pools, username, node, config, limits).await
    }

    async fn pep_delete_node(&self, username: &str, node: &str) -> Result<bool> {
        pep_sql::delete_node(&self.pools, username, node).await
    }

    async fn pep_publish(
        &self,
        username: &str,
        node: &str,
        item: &PepItem,
        max_items: usize,
    ) -> Result<()> {
        pep_sql::publish(&self.pools, username, node, item, max_items).await
    }

    async fn pep_items(
        &self,
        username: &str,
        node: &str,
        ids: Option<&[String]>,
        max: Option<usize>,
    ) -> Result<Vec<PepItem>> {
        pep_sql::items(&self.pools, username, node, ids, max).await
    }

    async fn pep_retract(&self, username: &str, node: &str, item_id: &str) -> Result<bool> {
        pep_sql::retract(&self.pools, username, node, item_id).await
    }

    async fn caps_features(&self, ver: &str) -> Result<Option<Vec<String>>> {
        pep_sql::caps_features(&self.pools, ver).await
    }

    async fn set_caps_features(&self, ver: &str, features: &[String]) -> Result<()> {
        pep_sql::set_caps_features(&self.pools, ver, features).await
    }

    async fn close(&self) {
        self.pools.close().await;
    }
}
