//! XML for XMPP streams: a bounded incremental parser for the stream and the
//! element tree that stanzas are held in.

pub mod element;
mod error_map;
pub mod fragment;
pub mod ns;
pub mod parser;
mod resolve;
mod tree;
mod utf8;

pub use element::{escape_attr, escape_text, Element, Name, Node};
pub use fragment::parse_element;
pub use parser::{Limits, StreamEvent, StreamHeader, StreamParser, XmlError, MAX_TOKEN_BYTES};
