//! The key that decoy SCRAM credentials are derived from. A login for an
//! account that does not exist gets a made-up salt (see `zkfire-sasl`'s
//! decoy module) so that the server-first-message does not tell which
//! accounts exist. The salt must not change when the server restarts, and in
//! a cluster every node must give the same one: otherwise comparing the salt
//! before and after a restart, or between two nodes, tells a missing account
//! (whose salt changes) from a real one (whose salt does not).
//!
//! Where the key comes from:
//! - a single node: `<data_dir>/decoy-salt.key`, 32 random bytes (hex) made
//!   on first start, readable by the owner only;
//! - a cluster: derived from the cluster secret. Every node already has to
//!   hold the same secret (the nodes authenticate each other with it), so
//!   every node derives the same key with nothing more to distribute, no
//!   schema change, and no race between nodes creating a key at first start.
//!   The cost: changing the cluster secret changes the decoy salts once.

use crate::config::Config;
use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// The key file, inside the data dir.
pub const FILE_NAME: &str = "decoy-salt.key";

/// What the cluster secret is combined with, so that the derived key is
/// worth nothing for anything else the secret protects.
const CLUSTER_LABEL: &[u8] = b"zkfire decoy SCRAM credentials v1";

/// Loads or makes the key for this configuration and hands it to SASL.
/// Called once at start, before any client is accepted.
pub fn install(config: &Config) -> anyhow::Result<()> {
    let key = if config.cluster.enabled {
        from_cluster_secret(&config.cluster_secret()?)
    } else {
        load_or_create(&config.server.data_dir.join(FILE_NAME))?
    };
    if !zkfire_sasl::set_unknown_user_secret(key) {
        bail!("the decoy SCRAM key was already set");
    }
    Ok(())
}

fn from_cluster_secret(secret: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(CLUSTER_LABEL);
    mac.finalize().into_bytes().into()
}

/// Reads the key at `path`, or makes one there when there is none.
fn load_or_create(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            parse(&text).with_context(|| {
                format!(
                    "{} is not a decoy key (64 hex digits); remove it to make a new one",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng
                .try_fill_bytes(&mut key)
                .context("no randomness for the decoy key")?;
            write_new(path, &key)?;
            tracing::info!(path = %path.display(), "made the decoy SCRAM key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn parse(text: &str) -> anyhow::Result<[u8; 32]> {
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("expected 64 hex digits");
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

/// Writes the key beside `path` and renames it into place, so that a crash
/// never leaves half a key behind; mode 0600.
fn write_new(path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the decoy SCRAM key is readable by others than its owner; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_kept_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let made = load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(load_or_create(&path).unwrap(), made);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(&other.path().join(FILE_NAME)).unwrap(), made);
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "0123").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(format!("{err:#}").contains(FILE_NAME), "{err:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0123");
    }

    #[test]
    fn nodes_with_the_same_cluster_secret_derive_the_same_key() {
        let a = from_cluster_secret(b"0123456789abcdef-cluster");
        assert_eq!(a, from_cluster_secret(b"0123456789abcdef-cluster"));
        assert_ne!(a, from_cluster_secret(b"0123456789abcdef-other"));
    }

    #[test]
    fn hex_keys() {
        let hex = "00ff".repeat(16);
        let key = parse(&format!("{hex}\n")).unwrap();
        assert_eq!(key[0], 0);
        assert_eq!(key[1], 0xff);
        assert!(parse(&"zz".repeat(32)).is_err());
        assert!(parse("").is_err());
    }
}
