//! The in-memory history the forecaster learns from: a bounded ring of
//! samples per metric, in the seed's `PerformanceData` shape. Series come
//! and go with processes and devices, so a series with no sample for the
//! staleness window is evicted when a new one needs its slot.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use shadow_api::history::PerformanceData;

/// How long a series may go without a sample before its slot can be
/// given to a new one, unless `--history-stale` says otherwise.
pub const DEFAULT_STALE: Duration = Duration::from_secs(300);

/// Per-metric rings of `(timestamp, value)`; the oldest sample goes first
/// when a ring is full. A new metric beyond `max_metrics` first evicts the
/// series that went stale; if none did, it is refused and counted rather
/// than growing memory without bound.
#[derive(Debug)]
pub struct History {
    server_id: String,
    capacity: usize,
    max_metrics: usize,
    stale_ms: u64,
    series: BTreeMap<String, VecDeque<(u64, f64)>>,
    /// Samples refused because `max_metrics` live series already exist.
    pub refused: u64,
    /// Series evicted because they stopped reporting.
    pub evicted: u64,
}

impl History {
    pub fn new(server_id: impl Into<String>, capacity: usize, max_metrics: usize) -> Self {
        Self::with_staleness(server_id, capacity, max_metrics, DEFAULT_STALE)
    }

    pub fn with_staleness(
        server_id: impl Into<String>,
        capacity: usize,
        max_metrics: usize,
        stale: Duration,
    ) -> Self {
        Self {
            server_id: server_id.into(),
            capacity: capacity.max(1),
            max_metrics,
            stale_ms: u64::try_from(stale.as_millis()).unwrap_or(u64::MAX),
            series: BTreeMap::new(),
            refused: 0,
            evicted: 0,
        }
    }

    pub fn push(&mut self, timestamp: u64, metric: &str, value: f64) {
        if !self.series.contains_key(metric) && self.series.len() >= self.max_metrics {
            self.evict_stale(timestamp);
            if self.series.len() >= self.max_metrics {
                self.refused += 1;
                return;
            }
        }
        let ring = self.series.entry(metric.to_owned()).or_default();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back((timestamp, value));
    }

    /// Drops every series whose newest sample is older than the staleness
    /// window at `now`: one scan frees all the slots churn left behind.
    fn evict_stale(&mut self, now: u64) {
        let before = self.series.len();
        let stale_ms = self.stale_ms;
        self.series.retain(|_, ring| {
            ring.back()
                .is_some_and(|&(t, _)| now.saturating_sub(t) <= stale_ms)
        });
        self.evicted += (before - self.series.len()) as u64;
    }

    pub fn metrics(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }

    /// The samples of `metric`, oldest first.
    pub fn get(&self, metric: &str) -> Vec<PerformanceData> {
        self.series
            .get(metric)
            .map(|ring| {
                ring.iter()
                    .map(|&(timestamp, value)| PerformanceData {
                        timestamp,
                        server_id: self.server_id.clone(),
                        metric: metric.to_owned(),
                        value,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The newest sample of `metric`, as `(unix ms, value)`.
    pub fn last(&self, metric: &str) -> Option<(u64, f64)> {
        self.series.get(metric)?.back().copied()
    }

    /// The values of `metric`, oldest first (no copies of the names).
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.series
            .get(metric)
            .map(|ring| ring.iter().map(|&(_, v)| v).collect())
            .unwrap_or_default()
    }

    pub fn len(&self, metric: &str) -> usize {
        self.series.get(metric).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest() {
        let mut h = History::new("host-a", 3, 10);
        for t in 0..5 {
            h.push(t, "cpu", t as f64);
        }
        let got: Vec<u64> = h.get("cpu").iter().map(|p| p.timestamp).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(h.get("cpu")[0].server_id, "host-a");
    }

    #[test]
    fn metric_count_is_bounded_and_counted() {
        let mut h = History::new("h", 3, 2);
        h.push(0, "a", 1.0);
        h.push(0, "b", 1.0);
        h.push(0, "c", 1.0);
        h.push(1, "a", 2.0);
        assert_eq!(h.metrics().count(), 2);
        assert_eq!(h.refused, 1);
        assert_eq!(h.len("a"), 2);
    }

    #[test]
    fn series_that_stopped_reporting_give_their_slots_to_new_ones() {
        let max = 256;
        let mut h = History::with_staleness("h", 4, max, Duration::from_secs(60));
        // One process's worth of per-pid series, all reporting at t = 0 s...
        for i in 0..max {
            h.push(0, &format!("proc.{i}.cpu"), 1.0);
        }
        // ...and one that keeps reporting.
        h.push(50_000, "proc.0.cpu", 2.0);
        // Before the window passes, the table is full: refused, nothing evicted.
        h.push(30_000, "proc.new.cpu", 1.0);
        assert_eq!((h.refused, h.evicted), (1, 0));
        assert_eq!(h.len("proc.new.cpu"), 0);
        // After it, the 255 silent series go and the newcomer is accepted.
        h.push(61_000, "proc.new.cpu", 1.0);
        assert_eq!(h.len("proc.new.cpu"), 1);
        assert_eq!(h.evicted, (max - 1) as u64);
        assert_eq!(h.refused, 1);
        assert_eq!(h.len("proc.0.cpu"), 2, "the series still reporting stays");
        assert_eq!(h.metrics().count(), 2);
    }

    #[test]
    fn a_full_table_of_live_series_still_refuses() {
        let mut h = History::with_staleness("h", 4, 2, Duration::from_secs(60));
        h.push(0, "a", 1.0);
        h.push(0, "b", 1.0);
        h.push(59_000, "a", 1.0);
        h.push(59_000, "b", 1.0);
        h.push(100_000, "c", 1.0);
        assert_eq!((h.refused, h.evicted), (1, 0));
        assert_eq!(h.metrics().collect::<Vec<_>>(), vec!["a", "b"]);
    }
}
