//! Stanza helpers: kinds, addresses, and error replies (RFC 6120 section 8.3).

use zkfire_xml::{ns, Element};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(el: &Element) -> Option<Kind> {
        if el.ns() != ns::CLIENT {
            return None;
        }
        match el.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// Error types of RFC 6120 section 8.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error: type, defined condition, optional text and extra element.
#[derive(Debug, Clone)]
pub struct StanzaError {
    pub kind: ErrorType,
    pub condition: &'static str,
    pub text: Option<String>,
    /// Boxed: most errors have none, and it keeps `Result<_, StanzaError>` small.
    pub extra: Option<Box<Element>>,
}

impl StanzaError {
    pub fn new(kind: ErrorType, condition: &'static str) -> Self {
        StanzaError {
            kind,
            condition,
            text: None,
            extra: None,
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_extra(mut self, extra: Element) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    pub fn bad_request() -> Self {
        Self::new(ErrorType::Modify, "bad-request")
    }
    pub fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable")
    }
    pub fn feature_not_implemented() -> Self {
        Self::new(ErrorType::Cancel, "feature-not-implemented")
    }
    pub fn forbidden() -> Self {
        Self::new(ErrorType::Auth, "forbidden")
    }
    pub fn not_allowed() -> Self {
        Self::new(ErrorType::Cancel, "not-allowed")
    }
    pub fn item_not_found() -> Self {
        Self::new(ErrorType::Cancel, "item-not-found")
    }
    pub fn internal_server_error() -> Self {
        Self::new(ErrorType::Wait, "internal-server-error")
    }
    pub fn not_acceptable() -> Self {
        Self::new(ErrorType::Modify, "not-acceptable")
    }
    pub fn jid_malformed() -> Self {
        Self::new(ErrorType::Modify, "jid-malformed")
    }
    pub fn remote_server_not_found() -> Self {
        Self::new(ErrorType::Cancel, "remote-server-not-found")
    }
    pub fn resource_constraint() -> Self {
        Self::new(ErrorType::Wait, "resource-constraint")
    }
    pub fn conflict() -> Self {
        Self::new(ErrorType::Cancel, "conflict")
    }
    pub fn policy_violation() -> Self {
        Self::new(ErrorType::Modify, "policy-violation")
    }

    /// The `<error/>` element.
    pub fn to_element(&self, by: Option<&str>) -> Element {
        let mut error = Element::new("error", ns::CLIENT).with_attr("type", self.kind.as_str());
        if let Some(by) = by {
            error.set_attr("by", by);
        }
        error.push(Element::new(self.condition, ns::STANZA_ERRORS));
        if let Some(text) = &self.text {
            error.push(
                Element::new("text", ns::STANZA_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.clone()),
            );
        }
        if let Some(extra) = &self.extra {
            error.push(extra.as_ref().clone());
        }
        error
    }
}

/// The error reply to `stanza`: addresses swapped, `type='error'`. Replies to
/// IQs carry no payload; other stanzas keep their content so the sender can
/// tell which one failed.
pub fn error_reply(stanza: &Element, error: &StanzaError) -> Element {
    let mut reply = Element::new(stanza.name().to_owned(), ns::CLIENT);
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        reply.set_attr("from", to);
    }
    reply.set_attr("type", "error");
    if stanza.name() != "iq" {
        for child in stanza.children() {
            if child.name() != "error" {
                reply.push(child.clone());
            }
        }
    }
    reply.push(error.to_element(None));
    reply
}

/// Whether a stanza may be answered with an error (never answer an error
/// with an error, RFC 6120 section 8.3.1, nor an IQ result).
pub fn may_bounce(stanza: &Element) -> bool {
    !matches!(stanza.attr("type"), Some("error") | Some("result"))
}

/// An IQ result to `iq`, with an optional payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = iq.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(p) = payload {
        reply.push(p);
    }
    reply
}

/// The current time as XEP-0082 DateTime in UTC.
pub fn xep82_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
