//! SCRAM exchanges between the test client and the server.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use zkfire_sasl::client::{ClientBinding, ScramClient};
use zkfire_sasl::{
    ChannelBinding, Failure, Mechanism, ScramHash, ServerSession, Step, DEFAULT_ITERATIONS,
    SALT_LEN,
};

fn client(mechanism: Mechanism, username: &str, password: &str) -> ScramClient {
    let binding = if mechanism.is_plus() {
        ClientBinding::TlsExporter(EXPORTER.to_vec())
    } else {
        ClientBinding::None
    };
    ScramClient::new(mechanism.scram_hash().unwrap(), username, password, binding).unwrap()
}

/// (nonce, salt, iterations) of a server-first-message.
fn parse_server_first(msg: &[u8]) -> (String, Vec<u8>, u32) {
    let msg = std::str::from_utf8(msg).unwrap();
    let parts: Vec<&str> = msg.split(',').collect();
    assert_eq!(parts.len(), 3, "{msg}");
    let nonce = parts[0].strip_prefix("r=").unwrap().to_owned();
    let salt = STANDARD
        .decode(parts[1].strip_prefix("s=").unwrap())
        .unwrap();
    let iterations = parts[2].strip_prefix("i=").unwrap().parse().unwrap();
    (nonce, salt, iterations)
}

fn assert_success(run: &Run, username: &str, authzid: Option<&str>) {
    match &run.end {
        Step::Success {
            username: u,
            authzid: a,
            additional: Some(server_final),
        } => {
            assert_eq!(u, username);
            assert_eq!(a.as_deref(), authzid);
            run.client.verify_server_final(server_final).unwrap();
        }
        other => panic!("expected success, got {other:?}"),
    }
}

#[test]
fn round_trip_all_scram_mechanisms() {
    for mechanism in SCRAM_MECHANISMS {
        let run = run_scram(
            mechanism,
            tls13(),
            client(mechanism, "juliet", "r0meo!"),
            Some(account("r0meo!")),
        );
        assert_eq!(
            run.first,
            Step::NeedCredentials {
                username: "juliet".into()
            },
            "{mechanism:?}"
        );
        assert_success(&run, "juliet", None);
    }
}

#[test]
fn non_plus_mechanisms_without_tls_or_exporter() {
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
        for binding in [cleartext(), tls12()] {
            let run = run_scram(
                mechanism,
                binding,
                client(mechanism, "juliet", "pw"),
                Some(account("pw")),
            );
            assert_success(&run, "juliet", None);
        }
    }
}

#[test]
fn wrong_password_fails_at_the_end() {
    for mechanism in SCRAM_MECHANISMS {
        let run = run_scram(
            mechanism,
            tls13(),
            client(mechanism, "juliet", "wrong"),
            Some(account("right")),
        );
        assert!(run.server_first.is_some());
        assert_eq!(run.end, Step::Failure(Failure::NotAuthorized));
    }
}

#[test]
fn unknown_user_fails_only_at_the_end() {
    for mechanism in SCRAM_MECHANISMS {
        let run = run_scram(
            mechanism,
            tls13(),
            client(mechanism, "nobody", "guess"),
            None,
        );
        assert_eq!(
            run.first,
            Step::NeedCredentials {
                username: "nobody".into()
            }
        );
        let (nonce, salt, iterations) = parse_server_first(run.server_first.as_ref().unwrap());
        assert!(nonce.len() > 24);
        assert_eq!(salt.len(), SALT_LEN);
        assert_eq!(iterations, DEFAULT_ITERATIONS);
        assert_eq!(run.end, Step::Failure(Failure::NotAuthorized));
    }
}

#[test]
fn unknown_user_server_first_is_stable() {
    let salt_of = |mechanism: Mechanism, user: &str| {
        let run = run_scram(mechanism, tls13(), client(mechanism, user, "x"), None);
        let (_, salt, iterations) = parse_server_first(run.server_first.as_ref().unwrap());
        (salt, iterations)
    };
    let m = Mechanism::ScramSha256;
    assert_eq!(salt_of(m, "nobody"), salt_of(m, "nobody"));
    assert_ne!(salt_of(m, "nobody").0, salt_of(m, "somebody").0);
    // Each hash has its own salt, as for real accounts.
    assert_ne!(
        salt_of(Mechanism::ScramSha1, "nobody").0,
        salt_of(Mechanism::ScramSha256, "nobody").0
    );
    // The -PLUS variant shares the keys of its hash.
    assert_eq!(
        salt_of(Mechanism::ScramSha256Plus, "nobody"),
        salt_of(Mechanism::ScramSha256, "nobody")
    );
}

