//! Checks the raw stream for broken UTF-8 and for U+FFFE/U+FFFF (not XML
//! characters) as bytes arrive, carrying a split character over to the next
//! chunk.
//!
//! rxml checks these too, but only when it hands text out, and it holds text
//! back at a chunk end while a `]` or CR may begin something longer. Then
//! the split of the input would decide when (and, with a limit crossed
//! meanwhile, as what) a bad byte fails. Checked here in stream order, the
//! error always comes right after the bad sequence's last byte.

/// What [`Utf8Check::check`] found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every byte is fine (the chunk may end inside a character).
    Fine,
    /// The first `n` bytes may be parsed; the stream is broken right after.
    BadUtf8(usize),
    BadChar(usize),
}

#[derive(Debug, Default)]
pub(crate) struct Utf8Check {
    /// The start of a character the last chunk ended inside.
    pending: [u8; 4],
    pending_len: usize,
}

/// Bytes in the UTF-8 sequence this lead byte starts (for a valid lead).
fn width(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

/// Where the first U+FFFE or U+FFFF ends in `s`.
fn nonchar_end(s: &str) -> Option<usize> {
    // `find` with a char pattern searches with memchr.
    let a = s.find('\u{FFFE}');
    let b = s.find('\u{FFFF}');
    let start = match (a, b) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(start + 3)
}

impl Utf8Check {
    pub(crate) fn check(&mut self, data: &[u8]) -> Verdict {
        let mut used = 0;
        if self.pending_len > 0 {
            // Finish the split character first.
            let had = self.pending_len;
            let need = width(self.pending[0]);
            for &b in data.iter().take(need.saturating_sub(had)) {
                if let Some(slot) = self.pending.get_mut(self.pending_len) {
                    *slot = b;
                    self.pending_len += 1;
                    used += 1;
                }
            }
            let seq = self.pending.get(..self.pending_len).unwrap_or_default();
            match std::str::from_utf8(seq) {
                Ok(c) => {
                    self.pending_len = 0;
                    if nonchar_end(c).is_some() {
                        return Verdict::BadChar(used);
                    }
                }
                // Still incomplete: `data` ran out.
                Err(e) if e.error_len().is_none() => return Verdict::Fine,
                // The bad sequence may have ended in the bytes carried over.
                Err(e) => {
                    let bad = e.error_len().unwrap_or(1);
                    return Verdict::BadUtf8(bad.saturating_sub(had));
                }
            }
        }
        let rest = data.get(used..).unwrap_or_default();
        let (valid, broken) = match std::str::from_utf8(rest) {
            Ok(s) => (s, None),
            Err(e) => {
                let (ok, tail) = rest.split_at(e.valid_up_to());
                // `ok` is what from_utf8 just validated.
                (std::str::from_utf8(ok).unwrap_or_default(), Some((e, tail)))
            }
        };
        if let Some(end) = nonchar_end(valid) {
            return Verdict::BadChar(used + end);
        }
        match broken {
            None => Verdict::Fine,
            Some((e, _)) if e.error_len().is_some() => {
                Verdict::BadUtf8(used + e.valid_up_to() + e.error_len().unwrap_or(1))
            }
            Some((_, tail)) => {
                // Ends inside a character (at most 3 bytes): keep them.
                for (slot, &b) in self.pending.iter_mut().zip(tail) {
                    *slot = b;
                }
                self.pending_len = tail.len().min(3);
                Verdict::Fine
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the stream breaks, and whether as bad UTF-8 (else a bad char).
    type Break = Option<(usize, bool)>;

    /// The first verdict for `input` fed in pieces of `n`, as a whole-input
    /// offset.
    fn first_bad(input: &[u8], n: usize) -> Break {
        let mut c = Utf8Check::default();
        let mut offset = 0;
        for piece in input.chunks(n) {
            match c.check(piece) {
                Verdict::Fine => offset += piece.len(),
                Verdict::BadUtf8(k) => return Some((offset + k, true)),
                Verdict::BadChar(k) => return Some((offset + k, false)),
            }
        }
        None
    }

    #[test]
    fn same_verdict_for_every_chunking() {
        let cases: [(&[u8], Break); 8] = [
            ("aé☃𝄞b".as_bytes(), None),
            (b"ab\xffcd", Some((3, true))),
            (b"ab\xe2\x98Acd", Some((4, true))),
            (b"ab\xe2Acd", Some((3, true))),
            (b"a\xed\xa0\x80", Some((2, true))),
            ("ab\u{FFFE}cd".as_bytes(), Some((5, false))),
            ("\u{FFFF}".as_bytes(), Some((3, false))),
            (b"ab\xe2\x98", None),
        ];
        for (input, expected) in cases {
            for n in 1..=input.len().max(1) {
                assert_eq!(first_bad(input, n), expected, "{input:?} in pieces of {n}");
            }
        }
    }
}
