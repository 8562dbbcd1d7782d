//! Account management shared by the command line and in-band registration.

use zkfire_sasl::{UserCredentials, DEFAULT_ITERATIONS};
use zkfire_storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("'{0}' is not a valid account JID")]
    BadJid(String),
    #[error("{0} is not served here (this server serves {1})")]
    WrongDomain(String, String),
    #[error("the account already exists")]
    Exists,
    #[error("no such account")]
    NotFound,
    #[error("the password is empty or not valid under SASLprep")]
    BadPassword,
    #[error("storage: {0}")]
    Storage(StorageError),
}

impl From<StorageError> for AccountError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AccountExists => AccountError::Exists,
            StorageError::NoSuchAccount => AccountError::NotFound,
            other => AccountError::Storage(other),
        }
    }
}

/// The normalized account name (node) of `jid`, which must be of `domain`.
/// A bare name without `@` is taken as an account of `domain`.
pub fn account_name(jid: &str, domain: &str) -> Result<String, AccountError> {
    let full = if jid.contains('@') {
        jid.to_string()
    } else {
        format!("{jid}@{domain}")
    };
    let parsed = jid::BareJid::new(&full).map_err(|_| AccountError::BadJid(jid.to_string()))?;
    let node = parsed
        .node()
        .ok_or_else(|| AccountError::BadJid(jid.to_string()))?;
    if parsed.domain().as_str() != domain {
        return Err(AccountError::WrongDomain(
            parsed.to_string(),
            domain.to_string(),
        ));
    }
    Ok(node.to_string())
}

fn credentials(password: &str) -> Result<UserCredentials, AccountError> {
    if password.is_empty() {
        return Err(AccountError::BadPassword);
    }
    UserCredentials::from_password(password, DEFAULT_ITERATIONS)
        .map_err(|_| AccountError::BadPassword)
}

pub async fn create(storage: &dyn Storage, node: &str, password: &str) -> Result<(), AccountError> {
    let creds = credentials(password)?;
    storage.create_account(node, &creds).await?;
    Ok(())
}

pub async fn set_password(
    storage: &dyn Storage,
    node: &str,
    password: &str,
) -> Result<(), AccountError> {
    let creds = credentials(password)?;
    storage.set_credentials(node, &creds).await?;
    Ok(())
}

pub async fn delete(storage: &dyn Storage, node: &str) -> Result<(), AccountError> {
    if storage.delete_account(node).await? {
        Ok(())
    } else {
        Err(AccountError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        assert_eq!(
            account_name("Alice@localhost", "localhost").unwrap(),
            "alice"
        );
        assert_eq!(account_name("bob", "localhost").unwrap(), "bob");
        assert!(matches!(
            account_name("a@other", "localhost"),
            Err(AccountError::WrongDomain(..))
        ));
        assert!(account_name("@localhost", "localhost").is_err());
    }
}
