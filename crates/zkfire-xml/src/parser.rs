//! Incremental, bounded parser for an XMPP stream.
//!
//! rxml's raw push parser does the tokenizing (UTF-8, well-formedness,
//! restricted XML); this file drives it chunk by chunk, applies the stream
//! rules of RFC 6120 section 4 and enforces the limits as bytes arrive.

use crate::element::Element;
use crate::error_map::classify;
use crate::resolve::{Head, Scopes};
use crate::tree::TreeBuilder;
use crate::utf8::{Utf8Check, Verdict};
use rxml::error::EndOrError;
use rxml::{Options, Parse, RawEvent, RawParser, WithOptions};

/// Longest name or attribute value accepted (when `max_stanza_bytes` is
/// larger). rxml keeps a buffer of this size per parser, so it is capped
/// rather than following `max_stanza_bytes` up; longer text is fine (it is
/// read in pieces), a longer attribute value is [`XmlError::TokenTooLong`].
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// Bounds on what one peer may send. Every one is enforced while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one top-level element (stanza or nonza), from `<` to its end.
    pub max_stanza_bytes: usize,
    /// Nesting depth inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attributes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
        }
    }
}

/// The opening `<stream:stream>` tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// Local name of the root element (`stream` for a valid stream).
    pub name: String,
    /// Namespace of the root element (`http://etherx.jabber.org/streams`).
    pub ns: String,
    /// The default namespace declared on it (`jabber:client` for c2s);
    /// empty when it declares none. Unprefixed stanzas are in it.
    pub default_ns: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Header(StreamHeader),
    Stanza(Element),
    /// `</stream:stream>`.
    End,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("restricted XML (DTD, entity or processing instruction): {0}")]
    Restricted(String),
    #[error("element exceeds {limit} bytes")]
    StanzaTooBig { limit: usize },
    #[error("element nesting deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("more than {limit} attributes on one element")]
    TooManyAttributes { limit: usize },
    #[error("undeclared namespace prefix: {0}")]
    BadNamespacePrefix(String),
    #[error("name or attribute value longer than {limit} bytes")]
    TokenTooLong { limit: usize },
    /// A second stream header inside the stream (a restart needs a new
    /// stream); read on as a stanza it would swallow everything after it.
    #[error("stream header inside the stream")]
    NestedStreamHeader,
}

impl XmlError {
    /// The RFC 6120 section 4.9.3 stream error condition for this error.
    pub fn stream_condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::StanzaTooBig { .. } => "policy-violation",
            XmlError::TooDeep { .. } => "policy-violation",
            XmlError::TooManyAttributes { .. } => "policy-violation",
            XmlError::BadNamespacePrefix(_) => "bad-namespace-prefix",
            XmlError::TokenTooLong { .. } => "policy-violation",
            XmlError::NestedStreamHeader => "invalid-xml",
        }
    }
}

