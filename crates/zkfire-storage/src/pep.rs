//! Types of personal eventing (XEP-0163): an account's nodes and items. A
//! node's configuration is the module's to define; storage keeps it as
//! text.

/// One node of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepNode {
    pub name: String,
    pub config: String,
}

/// One published item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    /// The item's payload, serialized.
    pub payload: String,
    /// When it was published, milliseconds since the Unix epoch.
    pub published_ms: i64,
}

/// Bounds on one account's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PepLimits {
    /// Nodes per account.
    pub max_nodes: usize,
}
