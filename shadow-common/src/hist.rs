//! Log2 histograms as the kernel keeps them.
//!
//! Bucket `i` counts values `v` with `floor(log2(v)) == i` (value 0 lands in
//! bucket 0), so bucket `i` covers `[2^i, 2^(i+1))`. The agent renders bucket
//! `i` as the Prometheus bucket `le = 2^(i+1) - 1` in the histogram's unit.

/// Number of buckets: enough for any `u64`.
pub const HIST_BUCKETS: usize = 64;

/// A log2 histogram with the exact sum of the recorded values.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    pub buckets: [u64; HIST_BUCKETS],
    /// Sum of all recorded values (wrapping), for Prometheus' `_sum`.
    pub sum: u64,
}

const _: () = assert!(core::mem::size_of::<Log2Hist>() == 8 * (HIST_BUCKETS + 1));

impl Log2Hist {
    pub const ZERO: Self = Self {
        buckets: [0; HIST_BUCKETS],
        sum: 0,
    };

    /// Total number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// Records one value (user space only: the kernel updates in place atomically).
    pub fn record(&mut self, value: u64) {
        self.buckets[log2_bucket(value) as usize] += 1;
        self.sum = self.sum.wrapping_add(value);
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// `self - earlier`, bucket by bucket (counters only grow, so this is the
    /// activity between two snapshots).
    pub fn delta(&self, earlier: &Self) -> Self {
        let mut out = Self::ZERO;
        for (i, b) in out.buckets.iter_mut().enumerate() {
            *b = self.buckets[i].wrapping_sub(earlier.buckets[i]);
        }
        out.sum = self.sum.wrapping_sub(earlier.sum);
        out
    }
}

/// The largest value that bucket `i` holds.
pub const fn bucket_upper_bound(i: usize) -> u64 {
    if i >= 63 { u64::MAX } else { (2u64 << i) - 1 }
}

/// `floor(log2(v))`, with 0 for `v == 0`, written as a fixed sequence of
/// shifts so the BPF verifier sees no loop.
#[inline(always)]
pub const fn log2_bucket(v: u64) -> u32 {
    let mut v = v;
    let mut r = 0u32;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}
