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
//! The accounting is per node: copies delivered to sessions of another node
//! are counted there (the bus carries the group's id with each copy).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// One message delivered to several sessions.
#[derive(Debug)]
pub struct Copies {
    /// Names the group on the bus, so copies for several sessions of one
    /// node are counted together there.
    pub id: u64,
    /// Sessions that hold a copy their client has not acknowledged.
    held: AtomicUsize,
    /// A holder's client took its copy.
    taken: AtomicBool,
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
        })
    }

    /// A session takes a copy. Counted before the copy is handed over, so
    /// that a holder ending at once cannot see itself as the last.
    pub fn hold(self: &Arc<Self>) -> CopyHold {
        self.held.fetch_add(1, Ordering::AcqRel);
        CopyHold {
            copies: Some(self.clone()),
        }
    }

    /// Whether some session still holds a copy, or a client took one.
    pub fn settled_or_held(&self) -> bool {
        self.taken.load(Ordering::Acquire) || self.held.load(Ordering::Acquire) > 0
    }
}

/// One session's copy. Dropped without a word (the copy was handed back to
/// whoever delivers it, or never reached the session), it only stops
/// counting.
#[derive(Debug)]
pub struct CopyHold {
    copies: Option<Arc<Copies>>,
}

impl CopyHold {
    /// The client acknowledged the copy (or, without stream management, it
    /// was written to its connection): nobody needs to reroute the message.
    pub fn taken(mut self) {
        if let Some(c) = self.copies.take() {
            c.taken.store(true, Ordering::Release);
            c.held.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The session ends with the copy unacknowledged. True when the caller
    /// must reroute the message: it was the last holder and no client took it.
    pub fn released(mut self) -> bool {
        let Some(c) = self.copies.take() else {
            return true;
        };
        let last = c.held.fetch_sub(1, Ordering::AcqRel) == 1;
        last && !c.taken.load(Ordering::Acquire)
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
        if let Some(c) = self.copies.take() {
            c.held.fetch_sub(1, Ordering::AcqRel);
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
    fn a_lone_copy_is_rerouted() {
        assert!(CopyHold { copies: None }.released());
    }
}
