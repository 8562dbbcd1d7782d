//! Hash primitives of SCRAM (RFC 5802 section 2.2), dispatched on
//! [`ScramHash`] so the rest of the crate is written once for both hashes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::ScramHash;

/// Output size of H() and HMAC(): also the length of StoredKey, ServerKey
/// and ClientProof.
pub(crate) fn hash_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

/// H(data).
pub(crate) fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// HMAC(key, data).
pub(crate) fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length (long ones are hashed first), so
        // this cannot fail.
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(key, data),
    }
}

/// SaltedPassword = Hi(password, salt, i), i.e. PBKDF2 with HMAC-H.
pub(crate) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; hash_len(hash)];
    match hash {
        ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// ClientKey = HMAC(SaltedPassword, "Client Key").
pub(crate) fn client_key(hash: ScramHash, salted: &[u8]) -> Vec<u8> {
    hmac(hash, salted, b"Client Key")
}

/// ServerKey = HMAC(SaltedPassword, "Server Key").
pub(crate) fn server_key(hash: ScramHash, salted: &[u8]) -> Vec<u8> {
    hmac(hash, salted, b"Server Key")
}

/// `n` bytes from the operating system's CSPRNG; `None` if it fails, so that
/// the caller can answer a temporary failure instead of panicking.
pub(crate) fn random_bytes(n: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; n];
    OsRng.try_fill_bytes(&mut out).ok()?;
    Some(out)
}

/// A fresh server nonce: 18 random bytes in base64, i.e. 24 printable
/// characters without padding and without the comma SCRAM forbids.
pub(crate) fn random_nonce() -> Option<String> {
    random_bytes(18).map(|b| STANDARD.encode(b))
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Strict (canonical, padded) base64 as RFC 5802 uses it.
pub(crate) fn b64_decode(data: &str) -> Option<Vec<u8>> {
    STANDARD.decode(data).ok()
}

/// a XOR b, for equally long inputs.
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}
