//! Types of the message archive (XEP-0313): what is stored per message, how
//! a page is asked for, and archiving preferences.
//!
//! The archive knows ids, not times: ids are time-ordered text of one fixed
//! length (the caller makes them, see zkfire's `modules::mam::ids`), so a
//! time range is an id range and every query is a range scan of one index.

/// One archived message of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMessage {
    /// The archive id (and stanza-id): unique in the account's archive,
    /// ordered as the messages arrived, all ids of one length.
    pub id: String,
    /// When it was archived, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The other party, bare JID.
    pub with_bare: String,
    /// The other party as it was addressed or sent from (full or bare).
    pub with_full: String,
    /// The message, serialized.
    pub stanza: String,
}

/// Which conversation partner a query is about (XEP-0313 `with`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveWith {
    /// A bare JID: every resource of it.
    Bare(String),
    /// A full JID: that resource only (and the bare JID it belongs to).
    Full { bare: String, full: String },
}

/// Which messages of an archive a query matches (the data form's filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    pub with: Option<ArchiveWith>,
    /// Only ids greater than this.
    pub after: Option<String>,
    /// Only ids less than this.
    pub before: Option<String>,
    /// Only these ids (XEP-0313 `ids`, urn:xmpp:mam:2#extended).
    pub ids: Option<Vec<String>>,
}

/// Which page of the matching messages (XEP-0059 result set management).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// At most this many messages.
    pub max: usize,
    /// Page anchor: only ids greater than this (RSM `<after>`).
    pub after: Option<String>,
    /// Page anchor: only ids less than this (RSM `<before>`).
    pub before: Option<String>,
    /// The page nearest the end (the newest `max` before `before`), as
    /// RSM `<before/>` asks; otherwise the oldest `max` after `after`.
    pub from_end: bool,
    /// Whether to count the matching messages and the index of the first.
    pub count: bool,
}

/// What a query found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveResult {
    /// Oldest first.
    pub messages: Vec<ArchivedMessage>,
    /// No more matching messages lie beyond this page in the direction it
    /// was taken (after the last, or before the first for `from_end`).
    pub complete: bool,
    /// All messages matching the filter, when counted.
    pub count: Option<u64>,
    /// How many matching messages come before the first of the page.
    pub first_index: Option<u64>,
}

/// What is archived by default (XEP-0441 / XEP-0313 preferences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchivePolicy {
    Always,
    Roster,
    Never,
}

impl ArchivePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchivePolicy::Always => "always",
            ArchivePolicy::Roster => "roster",
            ArchivePolicy::Never => "never",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(ArchivePolicy::Always),
            "roster" => Some(ArchivePolicy::Roster),
            "never" => Some(ArchivePolicy::Never),
            _ => None,
        }
    }
}

/// An account's archiving preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePrefs {
    pub default: ArchivePolicy,
    /// Bare JIDs always archived, sorted.
    pub always: Vec<String>,
    /// Bare JIDs never archived, sorted.
    pub never: Vec<String>,
}
