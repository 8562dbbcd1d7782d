//! Parsing of the SCRAM messages a client sends (RFC 5802 section 7). The
//! parsers only check syntax; `None` means malformed. They keep slices of the
//! raw message because AuthMessage must be built from the exact bytes sent.

use crate::crypto;

/// The gs2-cbind-flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotSupported,
    /// `y`: the client supports it but thinks the server does not.
    ServerNotSupported,
    /// `p=<cb-name>`: the client binds to this channel binding type.
    Bound(&'a str),
}

#[derive(Debug)]
pub(crate) struct ClientFirst<'a> {
    pub cb_flag: CbFlag<'a>,
    /// Decoded, not prepared: an authzid is a JID, not a SASL name.
    pub authzid: Option<String>,
    /// Decoded (`=2C`, `=3D`) but not yet SASLprepped.
    pub username: String,
    pub nonce: &'a str,
    /// Everything up to and including the second comma.
    pub gs2_header: &'a str,
    /// client-first-message-bare, the first part of AuthMessage.
    pub bare: &'a str,
}

#[derive(Debug)]
pub(crate) struct ClientFinal<'a> {
    /// Decoded `c=`: gs2 header followed by the channel binding data.
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    /// Decoded `p=`.
    pub proof: Vec<u8>,
    /// client-final-message-without-proof, the last part of AuthMessage.
    pub without_proof: &'a str,
}

pub(crate) fn parse_client_first(msg: &str) -> Option<ClientFirst<'_>> {
    let (flag, rest) = msg.split_once(',')?;
    let cb_flag = match flag {
        "n" => CbFlag::NotSupported,
        "y" => CbFlag::ServerNotSupported,
        _ => {
            let name = flag.strip_prefix("p=")?;
            if !valid_cb_name(name) {
                return None;
            }
            CbFlag::Bound(name)
        }
    };
    let (authz, bare) = rest.split_once(',')?;
    let authzid = if authz.is_empty() {
        None
    } else {
        Some(decode_saslname(authz.strip_prefix("a=")?)?)
    };
    let gs2_header = &msg[..msg.len() - bare.len()];

    let mut parts = bare.split(',');
    // A leading `m=` (reserved-mext) fails here: RFC 5802 says a server that
    // does not understand it must fail, and we understand none.
    let username = decode_saslname(parts.next()?.strip_prefix("n=")?)?;
    let nonce = parts.next()?.strip_prefix("r=")?;
    if !valid_nonce(nonce) {
        return None;
    }
    // Optional extensions are covered by AuthMessage, so ignoring
    // well-formed ones is safe.
    if !parts.all(valid_extension) {
        return None;
    }
    Some(ClientFirst {
        cb_flag,
        authzid,
        username,
        nonce,
        gs2_header,
        bare,
    })
}

