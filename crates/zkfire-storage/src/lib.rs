//! Everything zkfire keeps on disk, behind one trait with two backends:
//! SQLite (the single-node default) and PostgreSQL (shared by a cluster).
//!
//! Account names are the node part of a JID, already normalized (nodeprep);
//! contacts are bare JIDs as strings; stanzas are stored as serialized XML.

pub use archive::{
    ArchiveFilter, ArchivePage, ArchivePolicy, ArchivePrefs, ArchiveResult, ArchiveWith,
    ArchivedMessage,
};
use async_trait::async_trait;
pub use pep::{PepItem, PepLimits, PepNode};
use std::sync::Arc;
use zkfire_sasl::UserCredentials;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the account already exists")]
    AccountExists,
    #[error("no such account")]
    NoSuchAccount,
    #[error("unsupported storage url: {0}")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(String),
    /// The write would take the account past one of its bounds; nothing
    /// of it was written.
    #[error("limit reached: {0}")]
    LimitReached(Limit),
}

/// The per-account bounds the storage enforces itself, atomically with the
/// write they bound (a check before the write could be raced past).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RosterItems,
    PrivateXmlItems,
    PrivateXmlBytes,
    PendingSubscriptions,
    PepNodes,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::RosterItems => "roster items",
            Limit::PrivateXmlItems => "private XML namespaces",
            Limit::PrivateXmlBytes => "private XML bytes",
            Limit::PendingSubscriptions => "pending subscription requests",
            Limit::PepNodes => "PEP nodes",
        })
    }
}

/// Bounds on one account's private XML storage (XEP-0049).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateXmlLimits {
    /// Namespaces stored.
    pub max_items: usize,
    /// Sum of the stored elements' sizes, in bytes of serialized XML.
    pub max_bytes: usize,
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// RFC 6121 subscription state of a roster item, without the pending-in part
/// (inbound requests are kept apart, see [`Storage::pending_subscriptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Subscription::None),
            "to" => Some(Subscription::To),
            "from" => Some(Subscription::From),
            "both" => Some(Subscription::Both),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    /// Bare JID of the contact.
    pub jid: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// Pending-out: we asked the contact and are waiting (`ask='subscribe'`).
    pub ask: bool,
    /// Pre-approved: a subscription request from the contact will be accepted
    /// without asking the user (RFC 6121 section 3.4).
    pub approved: bool,
    pub groups: Vec<String>,
}

/// A message kept for an account while it has no available resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub id: i64,
    pub stanza: String,
    /// When it was stored, seconds since the Unix epoch (for the delay stamp).
    pub stored_at: i64,
}

