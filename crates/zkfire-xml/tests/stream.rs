//! Stream semantics: header, stanzas, namespaces, content, splits, reset.

mod common;

use common::*;
use zkfire_xml::{ns, Element, Limits, StreamEvent, StreamHeader, StreamParser};

/// A realistic client stream: declaration, header, keepalives, nonzas,
/// stanzas with UTF-8, references, CDATA, foreign namespaces, then the end.
const SESSION: &str = "<?xml version='1.0' encoding='UTF-8'?>\n\
    <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
    to='example.com' from='juliet@example.com' version='1.0' xml:lang='en'>\n \
    <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\r\n\
    <auth xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\" mechanism=\"PLAIN\">AGp1bGlldABy</auth>\t\
    <iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
    <resource>balcony</resource></bind></iq>   \
    <message to='romeo@example.net' id='m&amp;1' xml:lang='fr'>\
    <body>Où es-tu, ☃ 𝄞? 1 &lt; 2 &#x41;&#66; <![CDATA[<raw> & ]]> fin</body>\
    <x:data xmlns:x='urn:x' x:kind='k'>a<b/>c</x:data>\
    <thread>\r\nline</thread></message>\n\
    <presence/> <r xmlns='urn:xmpp:sm:3'/>\n</stream:stream>";

fn session_events() -> Vec<StreamEvent> {
    let (events, err) = parse(SESSION.as_bytes());
    assert_eq!(err, None);
    events
}

