//! Parsing one element from a string (stored stanzas, vCards, private XML),
//! with the same limits and refusals as a stream.

use crate::parser::{Limits, StreamEvent, StreamParser, XmlError};
use crate::Element;

/// Parses a single element, as serialized by [`Element::to_xml`].
pub fn parse_element(xml: &str) -> Result<Element, XmlError> {
    let limits = Limits {
        max_stanza_bytes: xml.len().max(1024) + 1,
        ..Limits::default()
    };
    let mut parser = StreamParser::new(limits);
    let mut events = Vec::new();
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        &mut events,
    )?;
    parser.feed(xml.as_bytes(), &mut events)?;
    events
        .into_iter()
        .find_map(|e| match e {
            StreamEvent::Stanza(el) => Some(el),
            _ => None,
        })
        .ok_or_else(|| XmlError::NotWellFormed("no complete element".into()))
}
