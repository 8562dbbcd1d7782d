//! One SASL exchange on the server side. (Interface; being written.)

use crate::{ChannelBinding, Mechanism, Step, UserCredentials};

pub struct ServerSession {
    mechanism: Mechanism,
    binding: ChannelBinding,
}

impl ServerSession {
    pub fn new(mechanism: Mechanism, binding: ChannelBinding) -> Self {
        ServerSession { mechanism, binding }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's initial response (possibly empty) or a later
    /// response, already base64-decoded.
    pub fn step(&mut self, input: &[u8]) -> Step {
        let _ = (input, &self.binding);
        Step::Failure(crate::Failure::TemporaryAuthFailure)
    }

    /// Answers [`Step::NeedCredentials`]; `None` when there is no such account
    /// (SCRAM then goes on with made-up values so that the answer does not tell
    /// who exists, and fails at the end).
    pub fn credentials(&mut self, creds: Option<UserCredentials>) -> Step {
        let _ = creds;
        Step::Failure(crate::Failure::TemporaryAuthFailure)
    }
}

impl UserCredentials {
    /// Derives the stored keys for both hashes from a password, with a fresh
    /// random salt each.
    pub fn from_password(password: &str, iterations: u32) -> Result<Self, crate::CredentialError> {
        let _ = (password, iterations);
        Err(crate::CredentialError::InvalidPassword)
    }
}