#[test]
fn realistic_session_parses() {
    let events = session_events();
    assert_eq!(events.len(), 8, "{events:#?}");
    assert!(matches!(events[0], StreamEvent::Header(_)));
    assert_eq!(events[7], StreamEvent::End);
    let names: Vec<&str> = events[1..7]
        .iter()
        .map(|e| match e {
            StreamEvent::Stanza(s) => s.name(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        ["starttls", "auth", "iq", "message", "presence", "r"]
    );
    let StreamEvent::Stanza(message) = &events[4] else {
        unreachable!()
    };
    assert_eq!(message.attr("id"), Some("m&1"));
    assert_eq!(message.attr("xml:lang"), Some("fr"));
    assert_eq!(
        message.child_text("body", ns::CLIENT).as_deref(),
        Some("Où es-tu, ☃ 𝄞? 1 < 2 AB <raw> &  fin")
    );
    let data = message.child("data", "urn:x").unwrap();
    assert_eq!(data.attr("{urn:x}kind"), Some("k"));
    assert_eq!(data.text(), "ac");
    assert_eq!(
        message.child_text("thread", ns::CLIENT).as_deref(),
        Some("\nline")
    );
}

#[test]
fn every_split_point_gives_the_same_events() {
    let whole = session_events();
    let input = SESSION.as_bytes();
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        let (events, err) = feed_chunks(Limits::default(), [a, b]);
        assert_eq!(err, None, "split at {i}");
        assert_eq!(events, whole, "split at {i}");
    }
}

#[test]
fn byte_at_a_time_gives_the_same_events() {
    assert_eq!(
        parse_bytewise(Limits::default(), SESSION.as_bytes()),
        (session_events(), None)
    );
}

#[test]
fn random_chunkings_give_the_same_events() {
    let whole = session_events();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for max in [2, 3, 7, 16, 64] {
        for _ in 0..50 {
            let chunks = random_chunks(SESSION.as_bytes(), &mut rng, max);
            assert_eq!(
                feed_chunks(Limits::default(), chunks),
                (whole.clone(), None)
            );
        }
    }
}

#[test]
fn empty_feeds_are_harmless() {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    for chunk in SESSION.as_bytes().chunks(5) {
        p.feed(b"", &mut out).unwrap();
        p.feed(chunk, &mut out).unwrap();
    }
    p.feed(b"", &mut out).unwrap();
    assert_eq!(out, session_events());
}

#[test]
fn header_fields() {
    let events = session_events();
    assert_eq!(
        events[0],
        StreamEvent::Header(StreamHeader {
            name: "stream".into(),
            ns: ns::STREAM.into(),
            default_ns: ns::CLIENT.into(),
            to: Some("example.com".into()),
            from: Some("juliet@example.com".into()),
            id: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
        })
    );
}

#[test]
fn header_comes_out_before_any_stanza_arrives() {
    let (events, err) = parse(HEADER.as_bytes());
    assert_eq!(err, None);
    assert!(
        matches!(&events[..], [StreamEvent::Header(h)] if h.to.as_deref() == Some("example.com"))
    );
}

#[test]
fn header_without_declaration_or_default_namespace() {
    let (events, err) =
        parse(b"  \n<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'>");
    assert_eq!(err, None);
    let StreamEvent::Header(h) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((h.name.as_str(), h.ns.as_str()), ("stream", ns::STREAM));
    assert_eq!(h.default_ns, "");
    assert_eq!(h.id.as_deref(), Some("x"));
    assert_eq!((h.to.clone(), h.lang.clone()), (None, None));
}

#[test]
fn any_root_is_reported_for_the_caller_to_check() {
    let (events, err) = parse(b"<html xmlns='http://www.w3.org/1999/xhtml'><p>x</p>");
    assert_eq!(err, None);
    let StreamEvent::Header(h) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(h.name, "html");
    assert_eq!(h.ns, "http://www.w3.org/1999/xhtml");
    assert_eq!(h.default_ns, "http://www.w3.org/1999/xhtml");
    assert!(
        matches!(&events[1], StreamEvent::Stanza(p) if p.is("p", "http://www.w3.org/1999/xhtml"))
    );
}

#[test]
fn unprefixed_elements_inherit_the_stream_default_namespace() {
    let s = stanzas("<message to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>");
    let m = &s[0];
    assert!(m.is("message", ns::CLIENT));
    assert!(m.child("body", ns::CLIENT).is_some());
    let x = m.child("x", "urn:x").unwrap();
    assert!(x.child("y", "urn:x").is_some());
}

#[test]
fn default_namespace_can_be_undeclared() {
    let s = stanzas("<message><x xmlns=''><y/></x></message>");
    let x = s[0].child("x", "").unwrap();
    assert!(x.child("y", "").is_some());
}

#[test]
fn prefixed_elements() {
    let s = stanzas(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>\
         <stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\
         <p:q xmlns:p='urn:p'><p:r/><s/></p:q>",
    );
    assert!(s[0].is("features", ns::STREAM));
    let tls = s[0].child("starttls", ns::TLS).unwrap();
    assert!(tls.child("required", ns::TLS).is_some());
    assert!(s[1].is("error", ns::STREAM));
    assert!(s[1].child("not-well-formed", ns::STREAM_ERRORS).is_some());
    assert!(s[2].is("q", "urn:p"));
    assert!(s[2].child("r", "urn:p").is_some());
    // An unprefixed child still gets the default namespace.
    assert!(s[2].child("s", ns::CLIENT).is_some());
}

#[test]
fn attributes_keep_xml_lang_and_qualify_other_namespaces() {
    let s = stanzas(
        "<message xmlns:e='urn:e' xml:lang='de' e:a='1' b='2' xmlns:f='urn:f'><body f:c='3'/></message>",
    );
    let m = &s[0];
    let attrs: Vec<_> = m.attrs().collect();
    assert_eq!(
        attrs,
        vec![("xml:lang", "de"), ("{urn:e}a", "1"), ("b", "2")]
    );
    assert_eq!(m.attr("xmlns:e"), None);
    assert_eq!(
        m.child("body", ns::CLIENT).unwrap().attr("{urn:f}c"),
        Some("3")
    );
}

#[test]
fn nested_children_and_text() {
    let s = stanzas("<a>one<b>two<c>three</c></b>four<d/>five</a>");
    assert_eq!(
        s[0],
        Element::new("a", ns::CLIENT)
            .with_text("one")
            .with_child(
                Element::new("b", ns::CLIENT)
                    .with_text("two")
                    .with_child(Element::new("c", ns::CLIENT).with_text("three"))
            )
            .with_text("four")
            .with_child(Element::new("d", ns::CLIENT))
            .with_text("five")
    );
}

#[test]
fn whitespace_inside_stanzas_is_kept() {
    let s = stanzas("<a> <b/>\n</a>");
    assert_eq!(s[0].text(), " \n");
}

#[test]
fn entity_and_character_references_are_decoded() {
    let s = stanzas(
        "<m a='&lt;&amp;&gt;&quot;&apos;&#x41;&#66;'>&amp; &lt; &gt; &quot; &apos; &#x41;&#66;&#x1D11E;</m>",
    );
    assert_eq!(s[0].attr("a"), Some("<&>\"'AB"));
    assert_eq!(s[0].text(), "& < > \" ' AB\u{1D11E}");
}

#[test]
fn line_ends_are_normalized() {
    let s = stanzas("<m a='x\r\ny\tz'>1\r\n2\r3&#13;</m>");
    // CR LF is one line end, and a line end in an attribute is one space.
    assert_eq!(s[0].attr("a"), Some("x y z"));
    assert_eq!(s[0].text(), "1\n2\n3\r");
}

#[test]
fn whitespace_keepalives_are_ignored() {
    let (events, err) = feed_chunks(
        Limits::default(),
        [
            HEADER.as_bytes(),
            b" ",
            b"\n",
            b"\r\n\t ",
            b"<presence/>",
            b" ",
            b" ",
            b"<presence/>",
            b"\n",
        ],
    );
    assert_eq!(err, None);
    assert_eq!(events.len(), 3);
}

#[test]
fn unclosed_stanza_waits_for_its_end() {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(HEADER.as_bytes(), &mut out).unwrap();
    p.feed(b"<message><body>hi</body>", &mut out).unwrap();
    assert_eq!(out.len(), 1);
    p.feed(b"</message>", &mut out).unwrap();
    assert!(
        matches!(&out[1], StreamEvent::Stanza(m) if m.child_text("body", ns::CLIENT).as_deref() == Some("hi"))
    );
}

#[test]
fn end_of_stream() {
    let (events, err) = parse(format!("{HEADER}<presence/></stream:stream>\n").as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], StreamEvent::End);
}

