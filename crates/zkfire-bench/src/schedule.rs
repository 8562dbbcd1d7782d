//! The open-loop timetable.
//!
//! Stanza `n` of a run is due at exactly `start + n / rate` seconds, whatever
//! the server answers or how late the generator is: a sender that falls
//! behind sends everything that is due at once, and its latency still counts
//! from the time the stanza was due (no coordinated omission). Each due time
//! is computed from `n` in integer nanoseconds, never by adding periods, so
//! there is no drift however long the run.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
    total: u64,
}

impl Schedule {
    /// `rate` stanzas per second (at least 1) for `duration`, at most `max`
    /// stanzas: stanza `n` exists when its due time is before `duration`.
    pub fn new(rate: u64, duration: Duration, max: u64) -> Schedule {
        let rate = rate.max(1);
        let in_time = duration.as_nanos() * u128::from(rate);
        let fit = in_time.div_ceil(NANOS_PER_SEC);
        let total = u64::try_from(fit).unwrap_or(u64::MAX).min(max);
        Schedule { rate, total }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How many stanzas the timetable holds.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// When stanza `n` is due, from the start: `floor(n * 1e9 / rate)` ns.
    pub fn offset(&self, n: u64) -> Duration {
        let nanos = u128::from(n) * NANOS_PER_SEC / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many stanzas are due at `elapsed` after the start (those whose
    /// due time is at or before it), capped at the total.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // offset(n) <= e  <=>  n * 1e9 / rate < floor(e) + 1 (in ns)
        //                 <=>  n * 1e9 < (e + 1) * rate
        //                 <=>  n <= ((e + 1) * rate - 1) / 1e9
        let e = elapsed.as_nanos();
        let last = ((e + 1) * u128::from(self.rate) - 1) / NANOS_PER_SEC;
        u64::try_from(last + 1).unwrap_or(u64::MAX).min(self.total)
    }

    /// Due time of the last stanza (zero when there is none).
    pub fn span(&self) -> Duration {
        self.offset(self.total.saturating_sub(1))
    }

    /// The time the timetable covers: `total / rate` (one period past the
    /// last due time), over which a run that keeps up delivers `rate`/s.
    pub fn window(&self) -> Duration {
        self.offset(self.total)
    }
}

/// The stanzas one sender owns: `first`, `first + stride`, ... below the
/// schedule's total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    next: u64,
    stride: u64,
    total: u64,
}

impl Lane {
    pub fn new(first: u64, stride: u64, total: u64) -> Lane {
        Lane {
            next: first,
            stride: stride.max(1),
            total,
        }
    }

    /// The next stanza number, if any is left.
    pub fn peek(&self) -> Option<u64> {
        (self.next < self.total).then_some(self.next)
    }

    /// Takes every stanza of this lane that is due at `elapsed` (per
    /// `schedule`), in order.
    pub fn take_due(&mut self, schedule: &Schedule, elapsed: Duration, out: &mut Vec<u64>) {
        let due = schedule.due_by(elapsed).min(self.total);
        while self.next < due {
            out.push(self.next);
            self.next += self.stride;
        }
    }

