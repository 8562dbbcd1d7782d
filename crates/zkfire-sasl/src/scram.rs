//! The server side of SCRAM (RFC 5802, RFC 7677) with tls-exporter channel
//! binding (RFC 9266), as two typed stages of the exchange.

use subtle::ConstantTimeEq;

use crate::messages::{self, CbFlag};
use crate::prep::saslprep;
use crate::{crypto, decoy};
use crate::{
    ChannelBinding, Failure, Mechanism, ScramCredentials, ScramHash, Step, UserCredentials,
};

/// The only channel binding type offered: tls-unique is unsafe with TLS 1.3
/// and tls-server-end-point binds too little.
pub(crate) const CB_TLS_EXPORTER: &str = "tls-exporter";

/// client-first-message accepted; the account's keys are needed next.
pub(crate) struct AwaitingCredentials {
    hash: ScramHash,
    /// What `c=` must decode to: the gs2 header, then the binding data.
    expected_cb: Vec<u8>,
    client_first_bare: String,
    client_nonce: String,
    username: String,
    authzid: Option<String>,
}

/// server-first-message sent; waiting for client-final-message.
pub(crate) struct AwaitingFinal {
    hash: ScramHash,
    expected_cb: Vec<u8>,
    /// client-first-message-bare "," server-first-message ",": AuthMessage
    /// minus client-final-message-without-proof.
    auth_prefix: String,
    nonce: String,
    creds: ScramCredentials,
    /// False when the keys are decoys for a missing account.
    known_user: bool,
    username: String,
    authzid: Option<String>,
}

/// Checks client-first-message, including the channel binding choice.
///
/// Refusals: syntax errors, a -PLUS mechanism without `p=`, or `p=` with a
/// non-PLUS mechanism → `MalformedRequest`; a binding type other than
/// tls-exporter, -PLUS on a connection without an exporter value, the `y`
/// flag while -PLUS is offered (a downgrade, RFC 5802 section 6), or a
/// username SASLprep rejects → `NotAuthorized`.
pub(crate) fn receive_client_first(
    mechanism: Mechanism,
    binding: &ChannelBinding,
    msg: &str,
) -> Result<AwaitingCredentials, Failure> {
    let hash = mechanism.scram_hash().ok_or(Failure::InvalidMechanism)?;
    let m = messages::parse_client_first(msg).ok_or(Failure::MalformedRequest)?;

    let cb_data: &[u8] = match (mechanism.is_plus(), m.cb_flag) {
        (true, CbFlag::Bound(CB_TLS_EXPORTER)) => binding
            .tls_exporter
            .as_deref()
            .ok_or(Failure::NotAuthorized)?,
        (true, CbFlag::Bound(_)) => return Err(Failure::NotAuthorized),
        (true, CbFlag::NotSupported | CbFlag::ServerNotSupported) => {
            return Err(Failure::MalformedRequest)
        }
        (false, CbFlag::Bound(_)) => return Err(Failure::MalformedRequest),
        (false, CbFlag::ServerNotSupported) if binding.tls_exporter.is_some() => {
            return Err(Failure::NotAuthorized)
        }
        (false, CbFlag::NotSupported | CbFlag::ServerNotSupported) => &[],
    };

    let username = saslprep(&m.username).ok_or(Failure::NotAuthorized)?;
    let mut expected_cb = m.gs2_header.as_bytes().to_vec();
    expected_cb.extend_from_slice(cb_data);
    Ok(AwaitingCredentials {
        hash,
        expected_cb,
        client_first_bare: m.bare.to_owned(),
        client_nonce: m.nonce.to_owned(),
        username,
        authzid: m.authzid,
    })
}

impl AwaitingCredentials {
    /// The SASLprepped username to look up.
    pub(crate) fn username(&self) -> &str {
        &self.username
    }

    /// Builds server-first-message from the account's keys, or from decoy
    /// keys when there is no account. Stored keys that cannot be used (wrong
    /// hash or sizes) → `TemporaryAuthFailure`.
    pub(crate) fn answer(
        self,
        creds: Option<UserCredentials>,
        server_nonce: &str,
    ) -> Result<(AwaitingFinal, Vec<u8>), Failure> {
        let (creds, known_user) = match creds {
            Some(user) => {
                let creds = user.for_hash(self.hash).clone();
                if creds.hash != self.hash || !creds.is_usable() {
                    return Err(Failure::TemporaryAuthFailure);
                }
                (creds, true)
            }
            None => {
                let creds = decoy::scram_credentials(self.hash, &self.username)
                    .ok_or(Failure::TemporaryAuthFailure)?;
                (creds, false)
            }
        };
        let nonce = format!("{}{}", self.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            crypto::b64_encode(&creds.salt),
            creds.iterations
        );
        let auth_prefix = format!("{},{server_first},", self.client_first_bare);
        let next = AwaitingFinal {
            hash: self.hash,
            expected_cb: self.expected_cb,
            auth_prefix,
            nonce,
            creds,
            known_user,
            username: self.username,
            authzid: self.authzid,
        };
        Ok((next, server_first.into_bytes()))
    }
}

impl AwaitingFinal {
    /// Verifies client-final-message. Syntax errors and a proof of the wrong
    /// size → `MalformedRequest`; wrong channel binding data, wrong nonce,
    /// wrong proof or a missing account → `NotAuthorized`.
    pub(crate) fn receive_client_final(self, msg: &str) -> Step {
        match self.verify(msg) {
            Ok(step) => step,
            Err(failure) => Step::Failure(failure),
        }
    }

    fn verify(self, msg: &str) -> Result<Step, Failure> {
        let hash = self.hash;
        let m = messages::parse_client_final(msg).ok_or(Failure::MalformedRequest)?;
        if m.proof.len() != crypto::hash_len(hash) {
            return Err(Failure::MalformedRequest);
        }
        let cb_matches: bool = m.channel_binding.ct_eq(&self.expected_cb).into();
        if !cb_matches || m.nonce != self.nonce {
            return Err(Failure::NotAuthorized);
        }

        let auth_message = format!("{}{}", self.auth_prefix, m.without_proof);
        let client_signature = crypto::hmac(hash, &self.creds.stored_key, auth_message.as_bytes());
        let client_key = crypto::xor(&m.proof, &client_signature);
        let proof_matches: bool = crypto::digest(hash, &client_key)
            .ct_eq(&self.creds.stored_key)
            .into();
        // Decoy keys are random, so this cannot match for a missing account
        // anyway; the flag makes sure of it.
        if !(proof_matches && self.known_user) {
            return Err(Failure::NotAuthorized);
        }

        let server_signature = crypto::hmac(hash, &self.creds.server_key, auth_message.as_bytes());
        Ok(Step::Success {
            username: self.username,
            authzid: self.authzid,
            additional: Some(format!("v={}", crypto::b64_encode(&server_signature)).into_bytes()),
        })
    }
}
