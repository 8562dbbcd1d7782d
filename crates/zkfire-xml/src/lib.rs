//! XML for XMPP streams: a bounded incremental parser for the stream and the
//! element tree that stanzas are held in.

pub mod element;
pub mod ns;
pub mod parser;

pub use element::{escape_attr, escape_text, Element, Node};
pub use parser::{Limits, StreamEvent, StreamHeader, StreamParser, XmlError};
