//! `GET /api/v1/snapshot`: the kernel's histograms and counters with names
//! resolved, and the host sample, as the poller published them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
pub use shadow_common::hist::bucket_upper_bound;
use shadow_common::{HIST_BUCKETS, Log2Hist};

/// The JSON view served at `/api/v1/snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct View {
    /// Unix milliseconds of the poll that produced this view.
    pub timestamp: u64,
    pub server_id: String,
    pub kernel: KernelSnapshot,
    pub host: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelSnapshot {
    pub block: Vec<BlockSeries>,
    pub endpoints: Vec<EndpointSeries>,
    pub drops: KernelDrops,
    /// Block requests issued since the programs were attached.
    pub block_issued: u64,
    /// `tcp_probe` events seen since attach.
    pub tcp_probes: u64,
    /// Of those, the ones whose RTT went into a histogram (all below 2,000
    /// a second, about 2,000 a second above).
    #[serde(default)]
    pub tcp_probes_sampled: u64,
    /// Errors the programs' bodies returned, by program and kind (every
    /// pair, zeros included, so rates can be taken).
    #[serde(default)]
    pub program_errors: Vec<ProgramErrors>,
}

/// How often one program's body failed one way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgramErrors {
    pub program: String,
    /// `field_read`, `packet_load`, `helper` or `other`.
    pub kind: String,
    pub count: u64,
}

/// Per (device, operation): latency and request size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockSeries {
    pub device: String,
    /// `major:minor`.
    pub dev: String,
    pub op: String,
    pub latency_ns: Hist,
    /// Its count is the number of requests, its sum the bytes moved.
    pub size_bytes: Hist,
    /// Requests the driver completed with an error (counted in the
    /// histograms too).
    #[serde(default)]
    pub errors: u64,
}

/// Per remote endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointSeries {
    pub addr: IpAddr,
    pub port: u16,
    /// `outbound` (a dependency this host connects to) or `inbound` (clients
    /// of a local listening port).
    pub direction: String,
    pub srtt_ns: Hist,
    pub connect_ns: Hist,
    pub lifetime_ns: Hist,
    pub conn_bytes: Hist,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub retransmits: u64,
    pub connections: u64,
    pub connect_failures: u64,
    pub closes: u64,
}

impl EndpointSeries {
    /// `addr:port`, with brackets for IPv6.
    pub fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.addr, self.port).to_string()
    }
}

/// Everything the kernel side dropped or could not fit, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelDrops {
    pub block_start_insert_failed: u64,
    pub block_complete_unmatched: u64,
    pub block_stats_insert_failed: u64,
    pub endpoint_insert_failed: u64,
    pub endpoints_evicted: u64,
    pub conn_insert_failed: u64,
    pub read_failed: u64,
}

impl KernelDrops {
    /// (reason, count) pairs, for metrics.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("block_start_map_full", self.block_start_insert_failed),
            ("block_complete_unmatched", self.block_complete_unmatched),
            ("block_stats_map_full", self.block_stats_insert_failed),
            ("endpoint_insert_failed", self.endpoint_insert_failed),
            ("endpoint_evicted", self.endpoints_evicted),
            ("conn_insert_failed", self.conn_insert_failed),
            ("field_read_failed", self.read_failed),
        ]
    }
}

impl KernelSnapshot {
    /// The endpoint `addr:port` in direction `dir`, if the kernel tracks it.
    pub fn endpoint(&self, addr: IpAddr, port: u16, dir: &str) -> Option<&EndpointSeries> {
        self.endpoints
            .iter()
            .find(|e| e.addr == addr && e.port == port && e.direction == dir)
    }

    /// The block series of `device` and `op`.
    pub fn block(&self, device: &str, op: &str) -> Option<&BlockSeries> {
        self.block.iter().find(|b| b.device == device && b.op == op)
    }
}

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
