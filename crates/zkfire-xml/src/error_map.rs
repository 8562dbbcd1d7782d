//! Sorts rxml's errors into the stream errors of RFC 6120 section 4.9.3.

use crate::parser::XmlError;
use rxml::Error;

/// `token_limit` is the longest name or attribute value rxml was told to
/// accept; `stanza_limit` is `Limits::max_stanza_bytes`.
pub(crate) fn classify(e: Error, token_limit: usize, stanza_limit: usize) -> XmlError {
    match e {
        // rxml's only wording for an over-long name or attribute value.
        Error::RestrictedXml("long name or reference") => {
            if token_limit >= stanza_limit {
                // The token alone is longer than a stanza may be.
                XmlError::StanzaTooBig {
                    limit: stanza_limit,
                }
            } else {
                XmlError::TokenTooLong { limit: token_limit }
            }
        }
        // Comments, processing instructions, other XML versions/encodings.
        Error::RestrictedXml(what) => XmlError::Restricted(what.to_owned()),
        // Any entity but the five predefined ones (there is no DTD to
        // declare one in, so nothing is ever expanded).
        Error::UndeclaredEntity => XmlError::Restricted("entity reference".into()),
        // rxml reads `<!` followed by anything but `--` or `[CDATA[` this
        // way: that is a markup declaration (`<!DOCTYPE`, `<!ENTITY`, …).
        Error::InvalidSyntax("malformed cdata or comment section start") => {
            XmlError::Restricted("document type or markup declaration".into())
        }
        Error::UndeclaredNamespacePrefix(_) => {
            XmlError::BadNamespacePrefix("undeclared prefix".into())
        }
        other => XmlError::NotWellFormed(other.to_string()),
    }
}
