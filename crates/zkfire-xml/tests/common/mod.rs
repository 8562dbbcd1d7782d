//! Helpers shared by the parser tests.
#![allow(dead_code)]

use zkfire_xml::{Limits, StreamEvent, StreamParser, XmlError};

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

/// What a parse produced: the events, and the error if it stopped with one.
pub type Outcome = (Vec<StreamEvent>, Option<XmlError>);

/// Feeds `chunks` in order, stopping at the first error.
pub fn feed_chunks<'a>(limits: Limits, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = p.feed(c, &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

pub fn parse(input: &[u8]) -> Outcome {
    parse_with(Limits::default(), input)
}

pub fn parse_with(limits: Limits, input: &[u8]) -> Outcome {
    feed_chunks(limits, [input])
}

pub fn parse_bytewise(limits: Limits, input: &[u8]) -> Outcome {
    feed_chunks(limits, input.chunks(1))
}

/// The stanzas of a stream made of [`HEADER`] and `body`; panics on error.
pub fn stanzas(body: &str) -> Vec<zkfire_xml::Element> {
    let (events, err) = parse(format!("{HEADER}{body}").as_bytes());
    assert_eq!(err, None, "unexpected error for {body:?}");
    events
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Stanza(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The error a stream made of [`HEADER`] and `body` fails with.
pub fn error_of(limits: Limits, body: &[u8]) -> XmlError {
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(body);
    let (_, err) = parse_with(limits, &input);
    err.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(body)))
}

/// Small deterministic generator for split points (no dependency needed).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Splits `input` into random chunks of 1 to `max` bytes.
pub fn random_chunks<'a>(input: &'a [u8], rng: &mut Rng, max: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let n = (1 + rng.below(max)).min(rest.len());
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks
}