    /// How many stanzas were left untaken.
    pub fn remaining(&self) -> u64 {
        if self.next >= self.total {
            0
        } else {
            (self.total - self.next).div_ceil(self.stride)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_exact_multiples() {
        let s = Schedule::new(1000, Duration::from_secs(10), u64::MAX);
        assert_eq!(s.total(), 10_000);
        for n in [0u64, 1, 2, 999, 1000, 9_999] {
            assert_eq!(s.offset(n), Duration::from_millis(n));
        }
        assert_eq!(s.span(), Duration::from_millis(9_999));
        assert_eq!(s.window(), Duration::from_secs(10));
    }

    #[test]
    fn no_drift_over_a_long_run() {
        // 3/s does not divide a second into whole nanoseconds; adding a
        // rounded period would drift by 1 ns per stanza. Computing from n
        // lands exactly on every third stanza.
        let s = Schedule::new(3, Duration::from_secs(10_000_000), u64::MAX);
        assert_eq!(s.offset(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.offset(2), Duration::from_nanos(666_666_666));
        assert_eq!(s.offset(3), Duration::from_secs(1));
        assert_eq!(s.offset(3_000_000), Duration::from_secs(1_000_000));
        assert_eq!(
            s.offset(3_000_001),
            Duration::from_secs(1_000_000) + Duration::from_nanos(333_333_333)
        );
        // And 7/s over a day: every 7th stanza is on a whole second.
        let s = Schedule::new(7, Duration::from_secs(86_400), u64::MAX);
        for k in [1u64, 60, 3_600, 86_399] {
            assert_eq!(s.offset(7 * k), Duration::from_secs(k));
        }
    }

    #[test]
    fn due_times_increase_and_stay_within_one_period() {
        let s = Schedule::new(7_919, Duration::from_secs(3), u64::MAX);
        let period = Duration::from_nanos(1_000_000_000 / 7_919 + 1);
        let mut last = Duration::ZERO;
        for n in 1..s.total() {
            let t = s.offset(n);
            assert!(t > last);
            assert!(t - last <= period);
            last = t;
        }
    }

    #[test]
    fn total_is_bounded_by_duration_and_max() {
        assert_eq!(Schedule::new(100, Duration::from_secs(2), 50).total(), 50);
        assert_eq!(Schedule::new(100, Duration::from_secs(2), 500).total(), 200);
        // Half a period past a due time still includes it.
        assert_eq!(
            Schedule::new(10, Duration::from_millis(150), 500).total(),
            2
        );
        assert_eq!(Schedule::new(10, Duration::ZERO, 500).total(), 0);
        // A rate of 0 is taken as 1.
        assert_eq!(Schedule::new(0, Duration::from_secs(3), 500).total(), 3);
    }

    #[test]
    fn due_by_agrees_with_offset() {
        for rate in [1u64, 3, 7, 1000, 49_999] {
            let s = Schedule::new(rate, Duration::from_secs(2), u64::MAX);
            for n in 0..s.total().min(2000) {
                let t = s.offset(n);
                assert_eq!(s.due_by(t), n + 1, "rate {rate} n {n}");
                if t > Duration::ZERO {
                    assert_eq!(
                        s.due_by(t - Duration::from_nanos(1)),
                        n,
                        "rate {rate} n {n}"
                    );
                }
            }
            assert_eq!(s.due_by(Duration::from_secs(1_000)), s.total());
        }
    }

    #[test]
    fn lanes_partition_the_timetable() {
        let s = Schedule::new(1000, Duration::from_millis(101), u64::MAX);
        let stride = 4;
        let mut lanes: Vec<Lane> = (0..stride)
            .map(|i| Lane::new(i, stride, s.total()))
            .collect();
        let mut seen = Vec::new();
        // Polled at irregular times, as a late sender would be.
        for ms in [0u64, 3, 4, 50, 51, 99, 100, 500] {
            for lane in &mut lanes {
                lane.take_due(&s, Duration::from_millis(ms), &mut seen);
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..s.total()).collect::<Vec<_>>());
        assert!(lanes
            .iter()
            .all(|l| l.peek().is_none() && l.remaining() == 0));
    }

    #[test]
    fn lane_takes_only_what_is_due() {
        let s = Schedule::new(10, Duration::from_secs(10), u64::MAX);
        let mut lane = Lane::new(1, 3, s.total());
        assert_eq!(lane.remaining(), 33);
        let mut out = Vec::new();
        lane.take_due(&s, Duration::from_millis(99), &mut out);
        assert!(out.is_empty());
        lane.take_due(&s, Duration::from_millis(100), &mut out);
        assert_eq!(out, vec![1]);
        lane.take_due(&s, Duration::from_millis(1_000), &mut out);
        assert_eq!(out, vec![1, 4, 7, 10]);
        assert_eq!(lane.peek(), Some(13));
        assert_eq!(lane.remaining(), 29);
    }
}
