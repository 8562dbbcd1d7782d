//! The client side of SCRAM, for tests and tools that log in to a server.
//! It is deliberately small: one exchange, no retries, no mechanism choice.

use subtle::ConstantTimeEq;

use crate::messages::{encode_saslname, valid_nonce};
use crate::prep::saslprep;
use crate::scram::CB_TLS_EXPORTER;
use crate::{crypto, ScramHash};

/// The gs2-cbind-flag the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBinding {
    /// `n`: no channel binding support.
    None,
    /// `y`: binding supported, but the server did not seem to offer -PLUS.
    NotAdvertised,
    /// `p=tls-exporter` with the connection's exporter value (-PLUS).
    TlsExporter(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the username or password is not valid under SASLprep")]
    InvalidCredentials,
    #[error("no randomness available for the nonce")]
    NoRandomness,
    #[error("the server sent a malformed message")]
    MalformedServerMessage,
    #[error("the server nonce does not extend the client nonce")]
    NonceMismatch,
    #[error("the server reported an error: {0}")]
    ServerError(String),
    #[error("the server signature is wrong")]
    BadServerSignature,
    #[error("called out of order")]
    OutOfOrder,
}

pub struct ScramClient {
    hash: ScramHash,
    username: String,
    password: String,
    authzid: Option<String>,
    binding: ClientBinding,
    nonce: String,
    client_first_bare: Option<String>,
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// A client for SCRAM with `hash`; use [`ClientBinding::TlsExporter`] for
    /// the -PLUS mechanism.
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        binding: ClientBinding,
    ) -> Result<Self, ClientError> {
        Ok(ScramClient {
            hash,
            username: saslprep(username).ok_or(ClientError::InvalidCredentials)?,
            password: saslprep(password).ok_or(ClientError::InvalidCredentials)?,
            authzid: None,
            binding,
            nonce: crypto::random_nonce().ok_or(ClientError::NoRandomness)?,
            client_first_bare: None,
            server_signature: None,
        })
    }

    /// Asks to act as `authzid` (sent as `a=` in the gs2 header).
    pub fn with_authzid(mut self, authzid: &str) -> Self {
        self.authzid = Some(authzid.to_owned());
        self
    }

    /// Replaces the random client nonce, to reproduce known exchanges.
    pub fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = nonce.to_owned();
        self
    }

    fn gs2_header(&self) -> String {
        let flag = match self.binding {
            ClientBinding::None => "n".to_owned(),
            ClientBinding::NotAdvertised => "y".to_owned(),
            ClientBinding::TlsExporter(_) => format!("p={CB_TLS_EXPORTER}"),
        };
        let authzid = self
            .authzid
            .as_deref()
            .map(|a| format!("a={}", encode_saslname(a)))
            .unwrap_or_default();
        format!("{flag},{authzid},")
    }

    /// client-first-message.
    pub fn client_first(&mut self) -> Vec<u8> {
        let bare = format!("n={},r={}", encode_saslname(&self.username), self.nonce);
        let msg = format!("{}{bare}", self.gs2_header());
        self.client_first_bare = Some(bare);
        msg.into_bytes()
    }

    /// client-final-message in answer to server-first-message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ClientError> {
        let bare = self
            .client_first_bare
            .as_deref()
            .ok_or(ClientError::OutOfOrder)?;
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| ClientError::MalformedServerMessage)?;
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ClientError::NonceMismatch);
        }

        let hash = self.hash;
        let salted = crypto::salted_password(hash, self.password.as_bytes(), &salt, iterations);
        let client_key = crypto::client_key(hash, &salted);
        let stored_key = crypto::digest(hash, &client_key);
        let mut cb = self.gs2_header().into_bytes();
        if let ClientBinding::TlsExporter(data) = &self.binding {
            cb.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={nonce}", crypto::b64_encode(&cb));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let client_signature = crypto::hmac(hash, &stored_key, auth_message.as_bytes());
        let proof = crypto::xor(&client_key, &client_signature);
        let server_key = crypto::server_key(hash, &salted);
        self.server_signature = Some(crypto::hmac(hash, &server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", crypto::b64_encode(&proof)).into_bytes())
    }

    /// Checks server-final-message (the `<success/>` data): the server proves
    /// it knew the keys too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ClientError> {
        let expected = self
            .server_signature
            .as_deref()
            .ok_or(ClientError::OutOfOrder)?;
        let msg =
            std::str::from_utf8(server_final).map_err(|_| ClientError::MalformedServerMessage)?;
        if let Some(error) = msg.strip_prefix("e=") {
            return Err(ClientError::ServerError(error.to_owned()));
        }
        let first = msg.split(',').next().unwrap_or_default();
        let signature = first
            .strip_prefix("v=")
            .and_then(crypto::b64_decode)
            .ok_or(ClientError::MalformedServerMessage)?;
        if bool::from(signature.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ClientError::BadServerSignature)
        }
    }
}

/// `r=<nonce>,s=<salt>,i=<count>[,extensions]`
fn parse_server_first(msg: &str) -> Result<(&str, Vec<u8>, u32), ClientError> {
    let malformed = ClientError::MalformedServerMessage;
    let mut parts = msg.split(',');
    let nonce = parts
        .next()
        .and_then(|p| p.strip_prefix("r="))
        .filter(|n| valid_nonce(n))
        .ok_or(malformed.clone())?;
    let salt = parts
        .next()
        .and_then(|p| p.strip_prefix("s="))
        .and_then(crypto::b64_decode)
        .filter(|s| !s.is_empty())
        .ok_or(malformed.clone())?;
    let iterations = parts
        .next()
        .and_then(|p| p.strip_prefix("i="))
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|&i| i >= 1)
        .ok_or(malformed)?;
    Ok((nonce, salt, iterations))
}
