//! The element tree a stanza is held in.
//!
//! A small tree of our own rather than minidom's: the server rewrites `from`,
//! `to` and `id` on nearly every stanza, and wants plain `&str` access to names,
//! namespaces and attributes without conversions or allocation on each look-up.

use crate::ns;
use std::borrow::Cow;
use std::fmt::Write as _;

/// An element or attribute name, or a namespace. Nearly all are one of a
/// few fixed strings, held without allocating.
pub type Name = Cow<'static, str>;

/// The names, namespaces and attribute names of everyday stanzas: parsed
/// ones are held as these static strings, so reading a message allocates
/// nothing for them.
const COMMON: &[&str] = &[
    ns::CLIENT,
    ns::SM,
    ns::STANZA_ERRORS,
    "message",
    "presence",
    "iq",
    "body",
    "thread",
    "subject",
    "show",
    "status",
    "priority",
    "error",
    "query",
    "to",
    "from",
    "id",
    "type",
    "h",
    "a",
    "r",
];

/// A parsed name: the static copy when it is a common one.
pub(crate) fn common_name(s: &str) -> Name {
    match COMMON.iter().find(|c| **c == s) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(s.to_owned()),
    }
}

/// A child of an element: another element, or character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// One XML element with its resolved namespace.
///
/// Attribute names are local names; the only namespaced attribute XMPP uses,
/// `xml:lang`, is kept under the name `xml:lang`. Attributes of other
/// namespaces are kept as `{namespace-uri}local-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: Name,
    ns: Name,
    attrs: Vec<(Name, String)>,
    nodes: Vec<Node>,
}

