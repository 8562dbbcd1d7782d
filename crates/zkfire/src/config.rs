//! The TOML configuration file and its defaults.
//!
//! Every section refuses unknown keys, so a typo is an error that names the
//! key instead of a setting silently ignored.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub c2s: C2sConfig,
    pub tls: TlsConfig,
    pub registration: RegistrationConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub stream_management: StreamManagementConfig,
    pub csi: CsiConfig,
    pub mam: MamConfig,
    pub pep: PepConfig,
    pub cluster: ClusterConfig,
    pub zookeeper: ZooKeeperConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The XMPP domain served (the part after `@`).
    pub domain: String,
    /// Where the SQLite database and the generated certificate live.
    pub data_dir: PathBuf,
    /// Bare JIDs of administrators.
    pub admins: Vec<String>,
    /// Log filter (`info`, `debug`, `zkfire=trace,info`); `RUST_LOG` wins.
    pub log_level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            admins: Vec::new(),
            log_level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Client listeners that offer STARTTLS.
    pub listen: Vec<SocketAddr>,
    /// Client listeners that start with TLS (XEP-0368).
    pub tls_listen: Vec<SocketAddr>,
    /// Refuse authentication before TLS.
    pub require_tls: bool,
    /// Largest stanza accepted from a client, in bytes.
    pub max_stanza_bytes: usize,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
            tls_listen: Vec::new(),
            require_tls: true,
            max_stanza_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; when unset, a self-signed certificate for the
    /// domain is made on first start in `<data_dir>/tls/`.
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// In-band registration (XEP-0077) of new accounts.
    pub allow: bool,
    /// Accounts one client address may create per window; 0 = no limit.
    pub max_per_address: u32,
    pub per_address_window_secs: u64,
    /// In-band password changes per account per window (each is a full
    /// SCRAM key derivation); 0 = no limit.
    pub password_changes_per_window: u32,
    pub password_change_window_secs: u64,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            allow: false,
            max_per_address: 10,
            per_address_window_secs: 600,
            password_changes_per_window: 5,
            password_change_window_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://<data_dir>/zkfire.db`.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Element nesting inside one stanza.
    pub max_depth: usize,
    /// Attributes on one element.
    pub max_attributes: usize,
    /// Seconds a TLS handshake may take.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds from connecting to a bound resource.
    pub auth_timeout_secs: u64,
    /// Seconds without any byte from a client before the server pings it.
    pub ping_after_secs: u64,
    /// Seconds the server waits for the answer to its ping before closing.
    pub ping_timeout_secs: u64,
    /// Seconds a write to a client may block before it is dropped.
    pub write_timeout_secs: u64,
    /// Open connections from one IP address.
    pub connections_per_ip: usize,
    /// Failed logins before further attempts from that address are slowed
    /// (see `c2s::auth_throttle` for which counts apply).
    pub failed_logins_before_delay: u32,
    /// Window over which failed logins are counted, in seconds.
    pub failed_login_window_secs: u64,
    /// SASL exchanges under way at once for one account from one address.
    pub logins_in_flight_per_account_and_address: u32,
    /// SASL exchanges under way at once for one account from addresses
    /// with failed logins in the window.
    pub logins_in_flight_per_account: u32,
    /// Stanzas waiting for one session before it is treated as stuck and closed.
    pub max_session_queue: usize,
    /// Offline messages kept per account (XEP-0160).
    pub max_offline_messages: usize,
    /// Roster items per account, however they are added (roster set,
    /// subscription request, pre-approval).
    pub max_roster_items: usize,
    /// Longest roster item name, in bytes (RFC 6121 section 2.3.3).
    pub max_roster_name_bytes: usize,
    /// Groups on one roster item.
    pub max_roster_groups: usize,
    /// Longest roster group name, in bytes.
    pub max_roster_group_bytes: usize,
    /// Unanswered subscription requests kept per account (RFC 6121 3.1.3).
    pub max_pending_subscriptions: usize,
    /// Namespaces in one account's private XML storage (XEP-0049).
    pub max_private_items: usize,
    /// Bytes of XML in one account's private XML storage.
    pub max_private_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_depth: 64,
            max_attributes: 64,
            tls_handshake_timeout_secs: 10,
            auth_timeout_secs: 60,
            ping_after_secs: 300,
            ping_timeout_secs: 60,
            write_timeout_secs: 60,
            connections_per_ip: 100,
            failed_logins_before_delay: 5,
            failed_login_window_secs: 300,
            logins_in_flight_per_account_and_address: 1,
            logins_in_flight_per_account: 4,
            max_session_queue: 10_000,
            max_offline_messages: 1000,
            max_roster_items: 2000,
            max_roster_name_bytes: 256,
            max_roster_groups: 16,
            max_roster_group_bytes: 256,
            max_pending_subscriptions: 1000,
            max_private_items: 100,
            max_private_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsiConfig {
    /// Client State Indication (XEP-0352): hold what can wait for clients
    /// that say they are inactive.
    pub enabled: bool,
    /// Stanzas held for one inactive client; past it, all are written.
    pub max_held: usize,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            enabled: true,
            max_held: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Message Archive Management (XEP-0313): every account's chats are
    /// archived, and clients page through them.
    pub enabled: bool,
    /// Most messages in one result page, whatever the client asks.
    pub max_page: usize,
    /// Archived messages older than this are deleted (0: kept forever).
    pub retention_days: u64,
    /// What is archived for an account that set no preferences:
    /// "always", "roster" (only with roster contacts) or "never".
    pub default_policy: String,
    /// JIDs in one account's always and never lists together.
    pub max_prefs_jids: usize,
    /// Messages waiting to be written to the archive on this node (the
    /// database is slow or down); past it, messages are delivered without
    /// being archived, and a warning is logged.
    pub max_pending_writes: usize,
    /// How long a message waits for its archive row to be committed before
    /// it is delivered (so a query through any node finds what a client
    /// has); past it, delivery goes on and the row follows.
    pub write_wait_ms: u64,
    /// Whether every result page gives the RSM count and first index: two
    /// more scans of the archive per page, which grow with it (50-500 ms at a
    /// million messages, BENCHMARKS.md), for a figure clients mostly ignore.
    /// A `<max>0</max>` query is always counted.
    pub count_results: bool,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            enabled: true,
            max_page: 100,
            retention_days: 0,
            default_policy: "always".into(),
            max_prefs_jids: 1000,
            max_pending_writes: 10_000,
            write_wait_ms: 250,
            count_results: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Personal Eventing Protocol (XEP-0163): every account's pubsub nodes
    /// (avatars, nicknames, bookmarks, OMEMO keys).
    pub enabled: bool,
    /// Nodes one account may have.
    pub max_nodes: usize,
    /// Items one node keeps at most (also what `max_items = "max"` means).
    pub max_items_per_node: usize,
    /// Largest item payload, in bytes of XML.
    pub max_item_bytes: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            enabled: true,
            max_nodes: 100,
            max_items_per_node: 256,
            max_item_bytes: 128 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamManagementConfig {
    /// Seconds a session that lost its connection waits to be resumed (XEP-0198).
    pub resume_timeout_secs: u64,
    /// Unacknowledged stanzas kept per session before it is closed.
    pub max_unacked: usize,
    /// The same bound in bytes (as serialized).
    pub max_unacked_bytes: usize,
    /// Bytes kept for all the sessions of one account that wait for
    /// resumption together: a session that would go past it ends instead.
    pub max_detached_bytes_per_account: usize,
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            resume_timeout_secs: 300,
            max_unacked: 10_000,
            max_unacked_bytes: 10 << 20,
            max_detached_bytes_per_account: 32 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Serve the domain together with other nodes (needs PostgreSQL and ZooKeeper).
    pub enabled: bool,
    /// This node's name in the cluster; unique, stable across restarts.
    pub node_id: String,
    /// Where this node's cluster bus listens.
    pub listen: Option<SocketAddr>,
    /// The address peers use to reach this node's bus (default: `listen`).
    pub advertise: Option<SocketAddr>,
    /// Shared secret that authenticates nodes to each other.
    pub secret: Option<String>,
    /// File holding the secret (first line), instead of `secret`.
    pub secret_file: Option<PathBuf>,
    /// TLS for the bus: this node's certificate and key (PEM); peers must
    /// present certificates from the same chain.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The address clients should use to reach this node (`host:port`), sent
    /// to clients of a stopping peer as `see-other-host`.
    pub client_address: Option<String>,
    /// Heartbeat interval on the bus, in milliseconds.
    pub heartbeat_ms: u64,
    /// Frames queued for one peer before senders are refused.
    pub max_peer_queue: usize,
    /// Payload bytes queued per peer and not yet acknowledged; past it (or
    /// past `max_peer_queue` frames) a stanza for that node is undeliverable.
    pub max_peer_queue_bytes: usize,
    /// A bus connection must finish TCP, TLS and authentication within this
    /// many milliseconds, or it is closed.
    pub handshake_timeout_ms: u64,
    /// Bus handshakes in progress at once from addresses that are not a
    /// member's (members' addresses have as many slots of their own).
    pub max_pending_handshakes: usize,
    /// Bus handshakes in progress at once from one address that is not a
    /// member's (IPv6: one /64).
    pub max_handshakes_per_address: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: String::new(),
            listen: None,
            advertise: None,
            secret: None,
            secret_file: None,
            tls_cert: None,
            tls_key: None,
            client_address: None,
            heartbeat_ms: 1000,
            max_peer_queue: 100_000,
            max_peer_queue_bytes: 64 * 1024 * 1024,
            handshake_timeout_ms: 3000,
            max_pending_handshakes: 64,
            max_handshakes_per_address: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZooKeeperConfig {
    /// Connect string: `host:port,host:port[/chroot]`.
    pub connect: Option<String>,
    /// Root znode of this cluster.
    pub root: String,
    pub session_timeout_ms: u64,
    /// `user:password` for digest authentication; everything zkfire creates
    /// carries an ACL for this identity only. Default: credentials derived
    /// from the cluster secret (`cluster::zk_acl`).
    pub digest: Option<String>,
    /// A ZooKeeper peer run by this node itself.
    pub managed: Option<ManagedZooKeeperConfig>,
}

impl Default for ZooKeeperConfig {
    fn default() -> Self {
        ZooKeeperConfig {
            connect: None,
            root: "/zkfire".into(),
            session_timeout_ms: 6000,
            digest: None,
            managed: None,
        }
    }
}

/// `[zookeeper.managed]`: the ZooKeeper peer a node runs as a supervised
/// child process (zoo.cfg keys of the same meaning).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagedZooKeeperConfig {
    pub tick_time: u32,
    pub init_limit: u32,
    pub sync_limit: u32,
    pub data_dir: PathBuf,
    pub client_port: u16,
    /// Address the client port binds to.
    pub client_address: String,
    /// This peer's id in the ensemble (`myid`).
    pub myid: u32,
    /// Ensemble members: id → `host:peerPort:electionPort`. Empty: standalone.
    pub servers: std::collections::BTreeMap<String, String>,
    /// Further zoo.cfg keys, written as they are.
    pub extra: std::collections::BTreeMap<String, String>,
    /// The java binary (default: `java` on the PATH).
    pub java: Option<PathBuf>,
    /// Where ZooKeeper's jars are (default: found for Debian's `zookeeper` package).
    pub zookeeper_home: Option<PathBuf>,
    /// Java heap for the peer, e.g. `256m`.
    pub heap: String,
}

impl Default for ManagedZooKeeperConfig {
    fn default() -> Self {
        ManagedZooKeeperConfig {
            tick_time: 2000,
            init_limit: 10,
            sync_limit: 5,
            data_dir: PathBuf::from("./data/zookeeper"),
            client_port: 2181,
            client_address: "127.0.0.1".into(),
            myid: 1,
            servers: Default::default(),
            extra: Default::default(),
            java: None,
            zookeeper_home: None,
            heap: "256m".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The I/O error is part of the message, not a `source`: printed as a
    /// chain (`{:#}`) it would otherwise appear twice.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a config file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_path_buf(),
                    error,
                })?;
                Config::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse {
                        path: path.to_path_buf(),
                        message,
                    },
                    other => other,
                })?
            }
        };
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let domain = &self.server.domain;
        match jid::BareJid::new(domain) {
            Ok(j) if j.node().is_none() => {}
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "[server] domain: '{domain}' is not a valid domain"
                )))
            }
        }
        if self.c2s.listen.is_empty() && self.c2s.tls_listen.is_empty() {
            return Err(ConfigError::Invalid(
                "[c2s] has no listener: set listen or tls_listen".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "[tls] cert and key must be set together".into(),
            ));
        }
        if self.c2s.max_stanza_bytes < 10_000 {
            return Err(ConfigError::Invalid(
                "[c2s] max_stanza_bytes must be at least 10000 (RFC 6120 section 13.12)".into(),
            ));
        }
        let sm = &self.stream_management;
        if sm.max_unacked_bytes.min(sm.max_detached_bytes_per_account) < self.c2s.max_stanza_bytes {
            return Err(ConfigError::Invalid(
                "[stream_management] max_unacked_bytes and max_detached_bytes_per_account must be at least [c2s] max_stanza_bytes".into(),
            ));
        }
        self.validate_registration()?;
        self.validate_logins()?;
        self.validate_cluster()?;
        self.validate_account_limits()?;
        self.validate_mam()?;
        for admin in &self.server.admins {
            if jid::BareJid::new(admin).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "[server] admins: '{admin}' is not a valid JID"
                )));
            }
        }
        Ok(())
    }

    fn validate_mam(&self) -> Result<(), ConfigError> {
        let mam = &self.mam;
        if zkfire_storage::ArchivePolicy::parse(&mam.default_policy).is_none() {
            return Err(ConfigError::Invalid(format!(
                "[mam] default_policy: '{}' is none of always, roster, never",
                mam.default_policy
            )));
        }
        if mam.max_page == 0 || mam.max_pending_writes == 0 {
            return Err(ConfigError::Invalid(
                "[mam] max_page and max_pending_writes must be at least 1".into(),
            ));
        }
        let pep = &self.pep;
        if pep.max_items_per_node == 0 || pep.max_item_bytes == 0 {
            return Err(ConfigError::Invalid(
                "[pep] max_items_per_node and max_item_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Bounds on what an account keeps that would make a feature unusable
    /// rather than bounded.
    fn validate_account_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_roster_groups > 0 && l.max_roster_group_bytes == 0 {
            return Err(ConfigError::Invalid(
                "[limits] max_roster_group_bytes must be at least 1 when max_roster_groups > 0"
                    .into(),
            ));
        }
        if l.max_private_items > 0 && l.max_private_bytes == 0 {
            return Err(ConfigError::Invalid(
                "[limits] max_private_bytes must be at least 1 when max_private_items > 0".into(),
            ));
        }
        Ok(())
    }

    fn validate_registration(&self) -> Result<(), ConfigError> {
        let r = &self.registration;
        if r.max_per_address > 0 && r.per_address_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "[registration] per_address_window_secs must be at least 1".into(),
            ));
        }
        if r.password_changes_per_window > 0 && r.password_change_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "[registration] password_change_window_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_logins(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.logins_in_flight_per_account_and_address == 0 || l.logins_in_flight_per_account == 0 {
            return Err(ConfigError::Invalid(
                "[limits] logins_in_flight_per_account_and_address and logins_in_flight_per_account must be at least 1".into(),
            ));
        }
        if l.failed_login_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "[limits] failed_login_window_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if !c.enabled {
            return Ok(());
        }
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if c.node_id.is_empty()
            || !c
                .node_id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return invalid("[cluster] node_id must be set (letters, digits, '-' and '_')");
        }
        if c.listen.is_none() {
            return invalid("[cluster] listen must be set");
        }
        if c.secret.is_none() == c.secret_file.is_none() {
            return invalid("[cluster] set exactly one of secret and secret_file");
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            return invalid("[cluster] tls_cert and tls_key must be set together");
        }
        if !(100..=60_000).contains(&c.handshake_timeout_ms) {
            return invalid("[cluster] handshake_timeout_ms must be between 100 and 60000");
        }
        if c.max_pending_handshakes == 0 || c.max_handshakes_per_address == 0 {
            return invalid(
                "[cluster] max_pending_handshakes and max_handshakes_per_address must be at least 1",
            );
        }
        if !self.storage_url().starts_with("postgres") {
            return invalid(
                "a cluster needs shared storage: set [storage] url to a postgres:// URL (SQLite is for a single node)",
            );
        }
        if self.zookeeper.connect.is_none() && self.zookeeper.managed.is_none() {
            return invalid(
                "[cluster] needs ZooKeeper: set [zookeeper] connect or [zookeeper.managed]",
            );
        }
        if !self.zookeeper.root.starts_with('/') || self.zookeeper.root.ends_with('/') {
            return invalid("[zookeeper] root must start with '/' and not end with it");
        }
        Ok(())
    }

    /// What is valid but risky in the cluster settings, for check-config
    /// and the start-up log.
    pub fn cluster_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.cluster.enabled && self.zookeeper.digest.is_none() {
            warnings.push(format!(
                "[zookeeper] digest is not set: zkfire's znodes get ACLs for credentials derived from the cluster secret, \
                 but znodes under {} that an earlier zkfire created without a digest stay writable by anyone who reaches ZooKeeper \
                 (the nodes then log an error at start) until {} is deleted while every node is stopped; see docs/cluster.md, \"ZooKeeper ACLs\"",
                self.zookeeper.root, self.zookeeper.root
            ));
        }
        warnings
    }

    /// The cluster secret, from `secret` or the first line of `secret_file`.
    pub fn cluster_secret(&self) -> Result<Vec<u8>, ConfigError> {
        let secret = match (&self.cluster.secret, &self.cluster.secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|error| ConfigError::Read {
                    path: path.clone(),
                    error,
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, None) => String::new(),
        };
        if secret.len() < 16 {
            return Err(ConfigError::Invalid(
                "[cluster] the secret must be at least 16 characters".into(),
            ));
        }
        Ok(secret.into_bytes())
    }

    /// The storage URL, defaulting to SQLite in the data dir.
    pub fn storage_url(&self) -> String {
        match &self.storage.url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}",
                self.server.data_dir.join("zkfire.db").display()
            ),
        }
    }

    pub fn xml_limits(&self) -> zkfire_xml::Limits {
        zkfire_xml::Limits {
            max_stanza_bytes: self.c2s.max_stanza_bytes,
            max_depth: self.limits.max_depth,
            max_attributes: self.limits.max_attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_localhost() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.server.domain, "localhost");
        assert_eq!(c.c2s.listen[0].to_string(), "127.0.0.1:5222");
        assert!(c.c2s.require_tls);
        assert_eq!(c.c2s.max_stanza_bytes, 262144);
        assert!(c.storage_url().starts_with("sqlite://"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[c2s]\nlisen = []\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::parse("[nonsense]\n").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn partial_sections_keep_defaults() {
        let c =
            Config::parse("[server]\ndomain = 'example.org'\n[limits]\nmax_depth = 10\n").unwrap();
        assert_eq!(c.server.domain, "example.org");
        assert_eq!(c.limits.max_depth, 10);
        assert_eq!(c.limits.connections_per_ip, 100);
    }

    #[test]
    fn cluster_with_sqlite_is_refused() {
        let text = "[cluster]\nenabled = true\nnode_id = 'n1'\nlisten = '127.0.0.1:7000'\nsecret = '0123456789abcdef'\n[zookeeper]\nconnect = '127.0.0.1:2181'\n";
        let err = Config::parse(text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("postgres"), "{err}");
        let ok = format!("{text}[storage]\nurl = 'postgres://u@127.0.0.1/db'\n");
        Config::parse(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn cluster_bus_handshake_bounds_are_checked() {
        let base = "[cluster]\nenabled = true\nnode_id = 'n1'\nlisten = '127.0.0.1:7000'\nsecret = '0123456789abcdef'\n[storage]\nurl = 'postgres://u@127.0.0.1/db'\n[zookeeper]\nconnect = '127.0.0.1:2181'\n";
        let c = Config::parse(base).unwrap();
        assert_eq!(c.cluster.handshake_timeout_ms, 3000);
        assert_eq!(c.cluster.max_pending_handshakes, 64);
        assert_eq!(c.cluster.max_handshakes_per_address, 4);
        for bad in [
            "handshake_timeout_ms = 0",
            "max_pending_handshakes = 0",
            "max_handshakes_per_address = 0",
        ] {
            let text = base.replace("[storage]", &format!("{bad}\n[storage]"));
            let err = Config::parse(&text).unwrap().validate().unwrap_err();
            assert!(
                err.to_string().contains(&bad[..bad.find(' ').unwrap()]),
                "{err}"
            );
        }
    }

    #[test]
    fn managed_zookeeper_section_parses() {
        let c = Config::parse(
            "[zookeeper.managed]\nclient_port = 2191\nmyid = 2\n[zookeeper.managed.servers]\n1 = '127.0.0.1:2888:3888'\n2 = '127.0.0.1:2889:3889'\n",
        )
        .unwrap();
        let m = c.zookeeper.managed.unwrap();
        assert_eq!(m.client_port, 2191);
        assert_eq!(m.servers.len(), 2);
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = Config::parse("[server]\ndomain = 'a@b'\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[tls]\ncert = 'x.pem'\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[limits]\nmax_roster_group_bytes = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c =
            Config::parse("[limits]\nmax_roster_group_bytes = 0\nmax_roster_groups = 0\n").unwrap();
        c.validate().unwrap();
        let c = Config::parse("[limits]\nmax_private_bytes = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[registration]\npassword_change_window_secs = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[limits]\nlogins_in_flight_per_account = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[mam]\ndefault_policy = 'sometimes'\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("default_policy"), "{e}");
        let c = Config::parse("[mam]\nmax_page = 0\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[mam]\ndefault_policy = 'roster'\nretention_days = 90\n").unwrap();
        c.validate().unwrap();
    }
}
