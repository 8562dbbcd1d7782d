//! Server side of SASL (RFC 4422) for XMPP: SCRAM-SHA-1, SCRAM-SHA-256 and
//! their -PLUS variants (RFC 5802, RFC 7677, tls-exporter binding of RFC
//! 9266), and PLAIN (RFC 4616) checked against stored SCRAM keys.
//!
//! Sans-IO: the caller feeds client messages and looks up credentials when
//! asked; nothing here blocks or touches a database.
//!
//! Written on RustCrypto rather than with `rsasl`: rsasl's server fetches the
//! stored keys through a callback from inside its step function, which does
//! not fit a sans-IO exchange that returns `NeedCredentials` to the caller
//! (an async database lookup) and resumes with decoy keys for missing users.

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// Name used in storage (`SHA-1`, `SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SHA-1" => Some(ScramHash::Sha1),
            "SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// All mechanisms, strongest first (the order they are offered in).
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// What the server keeps for one hash of one account (RFC 5802 section 3):
/// never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Everything stored for an account: one set of keys per hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub sha1: ScramCredentials,
    pub sha256: ScramCredentials,
}

/// Iteration count used for new passwords.
pub const DEFAULT_ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the password is not valid under SASLprep")]
    InvalidPassword,
}

/// SASL failure conditions of RFC 6120 section 6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl Failure {
    /// Element name of the condition inside `<failure/>`.
    pub fn condition(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// What the server knows of the connection, for channel binding.
#[derive(Debug, Clone, Default)]
pub struct ChannelBinding {
    /// The connection is encrypted (PLAIN is refused otherwise).
    pub tls: bool,
    /// RFC 9266 tls-exporter value of this TLS connection (TLS 1.3 only):
    /// 32 bytes exported with label "EXPORTER-Channel-Binding" and no context.
    /// When it is `Some`, the -PLUS mechanisms are offered, and a client that
    /// says it supports binding but thinks the server does not (`y` flag) is
    /// refused as a downgrade.
    pub tls_exporter: Option<Vec<u8>>,
}

/// What to do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge/>` with this payload and wait for `<response/>`.
    Challenge(Vec<u8>),
    /// Look up this account's credentials (the username is SASLprepped) and
    /// call [`ServerSession::credentials`].
    NeedCredentials {
        username: String,
    },
    /// Authenticated. `additional` goes into `<success/>` (SCRAM's
    /// server-final-message). `authzid` is what the client asked to act as;
    /// the caller checks it.
    Success {
        username: String,
        authzid: Option<String>,
        additional: Option<Vec<u8>>,
    },
    Failure(Failure),
}

/// Largest client message accepted (after base64 decoding). Real SCRAM and
/// PLAIN messages are a few hundred bytes; anything bigger is refused with
/// `MalformedRequest` before it is parsed.
pub const MAX_MESSAGE_LEN: usize = 4096;

pub mod client;
mod credentials;
mod crypto;
mod decoy;
mod messages;
mod plain;
mod prep;
mod scram;
pub mod session;

#[cfg(test)]
mod rfc_vectors;

pub use credentials::SALT_LEN;
pub use decoy::set_unknown_user_secret;
pub use session::ServerSession;
