//! The agent's view of a kernel log2 histogram: serialisable, with deltas
//! and quantile estimates.

use serde::{Deserialize, Serialize};
use shadow_common::{HIST_BUCKETS, Log2Hist, hist::bucket_upper_bound};

/// Bucket `i` counts values in `[2^i, 2^(i+1))` (0 lands in bucket 0).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hist {
    pub buckets: Vec<u64>,
    pub sum: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            buckets: vec![0; HIST_BUCKETS],
            sum: 0,
        }
    }
}

impl From<&Log2Hist> for Hist {
    fn from(h: &Log2Hist) -> Self {
        Self {
            buckets: h.buckets.to_vec(),
            sum: h.sum,
        }
    }
}

impl Hist {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn merge(&mut self, other: &Self) {
        self.buckets
            .resize(HIST_BUCKETS.max(other.buckets.len()), 0);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Activity between `earlier` and `self` (kernel counters only grow; a
    /// reset, such as an LRU eviction, yields zero rather than wrapping).
    pub fn delta(&self, earlier: &Self) -> Self {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| b.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Self {
            buckets,
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }

    /// Upper bound of the bucket holding the `q` quantile (0..=1); `None`
    /// when empty. Log2 buckets make this exact to within a factor of two.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Some(bucket_upper_bound(i));
            }
        }
        None
    }

    /// Mean of the recorded values, from the exact sum.
    pub fn mean(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum as f64 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadow_common::log2_bucket;

    #[test]
    fn log2_bucket_edges() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(4), 2);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), 63);
        for shift in 0..64 {
            let v = 1u64 << shift;
            assert_eq!(log2_bucket(v), shift, "2^{shift}");
            assert_eq!(
                log2_bucket(v | (v - 1)),
                shift,
                "2^{shift} + all lower bits"
            );
        }
    }

    #[test]
    fn log2_bucket_matches_float_log2() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x >> (x % 64);
            if v == 0 {
                continue;
            }
            assert_eq!(log2_bucket(v), 63 - v.leading_zeros(), "{v}");
        }
    }

    #[test]
    fn bucket_bounds_hold_their_values() {
        for i in 0..63 {
            let hi = bucket_upper_bound(i);
            assert_eq!(log2_bucket(hi) as usize, i);
            assert_eq!(log2_bucket(hi + 1) as usize, i + 1);
        }
    }

    #[test]
    fn record_count_sum_and_quantiles() {
        let mut k = Log2Hist::ZERO;
        for v in [1_000u64, 1_000, 1_000, 2_000_000] {
            k.record(v);
        }
        let h = Hist::from(&k);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum, 2_003_000);
        // 1000 is in [512, 1024): upper bound 1023.
        assert_eq!(h.quantile(0.5), Some(1023));
        assert_eq!(h.quantile(0.75), Some(1023));
        // 2e6 is in [2^20, 2^21).
        assert_eq!(h.quantile(0.99), Some((1 << 21) - 1));
        assert_eq!(Hist::default().quantile(0.5), None);
        assert_eq!(h.mean(), Some(500_750.0));
    }

    #[test]
    fn delta_and_merge() {
        let mut a = Log2Hist::ZERO;
        a.record(10);
        let before = Hist::from(&a);
        a.record(10);
        a.record(100);
        let after = Hist::from(&a);
        let d = after.delta(&before);
        assert_eq!(d.count(), 2);
        assert_eq!(d.sum, 110);
        let mut m = before.clone();
        m.merge(&d);
        assert_eq!(m, after);
        // A histogram that went backwards (evicted and recreated) gives no
        // negative activity.
        assert_eq!(before.delta(&after).count(), 0);
    }
}
