//! SASLprep (RFC 4013) of usernames and passwords.

/// SASLprep of a username or password. `None` when the string holds
/// prohibited or unassigned characters, or is empty once prepared (RFC 4616
/// and RFC 5802 both require at least one character).
pub(crate) fn saslprep(s: &str) -> Option<String> {
    let prepared = stringprep::saslprep(s).ok()?;
    if prepared.is_empty() {
        return None;
    }
    Some(prepared.into_owned())
}

#[cfg(test)]
mod tests {
    use super::saslprep;

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 section 3.
        assert_eq!(saslprep("I\u{00AD}X").as_deref(), Some("IX"));
        assert_eq!(saslprep("user").as_deref(), Some("user"));
        assert_eq!(saslprep("USER").as_deref(), Some("USER"));
        assert_eq!(saslprep("\u{00AA}").as_deref(), Some("a"));
        assert_eq!(saslprep("\u{2168}").as_deref(), Some("IX"));
        assert_eq!(saslprep("\u{0007}"), None);
        assert_eq!(saslprep("\u{0627}\u{0031}"), None);
    }

    #[test]
    fn empty_after_mapping_is_refused() {
        assert_eq!(saslprep(""), None);
        assert_eq!(saslprep("\u{00AD}"), None);
    }
}
