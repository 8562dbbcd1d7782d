//! JID parsing and matching helpers on top of the `jid` crate (which does the
//! RFC 7622 normalization).

use jid::Jid;

/// Parses and normalizes a JID.
pub fn parse(s: &str) -> Option<Jid> {
    Jid::new(s).ok()
}

/// The node (account name) of a bare or full JID string.
pub fn node_of(jid: &str) -> Option<String> {
    parse(jid).and_then(|j| j.node().map(|n| n.to_string()))
}

/// The local part of a JID the server already normalized (a session's
/// or a routed stanza's), without parsing it again: on the message path,
/// where [`node_of`]'s full normalization would cost on every message.
pub fn local_of(jid: &str) -> Option<&str> {
    bare_of(jid).split_once('@').map(|(local, _)| local)
}

/// The domain of a JID string, without normalizing.
pub fn domain_of(jid: &str) -> &str {
    let bare = bare_of(jid);
    bare.rsplit_once('@').map_or(bare, |(_, domain)| domain)
}

/// The bare part of a JID string, without normalizing.
/// The resource part of a full JID, if any.
pub fn resource_of(jid: &str) -> Option<&str> {
    jid.split_once('/').map(|(_, r)| r)
}

pub fn bare_of(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

/// Whether `jid` matches a blocklist or privacy item (XEP-0191 section 3.5,
/// by the JID rules of XEP-0016 section 2.1): a full JID matches exactly, a
/// bare JID matches itself and all its resources, a domain all of its JIDs,
/// and `domain/resource` that resource of the domain.
pub fn item_matches(item: &Jid, jid: &Jid) -> bool {
    match (item.node(), item.resource()) {
        (Some(_), Some(_)) => item == jid,
        (Some(_), None) => item.node() == jid.node() && item.domain() == jid.domain(),
        (None, Some(r)) => {
            jid.node().is_none() && item.domain() == jid.domain() && jid.resource() == Some(r)
        }
        (None, None) => item.domain() == jid.domain(),
    }
}

/// Whether any item of a blocklist matches `jid`.
pub fn is_blocked(list: &[String], jid: &str) -> bool {
    // Most lists are empty: skip normalizing the JID for nothing.
    if list.is_empty() {
        return false;
    }
    let Some(jid) = parse(jid) else { return false };
    list.iter()
        .filter_map(|i| parse(i))
        .any(|item| item_matches(&item, &jid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_without_parsing() {
        assert_eq!(local_of("alice@example.org/phone@home"), Some("alice"));
        assert_eq!(local_of("example.org"), None);
        assert_eq!(domain_of("alice@example.org/phone@home"), "example.org");
        assert_eq!(domain_of("example.org/res"), "example.org");
    }

    #[test]
    fn blocklist_matching() {
        let list = vec!["bad@example.org".to_string(), "spam.example".to_string()];
        assert!(is_blocked(&list, "bad@example.org"));
        assert!(is_blocked(&list, "bad@example.org/phone"));
        assert!(is_blocked(&list, "anyone@spam.example/x"));
        assert!(!is_blocked(&list, "good@example.org"));
        let list = vec!["bad@example.org/phone".to_string()];
        assert!(is_blocked(&list, "bad@example.org/phone"));
        assert!(!is_blocked(&list, "bad@example.org/laptop"));
        assert!(!is_blocked(&list, "bad@example.org"));
    }

    #[test]
    fn normalizes() {
        assert_eq!(node_of("Alice@Localhost/r").as_deref(), Some("alice"));
        assert_eq!(bare_of("a@b/c/d"), "a@b");
    }
}
