//! PLAIN (RFC 4616) against stored SCRAM keys.

mod common;

use common::*;
use zkfire_sasl::{Failure, Mechanism, ServerSession, Step, UserCredentials};

fn plain(msg: &[u8], account_found: Option<UserCredentials>) -> (Step, Step) {
    let mut s = ServerSession::new(Mechanism::Plain, tls13());
    let first = s.step(msg);
    if !matches!(first, Step::NeedCredentials { .. }) {
        return (first.clone(), first);
    }
    let end = s.credentials(account_found);
    (first, end)
}

#[test]
fn right_password() {
    let (first, end) = plain(b"\0juliet\0r0meo!", Some(account("r0meo!")));
    assert_eq!(
        first,
        Step::NeedCredentials {
            username: "juliet".into()
        }
    );
    assert_eq!(
        end,
        Step::Success {
            username: "juliet".into(),
            authzid: None,
            additional: None,
        }
    );
}

#[test]
fn authzid_is_passed_through() {
    let (_, end) = plain(b"romeo@example.org\0juliet\0pw", Some(account("pw")));
    assert_eq!(
        end,
        Step::Success {
            username: "juliet".into(),
            authzid: Some("romeo@example.org".into()),
            additional: None,
        }
    );
}

#[test]
fn wrong_password() {
    let (_, end) = plain(b"\0juliet\0wrong", Some(account("pw")));
    assert_eq!(end, Step::Failure(Failure::NotAuthorized));
}

#[test]
fn unknown_user() {
    let (first, end) = plain(b"\0nobody\0pw", None);
    assert!(matches!(first, Step::NeedCredentials { .. }));
    assert_eq!(end, Step::Failure(Failure::NotAuthorized));
}

#[test]
fn refused_without_tls() {
    for input in [&b"\0juliet\0pw"[..], b""] {
        let mut s = ServerSession::new(Mechanism::Plain, cleartext());
        assert_eq!(s.step(input), Step::Failure(Failure::EncryptionRequired));
        assert_eq!(s.step(input), Step::Failure(Failure::MalformedRequest));
    }
}

#[test]
fn empty_initial_response() {
    let mut s = ServerSession::new(Mechanism::Plain, tls12());
    assert_eq!(s.step(b""), Step::Challenge(Vec::new()));
    assert!(matches!(
        s.step(b"\0juliet\0pw"),
        Step::NeedCredentials { .. }
    ));
    assert!(matches!(
        s.credentials(Some(account("pw"))),
        Step::Success { .. }
    ));
}

#[test]
fn empty_fields_are_malformed() {
    for msg in [
        &b"\0\0pw"[..],
        b"\0juliet\0",
        b"juliet\0pw",
        b"juliet",
        b"\0juliet\0pw\0",
    ] {
        let (first, _) = plain(msg, Some(account("pw")));
        assert_eq!(first, Step::Failure(Failure::MalformedRequest), "{msg:?}");
    }
}

#[test]
fn saslprep_applies_to_username_and_password() {
    // Stored as "IX", sent with a soft hyphen that maps to nothing.
    let (first, end) = plain("\0I\u{00AD}X\0\u{2168}".as_bytes(), Some(account("IX")));
    assert_eq!(
        first,
        Step::NeedCredentials {
            username: "IX".into()
        }
    );
    assert!(matches!(end, Step::Success { .. }), "{end:?}");
    // A password SASLprep refuses never matches.
    let (_, end) = plain("\0juliet\0pw\u{0007}".as_bytes(), Some(account("pw")));
    assert_eq!(end, Step::Failure(Failure::NotAuthorized));
    // Neither does one that is empty once prepared.
    let (_, end) = plain("\0juliet\0\u{00AD}".as_bytes(), Some(account("pw")));
    assert_eq!(end, Step::Failure(Failure::NotAuthorized));
    let (first, _) = plain("\0a\u{0007}\0pw".as_bytes(), Some(account("pw")));
    assert_eq!(first, Step::Failure(Failure::NotAuthorized));
}

#[test]
fn falls_back_to_sha1_keys() {
    let mut creds = account("pw");
    creds.sha256.stored_key.clear();
    let (_, end) = plain(b"\0juliet\0pw", Some(creds.clone()));
    assert!(matches!(end, Step::Success { .. }));
    let (_, end) = plain(b"\0juliet\0nope", Some(creds.clone()));
    assert_eq!(end, Step::Failure(Failure::NotAuthorized));
    creds.sha1.server_key.clear();
    let (_, end) = plain(b"\0juliet\0pw", Some(creds));
    assert_eq!(end, Step::Failure(Failure::TemporaryAuthFailure));
}

#[test]
fn nothing_is_accepted_after_the_end() {
    let mut s = ServerSession::new(Mechanism::Plain, tls13());
    assert!(matches!(
        s.step(b"\0juliet\0pw"),
        Step::NeedCredentials { .. }
    ));
    assert!(matches!(
        s.credentials(Some(account("pw"))),
        Step::Success { .. }
    ));
    assert_eq!(
        s.step(b"\0juliet\0pw"),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        s.credentials(Some(account("pw"))),
        Step::Failure(Failure::TemporaryAuthFailure)
    );
}
