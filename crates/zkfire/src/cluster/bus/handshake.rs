//! The authentication exchange of the cluster bus, as pure message
//! functions (the socket side is in `link.rs`).
//!
//! ```text
//! dialer   → acceptor  Hello     magic, dialer id, incarnation, nonce_d
//! acceptor → dialer    Challenge acceptor id, incarnation, nonce_a, proof_a
//! dialer   → acceptor  Proof     proof_d
//! acceptor → dialer    Verdict   accepted, or why not
//! ```
//!
//! `proof_x = HMAC-SHA256(secret, label, role_x, dialer id, dialer
//! incarnation, acceptor id, acceptor incarnation, nonce_d, nonce_a,
//! channel binding)`. Both nonces are fresh per connection, so an old answer
//! does not fit a new exchange (replay); the role differs between the two
//! proofs, so an acceptor's answer cannot be sent back as a dialer's
//! (reflection); the identities are inside, so a changed id or incarnation
//! breaks the proof. Under TLS the channel binding is keying material
//! exported from the TLS session: a relay between two TLS sessions gets
//! proofs that do not verify on the other side.
//!
//! Hand-written because no crate does this small pre-shared-key exchange;
//! the cryptography itself is `hmac`/`sha2`, and proofs are compared in
//! constant time by `Mac::verify_slice`.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Longest node id the handshake carries.
pub const MAX_NODE_ID: usize = 255;
/// Largest handshake frame; anything bigger is hostile.
pub const MAX_MESSAGE: usize = 1024;

const MAGIC: &[u8; 8] = b"ZKFBUS\x00\x01";
const LABEL: &[u8] = b"zkfire cluster bus v1\0";
const ROLE_DIALER: &[u8] = b"dialer\0";
const ROLE_ACCEPTOR: &[u8] = b"acceptor\0";

const TYPE_HELLO: u8 = 1;
const TYPE_CHALLENGE: u8 = 2;
const TYPE_PROOF: u8 = 3;
const TYPE_VERDICT: u8 = 4;

/// Who a node is: its id and the incarnation it runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub incarnation: i64,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (incarnation {})", self.node_id, self.incarnation)
    }
}

/// Why an acceptor turns away a dialer that proved the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The dialer's node id is not in the acceptor's membership.
    UnknownNode,
    /// The dialer runs an older incarnation than the membership says.
    StaleIncarnation,
    /// The dialer runs a newer incarnation than the acceptor knows yet.
    NewerIncarnation,
    /// The dialer should have waited for the acceptor to dial it.
    WrongDirection,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::UnknownNode => 1,
            Refusal::StaleIncarnation => 2,
            Refusal::NewerIncarnation => 3,
            Refusal::WrongDirection => 4,
        }
    }

    fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            1 => Refusal::UnknownNode,
            2 => Refusal::StaleIncarnation,
            3 => Refusal::NewerIncarnation,
            4 => Refusal::WrongDirection,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::UnknownNode => "node not in the membership",
            Refusal::StaleIncarnation => "stale incarnation",
            Refusal::NewerIncarnation => "incarnation not known yet",
            Refusal::WrongDirection => "the other node dials this pair",
        })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    #[error("wrong proof (the peer does not know the cluster secret, or the exchange was tampered with)")]
    BadProof,
    #[error("expected {expected}, the peer is {got}")]
    UnexpectedPeer { expected: Identity, got: Identity },
    #[error("refused by the peer: {0}")]
    Refused(Refusal),
}

/// A fresh random nonce (`ThreadRng` is a CSPRNG).
pub fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut n);
    n
}

/// Everything both proofs cover.
struct Transcript<'a> {
    dialer: &'a Identity,
    acceptor: &'a Identity,
    nonce_d: &'a [u8; NONCE_LEN],
    nonce_a: &'a [u8; NONCE_LEN],
    binding: &'a [u8],
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], role: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this never fails; an empty key
        // is refused by the bus configuration before it gets here.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        let field = |mac: &mut HmacSha256, bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        mac.update(LABEL);
        field(&mut mac, role);
        field(&mut mac, self.dialer.node_id.as_bytes());
        mac.update(&self.dialer.incarnation.to_be_bytes());
        field(&mut mac, self.acceptor.node_id.as_bytes());
        mac.update(&self.acceptor.incarnation.to_be_bytes());
        mac.update(self.nonce_d);
        mac.update(self.nonce_a);
        field(&mut mac, self.binding);
        mac
    }

    fn proof(&self, secret: &[u8], role: &[u8]) -> [u8; PROOF_LEN] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    fn verify(&self, secret: &[u8], role: &[u8], proof: &[u8]) -> Result<(), HandshakeError> {
        self.mac(secret, role)
            .verify_slice(proof)
            .map_err(|_| HandshakeError::BadProof)
    }
}

