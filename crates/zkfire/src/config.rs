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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// In-band registration (XEP-0077) of new accounts.
    pub allow: bool,
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
    /// Failed logins per account or per address before further attempts are slowed.
    pub failed_logins_before_delay: u32,
    /// Window over which failed logins are counted, in seconds.
    pub failed_login_window_secs: u64,
    /// Stanzas waiting for one session before it is treated as stuck and closed.
    pub max_session_queue: usize,
    /// Offline messages kept per account (XEP-0160).
    pub max_offline_messages: usize,
    /// Roster items per account.
    pub max_roster_items: usize,
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
            max_session_queue: 10_000,
            max_offline_messages: 1000,
            max_roster_items: 2000,
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
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            resume_timeout_secs: 300,
            max_unacked: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
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
        for admin in &self.server.admins {
            if jid::BareJid::new(admin).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "[server] admins: '{admin}' is not a valid JID"
                )));
            }
        }
        Ok(())
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
    fn invalid_values_are_refused() {
        let c = Config::parse("[server]\ndomain = 'a@b'\n").unwrap();
        assert!(c.validate().is_err());
        let c = Config::parse("[tls]\ncert = 'x.pem'\n").unwrap();
        assert!(c.validate().is_err());
    }
}
