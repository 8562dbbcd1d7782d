//! Every limit: exact boundaries, and failing early on input sent slowly.

mod common;

use common::*;
use zkfire_xml::{Limits, StreamEvent, StreamParser, XmlError, MAX_TOKEN_BYTES};

fn limits(max_stanza_bytes: usize) -> Limits {
    Limits {
        max_stanza_bytes,
        max_depth: 8,
        max_attributes: 6,
    }
}

/// Stanzas of exactly `len` bytes, in several shapes (the padding goes where
/// the `{}` is). Each shape must be shorter than 64 bytes without padding.
fn shaped(len: usize) -> Vec<String> {
    let shapes = [
        "<message to='a@b'><body>{}</body></message>",
        "<presence a='{}'/>",
        "<iq\ttype='get' >{}<ping xmlns='urn:xmpp:ping' /></iq >",
        "<m><![CDATA[{}]]>&amp;&#x41;</m>",
        "<stream:features>{}</stream:features>",
        "<x:y xmlns:x='urn:x'>\r\n{}</x:y>",
    ];
    shapes
        .iter()
        .map(|shape| {
            let pad = len - (shape.len() - 2);
            shape.replace("{}", &"p".repeat(pad))
        })
        .collect()
}

fn stanza_count(events: &[StreamEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Stanza(_)))
        .count()
}

#[test]
fn stanza_of_exactly_the_limit_passes_and_one_byte_more_fails() {
    const LIMIT: usize = 200;
    for (fits, too_big) in shaped(LIMIT).into_iter().zip(shaped(LIMIT + 1)) {
        assert_eq!(fits.len(), LIMIT);
        // A stanza before, and keepalives around, must not count.
        let ok = format!("{HEADER}  <presence/>\n{fits}\n ");
        let bad = format!("{HEADER}  <presence/>\n{too_big}\n ");
        for (events, err) in [
            parse_with(limits(LIMIT), ok.as_bytes()),
            parse_bytewise(limits(LIMIT), ok.as_bytes()),
        ] {
            assert_eq!(err, None, "{fits}");
            assert_eq!(stanza_count(&events), 2, "{fits}");
        }
        for (events, err) in [
            parse_with(limits(LIMIT), bad.as_bytes()),
            parse_bytewise(limits(LIMIT), bad.as_bytes()),
        ] {
            assert_eq!(
                err,
                Some(XmlError::StanzaTooBig { limit: LIMIT }),
                "{too_big}"
            );
            assert_eq!(stanza_count(&events), 1, "{too_big}");
        }
    }
}

#[test]
fn boundary_holds_at_every_split_point() {
    const LIMIT: usize = 200;
    let fits = &shaped(LIMIT)[2];
    let too_big = &shaped(LIMIT + 1)[2];
    for (stanza, expect_ok) in [(fits, true), (too_big, false)] {
        let input = format!("{HEADER}<a/> {stanza}<b/>");
        let input = input.as_bytes();
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            let (events, err) = feed_chunks(limits(LIMIT), [a, b]);
            if expect_ok {
                assert_eq!((stanza_count(&events), err), (3, None), "split at {i}");
            } else {
                assert_eq!(
                    (stanza_count(&events), err),
                    (1, Some(XmlError::StanzaTooBig { limit: LIMIT })),
                    "split at {i}"
                );
            }
        }
    }
}

#[test]
fn boundary_holds_after_many_characters_split_across_chunks() {
    const LIMIT: usize = 200;
    // Fed a byte at a time, every character here is split across chunks;
    // any byte lost in the count would add up over the 300 stanzas.
    let before = "<m a='é'>☃𝄞</m> ".repeat(300);
    let fits = format!("{HEADER}{before}{}", shaped(LIMIT)[0]);
    let (events, err) = parse_bytewise(limits(LIMIT), fits.as_bytes());
    assert_eq!((stanza_count(&events), err), (301, None));
    let too_big = format!("{HEADER}{before}{}", shaped(LIMIT + 1)[0]);
    let (events, err) = parse_bytewise(limits(LIMIT), too_big.as_bytes());
    assert_eq!(
        (stanza_count(&events), err),
        (300, Some(XmlError::StanzaTooBig { limit: LIMIT }))
    );
}

