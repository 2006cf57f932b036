//! The in-memory history the forecaster learns from: a bounded ring of
//! samples per metric, in the seed's `PerformanceData` shape.

use std::collections::{BTreeMap, VecDeque};

pub use shadow_api::history::PerformanceData;

/// Per-metric rings of `(timestamp, value)`; the oldest sample goes first
/// when a ring is full, and metrics beyond `max_metrics` are refused and
/// counted rather than growing memory without bound.
#[derive(Debug)]
pub struct History {
    server_id: String,
    capacity: usize,
    max_metrics: usize,
    series: BTreeMap<String, VecDeque<(u64, f64)>>,
    /// Samples refused because `max_metrics` series already exist.
    pub refused: u64,
}

impl History {
    pub fn new(server_id: impl Into<String>, capacity: usize, max_metrics: usize) -> Self {
        Self {
            server_id: server_id.into(),
            capacity: capacity.max(1),
            max_metrics,
            series: BTreeMap::new(),
            refused: 0,
        }
    }

    pub fn push(&mut self, timestamp: u64, metric: &str, value: f64) {
        if !self.series.contains_key(metric) && self.series.len() >= self.max_metrics {
            self.refused += 1;
            return;
        }
        let ring = self.series.entry(metric.to_owned()).or_default();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back((timestamp, value));
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
}
