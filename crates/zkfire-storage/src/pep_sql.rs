//! Personal eventing's queries, for both backends (see `sql.rs`).

use crate::error::db;
use crate::pep::{PepItem, PepLimits, PepNode};
use crate::pool::Pools;
use crate::{Limit, Result, StorageError};
use sqlx::any::AnyRow;
use sqlx::Row;

pub(crate) async fn nodes(pools: &Pools, username: &str) -> Result<Vec<PepNode>> {
    let rows = sqlx::query("SELECT node, config FROM pep_nodes WHERE username = $1 ORDER BY node")
        .bind(username)
        .fetch_all(&pools.read)
        .await
        .map_err(db)?;
    rows.iter().map(node_of).collect()
}

pub(crate) async fn node(pools: &Pools, username: &str, node: &str) -> Result<Option<PepNode>> {
    let row = sqlx::query("SELECT node, config FROM pep_nodes WHERE username = $1 AND node = $2")
        .bind(username)
        .bind(node)
        .fetch_optional(&pools.read)
        .await
        .map_err(db)?;
    row.as_ref().map(node_of).transpose()
}

fn node_of(row: &AnyRow) -> Result<PepNode> {
    Ok(PepNode {
        name: row.try_get("node").map_err(db)?,
        config: row.try_get("config").map_err(db)?,
    })
}

pub(crate) async fn put_node(
    pools: &Pools,
    username: &str,
    node: &str,
    config: &str,
    limits: PepLimits,
) -> Result<bool> {
    let mut tx = pools.begin_write().await?;
    // Count and create under the account's lock (account_lock.rs), so concurrent
    // creations cannot pass the bound together.
    crate::account_lock::lock_account(&mut tx, username).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pep_nodes WHERE username = $1 AND node = $2")
            .bind(username)
            .bind(node)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    if exists.is_none() {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pep_nodes WHERE username = $1")
            .bind(username)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= limits.max_nodes {
            tx.rollback().await.map_err(db)?;
            return Err(StorageError::LimitReached(Limit::PepNodes));
        }
    }
    sqlx::query(
        "INSERT INTO pep_nodes (username, node, config) VALUES ($1, $2, $3) \
         ON CONFLICT (username, node) DO UPDATE SET config = excluded.config",
    )
    .bind(username)
    .bind(node)
    .bind(config)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(exists.is_none())
}

pub(crate) async fn delete_node(pools: &Pools, username: &str, node: &str) -> Result<bool> {
    let mut tx = pools.begin_write().await?;
    sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2")
        .bind(username)
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let done = sqlx::query("DELETE FROM pep_nodes WHERE username = $1 AND node = $2")
        .bind(username)
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn publish(
    pools: &Pools,
    username: &str,
    node: &str,
    item: &PepItem,
    max_items: usize,
) -> Result<()> {
    let mut tx = pools.begin_write().await?;
    // Replacing deletes and inserts, so the item takes a new, highest seq.
    sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
        .bind(username)
        .bind(node)
        .bind(&item.id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    sqlx::query(
        "INSERT INTO pep_items (username, node, item_id, payload, published) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(username)
    .bind(node)
    .bind(&item.id)
    .bind(&item.payload)
    .bind(item.published_ms)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let keep = i64::try_from(max_items).unwrap_or(i64::MAX);
    sqlx::query(
        "DELETE FROM pep_items WHERE username = $1 AND node = $2 AND seq NOT IN \
         (SELECT seq FROM pep_items WHERE username = $1 AND node = $2 ORDER BY seq DESC LIMIT $3)",
    )
    .bind(username)
    .bind(node)
    .bind(keep)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(())
}

pub(crate) async fn items(
    pools: &Pools,
    username: &str,
    node: &str,
    ids: Option<&[String]>,
    max: Option<usize>,
) -> Result<Vec<PepItem>> {
    let rows = match ids {
        Some(ids) => {
            let mut found = Vec::new();
            for id in ids {
                let row = sqlx::query(
                    "SELECT item_id, payload, published, seq FROM pep_items \
                     WHERE username = $1 AND node = $2 AND item_id = $3",
                )
                .bind(username)
                .bind(node)
                .bind(id)
                .fetch_optional(&pools.read)
                .await
                .map_err(db)?;
                found.extend(row);
            }
            found.sort_by_key(|r| r.try_get::<i64, _>("seq").unwrap_or(0));
            found
        }
        None => {
            let limit = max.map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
            let mut rows = sqlx::query(
                "SELECT item_id, payload, published, seq FROM pep_items \
                 WHERE username = $1 AND node = $2 ORDER BY seq DESC LIMIT $3",
            )
            .bind(username)
            .bind(node)
            .bind(limit)
            .fetch_all(&pools.read)
            .await
            .map_err(db)?;
            rows.reverse();
            rows
        }
    };
    rows.iter()
        .map(|row| {
            Ok(PepItem {
                id: row.try_get("item_id").map_err(db)?,
                payload: row.try_get("payload").map_err(db)?,
                published_ms: row.try_get("published").map_err(db)?,
            })
        })
        .collect()
}

pub(crate) async fn retract(pools: &Pools, username: &str, node: &str, id: &str) -> Result<bool> {
    let done =
        sqlx::query("DELETE FROM pep_items WHERE username = $1 AND node = $2 AND item_id = $3")
            .bind(username)
            .bind(node)
            .bind(id)
            .execute(&pools.write)
            .await
            .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn caps_features(pools: &Pools, ver: &str) -> Result<Option<Vec<String>>> {
    let features: Option<String> =
        sqlx::query_scalar("SELECT features FROM caps_features WHERE ver = $1")
            .bind(ver)
            .fetch_optional(&pools.read)
            .await
            .map_err(db)?;
    Ok(features.map(|f| f.lines().map(str::to_string).collect()))
}

pub(crate) async fn set_caps_features(pools: &Pools, ver: &str, features: &[String]) -> Result<()> {
    sqlx::query(
        "INSERT INTO caps_features (ver, features) VALUES ($1, $2) \
         ON CONFLICT (ver) DO UPDATE SET features = excluded.features",
    )
    .bind(ver)
    .bind(features.join("\n"))
    .execute(&pools.write)
    .await
    .map_err(db)?;
    Ok(())
}
