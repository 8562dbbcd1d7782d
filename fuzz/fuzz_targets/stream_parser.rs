//! Feeds arbitrary bytes to the stream parser in chunks. Checks: no panic;
//! the chunked parse gives exactly the events and the error condition of a
//! one-piece parse; errors repeat; every stanza survives a
//! serialize-and-parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zkfire_xml::{escape_attr, Element, Limits, StreamEvent, StreamParser, XmlError};

/// Small, so the fuzzer reaches every limit quickly.
const LIMITS: Limits = Limits {
    max_stanza_bytes: 2048,
    max_depth: 12,
    max_attributes: 12,
};

fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<StreamEvent>, Option<XmlError>) {
    let mut parser = StreamParser::new(LIMITS);
    let mut events = Vec::new();
    for chunk in chunks {
        if let Err(e) = parser.feed(chunk, &mut events) {
            // Once failed, always failed, never a panic.
            let again = parser.feed(b"<presence/>", &mut Vec::new());
            assert_eq!(again.as_ref().err(), Some(&e));
            return (events, Some(e));
        }
    }
    (events, None)
}

/// Serializes `stanza` and parses it back inside a stream with the same
/// default namespace; it must come back equal.
fn round_trip(stanza: &Element, default_ns: &str) {
    let mut input = String::from("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'");
    if !default_ns.is_empty() {
        input.push_str(" xmlns='");
        input.push_str(&escape_attr(default_ns));
        input.push('\'');
    }
    input.push('>');
    let xml = stanza.to_stanza_xml(default_ns);
    input.push_str(&xml);
    // Escaping and prefix declarations can make the copy larger.
    let roomy = Limits {
        max_stanza_bytes: 1 << 30,
        max_depth: LIMITS.max_depth,
        max_attributes: 4 * LIMITS.max_attributes,
    };
    let mut parser = StreamParser::new(roomy);
    let mut events = Vec::new();
    if let Err(e) = parser.feed(input.as_bytes(), &mut events) {
        panic!("serialized stanza does not parse: {e}\n{xml}");
    }
    match events.get(1) {
        Some(StreamEvent::Stanza(again)) => assert_eq!(again, stanza, "{xml}"),
        other => panic!("no stanza back ({other:?}) from\n{xml}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    // 1 to 64 bytes per feed; many inputs end up byte by byte.
    let chunk = usize::from(first & 0x3f) + 1;
    let (events, error) = run(input.chunks(chunk));
    let (whole_events, whole_error) = run(std::iter::once(input));
    assert_eq!(events, whole_events, "chunk size {chunk}");
    assert_eq!(
        error.as_ref().map(XmlError::stream_condition),
        whole_error.as_ref().map(XmlError::stream_condition),
        "chunk size {chunk}: {error:?} vs {whole_error:?}"
    );

    let mut default_ns = String::new();
    for event in &events {
        match event {
            StreamEvent::Header(h) => default_ns = h.default_ns.clone(),
            StreamEvent::Stanza(s) => round_trip(s, &default_ns),
            StreamEvent::End => {}
        }
    }
});