pub(crate) fn parse_client_final(msg: &str) -> Option<ClientFinal<'_>> {
    let parts: Vec<&str> = msg.split(',').collect();
    let [first, second, middle @ .., last] = parts.as_slice() else {
        return None;
    };
    let channel_binding = crypto::b64_decode(first.strip_prefix("c=")?)?;
    let nonce = second.strip_prefix("r=")?;
    if !valid_nonce(nonce) || !middle.iter().copied().all(valid_extension) {
        return None;
    }
    let proof = crypto::b64_decode(last.strip_prefix("p=")?)?;
    let without_proof = &msg[..msg.len() - last.len() - 1];
    Some(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// Decodes a saslname: `=2C` is a comma, `=3D` an equals sign, any other `=`
/// is an error, and so are NUL and an empty name.
pub(crate) fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        match c {
            '\0' | ',' => return None,
            '=' => {
                if rest.starts_with("=2C") {
                    out.push(',');
                } else if rest.starts_with("=3D") {
                    out.push('=');
                } else {
                    return None;
                }
                rest = &rest[3..];
            }
            _ => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    Some(out)
}

/// Encodes a name as a saslname (the inverse of [`decode_saslname`]).
pub(crate) fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// printable = %x21-2B / %x2D-7E: visible ASCII except the comma.
pub(crate) fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// cb-name = 1*(ALPHA / DIGIT / "." / "-")
fn valid_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// attr-val = ALPHA "=" value. The attributes SCRAM itself defines are not
/// accepted as extensions, so a repeated `p=` or `r=` cannot slip through.
fn valid_extension(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3
        && b[0].is_ascii_alphabetic()
        && !b"acveimnprs".contains(&b[0])
        && b[1] == b'='
        && !b.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_plain() {
        let m = parse_client_first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!(m.cb_flag, CbFlag::NotSupported);
        assert_eq!(m.authzid, None);
        assert_eq!(m.username, "user");
        assert_eq!(m.nonce, "fyko+d2lbbFgONRv9qkxdawL");
        assert_eq!(m.gs2_header, "n,,");
        assert_eq!(m.bare, "n=user,r=fyko+d2lbbFgONRv9qkxdawL");
    }

    #[test]
    fn client_first_with_binding_authzid_and_escapes() {
        let m =
            parse_client_first("p=tls-exporter,a=admin=2Cx@example.org,n=a=3Db=2Cc,r=abc,x=ext")
                .unwrap();
        assert_eq!(m.cb_flag, CbFlag::Bound("tls-exporter"));
        assert_eq!(m.authzid.as_deref(), Some("admin,x@example.org"));
        assert_eq!(m.username, "a=b,c");
        assert_eq!(m.gs2_header, "p=tls-exporter,a=admin=2Cx@example.org,");
        assert_eq!(m.bare, "n=a=3Db=2Cc,r=abc,x=ext");
        let y = parse_client_first("y,,n=u,r=abc").unwrap();
        assert_eq!(y.cb_flag, CbFlag::ServerNotSupported);
    }

    #[test]
    fn client_first_malformed() {
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=u,r=abc",
            "p=,,n=u,r=abc",
            "p=tls exporter,,n=u,r=abc",
            "n,a=,n=u,r=abc",
            "n,b=x,n=u,r=abc",
            "n,,m=ext,n=u,r=abc",
            "n,,n=,r=abc",
            "n,,n=u=2,r=abc",
            "n,,n=u=41,r=abc",
            "n,,n=u\0,r=abc",
            "n,,n=u",
            "n,,n=u,r=",
            "n,,n=u,r=a\u{e9}",
            "n,,r=abc,n=u",
            "n,,n=u,r=abc,",
            "n,,n=u,r=abc,p=x",
            "n,,n=u,r=abc,1=x",
            "n,,n=u,r=abc,x=",
        ] {
            assert!(parse_client_first(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn client_final() {
        let m = parse_client_final("c=biws,r=abc,x=1,p=AAAA").unwrap();
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.nonce, "abc");
        assert_eq!(m.proof, [0, 0, 0]);
        assert_eq!(m.without_proof, "c=biws,r=abc,x=1");
    }

    #[test]
    fn client_final_malformed() {
        for bad in [
            "",
            "c=biws",
            "c=biws,r=abc",
            "c=biws,r=abc,",
            "c=biw,r=abc,p=AAAA",
            "c=biws,r=abc,p=AAA",
            "c=biws,r=abc,p=AAAA,x=1",
            "r=abc,c=biws,p=AAAA",
            "c=biws,r=abc,p=AAAA,p=AAAA",
            "c=biws,p=AAAA,r=abc",
            "c=biws,r=a,bc,p=AAAA",
        ] {
            assert!(parse_client_final(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn saslname_round_trip() {
        for s in ["plain", "a,b", "a=b", "=,=,", "\u{e9}t\u{e9}"] {
            assert_eq!(decode_saslname(&encode_saslname(s)).as_deref(), Some(s));
        }
    }
}
