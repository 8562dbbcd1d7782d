//! The copies of one message that a peer sent to several sessions of this
//! node, counted together here (router::copies): when the last of them is
//! done, the peer that fanned the message out is told whether a client took
//! one, and decides (cluster::copy_origins). When it cannot be told, this
//! node reroutes one copy itself.

use crate::router::copies::{Copies, Report};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Prune dead entries after this many new groups.
const PRUNE_EVERY: usize = 1024;

/// Groups by (sending node, group id), alive while a session holds a copy.
/// Owned by the bus dispatcher, which handles every frame of every peer.
#[derive(Default)]
pub struct CopyGroups {
    groups: HashMap<(String, u64), Weak<Copies>>,
    added: usize,
}

impl CopyGroups {
    /// The group a copy from `node` belongs to, made on its first copy with
    /// `report` (which tells `node` when the group is done).
    pub fn get(&mut self, node: &str, id: u64, report: impl FnOnce() -> Report) -> Arc<Copies> {
        let key = (node.to_string(), id);
        if let Some(live) = self.groups.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        self.added += 1;
        if self.added.is_multiple_of(PRUNE_EVERY) {
            self.groups.retain(|_, w| w.strong_count() > 0);
        }
        let copies = Copies::with_id(id);
        copies.report_to(report());
        self.groups.insert(key, Arc::downgrade(&copies));
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_one_group_share_their_count() {
        let mut groups = CopyGroups::default();
        let unreachable = || -> Report { Box::new(|_| false) };
        let a = groups.get("n1", 5, unreachable).hold();
        let b = groups.get("n1", 5, unreachable).hold();
        let other = groups.get("n2", 5, unreachable).hold();
        assert!(!a.released());
        assert!(b.released());
        assert!(other.released());
    }
}
