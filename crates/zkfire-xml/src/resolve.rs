//! Namespace resolution for element heads.
//!
//! rxml's raw parser reports names with their prefixes and namespace
//! declarations as plain attributes. We resolve them here rather than with
//! rxml's own resolver because that one hides the declarations (we need the
//! stream header's default namespace and must count declarations against the
//! attribute limit as they arrive) and builds a map per element.

use crate::element::{common_name, Element, Name};
use crate::ns;
use crate::parser::XmlError;
use rxml::NcName;

/// One namespace declaration in scope (`xmlns='…'` has no prefix).
#[derive(Debug)]
struct Decl {
    prefix: Option<NcName>,
    uri: String,
}

/// The namespace declarations in scope, innermost last.
#[derive(Debug, Default)]
pub(crate) struct Scopes {
    decls: Vec<Decl>,
    /// `decls.len()` before each open element's own declarations.
    marks: Vec<usize>,
}

impl Scopes {
    /// The namespace bound to `prefix` (`None`: the default namespace, which
    /// is empty when nothing declared one).
    pub(crate) fn lookup(&self, prefix: Option<&str>) -> Option<&str> {
        if prefix == Some("xml") {
            return Some(ns::XML);
        }
        let found = self
            .decls
            .iter()
            .rev()
            .find(|d| d.prefix.as_deref().map(|p| p.as_str()) == prefix);
        match (found, prefix) {
            (Some(d), _) => Some(&d.uri),
            (None, None) => Some(""),
            (None, Some(_)) => None,
        }
    }

    /// Leaves the innermost element.
    pub(crate) fn pop(&mut self) {
        if let Some(mark) = self.marks.pop() {
            self.decls.truncate(mark);
        }
    }
}

fn is_decl(prefix: &Option<NcName>, local: &NcName) -> bool {
    match prefix {
        None => local.as_str() == "xmlns",
        Some(p) => p.as_str() == "xmlns",
    }
}

/// The head of the element being read: its name and attributes, collected
/// until `>` so that declarations later in the head apply to earlier names.
/// The buffers are reused from element to element.
#[derive(Debug, Default)]
pub(crate) struct Head {
    name: Option<(Option<NcName>, NcName)>,
    attrs: Vec<(Option<NcName>, NcName, String)>,
}

impl Head {
    pub(crate) fn begin(&mut self, prefix: Option<NcName>, local: NcName) {
        self.name = Some((prefix, local));
        self.attrs.clear();
    }