/// Where in the stream the parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace yet.
    Start,
    /// Reading the XML declaration and the stream header.
    Prolog,
    /// Between and inside stanzas.
    Stream,
    /// After `</stream:stream>`.
    Ended,
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses one XMPP stream from bytes as they arrive.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    raw: RawParser,
    token_limit: usize,
    phase: Phase,
    /// The first error; every later `feed` returns it again.
    failed: Option<XmlError>,
    /// Whitespace skipped before the first `<` (rxml rejects it without an
    /// XML declaration; XML allows it).
    skipped: usize,
    /// The first bytes from the first `<`, to tell `<?xml-foo` (a
    /// processing instruction) from the XML declaration.
    lead: [u8; 6],
    lead_len: usize,
    /// How much of `<!` the input has just shown (0, 1 or 2 bytes), to
    /// catch `<![` across chunks.
    bang: u8,
    /// Bytes rxml has consumed.
    consumed: usize,
    /// Where the current stanza's `<` is (in `consumed` terms).
    stanza_start: usize,
    /// Open elements, the stream header included.
    open: usize,
    /// The stream header's name and namespace.
    root: (String, String),
    /// Outside any tag between stanzas (or after the end): the bytes here
    /// are checked by us, not rxml.
    between: bool,
    head: Head,
    scopes: Scopes,
    tree: TreeBuilder,
    utf8: Utf8Check,
}

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        // Never 0: rxml could not read even a one-letter name.
        let token_limit = limits.max_stanza_bytes.clamp(1, MAX_TOKEN_BYTES);
        let options = Options {
            max_token_length: token_limit,
            ..Options::default()
        };
        let mut raw = <RawParser as WithOptions>::with_options(options);
        // Text comes out as soon as it is read rather than when a `<` or a
        // full buffer ends it, so text between stanzas fails at once.
        raw.set_text_buffering(false);
        StreamParser {
            limits,
            raw,
            token_limit,
            phase: Phase::Start,
            failed: None,
            skipped: 0,
            lead: [0; 6],
            lead_len: 0,
            bang: 0,
            consumed: 0,
            stanza_start: 0,
            open: 0,
            root: (String::new(), String::new()),
            between: false,
            head: Head::default(),
            scopes: Scopes::default(),
            tree: TreeBuilder::default(),
            utf8: Utf8Check::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses `data`, appending every complete event to `out`. Any split of
    /// the input gives the same events. On error, events completed before
    /// the error are in `out`; the error is final: later calls return it
    /// again until [`StreamParser::reset`].
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.feed_inner(data, out);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        if self.between {
            self.release_buffers();
        }
        result
    }

    /// Frees the parsing buffers while no stanza is half-read. rxml reserves
    /// its whole token limit (32 KiB) for the first text or attribute value
    /// and keeps it; an idle stream would hold it for nothing.
    fn release_buffers(&mut self) {
        self.raw.release_temporaries();
        self.tree.release_buffers();
        self.head.release_buffers();
    }

    /// Bytes of parsing buffers held now (rxml's excluded), for tests.
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.tree.capacity() + self.head.capacity()
    }

    /// Starts over for a new stream on the same connection (after STARTTLS
    /// or SASL success).
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }

    fn feed_inner(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        // Bytes before a broken character are parsed first, so that an
        // earlier error (a limit) wins, as it would byte by byte.
        let (good, broken) = match self.utf8.check(data) {
            Verdict::Fine => (data, None),
            Verdict::BadUtf8(n) => (data.get(..n).unwrap_or(data), Some("invalid UTF-8")),
            Verdict::BadChar(n) => (
                data.get(..n).unwrap_or(data),
                Some("U+FFFE or U+FFFF, which are not XML characters"),
            ),
        };
        self.parse(good, out)?;
        match broken {
            Some(what) => Err(XmlError::NotWellFormed(what.into())),
            None => Ok(()),
        }
    }

    fn parse(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        if self.phase == Phase::Start {
            data = self.skip_leading_space(data)?;
            if data.is_empty() {
                return Ok(());
            }
        }
        // Found here, not by rxml: it would notice these only later, or not
        // at all, depending on the split. The bytes before the one that
        // decides are parsed first, as they would be byte by byte.
        if self.phase == Phase::Prolog {
            if let Some(at) = self.sniff_lead(data) {
                self.run(data.get(..at).unwrap_or(data), out)?;
                return Err(XmlError::Restricted("processing instruction".into()));
            }
        }
        // A CDATA section is only allowed inside a stanza: elsewhere it puts
        // rxml in text mode, where text fails only once rxml hands it out.
        while let Some(at) = self.find_bang_bracket(data) {
            // The `[` itself goes on with the rest: each call moves past it.
            let (before, after) = data.split_at(at.min(data.len()));
            self.run(before, out)?;
            match self.phase {
                Phase::Prolog => {
                    return Err(XmlError::NotWellFormed(
                        "CDATA section before the stream header".into(),
                    ))
                }
                Phase::Stream if self.open <= 1 => {
                    return Err(XmlError::NotWellFormed(
                        "CDATA section between stanzas".into(),
                    ))
                }
                _ => data = after,
            }
        }
        self.run(data, out)
    }

    /// Parses with rxml until it needs more data.
    fn run(&mut self, mut data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        loop {
            if self.between && !data.is_empty() {
                data = self.skip_between(data, out)?;
                if data.is_empty() {
                    return Ok(());
                }
            }
            let before = data.len();
            let result = self.raw.parse(&mut data, false);
            self.consumed += before - data.len();
            // Before looking at the event: a stanza over the limit must not
            // come out even when its last byte arrived in the same chunk.
            self.check_size()?;
            match result {
                Ok(Some(event)) => self.handle(event, out)?,
                // rxml signals the end of a document only at end of file,
                // which a stream never tells it.
                Ok(None) => return Ok(()),
                Err(EndOrError::NeedMoreData) => return Ok(()),
                Err(EndOrError::Error(e)) => {
                    return Err(classify(e, self.token_limit, self.limits.max_stanza_bytes))
                }
            }
        }
    }

    /// Drops whitespace before the first `<`, and fails at once on anything
    /// else (an HTTP request, a TLS hello) instead of waiting for a `<`.
    fn skip_leading_space<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], XmlError> {
        let n = data.iter().take_while(|b| is_xml_space(**b)).count();
        self.skipped += n;
        if self.skipped > self.limits.max_stanza_bytes {
            return Err(XmlError::StanzaTooBig {
                limit: self.limits.max_stanza_bytes,
            });
        }
        let rest = data.get(n..).unwrap_or_default();
        match rest.first() {
            None => Ok(rest),
            Some(b'<') => {
                self.phase = Phase::Prolog;
                Ok(rest)
            }
            Some(_) => Err(XmlError::NotWellFormed(
                "the stream does not start with '<'".into(),
            )),
        }
    }

    /// Between stanzas only whitespace (keepalives) may come before the next
    /// `<`; after the end, only whitespace. rxml would report text there
    /// only once it is sure where it ends (a `]` or CR makes it wait for
    /// more), so how the input was split would decide when text fails.
    fn skip_between<'a>(
        &mut self,
        data: &'a [u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<&'a [u8], XmlError> {
        // First what rxml still holds (the end of a self-closed root).
        loop {
            match self.raw.parse(&mut &b""[..], false) {
                Ok(Some(event)) => self.handle(event, out)?,
                Ok(None) | Err(EndOrError::NeedMoreData) => break,
                Err(EndOrError::Error(e)) => {
                    return Err(classify(e, self.token_limit, self.limits.max_stanza_bytes))
                }
            }
        }
        let n = data.iter().take_while(|b| is_xml_space(**b)).count();
        self.consumed += n;
        let rest = data.get(n..).unwrap_or_default();
        match rest.first() {
            None => Ok(rest),
            Some(b'<') if self.phase == Phase::Stream => {
                self.between = false;
                Ok(rest)
            }
            Some(_) if self.phase == Phase::Stream => {
                Err(XmlError::NotWellFormed("text between stanzas".into()))
            }
            Some(_) => Err(XmlError::NotWellFormed(
                "data after the end of the stream".into(),
            )),
        }
    }

    /// rxml reads `<?xml-stylesheet` as a broken XML declaration; it is a
    /// processing instruction, so restricted. Returns where in `data` the
    /// byte that shows it is.
    fn sniff_lead(&mut self, data: &[u8]) -> Option<usize> {
        let had = self.lead_len;
        for &b in data.iter().take(self.lead.len().saturating_sub(had)) {
            if let Some(slot) = self.lead.get_mut(self.lead_len) {
                *slot = b;
                self.lead_len += 1;
            }
        }
        let [b'<', b'?', b'x', b'm', b'l', next] = self.lead else {
            return None;
        };
        // A name character after `<?xml` makes it a longer target name.
        let pi = next.is_ascii_alphanumeric()
            || matches!(next, b'-' | b'_' | b'.' | b':')
            || next >= 0x80;
        if had < self.lead.len() && self.lead_len == self.lead.len() && pi {
            Some(self.lead.len() - 1 - had)
        } else {
            None
        }
    }

    /// Where in `data` the `[` of a `<![` is (a `<!` at the end of the last
    /// chunk counts).
    fn find_bang_bracket(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        loop {
            if self.bang == 0 {
                // Skip to the next `<` quickly: this sees every byte.
                let p = data.get(i..)?.iter().position(|&b| b == b'<')?;
                i += p + 1;
                self.bang = 1;
                continue;
            }
            let b = *data.get(i)?;
            self.bang = match (self.bang, b) {
                (2, b'[') => {
                    self.bang = 0;
                    return Some(i);
                }
                (_, b'<') => 1,
                (1, b'!') => 2,
                _ => 0,
            };
            i += 1;
        }
    }

    fn check_size(&self) -> Result<(), XmlError> {
        let limit = self.limits.max_stanza_bytes;
        let used = match self.phase {
            Phase::Prolog => self.skipped + self.consumed,
            Phase::Stream if self.open >= 2 => self.consumed.saturating_sub(self.stanza_start),
            // Between stanzas rxml holds at most one name or piece of
            // text, bounded by the token limit.
            _ => 0,
        };
        if used > limit {
            Err(XmlError::StanzaTooBig { limit })
        } else {
            Ok(())
        }
    }

    fn handle(&mut self, event: RawEvent, out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        match event {
            RawEvent::XmlDeclaration(..) => {}
            RawEvent::ElementHeadOpen(_, (prefix, local)) => {
                self.open += 1;
                if self.phase == Phase::Stream {
                    // The stanza is depth 1, the stream header depth 0.
                    let depth = self.open - 1;
                    if depth > self.limits.max_depth {
                        return Err(XmlError::TooDeep {
                            limit: self.limits.max_depth,
                        });
                    }
                    if depth == 1 {
                        // rxml reports an element once it has read `<`, the
                        // name and one byte after it, and returns it at once.
                        // (Its event lengths would be simpler, but they drop
                        // the bytes of a character split across chunks.)
                        let name_len = local.len() + prefix.as_ref().map_or(0, |p| p.len() + 1);
                        self.stanza_start = self.consumed.saturating_sub(name_len + 2);
                        self.check_size()?;
                    }
                }
                self.head.begin(prefix, local);
            }
            RawEvent::Attribute(_, (prefix, local), value) => {
                if self.head.push_attr(prefix, local, value) > self.limits.max_attributes {
                    return Err(XmlError::TooManyAttributes {
                        limit: self.limits.max_attributes,
                    });
                }
            }
            RawEvent::ElementHeadClose(_) => {
                // A stanza gets room for one more attribute: the server
                // stamps `from` on nearly every one it receives.
                let spare = usize::from(self.open == 2);
                let element = self.head.finish(&mut self.scopes, spare)?;
                if self.phase == Phase::Prolog {
                    self.root = (element.name().to_owned(), element.ns().to_owned());
                    let default_ns = self.scopes.lookup(None).unwrap_or_default().to_owned();
                    out.push(StreamEvent::Header(header_from(element, default_ns)));
                    self.phase = Phase::Stream;
                    self.between = true;
                } else if self.open == 2 && element.is(&self.root.0, &self.root.1) {
                    return Err(XmlError::NestedStreamHeader);
                } else {
                    self.tree.start(element);
                }
            }
            RawEvent::Text(_, text) => {
                if self.open >= 2 {
                    self.tree.text(text);
                } else {
                    // Text outside stanzas never reaches rxml (see
                    // `skip_between` and the CDATA check); just in case.
                    return Err(XmlError::NotWellFormed("text between stanzas".into()));
                }
            }
            RawEvent::ElementFoot(_) => {
                self.open = self.open.saturating_sub(1);
                self.scopes.pop();
                if self.open == 0 {
                    self.phase = Phase::Ended;
                    self.between = true;
                    out.push(StreamEvent::End);
                } else if let Some(stanza) = self.tree.end() {
                    out.push(StreamEvent::Stanza(stanza));
                    self.between = true;
                }
            }
        }
        Ok(())
    }
}

