//! Incremental, bounded parser for an XMPP stream. (Interface; the parsing
//! itself is being written.)

use crate::element::Element;

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
    /// The default namespace declared on it (`jabber:client` for c2s).
    pub default_ns: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
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
        }
    }
}

/// Parses one XMPP stream from bytes as they arrive.
pub struct StreamParser {
    limits: Limits,
}

impl StreamParser {
    pub fn new(limits: Limits) -> Self {
        StreamParser { limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Parses `data`, appending every complete event to `out`. After an
    /// error the parser must not be fed again.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), XmlError> {
        let _ = (data, out);
        Err(XmlError::NotWellFormed("parser not yet written".into()))
    }

    /// Starts over for a new stream on the same connection (after STARTTLS
    /// or SASL success).
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }
}