/// Feeds `head`, then `filler` over and over; returns the error and how many
/// filler bytes went in before it.
fn feed_until_error(
    limits: Limits,
    head: &[u8],
    filler: &[u8],
    max_bytes: usize,
) -> (XmlError, usize) {
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    p.feed(HEADER.as_bytes(), &mut out).unwrap();
    p.feed(head, &mut out).unwrap();
    let mut sent = 0;
    while sent < max_bytes {
        if let Err(e) = p.feed(filler, &mut out) {
            return (e, sent + filler.len());
        }
        sent += filler.len();
    }
    panic!("no error after {sent} bytes");
}

#[test]
fn huge_stanza_sent_slowly_fails_after_about_the_limit() {
    let limit = 4096;
    let cases: [(&[u8], &[u8]); 4] = [
        (b"<message><body>", &[b'a'; 100]),
        (b"<message><body>", "☃".as_bytes()),
        (b"<message a='", &[b'v'; 10]),
        (b"<message>", b"<b>x</b>"),
    ];
    for (head, filler) in cases {
        let (err, sent) = feed_until_error(limits(limit), head, filler, 10_000_000);
        assert_eq!(err, XmlError::StanzaTooBig { limit });
        assert!(
            sent <= limit + filler.len(),
            "failed only after {sent} bytes"
        );
    }
}

#[test]
fn huge_stanza_in_one_chunk_fails() {
    let limit = 4096;
    let mut input = format!("{HEADER}<message><body>").into_bytes();
    input.extend(std::iter::repeat_n(b'a', 10_000_000));
    assert_eq!(
        parse_with(limits(limit), &input).1,
        Some(XmlError::StanzaTooBig { limit })
    );
}

#[test]
fn long_text_within_the_limit_is_fine() {
    let text = "ab☃".repeat(40_000);
    let input = format!("{HEADER}<message><body>{text}</body></message>");
    let whole = parse(input.as_bytes());
    let (events, err) = &whole;
    assert_eq!(*err, None);
    let StreamEvent::Stanza(m) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(
        m.child_text("body", zkfire_xml::ns::CLIENT).as_deref(),
        Some(&text[..])
    );
    let mut rng = Rng(7);
    let chunks = random_chunks(input.as_bytes(), &mut rng, 1000);
    assert_eq!(feed_chunks(Limits::default(), chunks), whole);
}

#[test]
fn attribute_value_longer_than_the_token_cap_is_refused() {
    let value = "v".repeat(MAX_TOKEN_BYTES + 1);
    let err = error_of(
        Limits::default(),
        format!("<message id='{value}'/>").as_bytes(),
    );
    assert_eq!(
        err,
        XmlError::TokenTooLong {
            limit: MAX_TOKEN_BYTES
        }
    );
    assert_eq!(err.stream_condition(), "policy-violation");
    let value = "v".repeat(MAX_TOKEN_BYTES);
    assert_eq!(stanzas(&format!("<message id='{value}'/>")).len(), 1);
}

#[test]
fn attribute_value_longer_than_a_small_stanza_limit_is_too_big() {
    let err = error_of(
        limits(300),
        format!("<m a='{}'/>", "v".repeat(400)).as_bytes(),
    );
    assert_eq!(err, XmlError::StanzaTooBig { limit: 300 });
}

#[test]
fn stream_header_is_bounded() {
    let n = HEADER.len();
    assert_eq!(parse_with(limits(n), HEADER.as_bytes()).1, None);
    assert_eq!(
        parse_bytewise(limits(n - 1), HEADER.as_bytes()).1,
        Some(XmlError::StanzaTooBig { limit: n - 1 })
    );
    // An endless header fails after about the limit.
    let mut p = StreamParser::new(limits(1000));
    let mut out = Vec::new();
    p.feed(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='",
        &mut out,
    )
    .unwrap();
    let mut sent = 0;
    let err = loop {
        if let Err(e) = p.feed(b"aaaaaaaaaa", &mut out) {
            break e;
        }
        sent += 10;
        assert!(sent < 2000);
    };
    assert_eq!(err, XmlError::StanzaTooBig { limit: 1000 });
}

