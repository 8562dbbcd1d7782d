//! The message archive's queries, for both backends (see `sql.rs` for why
//! one SQL text serves both). Every page is one range scan of the
//! `(username, id)` or `(username, with_bare, id)` index.

use crate::archive::{
    ArchiveFilter, ArchivePage, ArchivePolicy, ArchivePrefs, ArchiveResult, ArchiveWith,
    ArchivedMessage,
};
use crate::error::{corrupt, db};
use crate::pool::Pools;
use crate::Result;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, Row};

/// Rows written per INSERT statement (6 parameters each: well under both
/// backends' limits on bound parameters).
const ROWS_PER_INSERT: usize = 100;

pub(crate) async fn append(pools: &Pools, batch: &[(String, ArchivedMessage)]) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // One statement is atomic by itself: most batches need no BEGIN and
    // COMMIT, which cost a trip to the database each.
    if batch.len() <= ROWS_PER_INSERT {
        let (sql, args) = insert(batch)?;
        sqlx::query_with(&sql, args)
            .execute(&pools.write)
            .await
            .map_err(db)?;
        return Ok(());
    }
    let mut tx = pools.begin_write().await?;
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let (sql, args) = insert(chunk)?;
        sqlx::query_with(&sql, args)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

/// One multi-row INSERT of `rows`.
fn insert(rows: &[(String, ArchivedMessage)]) -> Result<(String, AnyArguments<'_>)> {
    let mut sql = String::from(
        "INSERT INTO archive (username, id, ts, with_bare, with_full, stanza) VALUES ",
    );
    let mut args = AnyArguments::default();
    for (i, (username, m)) in rows.iter().enumerate() {
        let n = i * 6;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6
        ));
        bind(&mut args, username.as_str())?;
        bind(&mut args, m.id.as_str())?;
        bind(&mut args, m.ts_ms)?;
        bind(&mut args, m.with_bare.as_str())?;
        bind(&mut args, m.with_full.as_str())?;
        bind(&mut args, m.stanza.as_str())?;
    }
    // A batch retried after an error that hid its commit is no duplicate.
    sql.push_str(" ON CONFLICT (username, id) DO NOTHING");
    Ok((sql, args))
}

fn bind<'q, T>(args: &mut AnyArguments<'q>, value: T) -> Result<()>
where
    T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    args.add(value)
        .map_err(|e| crate::StorageError::Database(e.to_string()))
}

/// The WHERE clause of a filter, with its arguments, numbered from `$1`.
struct Where {
    sql: String,
    args: Vec<String>,
}

impl Where {
    fn new(username: &str, filter: &ArchiveFilter) -> Where {
        let mut w = Where {
            sql: String::new(),
            args: Vec::new(),
        };
        w.and("username =", username);
        match &filter.with {
            Some(ArchiveWith::Bare(bare)) => w.and("with_bare =", bare),
            Some(ArchiveWith::Full { bare, full }) => {
                w.and("with_bare =", bare);
                w.and("with_full =", full);
            }
            None => {}
        }
        if let Some(after) = &filter.after {
            w.and("id >", after);
        }
        if let Some(before) = &filter.before {
            w.and("id <", before);
        }
        if let Some(ids) = &filter.ids {
            if ids.is_empty() {
                w.sql.push_str(" AND 1 = 0");
            } else {
                let first = w.args.len() + 1;
                let list: Vec<String> = (first..first + ids.len())
                    .map(|n| format!("${n}"))
                    .collect();
                w.sql.push_str(&format!(" AND id IN ({})", list.join(", ")));
                w.args.extend(ids.iter().cloned());
            }
        }
        w
    }

    fn and(&mut self, condition: &str, value: &str) {
        self.args.push(value.to_string());
        let keyword = if self.sql.is_empty() { "" } else { " AND " };
        self.sql
            .push_str(&format!("{keyword}{condition} ${}", self.args.len()));
    }

    fn arguments(&self) -> Result<AnyArguments<'_>> {
        let mut args = AnyArguments::default();
        for a in &self.args {
            bind(&mut args, a.as_str())?;
        }
        Ok(args)
    }
}

pub(crate) async fn query(
    pools: &Pools,
    username: &str,
    filter: &ArchiveFilter,
    page: &ArchivePage,
) -> Result<ArchiveResult> {
    // One snapshot for the page and its counts, so they agree.
    let mut tx = pools.begin_read().await?;
    let matching = Where::new(username, filter);
    let mut paged = Where::new(username, filter);
    if let Some(after) = &page.after {
        paged.and("id >", after);
    }
    if let Some(before) = &page.before {
        paged.and("id <", before);
    }
    let order = if page.from_end { "DESC" } else { "ASC" };
    // One more than asked: whether it exists says if the page is the last.
    let sql = format!(
        "SELECT id, ts, with_bare, with_full, stanza FROM archive WHERE {} ORDER BY id {order} LIMIT {}",
        paged.sql,
        page.max + 1
    );
    let rows = sqlx::query_with(&sql, paged.arguments()?)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let mut messages = rows.iter().map(message).collect::<Result<Vec<_>>>()?;
    let complete = messages.len() <= page.max;
    messages.truncate(page.max);
    if page.from_end {
        messages.reverse();
    }
    let (count, first_index) = if page.count {
        let count = count_where(&mut tx, &matching).await?;
        let first_index = match messages.first() {
            Some(first) => {
                let mut before_first = Where::new(username, filter);
                before_first.and("id <", &first.id);
                Some(count_where(&mut tx, &before_first).await?)
            }
            None => None,
        };
        (Some(count), first_index)
    } else {
        (None, None)
    };
    tx.commit().await.map_err(db)?;
    Ok(ArchiveResult {
        messages,
        complete,
        count,
        first_index,
    })
}