#[test]
fn known_and_unknown_users_look_alike() {
    let m = Mechanism::ScramSha256;
    let known = run_scram(m, tls13(), client(m, "juliet", "x"), Some(account("pw")));
    let unknown = run_scram(m, tls13(), client(m, "nobody", "x"), None);
    let (kn, ks, ki) = parse_server_first(known.server_first.as_ref().unwrap());
    let (un, us, ui) = parse_server_first(unknown.server_first.as_ref().unwrap());
    assert_eq!(kn.len(), un.len());
    assert_eq!(ks.len(), us.len());
    assert_eq!(ki, ui);
    assert_eq!(known.end, unknown.end);
}

#[test]
fn server_nonce_is_fresh_and_printable() {
    let m = Mechanism::ScramSha256;
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let c = client(m, "juliet", "pw").with_nonce("clientnonce");
        let run = run_scram(m, tls13(), c, Some(account("pw")));
        let (nonce, _, _) = parse_server_first(run.server_first.as_ref().unwrap());
        let server_part = nonce.strip_prefix("clientnonce").unwrap().to_owned();
        assert!(server_part.len() >= 16);
        assert!(server_part
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b','));
        nonces.push(server_part);
    }
    assert_ne!(nonces[0], nonces[1]);
}

#[test]
fn authzid_is_passed_through() {
    for mechanism in SCRAM_MECHANISMS {
        let c = client(mechanism, "juliet", "pw").with_authzid("romeo@example.org/a,b=c");
        let run = run_scram(mechanism, tls13(), c, Some(account("pw")));
        assert_success(&run, "juliet", Some("romeo@example.org/a,b=c"));
    }
}

#[test]
fn username_is_unescaped_and_saslprepped() {
    let first = |msg: &str| first_step(Mechanism::ScramSha256, tls13(), msg.as_bytes());
    assert_eq!(
        first("n,,n=a=2Cb=3Dc,r=abc"),
        Step::NeedCredentials {
            username: "a,b=c".into()
        }
    );
    // U+00AD maps to nothing; U+2168 (ROMAN NUMERAL NINE) is NFKC "IX".
    assert_eq!(
        first("n,,n=I\u{00AD}X,r=abc"),
        Step::NeedCredentials {
            username: "IX".into()
        }
    );
    assert_eq!(
        first("n,,n=\u{2168},r=abc"),
        Step::NeedCredentials {
            username: "IX".into()
        }
    );
    // Prohibited (control character, bidi mix) → refused.
    assert_eq!(
        first("n,,n=a\u{0007}b,r=abc"),
        Step::Failure(Failure::NotAuthorized)
    );
    assert_eq!(
        first("n,,n=\u{0627}1,r=abc"),
        Step::Failure(Failure::NotAuthorized)
    );
    // Round trip with a name that needs escaping.
    let m = Mechanism::ScramSha1;
    let run = run_scram(
        m,
        tls13(),
        client(m, "o'brien,=x", "pw"),
        Some(account("pw")),
    );
    assert_success(&run, "o'brien,=x", None);
}

#[test]
fn downgrade_is_refused() {
    // `y`: the client could bind but believes -PLUS was not offered. With an
    // exporter value the server did offer it, so someone stripped it.
    for mechanism in [Mechanism::ScramSha256, Mechanism::ScramSha1] {
        let c = ScramClient::new(
            mechanism.scram_hash().unwrap(),
            "juliet",
            "pw",
            ClientBinding::NotAdvertised,
        )
        .unwrap();
        let run = run_scram(mechanism, tls13(), c, Some(account("pw")));
        assert_eq!(run.first, Step::Failure(Failure::NotAuthorized));
    }
}