#[test]
fn whitespace_before_the_header_is_bounded() {
    let mut p = StreamParser::new(limits(1000));
    let mut out = Vec::new();
    let mut sent = 0;
    let err = loop {
        if let Err(e) = p.feed(b"          ", &mut out) {
            break e;
        }
        sent += 10;
        assert!(sent < 2000);
    };
    assert_eq!(err, XmlError::StanzaTooBig { limit: 1000 });
}

fn nested(depth: usize) -> String {
    format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
}

#[test]
fn depth_of_exactly_the_limit_passes_and_one_more_fails() {
    let ok = format!("{HEADER}{}", nested(8));
    assert_eq!(
        stanza_count(&parse_with(limits(10_000), ok.as_bytes()).0),
        1
    );
    let ok = format!("{HEADER}<a><a><a><a><a><a><a><a/></a></a></a></a></a></a></a>");
    assert_eq!(parse_with(limits(10_000), ok.as_bytes()).1, None);
    for bad in [
        nested(9),
        "<a><a><a><a><a><a><a><a><a/></a></a></a></a></a></a></a></a>".into(),
    ] {
        let input = format!("{HEADER}{bad}");
        assert_eq!(
            parse_bytewise(limits(10_000), input.as_bytes()).1,
            Some(XmlError::TooDeep { limit: 8 })
        );
    }
}

#[test]
fn deep_nesting_fails_fast_without_recursion() {
    let big = Limits {
        max_stanza_bytes: usize::MAX,
        max_depth: 64,
        max_attributes: 64,
    };
    let input = format!("{HEADER}{}", "<a>".repeat(1_000_000));
    assert_eq!(
        parse_with(big, input.as_bytes()).1,
        Some(XmlError::TooDeep { limit: 64 })
    );
    // Sent one tag at a time, it fails at the first tag too deep.
    let (err, sent) = feed_until_error(limits(usize::MAX), b"", b"<a>", 10_000 * 3);
    assert_eq!(err, XmlError::TooDeep { limit: 8 });
    assert_eq!(sent, 9 * 3);
}

#[test]
fn attributes_of_exactly_the_limit_pass_and_one_more_fails() {
    // Namespace declarations count too.
    let ok = "<m xmlns='urn:m' xmlns:p='urn:p' p:a='1' b='2' c='3' d='4'/>";
    assert_eq!(stanzas(ok).len(), 1);
    assert_eq!(
        parse_with(limits(10_000), format!("{HEADER}{ok}").as_bytes()).1,
        None
    );
    let bad = "<m xmlns='urn:m' xmlns:p='urn:p' p:a='1' b='2' c='3' d='4' e='5'/>";
    assert_eq!(
        error_of(limits(10_000), bad.as_bytes()),
        XmlError::TooManyAttributes { limit: 6 }
    );
    // Nested elements have their own count.
    let nested_ok =
        "<m a='1' b='2' c='3' d='4' e='5' f='6'><n a='1' b='2' c='3' d='4' e='5' f='6'/></m>";
    assert_eq!(
        parse_with(limits(10_000), format!("{HEADER}{nested_ok}").as_bytes()).1,
        None
    );
}

#[test]
fn header_attributes_are_limited_too() {
    let header =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
                  to='a' from='b' version='1.0' xml:lang='en' id='x'>";
    assert_eq!(
        parse_with(limits(10_000), header.as_bytes()).1,
        Some(XmlError::TooManyAttributes { limit: 6 })
    );
}

#[test]
fn endless_attributes_fail_at_the_first_one_over() {
    let (err, sent) = feed_until_error(limits(usize::MAX), b"<m", b" a='1'", 1_000_000);
    assert_eq!(err, XmlError::TooManyAttributes { limit: 6 });
    // rxml reports an attribute once the next one starts (or the head ends).
    assert!(sent <= 8 * 6, "{sent}");
}

#[test]
fn limit_errors_are_policy_violations() {
    for e in [
        XmlError::StanzaTooBig { limit: 1 },
        XmlError::TooDeep { limit: 1 },
        XmlError::TooManyAttributes { limit: 1 },
        XmlError::TokenTooLong { limit: 1 },
    ] {
        assert_eq!(e.stream_condition(), "policy-violation");
    }
}
