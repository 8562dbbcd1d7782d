//! Made-up credentials for accounts that do not exist, so that neither the
//! server-first-message nor the time taken tells an attacker which usernames
//! are registered. The salt comes from a keyed hash of the username: asking
//! twice gives the same salt, as it would for a real account.

use std::sync::OnceLock;

use crate::credentials::SALT_LEN;
use crate::crypto;
use crate::{ScramCredentials, ScramHash, UserCredentials, DEFAULT_ITERATIONS};

static SECRET: OnceLock<[u8; 32]> = OnceLock::new();

/// Sets the secret decoy salts are derived from. Without it a random one is
/// made on first use, so decoy salts would change when the server restarts
/// and differ between servers, and comparing them would tell missing
/// accounts from real ones: a server sets a secret it keeps (and shares
/// with the other nodes of its cluster) before its first login.
/// Returns `false` when a secret is already in use (it is then left as is).
pub fn set_unknown_user_secret(secret: [u8; 32]) -> bool {
    SECRET.set(secret).is_ok()
}

fn secret() -> Option<&'static [u8; 32]> {
    if let Some(secret) = SECRET.get() {
        return Some(secret);
    }
    let bytes = crypto::random_bytes(32)?;
    let mut fresh = [0u8; 32];
    fresh.copy_from_slice(&bytes);
    // Another thread may have won the race; either way one secret sticks.
    let _ = SECRET.set(fresh);
    SECRET.get()
}

/// Decoy keys of `hash` for `username`; `None` only if no randomness is
/// available for the secret.
pub(crate) fn scram_credentials(hash: ScramHash, username: &str) -> Option<ScramCredentials> {
    let secret = secret()?;
    let derive = |label: &str, len: usize| {
        let mut input = Vec::with_capacity(label.len() + username.len() + 10);
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        input.extend_from_slice(hash.name().as_bytes());
        input.push(0);
        input.extend_from_slice(username.as_bytes());
        let mut out = crypto::hmac(ScramHash::Sha256, secret, &input);
        out.truncate(len);
        out
    };
    let len = crypto::hash_len(hash);
    Some(ScramCredentials {
        hash,
        salt: derive("salt", SALT_LEN),
        iterations: DEFAULT_ITERATIONS,
        stored_key: derive("stored-key", len),
        server_key: derive("server-key", len),
    })
}

pub(crate) fn user_credentials(username: &str) -> Option<UserCredentials> {
    Some(UserCredentials {
        sha1: scram_credentials(ScramHash::Sha1, username)?,
        sha256: scram_credentials(ScramHash::Sha256, username)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_per_user_and_distinct_between_users() {
        let a = scram_credentials(ScramHash::Sha256, "alice").unwrap();
        let a2 = scram_credentials(ScramHash::Sha256, "alice").unwrap();
        let b = scram_credentials(ScramHash::Sha256, "bob").unwrap();
        let a1 = scram_credentials(ScramHash::Sha1, "alice").unwrap();
        assert_eq!(a, a2);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.salt, a1.salt);
        assert!(a.is_usable());
        assert!(a1.is_usable());
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
    }

    #[test]
    fn shaped_like_the_keys_of_a_new_password() {
        let real = UserCredentials::from_password("pencil", DEFAULT_ITERATIONS).unwrap();
        let decoy = user_credentials("nobody").unwrap();
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let (r, d) = (real.for_hash(hash), decoy.for_hash(hash));
            assert_eq!(d.iterations, r.iterations);
            assert_eq!(d.salt.len(), r.salt.len());
            assert_eq!(d.stored_key.len(), r.stored_key.len());
            assert_eq!(d.server_key.len(), r.server_key.len());
        }
    }
}