#[test]
fn y_flag_is_fine_when_plus_was_not_offered() {
    let m = Mechanism::ScramSha256;
    let c = ScramClient::new(
        ScramHash::Sha256,
        "juliet",
        "pw",
        ClientBinding::NotAdvertised,
    )
    .unwrap();
    let run = run_scram(m, tls12(), c, Some(account("pw")));
    assert_success(&run, "juliet", None);
}

#[test]
fn plus_with_wrong_binding_data_is_refused() {
    for mechanism in [Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus] {
        // A man in the middle has a different TLS connection, so a different
        // exporter value.
        let c = ScramClient::new(
            mechanism.scram_hash().unwrap(),
            "juliet",
            "pw",
            ClientBinding::TlsExporter(vec![0x43; 32]),
        )
        .unwrap();
        let run = run_scram(mechanism, tls13(), c, Some(account("pw")));
        assert!(run.server_first.is_some());
        assert_eq!(run.end, Step::Failure(Failure::NotAuthorized));
    }
}

#[test]
fn plus_without_exporter_is_refused() {
    let m = Mechanism::ScramSha256Plus;
    let run = run_scram(m, tls12(), client(m, "juliet", "pw"), Some(account("pw")));
    assert_eq!(run.first, Step::Failure(Failure::NotAuthorized));
}

#[test]
fn plus_requires_binding_flag() {
    let m = Mechanism::ScramSha256Plus;
    for msg in ["n,,n=juliet,r=abc", "y,,n=juliet,r=abc"] {
        assert_eq!(
            first_step(m, tls13(), msg.as_bytes()),
            Step::Failure(Failure::MalformedRequest),
            "{msg}"
        );
    }
    for msg in [
        "p=tls-unique,,n=juliet,r=abc",
        "p=tls-server-end-point,,n=juliet,r=abc",
    ] {
        assert_eq!(
            first_step(m, tls13(), msg.as_bytes()),
            Step::Failure(Failure::NotAuthorized),
            "{msg}"
        );
    }
}

#[test]
fn binding_flag_with_non_plus_mechanism_is_malformed() {
    for binding in [tls13(), tls12()] {
        assert_eq!(
            first_step(
                Mechanism::ScramSha256,
                binding,
                b"p=tls-exporter,,n=juliet,r=abc"
            ),
            Step::Failure(Failure::MalformedRequest)
        );
    }
}

/// A session waiting for client-final-message, and the right one for it.
fn at_final(m: Mechanism) -> (ServerSession, String) {
    let mut c = client(m, "juliet", "pw");
    let mut s = ServerSession::new(m, tls13());
    assert!(matches!(
        s.step(&c.client_first()),
        Step::NeedCredentials { .. }
    ));
    let Step::Challenge(server_first) = s.credentials(Some(account("pw"))) else {
        panic!("no server-first-message")
    };
    let client_final = c.client_final(&server_first).unwrap();
    (s, String::from_utf8(client_final).unwrap())
}

/// Sends the right client-final-message changed by `edit`.
fn tampered(m: Mechanism, edit: impl Fn(&str) -> String) -> Step {
    let (mut s, good) = at_final(m);
    s.step(edit(&good).as_bytes())
}

