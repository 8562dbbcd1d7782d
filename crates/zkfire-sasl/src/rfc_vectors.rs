//! The example exchanges of RFC 5802 section 5 and RFC 7677 section 3,
//! byte for byte, with the server nonce pinned (only possible in tests).

use crate::client::{ClientBinding, ScramClient};
use crate::crypto::b64_decode;
use crate::{
    ChannelBinding, Mechanism, ScramCredentials, ScramHash, ServerSession, Step, UserCredentials,
};

struct Vector {
    mechanism: Mechanism,
    salt: &'static str,
    client_nonce: &'static str,
    server_nonce: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
}

const RFC5802: Vector = Vector {
    mechanism: Mechanism::ScramSha1,
    salt: "QSXCR+Q6sek8bf92",
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    server_nonce: "3rfcNHYJY1ZVvWVs7j",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final:
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

const RFC7677: Vector = Vector {
    mechanism: Mechanism::ScramSha256,
    salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/// Stored keys for user/pencil with the RFC's salt for `hash`; the other
/// hash gets throwaway keys.
fn credentials(v: &Vector) -> UserCredentials {
    let hash = v.mechanism.scram_hash().unwrap();
    let salt = b64_decode(v.salt).unwrap();
    let real = ScramCredentials::derive(hash, "pencil", &salt, 4096).unwrap();
    let mut creds = UserCredentials::from_password("pencil", 1).unwrap();
    match hash {
        ScramHash::Sha1 => creds.sha1 = real,
        ScramHash::Sha256 => creds.sha256 = real,
    }
    creds
}

fn server_side(v: &Vector) {
    let mut s = ServerSession::new(v.mechanism, ChannelBinding::default());
    s.fix_server_nonce(v.server_nonce);
    assert_eq!(
        s.step(v.client_first.as_bytes()),
        Step::NeedCredentials {
            username: "user".into()
        }
    );
    assert_eq!(
        s.credentials(Some(credentials(v))),
        Step::Challenge(v.server_first.as_bytes().to_vec())
    );
    assert_eq!(
        s.step(v.client_final.as_bytes()),
        Step::Success {
            username: "user".into(),
            authzid: None,
            additional: Some(v.server_final.as_bytes().to_vec()),
        }
    );
}

/// The test client must produce the RFC's messages too, or the round-trip
/// tests would only prove that client and server agree with each other.
fn client_side(v: &Vector) {
    let hash = v.mechanism.scram_hash().unwrap();
    let mut c = ScramClient::new(hash, "user", "pencil", ClientBinding::None)
        .unwrap()
        .with_nonce(v.client_nonce);
    assert_eq!(c.client_first(), v.client_first.as_bytes());
    assert_eq!(
        c.client_final(v.server_first.as_bytes()).unwrap(),
        v.client_final.as_bytes()
    );
    c.verify_server_final(v.server_final.as_bytes()).unwrap();
}

#[test]
fn rfc5802_server() {
    server_side(&RFC5802);
}

#[test]
fn rfc5802_client() {
    client_side(&RFC5802);
}

#[test]
fn rfc7677_server() {
    server_side(&RFC7677);
}

#[test]
fn rfc7677_client() {
    client_side(&RFC7677);
}

#[test]
fn rfc5802_with_empty_initial_response() {
    let v = &RFC5802;
    let mut s = ServerSession::new(v.mechanism, ChannelBinding::default());
    s.fix_server_nonce(v.server_nonce);
    assert_eq!(s.step(b""), Step::Challenge(Vec::new()));
    assert!(matches!(
        s.step(v.client_first.as_bytes()),
        Step::NeedCredentials { .. }
    ));
    assert_eq!(
        s.credentials(Some(credentials(v))),
        Step::Challenge(v.server_first.as_bytes().to_vec())
    );
    assert!(matches!(
        s.step(v.client_final.as_bytes()),
        Step::Success { .. }
    ));
}