#[test]
fn self_closed_stream_header_ends_at_once() {
    let (events, err) = parse(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>");
    assert_eq!(err, None);
    assert!(matches!(
        &events[..],
        [StreamEvent::Header(_), StreamEvent::End]
    ));
}

#[test]
fn reset_starts_a_new_stream() {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Vec::new();
    p.feed(
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").as_bytes(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    p.reset();
    out.clear();
    // The new stream may start with its own XML declaration again.
    p.feed(format!("{HEADER}<presence/>").as_bytes(), &mut out)
        .unwrap();
    assert!(matches!(
        &out[..],
        [StreamEvent::Header(_), StreamEvent::Stanza(_)]
    ));
}

#[test]
fn reset_clears_an_error_and_keeps_the_limits() {
    let limits = Limits {
        max_stanza_bytes: 1000,
        max_depth: 5,
        max_attributes: 9,
    };
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    assert!(p.feed(b"garbage", &mut out).is_err());
    p.reset();
    assert_eq!(p.limits(), limits);
    p.feed(HEADER.as_bytes(), &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn stanza_round_trips_through_serialization() {
    let s = stanzas(
        "<message to='r@e.net' id='a&amp;b' xml:lang='fr' xmlns:e='urn:e' e:x='&apos;\"'>\
         <body>1 &lt; 2 &amp; 3 &gt; 2 &#13; ]]&gt; ☃</body>\
         <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>\
         <p style='a:b'>x<br/>y</p></body></html><n xmlns=''><m/></n>\
         <stream:error/></message>",
    );
    let original = &s[0];
    let xml = original.to_stanza_xml(ns::CLIENT);
    let again = stanzas(&xml);
    assert_eq!(again.len(), 1, "{xml}");
    assert_eq!(&again[0], original, "{xml}");
}

#[test]
fn every_session_stanza_round_trips() {
    for event in session_events() {
        if let StreamEvent::Stanza(s) = event {
            let again = stanzas(&s.to_stanza_xml(ns::CLIENT));
            assert_eq!(again, vec![s]);
        }
    }
}