fn replace_attr(msg: &str, attr: &str, value: &str) -> String {
    msg.split(',')
        .map(|p| {
            if p.starts_with(&format!("{attr}=")) {
                format!("{attr}={value}")
            } else {
                p.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn tampered_client_final_is_refused() {
    let m = Mechanism::ScramSha256;
    assert!(matches!(tampered(m, str::to_owned), Step::Success { .. }));
    // Channel binding claiming an authzid the header did not carry.
    let other_cb = STANDARD.encode("n,a=admin,");
    assert_eq!(
        tampered(m, |f| replace_attr(f, "c", &other_cb)),
        Step::Failure(Failure::NotAuthorized)
    );
    // A nonce the server did not send.
    assert_eq!(
        tampered(m, |f| replace_attr(f, "r", "otherNonce")),
        Step::Failure(Failure::NotAuthorized)
    );
    // Right size, wrong proof.
    let wrong = STANDARD.encode([7u8; 32]);
    assert_eq!(
        tampered(m, |f| replace_attr(f, "p", &wrong)),
        Step::Failure(Failure::NotAuthorized)
    );
    // Proof of the wrong size, not base64, or missing; bad base64 binding.
    for (attr, value) in [("p", "AAAA"), ("p", "!!!!"), ("p", ""), ("c", "b=w")] {
        assert_eq!(
            tampered(m, |f| replace_attr(f, attr, value)),
            Step::Failure(Failure::MalformedRequest),
            "{attr}={value}"
        );
    }
    assert_eq!(
        tampered(m, |f| f.rsplit_once(",p=").unwrap().0.to_owned()),
        Step::Failure(Failure::MalformedRequest)
    );
}

#[test]
fn empty_initial_response_then_client_first() {
    let m = Mechanism::ScramSha256Plus;
    let mut c = client(m, "juliet", "pw");
    let mut s = ServerSession::new(m, tls13());
    assert_eq!(s.step(b""), Step::Challenge(Vec::new()));
    assert!(matches!(
        s.step(&c.client_first()),
        Step::NeedCredentials { .. }
    ));
    let Step::Challenge(sf) = s.credentials(Some(account("pw"))) else {
        panic!()
    };
    let end = s.step(&c.client_final(&sf).unwrap());
    assert!(matches!(end, Step::Success { .. }), "{end:?}");
}

#[test]
fn second_empty_response_is_malformed() {
    let mut s = ServerSession::new(Mechanism::ScramSha256, tls13());
    assert_eq!(s.step(b""), Step::Challenge(Vec::new()));
    assert_eq!(s.step(b""), Step::Failure(Failure::MalformedRequest));
}

#[test]
fn nothing_is_accepted_after_the_end() {
    let m = Mechanism::ScramSha256;
    let mut run = run_scram(m, tls13(), client(m, "juliet", "pw"), Some(account("pw")));
    assert!(matches!(run.end, Step::Success { .. }));
    assert_eq!(
        run.session.step(b"c=biws,r=x,p=AAAA"),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        run.session.step(b""),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        run.session.credentials(Some(account("pw"))),
        Step::Failure(Failure::TemporaryAuthFailure)
    );

    // After a failure too.
    let mut run = run_scram(m, tls13(), client(m, "juliet", "no"), Some(account("pw")));
    assert_eq!(run.end, Step::Failure(Failure::NotAuthorized));
    assert_eq!(
        run.session.step(b"n,,n=juliet,r=abc"),
        Step::Failure(Failure::MalformedRequest)
    );
}

#[test]
fn calls_out_of_order_fail() {
    let m = Mechanism::ScramSha1;
    // Credentials before anyone asked.
    let mut s = ServerSession::new(m, tls13());
    assert_eq!(
        s.credentials(Some(account("pw"))),
        Step::Failure(Failure::TemporaryAuthFailure)
    );
    // A response while credentials are being looked up.
    let mut s = ServerSession::new(m, tls13());
    assert!(matches!(
        s.step(b"n,,n=juliet,r=abc"),
        Step::NeedCredentials { .. }
    ));
    assert_eq!(
        s.step(b"c=biws,r=abc,p=AAAA"),
        Step::Failure(Failure::MalformedRequest)
    );
}

#[test]
fn unusable_stored_keys_are_a_temporary_failure() {
    let m = Mechanism::ScramSha256;
    let mut creds = account("pw");
    creds.sha256.stored_key.truncate(20);
    let run = run_scram(m, tls13(), client(m, "juliet", "pw"), Some(creds));
    assert_eq!(run.end, Step::Failure(Failure::TemporaryAuthFailure));
    assert!(run.server_first.is_none());
}

#[test]
fn custom_iteration_count_is_announced() {
    let m = Mechanism::ScramSha1;
    let creds = zkfire_sasl::UserCredentials::from_password("pw", 1234).unwrap();
    let run = run_scram(m, tls13(), client(m, "juliet", "pw"), Some(creds));
    let (_, _, iterations) = parse_server_first(run.server_first.as_ref().unwrap());
    assert_eq!(iterations, 1234);
    assert_success(&run, "juliet", None);
}

#[test]
fn mechanism_is_reported() {
    for m in Mechanism::ALL {
        assert_eq!(
            ServerSession::new(m, ChannelBinding::default()).mechanism(),
            m
        );
    }
}
