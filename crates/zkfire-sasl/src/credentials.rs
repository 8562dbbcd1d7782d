//! Deriving and checking the stored SCRAM keys (RFC 5802 section 3).

use subtle::ConstantTimeEq;

use crate::crypto;
use crate::prep::saslprep;
use crate::{CredentialError, ScramCredentials, ScramHash, UserCredentials};

/// Salt length for new passwords (RFC 5802 leaves it open; 16 bytes is what
/// RFC 7677's example and common servers use).
pub const SALT_LEN: usize = 16;

impl ScramCredentials {
    /// Derives StoredKey and ServerKey from a password (SASLprepped here) with
    /// the given salt and iteration count. An iteration count of 0 is taken as
    /// 1, the smallest count SCRAM allows.
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        let password = saslprep(password).ok_or(CredentialError::InvalidPassword)?;
        Ok(Self::derive_prepared(hash, &password, salt, iterations))
    }

    pub(crate) fn derive_prepared(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let iterations = iterations.max(1);
        let salted = crypto::salted_password(hash, password.as_bytes(), salt, iterations);
        let client_key = crypto::client_key(hash, &salted);
        ScramCredentials {
            hash,
            salt: salt.to_vec(),
            iterations,
            stored_key: crypto::digest(hash, &client_key),
            server_key: crypto::server_key(hash, &salted),
        }
    }

    /// Whether these keys can be used at all: stored data may come from an
    /// old schema or be damaged, and SCRAM needs keys of the hash's size.
    pub(crate) fn is_usable(&self) -> bool {
        let len = crypto::hash_len(self.hash);
        self.iterations >= 1
            && !self.salt.is_empty()
            && self.stored_key.len() == len
            && self.server_key.len() == len
    }

    /// Checks a cleartext password (as PLAIN receives it) against the stored
    /// keys, comparing StoredKey in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let Some(password) = saslprep(password) else {
            return false;
        };
        self.verify_prepared(&password)
    }

    pub(crate) fn verify_prepared(&self, password: &str) -> bool {
        if !self.is_usable() {
            return false;
        }
        let candidate = Self::derive_prepared(self.hash, password, &self.salt, self.iterations);
        candidate.stored_key.ct_eq(&self.stored_key).into()
    }
}

impl UserCredentials {
    /// Derives the stored keys for both hashes from a password, with a fresh
    /// random salt each.
    ///
    /// # Panics
    /// If the operating system cannot provide random bytes.
    pub fn from_password(password: &str, iterations: u32) -> Result<Self, CredentialError> {
        let password = saslprep(password).ok_or(CredentialError::InvalidPassword)?;
        let salt = || crypto::random_bytes(SALT_LEN).expect("operating system CSPRNG failed");
        Ok(UserCredentials {
            sha1: ScramCredentials::derive_prepared(
                ScramHash::Sha1,
                &password,
                &salt(),
                iterations,
            ),
            sha256: ScramCredentials::derive_prepared(
                ScramHash::Sha256,
                &password,
                &salt(),
                iterations,
            ),
        })
    }

    /// The keys for one hash.
    pub fn for_hash(&self, hash: ScramHash) -> &ScramCredentials {
        match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }

    /// Checks a cleartext password: against the SHA-256 keys, or the SHA-1
    /// keys when the SHA-256 ones are unusable (e.g. an account imported with
    /// SHA-1 keys only).
    pub fn verify_password(&self, password: &str) -> bool {
        let Some(password) = saslprep(password) else {
            return false;
        };
        self.verify_prepared(&password)
    }

    pub(crate) fn verify_prepared(&self, password: &str) -> bool {
        if self.sha256.is_usable() {
            self.sha256.verify_prepared(password)
        } else {
            self.sha1.verify_prepared(password)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5802_keys() {
        // Salt and keys of the RFC 5802 section 5 example (user/pencil).
        let salt = crypto::b64_decode("QSXCR+Q6sek8bf92").unwrap();
        let c = ScramCredentials::derive(ScramHash::Sha1, "pencil", &salt, 4096).unwrap();
        assert!(c.is_usable());
        assert!(c.verify_password("pencil"));
        assert!(!c.verify_password("pencil "));
    }

    #[test]
    fn from_password_uses_fresh_salts() {
        let a = UserCredentials::from_password("secret", 16).unwrap();
        let b = UserCredentials::from_password("secret", 16).unwrap();
        assert_eq!(a.sha1.salt.len(), SALT_LEN);
        assert_eq!(a.sha256.salt.len(), SALT_LEN);
        assert_ne!(a.sha1.salt, a.sha256.salt);
        assert_ne!(a.sha256.salt, b.sha256.salt);
        assert_eq!(a.sha1.stored_key.len(), 20);
        assert_eq!(a.sha256.stored_key.len(), 32);
        assert_eq!(a.sha256.iterations, 16);
        assert!(a.verify_password("secret"));
        assert!(!a.verify_password("Secret"));
    }

    #[test]
    fn password_is_saslprepped() {
        // U+00AD (soft hyphen) maps to nothing, so both spellings match.
        let c = UserCredentials::from_password("pass\u{00AD}word", 16).unwrap();
        assert!(c.verify_password("password"));
        assert_eq!(
            UserCredentials::from_password("bad\u{0007}", 16),
            Err(CredentialError::InvalidPassword)
        );
        assert_eq!(
            UserCredentials::from_password("", 16),
            Err(CredentialError::InvalidPassword)
        );
    }

    #[test]
    fn sha1_fallback() {
        let mut c = UserCredentials::from_password("secret", 16).unwrap();
        c.sha256.stored_key.clear();
        assert!(c.verify_password("secret"));
        assert!(!c.verify_password("other"));
    }

    #[test]
    fn zero_iterations_become_one() {
        let c = ScramCredentials::derive(ScramHash::Sha256, "x", b"salt", 0).unwrap();
        assert_eq!(c.iterations, 1);
        assert!(c.is_usable());
    }
}