    /// Frees the attributes of the last element, unless one is being read.
    pub(crate) fn release_buffers(&mut self) {
        if self.name.is_none() {
            self.attrs = Vec::new();
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.attrs.capacity()
    }

    /// Adds an attribute (declarations included); returns how many there are.
    pub(crate) fn push_attr(
        &mut self,
        prefix: Option<NcName>,
        local: NcName,
        value: String,
    ) -> usize {
        self.attrs.push((prefix, local, value));
        self.attrs.len()
    }

    /// Enters the element's scope in `scopes` and returns it with resolved
    /// names, with room for `spare` more attributes. Declarations are not
    /// kept as attributes.
    pub(crate) fn finish(
        &mut self,
        scopes: &mut Scopes,
        spare: usize,
    ) -> Result<Element, XmlError> {
        let (prefix, local) = self
            .name
            .take()
            .ok_or_else(|| XmlError::NotWellFormed("attribute outside an element".into()))?;

        // Declarations first: they apply to the element's own name and
        // attributes wherever they appear in the head.
        let mark = scopes.decls.len();
        scopes.marks.push(mark);
        let mut plain = 0;
        for (p, l, value) in self.attrs.iter_mut() {
            if !is_decl(p, l) {
                plain += 1;
                continue;
            }
            // `xmlns='…'` declares the default, `xmlns:l='…'` the prefix `l`.
            let declared = p.as_ref().map(|_| l.clone());
            // Namespaces in XML 1.0 section 3: nothing may be bound to the
            // namespace of `xmlns` itself.
            if value.as_str() == rxml::XMLNS_XMLNS {
                return Err(XmlError::NotWellFormed(
                    "the xmlns namespace cannot be declared".into(),
                ));
            }
            if scopes.decls[mark..].iter().any(|d| d.prefix == declared) {
                return Err(XmlError::NotWellFormed(
                    "namespace declared twice on one element".into(),
                ));
            }
            scopes.decls.push(Decl {
                prefix: declared,
                uri: std::mem::take(value),
            });
        }

        let element_ns = match prefix.as_ref().map(|p| p.as_str()) {
            // Names in the XML namespace are reserved, and our serializer
            // could not write one back.
            Some("xml") => return Err(XmlError::BadNamespacePrefix("xml".into())),
            p => scopes
                .lookup(p)
                .map(common_name)
                .ok_or_else(|| XmlError::BadNamespacePrefix(p.unwrap_or_default().to_owned()))?,
        };

        let mut attrs = Vec::with_capacity(plain + spare);
        for (p, l, value) in self.attrs.drain(..) {
            if is_decl(&p, &l) {
                continue;
            }
            let name: Name = match p {
                None => common_name(l.as_str()),
                // `xml:lang` (and the rare `xml:space`) keep their usual name.
                Some(p) if p.as_str() == "xml" => format!("xml:{}", l.as_str()).into(),
                Some(p) => {
                    let uri = scopes
                        .lookup(Some(p.as_str()))
                        .ok_or_else(|| XmlError::BadNamespacePrefix(p.as_str().to_owned()))?;
                    format!("{{{uri}}}{}", l.as_str()).into()
                }
            };
            attrs.push((name, value));
        }
        check_unique(&attrs)?;
        Ok(Element::from_parts(
            common_name(local.as_str()),
            element_ns,
            attrs,
        ))
    }
}

/// Rejects two attributes with the same (resolved) name. Pairwise for the
/// usual handful, sorted for long lists so the cost stays O(n log n).
fn check_unique(attrs: &[(Name, String)]) -> Result<(), XmlError> {
    let duplicate = if attrs.len() <= 16 {
        attrs
            .iter()
            .enumerate()
            .any(|(i, (a, _))| attrs[i + 1..].iter().any(|(b, _)| a == b))
    } else {
        let mut names: Vec<&str> = attrs.iter().map(|(n, _)| n.as_ref()).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    };
    if duplicate {
        Err(XmlError::NotWellFormed("duplicate attribute".into()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nc(s: &str) -> NcName {
        NcName::try_from(s).expect("valid test name")
    }

    #[test]
    fn declarations_apply_to_their_own_element_and_are_dropped() {
        let mut scopes = Scopes::default();
        let mut head = Head::default();
        head.begin(Some(nc("p")), nc("e"));
        head.push_attr(Some(nc("p")), nc("a"), "1".into());
        head.push_attr(Some(nc("xmlns")), nc("p"), "urn:p".into());
        head.push_attr(None, nc("xmlns"), "urn:d".into());
        let e = head.finish(&mut scopes, 0).unwrap();
        assert_eq!(e.name(), "e");
        assert_eq!(e.ns(), "urn:p");
        assert_eq!(e.attrs().collect::<Vec<_>>(), vec![("{urn:p}a", "1")]);
        assert_eq!(scopes.lookup(None), Some("urn:d"));
        scopes.pop();
        assert_eq!(scopes.lookup(None), Some(""));
        assert_eq!(scopes.lookup(Some("p")), None);
    }

    #[test]
    fn duplicates_after_resolution_are_rejected() {
        let mut scopes = Scopes::default();
        let mut head = Head::default();
        head.begin(None, nc("e"));
        head.push_attr(Some(nc("xmlns")), nc("a"), "urn:x".into());
        head.push_attr(Some(nc("xmlns")), nc("b"), "urn:x".into());
        head.push_attr(Some(nc("a")), nc("v"), "1".into());
        head.push_attr(Some(nc("b")), nc("v"), "2".into());
        assert!(matches!(
            head.finish(&mut scopes, 0),
            Err(XmlError::NotWellFormed(_))
        ));
    }

    #[test]
    fn many_attributes_are_checked_for_duplicates_too() {
        let mut attrs: Vec<(Name, String)> = (0..40)
            .map(|i| (format!("a{i}").into(), String::new()))
            .collect();
        assert!(check_unique(&attrs).is_ok());
        attrs.push(("a7".into(), String::new()));
        assert!(check_unique(&attrs).is_err());
    }
}
