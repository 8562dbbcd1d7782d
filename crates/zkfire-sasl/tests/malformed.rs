//! Hostile input: every message must give a failure, never a panic.

mod common;

use common::*;
use zkfire_sasl::{Failure, Mechanism, ServerSession, Step, MAX_MESSAGE_LEN};

const MALFORMED: Failure = Failure::MalformedRequest;

#[test]
fn missing_or_misplaced_fields_in_client_first() {
    for msg in [
        "n",
        "n,",
        "n,,",
        "n,,r=abc",
        "n,,n=juliet",
        "n,,n=juliet,",
        "n,,n=juliet,r=",
        "n,,r=abc,n=juliet",
        "n,n=juliet,r=abc",
        ",,n=juliet,r=abc",
        "q,,n=juliet,r=abc",
        "n,,n=,r=abc",
        "n,,n=ju=liet,r=abc",
        "n,a=,n=juliet,r=abc",
        "n,x=y,n=juliet,r=abc",
        "n,,m=ext,n=juliet,r=abc",
        "n,,n=juliet,r=a b",
        "n,,n=juliet,r=abc,p=AAAA",
        "N,,n=juliet,r=abc",
    ] {
        for m in SCRAM_MECHANISMS {
            // -PLUS needs the binding flag, or that alone would be the error.
            let msg = match msg.strip_prefix('n') {
                Some(rest) if m.is_plus() => format!("p=tls-exporter{rest}"),
                _ => msg.to_owned(),
            };
            assert_eq!(
                first_step(m, tls13(), msg.as_bytes()),
                Step::Failure(MALFORMED),
                "{m:?} {msg:?}"
            );
        }
    }
}

#[test]
fn huge_input() {
    let huge = vec![b'a'; MAX_MESSAGE_LEN + 1];
    for m in Mechanism::ALL {
        assert_eq!(first_step(m, tls13(), &huge), Step::Failure(MALFORMED));
    }
    // A well-formed client-first-message padded past the limit with an
    // extension is refused too.
    let padded = format!("n,,n=juliet,r=abc,x={}", "a".repeat(MAX_MESSAGE_LEN));
    assert_eq!(
        first_step(Mechanism::ScramSha256, tls13(), padded.as_bytes()),
        Step::Failure(MALFORMED)
    );
    // And in the final message.
    let mut s = at_final_step(Mechanism::ScramSha1);
    assert_eq!(s.step(&huge), Step::Failure(MALFORMED));
}

#[test]
fn non_utf8() {
    for m in Mechanism::ALL {
        let msg: &[u8] = if m == Mechanism::Plain {
            b"\0jul\xffiet\0pw"
        } else {
            b"n,,n=jul\xffiet,r=abc"
        };
        assert_eq!(first_step(m, tls13(), msg), Step::Failure(MALFORMED));
    }
    let mut s = at_final_step(Mechanism::ScramSha256);
    assert_eq!(s.step(b"c=biws,r=abc\xc3,p=AAAA"), Step::Failure(MALFORMED));
}

#[test]
fn bad_base64_in_client_final() {
    for msg in [
        "c=biw,r=abc,p=AAAA",
        "c=bi!s,r=abc,p=AAAA",
        "c=biws,r=abc,p=AA=A",
        "c=biws,r=abc",
        "c=biws",
        "r=abc,p=AAAA",
        "",
    ] {
        let mut s = at_final_step(Mechanism::ScramSha256);
        assert_eq!(s.step(msg.as_bytes()), Step::Failure(MALFORMED), "{msg:?}");
    }
}

/// A session that has sent server-first-message for an unknown user (no
/// PBKDF2 needed to get there).
fn at_final_step(m: Mechanism) -> ServerSession {
    let mut s = ServerSession::new(m, tls13());
    let first = if m.is_plus() {
        "p=tls-exporter,,n=juliet,r=abc"
    } else {
        "n,,n=juliet,r=abc"
    };
    assert!(matches!(
        s.step(first.as_bytes()),
        Step::NeedCredentials { .. }
    ));
    assert!(matches!(s.credentials(None), Step::Challenge(_)));
    s
}

/// xorshift: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, alphabet: &[u8], max_len: usize) -> Vec<u8> {
        let len = (self.next() % max_len as u64) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }
}

#[test]
fn noise_never_panics() {
    // Mostly SCRAM's own characters, so the parsers get past the first
    // checks, plus NUL, high bytes and UTF-8 lead bytes.
    let alphabet = b"nypamrcsi=,2C3D\0\xff\xc3\xa9tls-exporterAZaz09+/";
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let msg = noise.bytes(alphabet, 80);
        for m in Mechanism::ALL {
            let step = first_step(m, tls13(), &msg);
            assert!(
                matches!(
                    step,
                    Step::Failure(_) | Step::NeedCredentials { .. } | Step::Challenge(_)
                ),
                "{m:?} {msg:?} → {step:?}"
            );
        }
        let mut s = at_final_step(Mechanism::ScramSha256);
        assert!(matches!(s.step(&msg), Step::Failure(_)));
    }
}

#[test]
fn every_truncation_of_a_valid_exchange_is_handled() {
    // Some prefixes are valid messages themselves; the point is no panic.
    let first = "p=tls-exporter,a=romeo=2Cx,n=juliet,r=abcdef,x=ext";
    for end in 0..first.len() {
        let step = first_step(
            Mechanism::ScramSha256Plus,
            tls13(),
            &first.as_bytes()[..end],
        );
        assert!(
            matches!(
                step,
                Step::Failure(_) | Step::Challenge(_) | Step::NeedCredentials { .. }
            ),
            "{:?} → {step:?}",
            &first[..end]
        );
    }
    let fin =
        "c=cD10bHMtZXhwb3J0ZXIsLA==,r=abcdef,x=1,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for end in 0..=fin.len() {
        let mut s = at_final_step(Mechanism::ScramSha256Plus);
        assert!(matches!(s.step(&fin.as_bytes()[..end]), Step::Failure(_)));
    }
}
