//! Who may change the cluster's znodes: the ZooKeeper digest credentials
//! every node uses, and the ACLs of what the nodes create.
//!
//! Without `[zookeeper] digest` the credentials are derived from the cluster
//! secret, which every node already has, so a cluster gets creator-only ACLs
//! without further configuration. The secret itself never goes to
//! ZooKeeper, only an HMAC of it.
//!
//! Znodes created by an earlier zkfire without a digest are open to anyone.
//! Such a cluster stays open (nodes of both versions must read each other's
//! znodes during an upgrade) and every node says so loudly at each join,
//! until the operator deletes the root while all nodes are stopped.

use crate::config::{Config, ConfigError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write;
use zookeeper_client as zk;

/// The user of the derived credentials.
const DERIVED_USER: &str = "zkfire";
const DERIVATION_LABEL: &[u8] = b"zkfire zookeeper digest v1";

/// `user:password` derived from the cluster secret.
pub fn derived_digest(secret: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(DERIVATION_LABEL);
    let mut out = format!("{DERIVED_USER}:");
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The credentials a node uses: `[zookeeper] digest`, or derived from the
/// cluster secret.
pub fn digest(config: &Config) -> Result<String, ConfigError> {
    match &config.zookeeper.digest {
        Some(d) => Ok(d.clone()),
        None => Ok(derived_digest(&config.cluster_secret()?)),
    }
}

/// Whether an ACL list lets anyone change the znode or its children.
pub fn open_to_anyone(acls: &[zk::Acl]) -> bool {
    let change = [
        zk::Permission::WRITE,
        zk::Permission::CREATE,
        zk::Permission::DELETE,
        zk::Permission::ADMIN,
    ];
    acls.iter().any(|a| {
        a.scheme() == "world" && a.id() == "anyone" && change.iter().any(|p| a.permission().has(*p))
    })
}

/// The ACLs of the znodes a node creates: creator-only, unless they must be
/// open: the cluster's znodes are open already (so nodes of an earlier
/// version can still read them), or there are no credentials.
pub fn for_new_znodes(open: bool) -> zk::Acls<'static> {
    if open {
        zk::Acls::anyone_all()
    } else {
        zk::Acls::creator_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_credentials_depend_on_the_secret_only() {
        let a = derived_digest(b"0123456789abcdef");
        assert_eq!(a, derived_digest(b"0123456789abcdef"));
        assert_ne!(a, derived_digest(b"0123456789abcdeF"));
        assert!(a.starts_with("zkfire:"));
        assert!(!a.contains("0123456789abcdef"));
        assert_eq!(a.len(), "zkfire:".len() + 64);
    }

    #[test]
    fn world_permissions_that_change_something_are_open() {
        let anyone = |p| zk::Acl::new(p, zk::AuthId::anyone());
        assert!(open_to_anyone(&[anyone(zk::Permission::ALL)]));
        assert!(open_to_anyone(&[anyone(zk::Permission::DELETE)]));
        assert!(!open_to_anyone(&[anyone(zk::Permission::READ)]));
        let digest = zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "zkfire:x"));
        assert!(!open_to_anyone(&[digest]));
    }
}
