//! Input that must end the stream, and with which condition.

mod common;

use common::*;
use zkfire_xml::{Limits, StreamEvent, StreamParser, XmlError};

/// The stream condition of the error `input` fails with, checked to be the
/// same whether it arrives whole or a byte at a time.
fn condition(input: &[u8]) -> &'static str {
    let (whole_events, whole) = parse(input);
    let (bytewise_events, bytewise) = parse_bytewise(Limits::default(), input);
    let whole =
        whole.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)));
    let bytewise = bytewise.expect("no error when fed bytewise");
    assert_eq!(whole.stream_condition(), bytewise.stream_condition());
    assert_eq!(whole_events, bytewise_events);
    whole.stream_condition()
}

fn in_stream(body: &str) -> Vec<u8> {
    format!("{HEADER}{body}").into_bytes()
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><lolz>&lol9;</lolz>"#;

#[test]
fn billion_laughs_is_restricted() {
    assert_eq!(condition(BILLION_LAUGHS.as_bytes()), "restricted-xml");
    let (events, _) = parse(BILLION_LAUGHS.as_bytes());
    assert!(events.is_empty());
}

#[test]
fn billion_laughs_inside_the_stream_is_restricted() {
    let body = BILLION_LAUGHS.split_once("?>").unwrap().1;
    assert_eq!(condition(&in_stream(body)), "restricted-xml");
}

#[test]
fn doctype_is_restricted() {
    assert_eq!(condition(b"<!DOCTYPE stream>"), "restricted-xml");
    assert_eq!(
        condition(b"<?xml version='1.0'?>\n<!DOCTYPE stream SYSTEM 'x'>"),
        "restricted-xml"
    );
    assert_eq!(condition(&in_stream("<!DOCTYPE x>")), "restricted-xml");
    assert_eq!(
        condition(&in_stream("<m><!ENTITY x 'y'></m>")),
        "restricted-xml"
    );
}

#[test]
fn undeclared_entities_are_restricted_and_not_expanded() {
    assert_eq!(condition(&in_stream("<m>&lol;</m>")), "restricted-xml");
    assert_eq!(condition(&in_stream("<m a='&lol;'/>")), "restricted-xml");
    assert_eq!(condition(&in_stream("<m>&nbsp;</m>")), "restricted-xml");
}

#[test]
fn processing_instructions_are_restricted() {
    assert_eq!(condition(b"<?php echo 1; ?>"), "restricted-xml");
    assert_eq!(
        condition(b"<?xml-stylesheet href='a.xsl'?><stream:stream>"),
        "restricted-xml"
    );
    assert_eq!(condition(b"<?xml version='1.0'?><?foo?>"), "restricted-xml");
    assert_eq!(
        condition(b"<?xml version='1.0'?><?xml-model href='x'?>"),
        "restricted-xml"
    );
    assert_eq!(condition(&in_stream("<?foo bar?>")), "restricted-xml");
    assert_eq!(
        condition(&in_stream("<m><?foo bar?></m>")),
        "restricted-xml"
    );
    // A second XML declaration is a processing instruction here.
    assert_eq!(
        condition(&in_stream("<?xml version='1.0'?>")),
        "restricted-xml"
    );
}

#[test]
fn xml_declaration_forms_are_accepted() {
    for decl in [
        "<?xml version='1.0'?>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<?xml version='1.0' encoding='utf-8' standalone='yes'?>\r\n  ",
        "",
    ] {
        let input =
            format!("{decl}<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
        let (events, err) = parse(input.as_bytes());
        assert_eq!(err, None, "{decl}");
        assert_eq!(events.len(), 1);
    }
}

#[test]
fn other_xml_versions_and_encodings_are_restricted() {
    assert_eq!(condition(b"<?xml version='1.1'?>"), "restricted-xml");
    assert_eq!(
        condition(b"<?xml version='1.0' encoding='ISO-8859-1'?>"),
        "restricted-xml"
    );
}

#[test]
fn cdata_before_the_header_is_not_well_formed() {
    assert_eq!(condition(b"<![CDATA[]]>+]"), "not-well-formed");
    assert_eq!(
        condition(b"<?xml version='1.0'?> <![CDATA[x]]>"),
        "not-well-formed"
    );
    // Inside a stanza it is content like any other.
    let input = format!("{HEADER}<m><![CDATA[<x>]]></m><n><![CDATA[]]></n>");
    let (events, err) = parse_bytewise(Limits::default(), input.as_bytes());
    assert_eq!((events.len(), err), (3, None));
}

#[test]
fn pi_check_does_not_beat_an_earlier_limit() {
    let tiny = Limits {
        max_stanza_bytes: 3,
        ..Limits::default()
    };
    // The `-` that makes it a processing instruction is byte 6, after the
    // limit; the `[` of `<![` is byte 3, before it.
    for (input, expected) in [
        (
            &b"<?xml-stylesheet?>"[..],
            XmlError::StanzaTooBig { limit: 3 },
        ),
        (
            b"<![CDATA[",
            XmlError::NotWellFormed("CDATA section before the stream header".into()),
        ),
    ] {
        assert_eq!(parse_with(tiny, input).1, Some(expected.clone()));
        assert_eq!(parse_bytewise(tiny, input).1, Some(expected));
    }
}

#[test]
fn comments_are_restricted() {
    assert_eq!(condition(b"<!-- hi --><stream:stream>"), "restricted-xml");
    assert_eq!(condition(&in_stream("<!-- hi -->")), "restricted-xml");
    assert_eq!(
        condition(&in_stream("<m><!-- hi --></m>")),
        "restricted-xml"
    );
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    let cases: [&[u8]; 7] = [
        b"<m>\xff\xfe</m>",
        b"<m>ok \xc3\x28 </m>",
        b"<m a='\xc3\x28'/>",
        b"<m\xff/>",
        b"<m>\xc0\xaf</m>",
        b"<m>\xed\xa0\x80</m>",
        b"<m>\xe2\x98</m>",
    ];
    for body in cases {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(body);
        assert_eq!(condition(&input), "not-well-formed", "{body:?}");
    }
    assert_eq!(condition(b"<stream:stream to='\xff'>"), "not-well-formed");
}

#[test]
fn broken_utf8_fails_at_the_same_byte_however_it_is_split() {
    // rxml would hold the text back behind the CRs; the size limit is
    // crossed a little later. Every split must report the bad byte.
    let limits = Limits {
        max_stanza_bytes: 300,
        ..Limits::default()
    };
    let mut input = in_stream("<m>x");
    input.extend_from_slice(&[b'\r'; 50]);
    input.push(0xff);
    input.extend_from_slice(&[b'\r'; 500]);
    for n in 1..80 {
        let (_, err) = feed_chunks(limits, input.chunks(n));
        assert!(
            matches!(err, Some(XmlError::NotWellFormed(_))),
            "chunks of {n}: {err:?}"
        );
    }
    // And it does not wait for the text to end.
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(&in_stream("<m>\r\r"), &mut out).unwrap();
    assert!(p.feed(b"\xc3", &mut out).is_ok());
    assert!(matches!(
        p.feed(b"(", &mut out),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn non_characters_are_not_well_formed() {
    assert_eq!(condition(&in_stream("<m>\u{FFFE}</m>")), "not-well-formed");
    assert_eq!(
        condition(&in_stream("<m a='\u{FFFF}'/>")),
        "not-well-formed"
    );
    assert_eq!(condition(&in_stream("<m>a\r\r\u{FFFF}")), "not-well-formed");
}

#[test]
fn control_characters_are_not_well_formed() {
    assert_eq!(condition(&in_stream("<m>\u{0}</m>")), "not-well-formed");
    assert_eq!(condition(&in_stream("<m>&#0;</m>")), "not-well-formed");
    assert_eq!(condition(&in_stream("<m a='\u{1}'/>")), "not-well-formed");
}

#[test]
fn garbage_before_the_header_fails_at_once() {
    assert_eq!(
        condition(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        "not-well-formed"
    );
    assert_eq!(
        condition(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        "not-well-formed"
    );
    assert_eq!(condition(b"  \n hello <stream:stream>"), "not-well-formed");
    // Nothing to wait for: the first byte decides.
    let mut p = StreamParser::new(Limits::default());
    assert!(matches!(
        p.feed(b"G", &mut Vec::new()),
        Err(XmlError::NotWellFormed(_))
    ));
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(b"<?xml version='1.0'?>", &mut out).unwrap();
    assert!(matches!(
        p.feed(b"x", &mut out),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn text_between_stanzas_fails_at_once() {
    assert_eq!(condition(&in_stream("hello")), "not-well-formed");
    assert_eq!(
        condition(&in_stream("<presence/> x <presence/>")),
        "not-well-formed"
    );
    assert_eq!(condition(&in_stream("<a/>x]]")), "not-well-formed");
    assert_eq!(condition(&in_stream("<a/>x\r")), "not-well-formed");
    assert_eq!(condition(&in_stream("<![CDATA[x]]>")), "not-well-formed");
    assert_eq!(
        condition(&in_stream("<a/><![CDATA[]]>\t\u{7f}\t[\r")),
        "not-well-formed"
    );
    // U+00A0 is not XML whitespace.
    assert_eq!(condition(&in_stream("\u{a0}")), "not-well-formed");
    // Even with no `<` after it.
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(HEADER.as_bytes(), &mut out).unwrap();
    assert!(p.feed(b" ", &mut out).is_ok());
    assert!(matches!(
        p.feed(b"x", &mut out),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn unclosed_and_mismatched_tags_are_not_well_formed() {
    assert_eq!(condition(&in_stream("<a><b></a></b>")), "not-well-formed");
    assert_eq!(
        condition(&in_stream("<message><body></message>")),
        "not-well-formed"
    );
    assert_eq!(
        condition(&in_stream("<message></stream:stream>")),
        "not-well-formed"
    );
    assert_eq!(
        condition(&in_stream("<stream:features></features>")),
        "not-well-formed"
    );
    assert_eq!(condition(&in_stream("</message>")), "not-well-formed");
    assert_eq!(condition(&in_stream("<message<")), "not-well-formed");
    assert_eq!(condition(&in_stream("<m a=1/>")), "not-well-formed");
    assert_eq!(condition(&in_stream("<m a='1'b='2'/>")), "not-well-formed");
    assert_eq!(
        condition(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'></stream>"),
        "not-well-formed"
    );
}

#[test]
fn duplicate_attributes_are_not_well_formed() {
    assert_eq!(condition(&in_stream("<m a='1' a='2'/>")), "not-well-formed");
    assert_eq!(
        condition(&in_stream("<m xmlns:p='u' xmlns:q='u' p:a='1' q:a='2'/>")),
        "not-well-formed"
    );
    assert_eq!(
        condition(&in_stream("<m xmlns:p='u' xmlns:p='v'/>")),
        "not-well-formed"
    );
}

#[test]
fn reserved_namespaces_cannot_be_bound() {
    for body in [
        "<m xmlns:p='http://www.w3.org/2000/xmlns/'/>",
        "<m xmlns='http://www.w3.org/2000/xmlns/'/>",
        "<m xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "<m xmlns='http://www.w3.org/XML/1998/namespace'/>",
    ] {
        assert_eq!(condition(&in_stream(body)), "not-well-formed", "{body}");
    }
}

#[test]
fn undeclared_prefixes_are_bad_namespace_prefixes() {
    assert_eq!(condition(&in_stream("<foo:bar/>")), "bad-namespace-prefix");
    assert_eq!(
        condition(&in_stream("<m foo:a='1'/>")),
        "bad-namespace-prefix"
    );
    assert_eq!(
        condition(&in_stream("<m><p:x xmlns:q='u'/></m>")),
        "bad-namespace-prefix"
    );
    assert_eq!(condition(&in_stream("<xml:m/>")), "bad-namespace-prefix");
    assert_eq!(condition(b"<s:stream>"), "bad-namespace-prefix");
    // A prefix declared on a sibling is out of scope.
    assert_eq!(
        condition(&in_stream("<m><a xmlns:p='u'/><p:b/></m>")),
        "bad-namespace-prefix"
    );
}

#[test]
fn cdata_between_stanzas_is_not_well_formed() {
    // Only whitespace goes between stanzas, and as plain whitespace.
    assert_eq!(
        condition(&in_stream("<a/><![CDATA[ \n]]><b/>")),
        "not-well-formed"
    );
    assert_eq!(condition(&in_stream("<![CDATA[]]>")), "not-well-formed");
    // Inside a stanza it is content, including a `<![` within it.
    assert_eq!(stanzas("<m><![CDATA[<![x]]></m>")[0].text(), "<![x");
}

#[test]
fn second_stream_header_inside_the_stream_fails_at_once() {
    let second = HEADER.split_once("?>").unwrap().1;
    assert_eq!(condition(&in_stream(second)), "invalid-xml");
    assert_eq!(
        condition(&in_stream(
            "<s:stream xmlns:s='http://etherx.jabber.org/streams'>"
        )),
        "invalid-xml"
    );
    // With an XML declaration it is already restricted at the `<?`.
    assert_eq!(condition(&in_stream(HEADER)), "restricted-xml");
    // Deeper down, or in another namespace, it is just an element.
    assert_eq!(
        stanzas("<m><stream:stream/></m><stream xmlns='urn:other'/>").len(),
        2
    );
}

#[test]
fn anything_but_whitespace_after_the_end_fails() {
    assert_eq!(
        condition(&in_stream("</stream:stream>x]]")),
        "not-well-formed"
    );
    assert_eq!(
        condition(&in_stream("</stream:stream><a/>")),
        "not-well-formed"
    );
    let (events, err) =
        parse(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/> \n");
    assert_eq!((events.len(), err), (2, None));
    let (events, err) = parse(&in_stream("<presence/></stream:stream>\n <presence/>"));
    assert!(matches!(err, Some(XmlError::NotWellFormed(_))));
    assert_eq!(events.last(), Some(&StreamEvent::End));
}

#[test]
fn events_before_an_error_are_delivered() {
    let (events, err) = parse(&in_stream("<a/><b/>oops<c/>"));
    assert!(err.is_some());
    assert_eq!(events.len(), 3);
}

#[test]
fn errors_are_final_and_repeat() {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(HEADER.as_bytes(), &mut out).unwrap();
    let first = p.feed(b"<m>&lol;</m>", &mut out).unwrap_err();
    for _ in 0..3 {
        assert_eq!(p.feed(b"<presence/>", &mut out), Err(first.clone()));
        assert_eq!(p.feed(b"", &mut out), Err(first.clone()));
    }
    assert_eq!(out.len(), 1);
}