/// A cursor over a received message that never reads past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandshakeError> {
        if self.0.len() < n {
            return Err(HandshakeError::Malformed("message too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, HandshakeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandshakeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn identity(&mut self) -> Result<Identity, HandshakeError> {
        let len = usize::from(self.byte()?);
        if len == 0 {
            return Err(HandshakeError::Malformed("empty node id"));
        }
        let node_id = std::str::from_utf8(self.take(len)?)
            .map_err(|_| HandshakeError::Malformed("node id is not UTF-8"))?
            .to_string();
        let incarnation = i64::from_be_bytes(self.array()?);
        Ok(Identity {
            node_id,
            incarnation,
        })
    }

    fn end(&self) -> Result<(), HandshakeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(HandshakeError::Malformed("trailing bytes"))
        }
    }
}

fn put_identity(out: &mut Vec<u8>, id: &Identity) {
    // Node ids are checked against MAX_NODE_ID when the bus starts and when
    // peers are set, so the length fits a byte.
    let bytes = &id.node_id.as_bytes()[..id.node_id.len().min(MAX_NODE_ID)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
    out.extend_from_slice(&id.incarnation.to_be_bytes());
}

/// Whether a node id can travel in the handshake.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_NODE_ID
}

/// The side that opens the connection.
pub struct Dialer<'a> {
    secret: &'a [u8],
    local: &'a Identity,
    expected: &'a Identity,
    binding: &'a [u8],
    nonce: [u8; NONCE_LEN],
}

impl<'a> Dialer<'a> {
    /// `expected` is the peer the membership says lives at the address;
    /// `binding` is the TLS channel binding, empty without TLS.
    pub fn new(
        secret: &'a [u8],
        local: &'a Identity,
        expected: &'a Identity,
        binding: &'a [u8],
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Dialer {
            secret,
            local,
            expected,
            binding,
            nonce,
        }
    }

    pub fn hello(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(TYPE_HELLO);
        put_identity(&mut out, self.local);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Checks the acceptor's proof and identity; returns the Proof message.
    pub fn on_challenge(&self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut r = Reader(msg);
        if r.byte()? != TYPE_CHALLENGE {
            return Err(HandshakeError::Malformed("expected a challenge"));
        }
        let acceptor = r.identity()?;
        let nonce_a: [u8; NONCE_LEN] = r.array()?;
        let proof_a: [u8; PROOF_LEN] = r.array()?;
        r.end()?;
        let t = Transcript {
            dialer: self.local,
            acceptor: &acceptor,
            nonce_d: &self.nonce,
            nonce_a: &nonce_a,
            binding: self.binding,
        };
        t.verify(self.secret, ROLE_ACCEPTOR, &proof_a)?;
        if acceptor != *self.expected {
            return Err(HandshakeError::UnexpectedPeer {
                expected: self.expected.clone(),
                got: acceptor,
            });
        }
        let mut out = Vec::with_capacity(1 + PROOF_LEN);
        out.push(TYPE_PROOF);
        out.extend_from_slice(&t.proof(self.secret, ROLE_DIALER));
        Ok(out)
    }

    /// The acceptor's last word.
    pub fn on_verdict(&self, msg: &[u8]) -> Result<(), HandshakeError> {
        let mut r = Reader(msg);
        if r.byte()? != TYPE_VERDICT {
            return Err(HandshakeError::Malformed("expected a verdict"));
        }
        let code = r.byte()?;
        r.end()?;
        if code == 0 {
            return Ok(());
        }
        match Refusal::from_code(code) {
            Some(refusal) => Err(HandshakeError::Refused(refusal)),
            None => Err(HandshakeError::Malformed("unknown verdict")),
        }
    }
}

/// The side that accepted the connection.
pub struct Acceptor<'a> {
    secret: &'a [u8],
    local: &'a Identity,
    binding: &'a [u8],
    nonce: [u8; NONCE_LEN],
    dialer: Option<(Identity, [u8; NONCE_LEN])>,
}

