//! PLAIN (RFC 4616), checked against the stored SCRAM keys: the server never
//! keeps the password, so it derives StoredKey from the one received.

use crate::decoy;
use crate::prep::saslprep;
use crate::{Failure, Step, UserCredentials};

/// message accepted; the account's keys are needed next.
pub(crate) struct AwaitingCredentials {
    authzid: Option<String>,
    username: String,
    password: String,
}

/// Parses `[authzid] NUL authcid NUL passwd`. Wrong number of fields or an
/// empty authcid/passwd → `MalformedRequest`; an authcid SASLprep rejects →
/// `NotAuthorized`.
pub(crate) fn receive(msg: &str) -> Result<AwaitingCredentials, Failure> {
    let mut fields = msg.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let username = saslprep(authcid).ok_or(Failure::NotAuthorized)?;
    Ok(AwaitingCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username,
        password: password.to_owned(),
    })
}

impl AwaitingCredentials {
    /// The SASLprepped username to look up.
    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    /// Wrong password, a password SASLprep rejects, or a missing account →
    /// `NotAuthorized`; stored keys that are all unusable →
    /// `TemporaryAuthFailure`.
    pub(crate) fn verify(self, creds: Option<UserCredentials>) -> Step {
        let ok = match creds {
            Some(creds) => {
                if !creds.sha256.is_usable() && !creds.sha1.is_usable() {
                    return Step::Failure(Failure::TemporaryAuthFailure);
                }
                creds.verify_password(&self.password)
            }
            None => {
                // Spend the same PBKDF2 time as for a real account, so the
                // delay does not tell whether the account exists.
                if let Some(decoy) = decoy::user_credentials(&self.username) {
                    let _ = decoy.verify_password(&self.password);
                }
                false
            }
        };
        if ok {
            Step::Success {
                username: self.username,
                authzid: self.authzid,
                additional: None,
            }
        } else {
            Step::Failure(Failure::NotAuthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let p = receive("admin@example.org\0user\0pw").unwrap();
        assert_eq!(p.authzid.as_deref(), Some("admin@example.org"));
        assert_eq!(p.username(), "user");
        let p = receive("\0I\u{00AD}X\0pw").unwrap();
        assert_eq!(p.authzid, None);
        assert_eq!(p.username(), "IX");
    }

    #[test]
    fn malformed() {
        for bad in ["", "user", "\0user", "\0\0pw", "\0user\0", "a\0b\0c\0d"] {
            assert_eq!(
                receive(bad).err(),
                Some(Failure::MalformedRequest),
                "{bad:?}"
            );
        }
        assert_eq!(
            receive("\0bad\u{0007}\0pw").err(),
            Some(Failure::NotAuthorized)
        );
    }
}
