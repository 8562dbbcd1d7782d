//! Unique and Stable Stanza IDs (XEP-0359) on the messages zkfire archives.
//!
//! A `<stanza-id/>` is trusted by a client only when its `by` is an entity
//! the client trusts to have made it, here the user's own account. So every
//! `<stanza-id/>` whose `by` is of this domain is zkfire's to write: one a
//! client or contact sent is removed before the message goes anywhere
//! (section 3.1), and the only one a local account receives is the one its
//! own archive added. `<origin-id/>`, the sender's own, passes untouched.

use zkfire_xml::{ns, Element};

/// Removes every `<stanza-id/>` that claims to be by `domain` or one of its
/// accounts.
pub fn remove_ours(msg: &mut Element, domain: &str) {
    let claims_ours = |el: &Element| {
        el.is("stanza-id", ns::SID)
            && el
                .attr("by")
                .is_some_and(|by| crate::jids::domain_of(by).eq_ignore_ascii_case(domain))
    };
    msg.retain_children(|el| !claims_ours(el));
}

/// Adds the archive's id, as made by the archive of `by` (a bare JID).
pub fn add(msg: &mut Element, by: &str, id: &str) {
    msg.push(
        Element::new("stanza-id", ns::SID)
            .with_attr("by", by.to_string())
            .with_attr("id", id.to_string()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_ids_of_this_domain_go_and_others_stay() {
        let mut m = zkfire_xml::parse_element(
            "<message xmlns='jabber:client'><body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='bob@Example.org' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='example.org' id='forged2'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@conference.other.net' id='theirs'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='mine'/></message>",
        )
        .unwrap();
        remove_ours(&mut m, "example.org");
        add(&mut m, "bob@example.org", "01ABC");
        let ids: Vec<(&str, Option<&str>)> = m
            .children()
            .filter(|c| c.ns() == ns::SID)
            .map(|c| (c.name(), c.attr("id")))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("stanza-id", Some("theirs")),
                ("origin-id", Some("mine")),
                ("stanza-id", Some("01ABC"))
            ]
        );
        assert!(m.child("body", ns::CLIENT).is_some());
    }
}
