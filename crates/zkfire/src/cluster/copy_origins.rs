//! Messages this node fanned out to several resources, some of them on
//! other nodes: each such node counts as one holder of the message here
//! (router::copies) until it reports that its copies are done, or leaves
//! the cluster. So a message whose copies all end unacknowledged, on any
//! nodes, is rerouted once in the whole cluster, by whichever node lets go
//! of it last.

use crate::router::copies::{Copies, CopyHold};
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node that never reports (its report was lost with a broken link) is
/// forgotten after this long; it rerouted its copies itself then.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Look for such entries after this many new ones.
const SWEEP_EVERY: usize = 1024;

struct Origin {
    /// The message, to reroute if the last holder is another node.
    xml: String,
    /// One hold per node that got copies.
    holds: Vec<(String, CopyHold)>,
    since: Instant,
}

#[derive(Default)]
pub struct CopyOrigins {
    entries: DashMap<u64, Origin>,
    added: AtomicUsize,
}

impl CopyOrigins {
    /// Counts `node` as a holder of `copies` before a copy is sent there
    /// (its report may come back before the send returns). True when this
    /// added the node: the caller takes it back with [`not_sent`] if the
    /// send fails.
    ///
    /// [`not_sent`]: Self::not_sent
    pub fn sending(&self, copies: &Arc<Copies>, node: &str, xml: &str) -> bool {
        if !self.entries.contains_key(&copies.id)
            && self.added.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
        {
            self.sweep();
        }
        let mut entry = self.entries.entry(copies.id).or_insert_with(|| Origin {
            xml: xml.to_string(),
            holds: Vec::new(),
            since: Instant::now(),
        });
        if entry.holds.iter().any(|(n, _)| n == node) {
            return false;
        }
        entry.holds.push((node.to_string(), copies.hold()));
        true
    }

    /// The copy for `node` could not be sent: it holds nothing.
    pub fn not_sent(&self, id: u64, node: &str) {
        self.entries.remove_if_mut(&id, |_, o| {
            o.holds.retain(|(n, _)| n != node);
            o.holds.is_empty()
        });
    }

    /// `node` says its copies of message `id` are done. The message to
    /// reroute, if this made the message's last holder let go unacknowledged.
    /// A report for a message not known here (this node restarted) is
    /// rerouted as it comes: nobody else holds it any more.
    pub fn done(&self, id: u64, node: &str, taken: bool, xml: String) -> Option<String> {
        let mut hold = None;
        let mut known = false;
        self.entries.remove_if_mut(&id, |_, o| {
            known = true;
            if let Some(i) = o.holds.iter().position(|(n, _)| n == node) {
                hold = Some(o.holds.swap_remove(i).1);
            }
            o.holds.is_empty()
        });
        match hold {
            Some(h) if taken => {
                h.taken();
                None
            }
            Some(h) => h.released().then_some(xml),
            None if known || taken => None,
            None => Some(xml),
        }
    }

    /// `node` left the cluster with its copies: the messages it was the last
    /// holder of, to reroute.
    pub fn node_left(&self, node: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.entries.retain(|_, o| {
            if let Some(i) = o.holds.iter().position(|(n, _)| n == node) {
                if o.holds.swap_remove(i).1.released() {
                    out.push(o.xml.clone());
                }
            }
            !o.holds.is_empty()
        });
        out
    }

    fn sweep(&self) {
        self.entries.retain(|_, o| o.since.elapsed() < FORGET_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_node_to_let_go_reroutes_once() {
        let origins = CopyOrigins::default();
        let copies = Copies::new();
        let here = copies.hold();
        assert!(origins.sending(&copies, "n2", "<m/>"));
        assert!(!origins.sending(&copies, "n2", "<m/>"), "one hold per node");
        assert!(origins.sending(&copies, "n3", "<m/>"));
        assert!(!here.released());
        assert_eq!(origins.done(copies.id, "n2", false, "<m/>".into()), None);
        assert_eq!(
            origins
                .done(copies.id, "n3", false, "<m/>".into())
                .as_deref(),
            Some("<m/>")
        );
    }

    #[test]
    fn a_copy_taken_on_another_node_is_not_rerouted() {
        let origins = CopyOrigins::default();
        let copies = Copies::new();
        let here = copies.hold();
        origins.sending(&copies, "n2", "<m/>");
        assert_eq!(origins.done(copies.id, "n2", true, String::new()), None);
        assert!(!here.released());
    }

    #[test]
    fn a_departed_node_lets_go_of_its_copies() {
        let origins = CopyOrigins::default();
        let copies = Copies::new();
        origins.sending(&copies, "n2", "<m/>");
        assert!(origins.node_left("n3").is_empty());
        assert_eq!(origins.node_left("n2"), ["<m/>"]);
    }

    #[test]
    fn a_report_for_an_unknown_message_is_rerouted() {
        let origins = CopyOrigins::default();
        assert_eq!(
            origins.done(9, "n2", false, "<m/>".into()).as_deref(),
            Some("<m/>")
        );
        assert_eq!(origins.done(9, "n2", true, String::new()), None);
    }
}
