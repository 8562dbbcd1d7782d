//! Account names, the marker carried by measured stanzas, and who is whose
//! contact in the presence scenario.

/// Accounts `<prefix><i>@<domain>` for `i` in `0..count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    pub prefix: String,
    pub domain: String,
    pub count: usize,
}

impl Accounts {
    /// The localpart of account `i`.
    pub fn node(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    pub fn bare(&self, i: usize) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }

    /// The account number of a JID (bare or full) of this run, if it is one.
    pub fn index_of(&self, jid: &str) -> Option<usize> {
        let bare = jid.split('/').next().unwrap_or(jid);
        let (node, domain) = bare.split_once('@')?;
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        let digits = node.strip_prefix(&self.prefix)?;
        // No sign, no leading zeros (other than "0" itself): one spelling per account.
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().filter(|&i| i < self.count)
    }
}

/// The text put in a measured stanza (message body or presence status):
/// `zkb <run> <n>`, then padding. The run id keeps stanzas of an earlier run
/// (stored offline by the server, say) from counting in this one.
pub fn marker(run: u32, n: u64, pad_to: usize) -> String {
    let mut s = format!("zkb {run} {n} ");
    while s.len() < pad_to {
        s.push('x');
    }
    s
}

/// What a received text says about the run it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Stanza `n` of this run.
    This(u64),
    /// A marker of another run.
    Stale,
    /// No marker at all.
    None,
}

pub fn parse_marker(text: &str, run: u32) -> Marked {
    let mut words = text.split(' ');
    if words.next() != Some("zkb") {
        return Marked::None;
    }
    let (Some(r), Some(n)) = (words.next(), words.next()) else {
        return Marked::None;
    };
    match (r.parse::<u32>(), n.parse::<u64>()) {
        (Ok(r), Ok(n)) if r == run => Marked::This(n),
        (Ok(_), Ok(_)) => Marked::Stale,
        _ => Marked::None,
    }
}

/// A ring roster: account `i` has the `k` accounts nearest to it on a ring
/// of `n` as contacts, `k / 2` on each side (`k` is even and below `n`, so
/// the relation is symmetric and no one is their own contact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring {
    n: usize,
    half: usize,
}

impl Ring {
    /// `None` unless `k` is even, positive and below `n`.
    pub fn new(n: usize, k: usize) -> Option<Ring> {
        (k > 0 && k & 1 == 0 && k < n).then_some(Ring { n, half: k / 2 })
    }

    /// Contacts per account.
    pub fn k(&self) -> usize {
        self.half * 2
    }

    /// The contacts of `i`, in slot order.
    pub fn contacts(&self, i: usize) -> Vec<usize> {
        (0..self.k())
            .filter_map(|slot| self.contact_at(i, slot))
            .collect()
    }

    /// Contact number `slot` of `i`: slots `0..k/2` are `i+1 ..= i+k/2`,
    /// slots `k/2..k` are `i-1 ..= i-k/2` (on the ring).
    pub fn contact_at(&self, i: usize, slot: usize) -> Option<usize> {
        if i >= self.n || slot >= self.k() {
            return None;
        }
        Some(if slot < self.half {
            (i + slot + 1) % self.n
        } else {
            (i + self.n - (slot - self.half + 1)) % self.n
        })
    }

    /// Which slot `to` is among the contacts of `from`, if it is one.
    pub fn slot_of(&self, from: usize, to: usize) -> Option<usize> {
        if from >= self.n || to >= self.n {
            return None;
        }
        let ahead = (to + self.n - from) % self.n;
        let behind = (from + self.n - to) % self.n;
        if (1..=self.half).contains(&ahead) {
            Some(ahead - 1)
        } else if (1..=self.half).contains(&behind) {
            Some(self.half + behind - 1)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        Accounts {
            prefix: "bench".into(),
            domain: "localhost".into(),
            count: 100,
        }
    }

    #[test]
    fn names_and_back() {
        let a = accounts();
        assert_eq!(a.bare(7), "bench7@localhost");
        assert_eq!(a.index_of("bench7@localhost"), Some(7));
        assert_eq!(a.index_of("bench7@LOCALHOST/res"), Some(7));
        assert_eq!(a.index_of("bench0@localhost"), Some(0));
        assert_eq!(a.index_of("bench07@localhost"), None);
        assert_eq!(a.index_of("bench100@localhost"), None);
        assert_eq!(a.index_of("bench-1@localhost"), None);
        assert_eq!(a.index_of("bench@localhost"), None);
        assert_eq!(a.index_of("other7@localhost"), None);
        assert_eq!(a.index_of("bench7@example.org"), None);
        assert_eq!(a.index_of("localhost"), None);
    }

    #[test]
    fn marker_round_trip() {
        let m = marker(42, 123_456, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(parse_marker(&m, 42), Marked::This(123_456));
        assert_eq!(parse_marker(&m, 41), Marked::Stale);
        assert_eq!(parse_marker("hello", 42), Marked::None);
        assert_eq!(parse_marker("zkb 42", 42), Marked::None);
        assert_eq!(parse_marker("zkb x 1", 42), Marked::None);
        assert_eq!(parse_marker(&marker(1, 2, 0), 1), Marked::This(2));
    }

    #[test]
    fn ring_needs_even_k_below_n() {
        assert!(Ring::new(10, 0).is_none());
        assert!(Ring::new(10, 3).is_none());
        assert!(Ring::new(10, 10).is_none());
        assert!(Ring::new(3, 2).is_some());
    }

    #[test]
    fn ring_is_symmetric_and_slots_invert() {
        for (n, k) in [(3, 2), (5, 4), (10, 4), (11, 10), (100, 20)] {
            let r = Ring::new(n, k).unwrap();
            for i in 0..n {
                let c = r.contacts(i);
                assert_eq!(c.len(), k);
                let mut uniq = c.clone();
                uniq.sort_unstable();
                uniq.dedup();
                assert_eq!(uniq.len(), k, "n {n} k {k} i {i}");
                assert!(!c.contains(&i));
                for (slot, &j) in c.iter().enumerate() {
                    assert!(r.contacts(j).contains(&i), "symmetric");
                    assert_eq!(r.slot_of(i, j), Some(slot));
                }
                let strangers = (0..n).filter(|j| r.slot_of(i, *j).is_none()).count();
                assert_eq!(strangers, n - k);
            }
        }
    }

    #[test]
    fn ring_wraps() {
        let r = Ring::new(10, 4).unwrap();
        assert_eq!(r.contacts(0), vec![1, 2, 9, 8]);
        assert_eq!(r.contacts(9), vec![0, 1, 8, 7]);
        assert_eq!(r.contact_at(0, 4), None);
        assert_eq!(r.slot_of(0, 5), None);
        assert_eq!(r.slot_of(0, 0), None);
    }
}
