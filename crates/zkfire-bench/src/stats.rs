//! Percentiles of recorded latencies.
//!
//! Latencies are kept exactly (one `u32` of microseconds per delivered
//! stanza, see [`crate::ledger`]) rather than in a bucketed histogram: a run
//! is bounded by `--max-messages`, so the memory is bounded too, and exact
//! values make the percentiles checkable by hand.

use serde::Serialize;

/// A percentile in hundredths of a percent (basis points), so that p99.9 is
/// exact in integer arithmetic: `Percentile(9990)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentile(pub u32);

impl Percentile {
    pub const P50: Percentile = Percentile(5000);
    pub const P90: Percentile = Percentile(9000);
    pub const P99: Percentile = Percentile(9900);
    pub const P999: Percentile = Percentile(9990);
    pub const MAX: Percentile = Percentile(10000);
}

/// The nearest-rank percentile of `sorted` (ascending): the smallest value
/// such that at least `p` of all values are at or below it. `None` when
/// there are no values.
pub fn percentile(sorted: &[u32], p: Percentile) -> Option<u32> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let bp = u64::from(p.0.min(10_000));
    // rank = ceil(p * n), 1-based, at least 1.
    let rank = (bp * n).div_ceil(10_000).max(1);
    sorted.get((rank - 1) as usize).copied()
}

/// Latency figures in milliseconds, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

impl LatencySummary {
    /// Summarizes latencies given in microseconds (sorted here).
    pub fn from_micros(mut values: Vec<u32>) -> LatencySummary {
        if values.is_empty() {
            return LatencySummary::default();
        }
        values.sort_unstable();
        let sum: u64 = values.iter().map(|&v| u64::from(v)).sum();
        let at = |p| percentile(&values, p).map(ms).unwrap_or_default();
        LatencySummary {
            count: values.len() as u64,
            min_ms: values.first().copied().map(ms).unwrap_or_default(),
            mean_ms: sum as f64 / values.len() as f64 / 1000.0,
            p50_ms: at(Percentile::P50),
            p90_ms: at(Percentile::P90),
            p99_ms: at(Percentile::P99),
            p999_ms: at(Percentile::P999),
            max_ms: at(Percentile::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_percentile() {
        assert_eq!(percentile(&[], Percentile::P50), None);
        assert_eq!(LatencySummary::from_micros(Vec::new()).count, 0);
    }

    #[test]
    fn single_value_is_every_percentile() {
        for p in [0, 1, 5000, 9900, 10000] {
            assert_eq!(percentile(&[7], Percentile(p)), Some(7));
        }
    }

    #[test]
    fn uniform_one_to_thousand() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, Percentile::P50), Some(500));
        assert_eq!(percentile(&v, Percentile::P90), Some(900));
        assert_eq!(percentile(&v, Percentile::P99), Some(990));
        assert_eq!(percentile(&v, Percentile::P999), Some(999));
        assert_eq!(percentile(&v, Percentile::MAX), Some(1000));
        assert_eq!(percentile(&v, Percentile(0)), Some(1));
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        // The textbook example: 15, 20, 35, 40, 50.
        let v = [15, 20, 35, 40, 50];
        assert_eq!(percentile(&v, Percentile(500)), Some(15));
        assert_eq!(percentile(&v, Percentile(3000)), Some(20));
        assert_eq!(percentile(&v, Percentile(4000)), Some(20));
        assert_eq!(percentile(&v, Percentile(5000)), Some(35));
        assert_eq!(percentile(&v, Percentile(10000)), Some(50));
    }

    #[test]
    fn bimodal_tail_is_seen_by_p99_only() {
        // 98.5 % fast (1 ms) and 1.5 % slow (100 ms), shuffled.
        let mut v: Vec<u32> = (0..10_000)
            .map(|i| if i % 200 < 3 { 100_000 } else { 1_000 })
            .collect();
        v.reverse();
        let s = LatencySummary::from_micros(v);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p90_ms, 1.0);
        assert_eq!(s.p99_ms, 100.0);
        assert_eq!(s.max_ms, 100.0);
        assert_eq!(s.min_ms, 1.0);
        let mean = (9_850.0 * 1.0 + 150.0 * 100.0) / 10_000.0;
        assert!((s.mean_ms - mean).abs() < 1e-9);
    }

    #[test]
    fn exponential_distribution_matches_its_quantiles() {
        // Quantile function of Exp(mean 10 ms) sampled at (i + 0.5) / n:
        // the nearest-rank percentiles must land on -mean * ln(1 - p).
        let n = 100_000u32;
        let v: Vec<u32> = (0..n)
            .map(|i| {
                let q = (f64::from(i) + 0.5) / f64::from(n);
                (-10_000.0 * (1.0 - q).ln()).round() as u32
            })
            .collect();
        let s = LatencySummary::from_micros(v);
        let expect = |p: f64| -10.0 * (1.0 - p).ln();
        assert!((s.p50_ms - expect(0.5)).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p90_ms - expect(0.9)).abs() < 0.01, "{}", s.p90_ms);
        assert!((s.p99_ms - expect(0.99)).abs() < 0.05, "{}", s.p99_ms);
        assert!((s.mean_ms - 10.0).abs() < 0.05, "{}", s.mean_ms);
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a: Vec<u32> = (0..1000).map(|i| (i * 7919) % 1000).collect();
        let mut b = a.clone();
        b.sort_unstable();
        assert_eq!(
            LatencySummary::from_micros(a),
            LatencySummary::from_micros(b)
        );
    }
}