/// A change to one roster item: from the item as it is (if any) to what it
/// should be (`None`: leave it as it is).
pub type RosterChange = Box<dyn FnOnce(Option<&RosterItem>) -> Option<RosterItem> + Send>;

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    // Accounts.
    async fn create_account(&self, username: &str, creds: &UserCredentials) -> Result<()>;
    async fn credentials(&self, username: &str) -> Result<Option<UserCredentials>>;
    /// Replaces the credentials; `NoSuchAccount` when there is none.
    async fn set_credentials(&self, username: &str, creds: &UserCredentials) -> Result<()>;
    /// Deletes the account and everything kept for it; false when there was none.
    async fn delete_account(&self, username: &str) -> Result<bool>;
    async fn account_exists(&self, username: &str) -> Result<bool>;
    /// All account names, sorted.
    async fn list_accounts(&self) -> Result<Vec<String>>;

    // Roster (RFC 6121) and its version (XEP-0237): every change bumps the
    // account's roster version by one and returns the new version.
    async fn roster(&self, username: &str) -> Result<(i64, Vec<RosterItem>)>;
    async fn roster_version(&self, username: &str) -> Result<i64>;
    async fn roster_item(&self, username: &str, contact: &str) -> Result<Option<RosterItem>>;
    async fn put_roster_item(&self, username: &str, item: &RosterItem) -> Result<i64>;
    /// Reads the item for `contact`, lets `change` decide its new value, and
    /// writes it, all under the account's lock, so two concurrent changes
    /// (a subscription answer and the user's own roster set, on any nodes)
    /// never overwrite each other. Returns the item before, and the new
    /// version and item when `change` changed it. A change that would add an
    /// item to a roster of `max_items` or more fails with
    /// `LimitReached(RosterItems)` (counted under the same lock).
    async fn update_roster_item(
        &self,
        username: &str,
        contact: &str,
        change: RosterChange,
        max_items: usize,
    ) -> Result<(Option<RosterItem>, Option<(i64, RosterItem)>)>;
    /// Removes the item; returns the new version, or None when there was no item.
    async fn remove_roster_item(&self, username: &str, contact: &str) -> Result<Option<i64>>;

    // Inbound subscription requests not yet answered: who asked (a request
    // is delivered again at each login as a plain subscribe from them).
    /// Records a request from `from`; one already recorded is no new one.
    /// A new one when `max` or more are waiting fails with
    /// `LimitReached(PendingSubscriptions)`.
    async fn add_pending_subscription(&self, username: &str, from: &str, max: usize) -> Result<()>;
    async fn remove_pending_subscription(&self, username: &str, from: &str) -> Result<bool>;
    /// The requesters, sorted.
    async fn pending_subscriptions(&self, username: &str) -> Result<Vec<String>>;

    // Offline messages (XEP-0160).
    /// Stores the message unless the account already has `max` or more;
    /// returns whether it was stored.
    async fn store_offline(&self, username: &str, stanza: &str, max: usize) -> Result<bool>;
    /// All stored messages, oldest first, without removing them.
    async fn offline_messages(&self, username: &str) -> Result<Vec<OfflineMessage>>;
    async fn delete_offline_messages(&self, username: &str, ids: &[i64]) -> Result<()>;
    async fn count_offline_messages(&self, username: &str) -> Result<usize>;

    // vcard-temp (XEP-0054): the vCard element serialized.
    async fn vcard(&self, username: &str) -> Result<Option<String>>;
    async fn set_vcard(&self, username: &str, vcard: &str) -> Result<()>;

    // Private XML storage (XEP-0049), one element per namespace.
    async fn private_xml(&self, username: &str, namespace: &str) -> Result<Option<String>>;
    /// Stores each `(namespace, xml)`, replacing what the namespace held, all
    /// or nothing: when the account would end up past `limits` nothing is
    /// written and it fails with `LimitReached`.
    async fn set_private_xml(
        &self,
        username: &str,
        elements: &[(&str, &str)],
        limits: PrivateXmlLimits,
    ) -> Result<()>;

    // Blocking command (XEP-0191): blocked JIDs as given (bare, full or domain).
    async fn blocklist(&self, username: &str) -> Result<Vec<String>>;
    async fn block(&self, username: &str, jids: &[String]) -> Result<()>;
    async fn unblock(&self, username: &str, jids: &[String]) -> Result<()>;
    async fn unblock_all(&self, username: &str) -> Result<()>;

    // Last activity (XEP-0012): when the last resource went offline, and its status.
    async fn set_last_activity(&self, username: &str, at: i64, status: &str) -> Result<()>;
    async fn last_activity(&self, username: &str) -> Result<Option<(i64, String)>>;

    // Message archive (XEP-0313).
    /// Adds messages, each `(username, message)`, to their accounts'
    /// archives, all or none; an id already in its archive is left as it is,
    /// so a batch written again after an unclear error makes no duplicates.
    async fn archive_messages(&self, batch: &[(String, ArchivedMessage)]) -> Result<()>;
    /// One page of the messages of `username`'s archive that match `filter`.
    async fn query_archive(
        &self,
        username: &str,
        filter: &ArchiveFilter,
        page: &ArchivePage,
    ) -> Result<ArchiveResult>;
    /// Whether the archive of `username` holds a message with this id.
    async fn archive_contains(&self, username: &str, id: &str) -> Result<bool>;
    /// The oldest and the newest message of the archive, if any.
    async fn archive_bounds(
        &self,
        username: &str,
    ) -> Result<Option<(ArchivedMessage, ArchivedMessage)>>;
    /// Deletes at most `limit` messages, of any account, archived before
    /// `before_ts_ms`; returns how many it deleted.
    async fn purge_archive(&self, before_ts_ms: i64, limit: usize) -> Result<u64>;
    /// The account's archiving preferences, `None` when it never set any.
    async fn archive_prefs(&self, username: &str) -> Result<Option<ArchivePrefs>>;
    async fn set_archive_prefs(&self, username: &str, prefs: &ArchivePrefs) -> Result<()>;

    // Personal eventing (XEP-0163).
    async fn pep_nodes(&self, username: &str) -> Result<Vec<PepNode>>;
    async fn pep_node(&self, username: &str, node: &str) -> Result<Option<PepNode>>;
    /// Creates the node or replaces its configuration; returns whether it
    /// was created. Creating one when the account has `limits.max_nodes`
    /// fails with `LimitReached(PepNodes)`.
    async fn pep_put_node(
        &self,
        username: &str,
        node: &str,
        config: &str,
        limits: PepLimits,
    ) -> Result<bool>;
    /// Deletes the node and its items; false when there was none.
    async fn pep_delete_node(&self, username: &str, node: &str) -> Result<bool>;
    /// Publishes an item (one with the same id is replaced and becomes the
    /// newest), then keeps only the newest `max_items` of the node.
    async fn pep_publish(
        &self,
        username: &str,
        node: &str,
        item: &PepItem,
        max_items: usize,
    ) -> Result<()>;
    /// Items of a node, oldest first: those with `ids` when given, else the
    /// newest `max` (all when `None`).
    async fn pep_items(
        &self,
        username: &str,
        node: &str,
        ids: Option<&[String]>,
        max: Option<usize>,
    ) -> Result<Vec<PepItem>>;
    /// Removes an item; false when there was none.
    async fn pep_retract(&self, username: &str, node: &str, item_id: &str) -> Result<bool>;

    // Entity capabilities (XEP-0115): features per verification string.
    async fn caps_features(&self, ver: &str) -> Result<Option<Vec<String>>>;
    async fn set_caps_features(&self, ver: &str, features: &[String]) -> Result<()>;

    /// Closes the pool; called once at shutdown.
    async fn close(&self);
}

/// Opens the storage at `url` (`sqlite://PATH` or `postgres://...`), creating
/// the SQLite file when missing and running the embedded migrations.
///
/// Accepted forms: `sqlite://PATH` and `sqlite:PATH` (relative to the working
/// directory unless PATH starts with `/`, e.g. `sqlite:///var/lib/zkfire.db`;
/// the parent folder is created when missing), `sqlite::memory:` (a private
/// in-memory database, for tests), `postgres://...` and `postgresql://...`
/// (the database must exist). Anything else is [`StorageError::BadUrl`].
pub async fn open(url: &str) -> Result<Arc<dyn Storage>> {
    let target = url::parse(url)?;
    let pools = pool::Pools::open(&target).await?;
    if let Err(e) = migrate::run(&pools).await {
        pools.close().await;
        return Err(e);
    }
    tracing::debug!(backend = ?pools.backend, "storage opened");
    Ok(Arc::new(sql::SqlStorage::new(pools)))
}

mod account_lock;
mod archive;
mod archive_sql;
mod error;
mod migrate;
mod pep;
mod pep_sql;
mod pool;
mod sql;
mod url;
