//! From the history's poll-interval samples to the forecaster's regular grid.
//!
//! [`Resampler`] averages samples into `step`-second bins aligned to the
//! unix epoch (so every agent bins alike) and emits a bin once a later
//! sample shows it is complete: no clock is read, which keeps it
//! deterministic. [`Grid`] keeps the completed bins; a bin with no samples
//! is a gap, which [`Grid::series`] interpolates (and marks) up to
//! `max_gap` bins, through shadow-forecast's `Series::from_points`. A
//! longer gap (the agent was stopped for hours) restarts the grid: hours
//! of invented data would teach the models fiction.

use std::collections::VecDeque;

use crate::{ForecastError, GridPolicy, Series};

/// A bin being filled.
#[derive(Debug, Clone, Copy)]
struct Bin {
    start: i64,
    sum: f64,
    n: u32,
}

/// Mean per bin of a stream of `(unix ms, value)` samples.
#[derive(Debug, Clone)]
pub struct Resampler {
    step: i64,
    current: Option<Bin>,
    /// The newest sample taken, so re-reading the history skips it.
    last_ms: Option<u64>,
}

impl Resampler {
    pub fn new(step: i64) -> Self {
        Self {
            step: step.max(1),
            current: None,
            last_ms: None,
        }
    }

    /// Takes the samples newer than the last one seen (the history hands
    /// over its whole ring each time) and returns the bins they completed.
    pub fn feed(&mut self, samples: impl IntoIterator<Item = (u64, f64)>) -> Vec<(i64, f64)> {
        let mut done = Vec::new();
        for (ms, v) in samples {
            if self.last_ms.is_some_and(|l| ms <= l) {
                continue;
            }
            self.last_ms = Some(ms);
            // A NaN sample would poison the whole bin's mean.
            if !v.is_finite() {
                continue;
            }
            let start = (ms / 1000) as i64 / self.step * self.step;
            match &mut self.current {
                Some(b) if b.start == start => {
                    b.sum += v;
                    b.n += 1;
                }
                slot => {
                    if let Some(b) = slot.take() {
                        done.push((b.start, b.sum / f64::from(b.n)));
                    }
                    *slot = Some(Bin {
                        start,
                        sum: v,
                        n: 1,
                    });
                }
            }
        }
        done
    }
}

/// Completed bins, oldest first: gaps of at most `max_gap` missing bins.
#[derive(Debug, Clone)]
pub struct Grid {
    pub step: i64,
    capacity: usize,
    max_gap: usize,
    points: VecDeque<(i64, f64)>,
}

impl Grid {
    pub fn new(step: i64, capacity: usize, max_gap: usize) -> Self {
        Self {
            step: step.max(1),
            capacity: capacity.max(2),
            max_gap,
            points: VecDeque::new(),
        }
    }

    /// Appends a bin; one older than the newest is ignored, and one after a
    /// gap longer than `max_gap` bins starts the grid afresh.
    pub fn push(&mut self, t: i64, v: f64) {
        if let Some(&(last, _)) = self.points.back() {
            if t <= last {
                return;
            }
            let missing = ((t - last) / self.step - 1) as usize;
            if missing > self.max_gap {
                self.points.clear();
            }
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back((t, v));
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The time of the newest bin.
    pub fn last(&self) -> Option<i64> {
        self.points.back().map(|p| p.0)
    }

    /// The time of the oldest bin.
    pub fn first(&self) -> Option<i64> {
        self.points.front().map(|p| p.0)
    }

    pub fn points(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.points.iter().copied()
    }

    /// The points as a regular series, gaps interpolated and marked.
    pub fn series(&self, name: &str) -> Result<Series, ForecastError> {
        let points: Vec<(i64, f64)> = self.points().collect();
        let policy = GridPolicy {
            step: Some(self.step),
            max_fill: self.max_gap,
            ..GridPolicy::default()
        };
        Series::from_points(name, &points, policy)
    }

    /// How many grid points the series will have (gaps counted).
    pub fn span(&self) -> usize {
        match (self.first(), self.last()) {
            (Some(a), Some(b)) => ((b - a) / self.step) as usize + 1,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample a second from `from` to `to` seconds, value = second.
    fn secs(from: u64, to: u64) -> Vec<(u64, f64)> {
        (from..to).map(|s| (s * 1000 + 250, s as f64)).collect()
    }

    #[test]
    fn bins_are_means_emitted_when_complete() {
        let mut r = Resampler::new(60);
        // 0..59 fills the first bin; it is complete only once 60 is seen.
        assert!(r.feed(secs(0, 60)).is_empty());
        let done = r.feed(secs(0, 61));
        assert_eq!(done, vec![(0, 29.5)], "re-fed samples are skipped");
        let done = r.feed(secs(61, 185));
        assert_eq!(done, vec![(60, 89.5), (120, 149.5)]);
    }

    #[test]
    fn empty_bins_are_gaps_and_nan_samples_are_skipped() {
        let mut r = Resampler::new(10);
        let mut samples = secs(0, 10);
        samples.push((5_500, f64::NAN));
        samples.sort_by_key(|s| s.0);
        samples.extend(secs(40, 51));
        let done = r.feed(samples);
        assert_eq!(
            done,
            vec![(0, 4.5), (40, 44.5)],
            "bins 10-30 had no samples"
        );
        let mut g = Grid::new(10, 100, 3);
        for (t, v) in done {
            g.push(t, v);
        }
        let s = g.series("m").unwrap();
        assert_eq!((s.start, s.step, s.len()), (0, 10, 5));
        assert_eq!(s.imputed, [false, true, true, true, false]);
        assert_eq!(s.values[2], 4.5 + (44.5 - 4.5) * 2.0 / 4.0);
        assert_eq!(g.span(), 5);
    }

    #[test]
    fn a_long_gap_restarts_the_grid_and_capacity_bounds_it() {
        let mut g = Grid::new(60, 3, 2);
        g.push(0, 1.0);
        g.push(60, 2.0);
        g.push(60, 9.0);
        assert_eq!(g.len(), 2, "a repeated bin is ignored");
        g.push(60 * 10, 3.0);
        assert_eq!(g.points().collect::<Vec<_>>(), vec![(600, 3.0)]);
        for k in 11..15 {
            g.push(60 * k, k as f64);
        }
        assert_eq!(g.len(), 3);
        assert_eq!(g.first(), Some(60 * 12));
        assert!(
            Grid::new(60, 3, 2).series("m").is_err(),
            "empty is too short"
        );
    }
}