async fn count_where(tx: &mut sqlx::Transaction<'static, sqlx::Any>, w: &Where) -> Result<u64> {
    let sql = format!("SELECT COUNT(*) FROM archive WHERE {}", w.sql);
    let n: i64 = sqlx::query_scalar_with(&sql, w.arguments()?)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn message(row: &AnyRow) -> Result<ArchivedMessage> {
    Ok(ArchivedMessage {
        id: row.try_get("id").map_err(db)?,
        ts_ms: row.try_get("ts").map_err(db)?,
        with_bare: row.try_get("with_bare").map_err(db)?,
        with_full: row.try_get("with_full").map_err(db)?,
        stanza: row.try_get("stanza").map_err(db)?,
    })
}

pub(crate) async fn contains(pools: &Pools, username: &str, id: &str) -> Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM archive WHERE username = $1 AND id = $2")
            .bind(username)
            .bind(id)
            .fetch_optional(&pools.read)
            .await
            .map_err(db)?;
    Ok(found.is_some())
}

/// The oldest and the newest message of an archive.
pub(crate) async fn bounds(
    pools: &Pools,
    username: &str,
) -> Result<Option<(ArchivedMessage, ArchivedMessage)>> {
    let mut tx = pools.begin_read().await?;
    let mut ends = Vec::with_capacity(2);
    for order in ["ASC", "DESC"] {
        let sql = format!(
            "SELECT id, ts, with_bare, with_full, stanza FROM archive \
             WHERE username = $1 ORDER BY id {order} LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        match row {
            Some(row) => ends.push(message(&row)?),
            None => return Ok(None),
        }
    }
    tx.commit().await.map_err(db)?;
    let newest = ends.pop();
    Ok(ends.pop().zip(newest))
}

pub(crate) async fn purge(pools: &Pools, before_ts_ms: i64, limit: usize) -> Result<u64> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "DELETE FROM archive WHERE (username, id) IN \
         (SELECT username, id FROM archive WHERE ts < $1 LIMIT $2)",
    )
    .bind(before_ts_ms)
    .bind(limit)
    .execute(&pools.write)
    .await
    .map_err(db)?;
    Ok(done.rows_affected())
}

pub(crate) async fn prefs(pools: &Pools, username: &str) -> Result<Option<ArchivePrefs>> {
    let mut tx = pools.begin_read().await?;
    let default: Option<String> =
        sqlx::query_scalar("SELECT default_policy FROM archive_prefs WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    let Some(default) = default else {
        return Ok(None);
    };
    let default = ArchivePolicy::parse(&default).ok_or_else(|| corrupt(&default))?;
    let rows =
        sqlx::query("SELECT jid, always FROM archive_prefs_jids WHERE username = $1 ORDER BY jid")
            .bind(username)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let mut prefs = ArchivePrefs {
        default,
        always: Vec::new(),
        never: Vec::new(),
    };
    for row in rows {
        let jid: String = row.try_get("jid").map_err(db)?;
        let always: i32 = row.try_get("always").map_err(db)?;
        if always != 0 {
            prefs.always.push(jid);
        } else {
            prefs.never.push(jid);
        }
    }
    Ok(Some(prefs))
}

pub(crate) async fn set_prefs(pools: &Pools, username: &str, prefs: &ArchivePrefs) -> Result<()> {
    let mut tx = pools.begin_write().await?;
    sqlx::query(
        "INSERT INTO archive_prefs (username, default_policy) VALUES ($1, $2) \
         ON CONFLICT (username) DO UPDATE SET default_policy = excluded.default_policy",
    )
    .bind(username)
    .bind(prefs.default.as_str())
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    sqlx::query("DELETE FROM archive_prefs_jids WHERE username = $1")
        .bind(username)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let rules = prefs
        .always
        .iter()
        .map(|j| (j, 1))
        .chain(prefs.never.iter().map(|j| (j, 0)));
    for (jid, always) in rules {
        // A JID in both lists: "never" wins (it comes last), the safe side.
        sqlx::query(
            "INSERT INTO archive_prefs_jids (username, jid, always) VALUES ($1, $2, $3) \
             ON CONFLICT (username, jid) DO UPDATE SET always = excluded.always",
        )
        .bind(username)
        .bind(jid.as_str())
        .bind(always)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}