fn header_from(root: Element, default_ns: String) -> StreamHeader {
    let attr = |name: &str| root.attr(name).map(str::to_owned);
    StreamHeader {
        to: attr("to"),
        from: attr("from"),
        id: attr("id"),
        version: attr("version"),
        lang: attr("xml:lang"),
        name: root.name().to_owned(),
        ns: root.ns().to_owned(),
        default_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle stream keeps no buffer a stanza grew; one half-read keeps it.
    #[test]
    fn buffers_are_freed_between_stanzas() {
        let mut p = StreamParser::new(Limits::default());
        let mut out = Vec::new();
        p.feed(
            b"<stream:stream xmlns='jabber:client' \
              xmlns:stream='http://etherx.jabber.org/streams'>",
            &mut out,
        )
        .unwrap();
        p.feed(b"<message a='1' b='2'><body><x>hi</x>", &mut out)
            .unwrap();
        assert!(p.buffer_capacity() > 0);
        p.feed(b"</body></message>", &mut out).unwrap();
        assert_eq!(p.buffer_capacity(), 0);
        assert!(matches!(out.last(), Some(StreamEvent::Stanza(_))));
    }

    /// The stanza byte count starts from where rxml reports the element;
    /// check that this lands on its `<` however the input is split, also
    /// after characters split across chunks.
    #[test]
    fn stanza_start_is_found_exactly() {
        let prefix = "<?xml version='1.0'?>\n  <stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' >\n\
            <a x = 'y' >t&amp;<![CDATA[c]]>\r\n<b/></a >  \t<c/>\
            <d>\u{2603}\u{2603}\u{1D11E}</d>\r\n";
        // Unfinished, so the stanza is still open at the end.
        let stanzas = ["<s/", "<stream:features>x", "<\u{e9}t\u{e9}\t"];
        for stanza in stanzas {
            let input = format!("{prefix}{stanza}");
            let input = input.as_bytes();
            for chunk in [1, 2, 3, 5, 7, input.len()] {
                let mut p = StreamParser::new(Limits::default());
                let mut out = Vec::new();
                for piece in input.chunks(chunk) {
                    p.feed(piece, &mut out).unwrap();
                }
                assert_eq!(p.open, 2, "{stanza} in chunks of {chunk}");
                assert_eq!(
                    p.stanza_start,
                    prefix.len() - p.skipped,
                    "{stanza} in chunks of {chunk}"
                );
            }
        }
    }
}