impl Element {
    pub fn new(name: impl Into<Name>, ns: impl Into<Name>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// An element from parts the parser has already checked (attribute names
    /// unique), so no per-attribute look-up is needed.
    pub(crate) fn from_parts(name: Name, ns: Name, attrs: Vec<(Name, String)>) -> Self {
        Element {
            name,
            ns,
            attrs,
            nodes: Vec::new(),
        }
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: impl Into<Name>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push`].
    pub fn with_child(mut self, child: Element) -> Self {
        self.push(child);
        self
    }

    /// Builder form of [`Element::push_text`].
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    pub fn attr_count(&self) -> usize {
        self.attrs.len()
    }

    pub fn set_attr(&mut self, name: impl Into<Name>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Removes an attribute and returns its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(n, _)| n == name)?;
        Some(self.attrs.remove(pos).1)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn push(&mut self, child: Element) {
        self.nodes.push(Node::Element(child));
    }

    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(last)) = self.nodes.last_mut() {
            last.push_str(&text);
        } else {
            self.nodes.push(Node::Text(text));
        }
    }

    /// Removes the child elements for which `keep` says false (text stays).
    pub fn retain_children(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.nodes.retain(|n| match n {
            Node::Element(e) => keep(e),
            Node::Text(_) => true,
        });
    }

    /// Child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.nodes.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.nodes.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|c| c.is(name, ns))
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Text of the first child with this name and namespace.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.child(name, ns).map(Element::text)
    }

    /// Serializes the element. `parent_ns` is the default namespace in scope
    /// where it is written (for a top-level stanza, the stream's default
    /// namespace): `xmlns` is written only when this element's differs.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns='");
            escape_attr_into(&self.ns, out);
            out.push('\'');
        }
        let mut prefix_no = 0;
        for (name, value) in &self.attrs {
            out.push(' ');
            if let Some(rest) = name.strip_prefix('{') {
                // An attribute in a foreign namespace: declare a prefix for it.
                // The last `}`: a URI may contain one, a local name cannot.
                let (uri, local) = rest.rsplit_once('}').unwrap_or(("", rest));
                let _ = write!(out, "xmlns:a{prefix_no}='");
                escape_attr_into(uri, out);
                let _ = write!(out, "' a{prefix_no}:{local}='");
                prefix_no += 1;
            } else {
                out.push_str(name);
                out.push_str("='");
            }
            escape_attr_into(value, out);
            out.push('\'');
        }
        if self.nodes.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for node in &self.nodes {
            match node {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text_into(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// About the bytes the element takes serialized (before escaping), without
    /// serializing it: for bounding queues in bytes.
    pub fn approx_len(&self) -> usize {
        let mut n = 2 * self.name.len() + 5 + self.ns.len() + 9;
        for (name, value) in &self.attrs {
            n += name.len() + value.len() + 4;
        }
        for node in &self.nodes {
            n += match node {
                Node::Element(e) => e.approx_len(),
                Node::Text(t) => t.len(),
            };
        }
        n
    }

    /// Serializes as a standalone fragment (with its `xmlns`).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out, "");
        out
    }

    /// Serializes as a stanza of a stream whose default namespace is `stream_ns`.
    pub fn to_stanza_xml(&self, stream_ns: &str) -> String {
        let mut out = String::new();
        self.write_to(&mut out, stream_ns);
        out
    }
}

fn escape_text_into(s: &str, out: &mut String) {
    escape_into(s, out, |b| match b {
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'&' => Some("&amp;"),
        // A raw CR would be read back as LF (XML line-end handling), so
        // it must travel as a character reference to survive a round trip.
        b'\r' => Some("&#13;"),
        _ => None,
    });
}

fn escape_attr_into(s: &str, out: &mut String) {
    escape_into(s, out, |b| match b {
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'&' => Some("&amp;"),
        b'\'' => Some("&apos;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#9;"),
        b'\n' => Some("&#10;"),
        b'\r' => Some("&#13;"),
        _ => None,
    });
}

/// Copies `s` to `out` a run at a time, replacing the bytes `escape` names.
/// They are all ASCII, so a run never ends inside a character.
fn escape_into(s: &str, out: &mut String, escape: impl Fn(u8) -> Option<&'static str>) {
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(replacement) = escape(b) {
            out.push_str(&s[run..i]);
            out.push_str(replacement);
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
}

/// Escapes character data.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_text_into(s, &mut out);
    out
}

/// Escapes an attribute value written between single or double quotes.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr_into(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a@b")
            .with_child(Element::new("body", "jabber:client").with_text("1 < 2 & 'x'"))
            .with_child(Element::new("x", "urn:other"));
        assert_eq!(
            e.to_stanza_xml("jabber:client"),
            "<message to='a@b'><body>1 &lt; 2 &amp; 'x'</body><x xmlns='urn:other'/></message>"
        );
    }

    #[test]
    fn approximate_length_is_near_the_serialized_one() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "someone@example.org/phone")
            .with_child(Element::new("body", "jabber:client").with_text("x".repeat(5000)));
        let real = e.to_xml().len();
        let approx = e.approx_len();
        assert!(approx >= real && approx < real + 64, "{approx} for {real}");
    }

    #[test]
    fn attribute_values_are_escaped() {
        let e = Element::new("a", "n").with_attr("v", "'\"<&\n");
        assert_eq!(e.to_xml(), "<a xmlns='n' v='&apos;&quot;&lt;&amp;&#10;'/>");
    }

    #[test]
    fn namespace_with_brace_is_written_whole() {
        let e = Element::new("a", "n").with_attr("{urn:x}y}z", "1");
        assert_eq!(e.to_xml(), "<a xmlns='n' xmlns:a0='urn:x}y' a0:z='1'/>");
    }

    #[test]
    fn escaping_keeps_other_characters_whole() {
        assert_eq!(escape_text("é<☃&𝄞>"), "é&lt;☃&amp;𝄞&gt;");
        assert_eq!(escape_attr("'é\t\"☃"), "&apos;é&#9;&quot;☃");
        assert_eq!(escape_text(""), "");
        assert_eq!(escape_attr("plain"), "plain");
    }

    #[test]
    fn carriage_return_in_text_is_escaped() {
        assert_eq!(escape_text("a\r\nb"), "a&#13;\nb");
    }

    #[test]
    fn set_and_remove_attr() {
        let mut e = Element::new("iq", "jabber:client").with_attr("id", "1");
        e.set_attr("id", "2");
        assert_eq!(e.attr("id"), Some("2"));
        assert_eq!(e.remove_attr("id").as_deref(), Some("2"));
        assert_eq!(e.attr("id"), None);
    }
}
