//! The copies of one message that went to several resources of an account
//! (RFC 6121 section 8.5.2.1.1: all available resources of the highest
//! priority), so that a session ending with its copy unacknowledged knows
//! whether the message still needs a home.
//!
//! Each session that took a copy holds it ([`CopyHold`]) until its client
//! acknowledges it or the session ends. The message needs rerouting only
//! when the last holder lets go of it and no holder's client took it: then
//! exactly one copy is rerouted, however many sessions held one. Without
//! this, every ending session rerouted its copy to the account's bare JID,
//! which fanned it out again to every other session and doubled the copies
//! at each expiry.
//!
//! In a cluster the node that fanned the message out counts each other node
//! that got copies as one holder; that node counts its own sessions' copies
//! together (the bus carries the group's id with each copy) and, when the
//! last of them is done, reports back whether a client took one
//! ([`Copies::report_to`]). So the whole cluster reroutes at most one copy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Tells the node that fanned a message out that this node's copies are all
/// done, and whether a client took one; false when it could not be told.
pub type Report = Box<dyn Fn(bool) -> bool + Send + Sync>;

/// One message delivered to several sessions.
pub struct Copies {
    /// Names the group on the bus, so copies for several sessions of one
    /// node are counted together there.
    pub id: u64,
    /// Sessions that hold a copy their client has not acknowledged.
    held: AtomicUsize,
    /// A holder's client took its copy.
    taken: AtomicBool,
    /// Copies of a message another node fanned out: that node decides.
    report: OnceLock<Report>,
    /// The report went out: the other node answers for the message now.
    reported: AtomicBool,
}

impl std::fmt::Debug for Copies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copies")
            .field("id", &self.id)
            .field("held", &self.held)
            .field("taken", &self.taken)
            .finish()
    }
}

impl Copies {
    pub fn new() -> Arc<Copies> {
        Self::with_id(rand::random())
    }

    pub fn with_id(id: u64) -> Arc<Copies> {
        Arc::new(Copies {
            id,
            held: AtomicUsize::new(0),
            taken: AtomicBool::new(false),
            report: OnceLock::new(),
            reported: AtomicBool::new(false),
        })
    }

    /// Makes these the copies of a message that another node fanned out:
    /// when the last holder here is done, `report` tells that node instead
    /// of a holder here rerouting the message.
    pub fn report_to(&self, report: Report) {
        let _ = self.report.set(report);
    }

    /// A session takes a copy. Counted before the copy is handed over, so
    /// that a holder ending at once cannot see itself as the last.
    pub fn hold(self: &Arc<Self>) -> CopyHold {
        self.held.fetch_add(1, Ordering::AcqRel);
        CopyHold {
            copies: Some(self.clone()),
        }
    }

    /// Whether some session still holds a copy, a client took one, or the
    /// node that fanned the message out was told and decides.
    pub fn settled_or_held(&self) -> bool {
        self.taken.load(Ordering::Acquire)
            || self.held.load(Ordering::Acquire) > 0
            || self.reported.load(Ordering::Acquire)
    }

    /// One holder fewer. True when the caller must reroute the message: it
    /// was the last, no client took it, and no other node decides for it.
    fn let_go(&self, taken: bool) -> bool {
        if taken {
            self.taken.store(true, Ordering::Release);
        }
        if self.held.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        let taken = self.taken.load(Ordering::Acquire);
        if let Some(report) = self.report.get() {
            if report(taken) {
                self.reported.store(true, Ordering::Release);
                return false;
            }
        }
        !taken
    }
}

/// One session's copy. Dropped without a word (the copy was handed back to
/// whoever delivers it, or never reached the session), it stops counting;
/// the caller decides what becomes of the stanza.
#[derive(Debug)]
pub struct CopyHold {
    copies: Option<Arc<Copies>>,
}

impl CopyHold {
    /// The client acknowledged the copy (or, without stream management, it
    /// was written to its connection): nobody needs to reroute the message.
    pub fn taken(mut self) {
        if let Some(c) = self.copies.take() {
            c.let_go(true);
        }
    }

    /// The session ends with the copy unacknowledged. True when the caller
    /// must reroute the message: it was the last holder and no client took it.
    pub fn released(mut self) -> bool {
        match self.copies.take() {
            Some(c) => c.let_go(false),
            None => true,
        }
    }

    /// The copy moves with its session to another node (resumption there):
    /// it stays held, so the holders here never reroute it; the new node
    /// reroutes it alone if its session ends without an acknowledgement.
    pub fn moved_away(mut self) {
        self.copies.take();
    }

    pub fn group(&self) -> Option<&Arc<Copies>> {
        self.copies.as_ref()
    }
}

impl Drop for CopyHold {
    fn drop(&mut self) {
        // Whoever dropped it has the stanza back and decides on it, unless
        // another node does (then it is told as for any last holder).
        if let Some(c) = self.copies.take() {
            c.let_go(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_holder_reroutes() {
        let copies = Copies::new();
        let (a, b, c) = (copies.hold(), copies.hold(), copies.hold());
        assert!(!a.released());
        assert!(!b.released());
        assert!(c.released());
    }

    #[test]
    fn a_taken_copy_is_never_rerouted() {
        let copies = Copies::new();
        let (a, b) = (copies.hold(), copies.hold());
        a.taken();
        assert!(!b.released());
    }

    #[test]
    fn a_copy_handed_back_stops_counting() {
        let copies = Copies::new();
        let a = copies.hold();
        drop(copies.hold());
        assert!(a.released());
    }

    #[test]
    fn a_moved_copy_keeps_the_others_from_rerouting() {
        let copies = Copies::new();
        let (a, b) = (copies.hold(), copies.hold());
        a.moved_away();
        assert!(!b.released());
    }

    #[test]
    fn copies_of_another_nodes_message_are_reported_not_rerouted() {
        let copies = Copies::new();
        let said = Arc::new(std::sync::Mutex::new(Vec::new()));
        let said2 = said.clone();
        copies.report_to(Box::new(move |taken| {
            said2.lock().unwrap().push(taken);
            true
        }));
        let (a, b) = (copies.hold(), copies.hold());
        assert!(!a.released());
        assert!(!b.released());
        assert_eq!(*said.lock().unwrap(), [false]);
        assert!(copies.settled_or_held());
    }

    #[test]
    fn an_unreported_copy_is_rerouted_here() {
        let copies = Copies::new();
        copies.report_to(Box::new(|_| false));
        assert!(copies.hold().released());
    }

    #[test]
    fn a_lone_copy_is_rerouted() {
        assert!(CopyHold { copies: None }.released());
    }
}