impl<'a> Acceptor<'a> {
    pub fn new(
        secret: &'a [u8],
        local: &'a Identity,
        binding: &'a [u8],
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Acceptor {
            secret,
            local,
            binding,
            nonce,
            dialer: None,
        }
    }

    /// Reads the dialer's Hello; returns the Challenge to send. The identity
    /// it claims is not trusted until `on_proof` says so.
    pub fn on_hello(&mut self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut r = Reader(msg);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(HandshakeError::Malformed("not a zkfire cluster bus hello"));
        }
        if r.byte()? != TYPE_HELLO {
            return Err(HandshakeError::Malformed("expected a hello"));
        }
        let dialer = r.identity()?;
        let nonce_d: [u8; NONCE_LEN] = r.array()?;
        r.end()?;
        let t = Transcript {
            dialer: &dialer,
            acceptor: self.local,
            nonce_d: &nonce_d,
            nonce_a: &self.nonce,
            binding: self.binding,
        };
        let mut out = Vec::with_capacity(64 + PROOF_LEN);
        out.push(TYPE_CHALLENGE);
        put_identity(&mut out, self.local);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&t.proof(self.secret, ROLE_ACCEPTOR));
        self.dialer = Some((dialer, nonce_d));
        Ok(out)
    }

    /// Checks the dialer's proof; returns its now authenticated identity.
    pub fn on_proof(&self, msg: &[u8]) -> Result<Identity, HandshakeError> {
        let Some((dialer, nonce_d)) = &self.dialer else {
            return Err(HandshakeError::Malformed("proof before hello"));
        };
        let mut r = Reader(msg);
        if r.byte()? != TYPE_PROOF {
            return Err(HandshakeError::Malformed("expected a proof"));
        }
        let proof: [u8; PROOF_LEN] = r.array()?;
        r.end()?;
        let t = Transcript {
            dialer,
            acceptor: self.local,
            nonce_d,
            nonce_a: &self.nonce,
            binding: self.binding,
        };
        t.verify(self.secret, ROLE_DIALER, &proof)?;
        Ok(dialer.clone())
    }

    /// The identity the dialer claimed in its Hello (unverified), for logs.
    pub fn claimed(&self) -> Option<&Identity> {
        self.dialer.as_ref().map(|(id, _)| id)
    }

    pub fn verdict(result: Result<(), Refusal>) -> Vec<u8> {
        vec![TYPE_VERDICT, result.err().map_or(0, Refusal::code)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: &str, inc: i64) -> Identity {
        Identity {
            node_id: node.into(),
            incarnation: inc,
        }
    }

    /// Runs a whole exchange; returns what each side concluded.
    fn exchange(
        dialer_secret: &[u8],
        acceptor_secret: &[u8],
        dialer_id: &Identity,
        expected: &Identity,
        acceptor_id: &Identity,
    ) -> Result<Identity, HandshakeError> {
        let d = Dialer::new(dialer_secret, dialer_id, expected, b"", fresh_nonce());
        let mut a = Acceptor::new(acceptor_secret, acceptor_id, b"", fresh_nonce());
        let challenge = a.on_hello(&d.hello())?;
        let proof = d.on_challenge(&challenge)?;
        let who = a.on_proof(&proof)?;
        d.on_verdict(&Acceptor::verdict(Ok(())))?;
        Ok(who)
    }

    #[test]
    fn the_right_secret_authenticates_both_sides() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        assert_eq!(exchange(b"s3cret", b"s3cret", &n1, &n2, &n2), Ok(n1));
    }

    #[test]
    fn a_wrong_secret_is_refused_by_either_side() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        // The dialer checks first: an acceptor without the secret fails there.
        assert_eq!(
            exchange(b"right", b"wrong", &n1, &n2, &n2),
            Err(HandshakeError::BadProof)
        );
        // A dialer without the secret that ignores the acceptor's bad proof
        // and answers anyway is refused by the acceptor.
        let mut a = Acceptor::new(b"right", &n2, b"", fresh_nonce());
        let d = Dialer::new(b"wrong", &n1, &n2, b"", fresh_nonce());
        let challenge = a.on_hello(&d.hello()).unwrap();
        let mut forged = vec![TYPE_PROOF];
        forged.extend_from_slice(&[0u8; PROOF_LEN]);
        assert_eq!(a.on_proof(&forged), Err(HandshakeError::BadProof));
        // The honest wrong-secret dialer already stops at the challenge.
        assert_eq!(d.on_challenge(&challenge), Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_replayed_proof_fails_against_a_fresh_nonce() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        let secret = b"s3cret";
        let nonce_d = fresh_nonce();
        let d = Dialer::new(secret, &n1, &n2, b"", nonce_d);
        let mut a1 = Acceptor::new(secret, &n2, b"", fresh_nonce());
        let proof = d.on_challenge(&a1.on_hello(&d.hello()).unwrap()).unwrap();
        assert_eq!(a1.on_proof(&proof), Ok(n1.clone()));
        // An eavesdropper replays the same hello and proof later.
        let mut a2 = Acceptor::new(secret, &n2, b"", fresh_nonce());
        a2.on_hello(&d.hello()).unwrap();
        assert_eq!(a2.on_proof(&proof), Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_reflected_proof_fails() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        let secret = b"s3cret";
        let d = Dialer::new(secret, &n1, &n2, b"", fresh_nonce());
        let mut a = Acceptor::new(secret, &n2, b"", fresh_nonce());
        let challenge = a.on_hello(&d.hello()).unwrap();
        // The acceptor's own proof, sent back to it as the dialer's.
        let mut reflected = vec![TYPE_PROOF];
        reflected.extend_from_slice(&challenge[challenge.len() - PROOF_LEN..]);
        assert_eq!(a.on_proof(&reflected), Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_mismatched_incarnation_is_refused() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        // The dialer expects incarnation 8 but meets 9.
        assert_eq!(
            exchange(b"s", b"s", &n1, &id("node-b", 8), &n2),
            Err(HandshakeError::UnexpectedPeer {
                expected: id("node-b", 8),
                got: n2.clone()
            })
        );
        // A man in the middle rewriting the dialer's incarnation breaks the
        // acceptor's proof.
        let d = Dialer::new(b"s", &n1, &n2, b"", fresh_nonce());
        let mut hello = d.hello();
        let at = MAGIC.len() + 1 + 1 + n1.node_id.len();
        hello[at + 7] ^= 1;
        let mut a = Acceptor::new(b"s", &n2, b"", fresh_nonce());
        let challenge = a.on_hello(&hello).unwrap();
        assert_eq!(a.claimed().map(|c| c.incarnation), Some(6));
        assert_eq!(d.on_challenge(&challenge), Err(HandshakeError::BadProof));
    }

    #[test]
    fn different_channel_bindings_do_not_verify() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        let d = Dialer::new(b"s", &n1, &n2, b"tls session 1", fresh_nonce());
        let mut a = Acceptor::new(b"s", &n2, b"tls session 2", fresh_nonce());
        let challenge = a.on_hello(&d.hello()).unwrap();
        assert_eq!(d.on_challenge(&challenge), Err(HandshakeError::BadProof));
    }

    #[test]
    fn verdicts_and_garbage() {
        let (n1, n2) = (id("node-a", 7), id("node-b", 9));
        let d = Dialer::new(b"s", &n1, &n2, b"", fresh_nonce());
        assert_eq!(
            d.on_verdict(&Acceptor::verdict(Err(Refusal::StaleIncarnation))),
            Err(HandshakeError::Refused(Refusal::StaleIncarnation))
        );
        let mut a = Acceptor::new(b"s", &n2, b"", fresh_nonce());
        for junk in [&b""[..], b"GET / HTTP/1.1", &[0xff; 300][..]] {
            assert!(matches!(
                a.on_hello(junk),
                Err(HandshakeError::Malformed(_))
            ));
            assert!(matches!(
                d.on_challenge(junk),
                Err(HandshakeError::Malformed(_))
            ));
        }
        assert!(matches!(
            a.on_proof(&[TYPE_PROOF; 33]),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
