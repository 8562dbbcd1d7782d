//! Builds stanza trees from element events with an explicit stack, so that
//! nesting costs heap (bounded by the depth limit) and never call depth.

use crate::element::Element;

#[derive(Debug, Default)]
pub(crate) struct TreeBuilder {
    /// The open elements of the current stanza, the stanza itself first.
    open: Vec<Element>,
}

impl TreeBuilder {
    pub(crate) fn start(&mut self, element: Element) {
        self.open.push(element);
    }

    /// Character data for the innermost open element.
    pub(crate) fn text(&mut self, text: String) {
        if let Some(top) = self.open.last_mut() {
            top.push_text(text);
        }
    }

    /// Closes the innermost element; returns the stanza when that was it.
    pub(crate) fn end(&mut self) -> Option<Element> {
        let done = self.open.pop()?;
        match self.open.last_mut() {
            Some(parent) => {
                parent.push(done);
                None
            }
            None => Some(done),
        }
    }

    /// Frees the stack a deep stanza grew (call between stanzas).
    pub(crate) fn release_buffers(&mut self) {
        self.open.shrink_to_fit();
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.open.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_children_and_text() {
        let mut t = TreeBuilder::default();
        t.start(Element::new("a", "n"));
        t.text("x".into());
        t.start(Element::new("b", "n"));
        t.text("y".into());
        assert_eq!(t.end(), None);
        t.text("z".into());
        let a = t.end().unwrap();
        assert_eq!(a.to_xml(), "<a xmlns='n'>x<b>y</b>z</a>");
        assert_eq!(t.end(), None);
    }
}
