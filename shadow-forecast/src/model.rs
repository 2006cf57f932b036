//! The interface every forecaster implements, baselines and LSTM alike, and
//! the forecast it returns.

use serde::{Deserialize, Serialize};

use crate::{error::ForecastError, series::Series};

/// The quantiles every model forecasts (P10, P50, P90).
pub const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

/// What a model is fitted on and forecasts from: a regular series ending at
/// the forecast origin.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
    /// Unix seconds of `values[0]`.
    pub start: i64,
    pub step: i64,
    /// A related series on the same grid (request rate when forecasting CPU).
    pub related: Option<&'a [f64]>,
    /// Training weight of each point in [0, 1]; anomalous stretches get less.
    pub weights: Option<&'a [f64]>,
}

impl<'a> Input<'a> {
    /// `values` on a regular grid from `start` every `step` seconds, with
    /// no related series and no weights.
    pub fn new(name: &'a str, values: &'a [f64], start: i64, step: i64) -> Self {
        Self {
            name,
            values,
            start,
            step,
            related: None,
            weights: None,
        }
    }

    pub fn from_series(s: &'a Series) -> Self {
        Self {
            name: &s.name,
            values: &s.values,
            start: s.start,
            step: s.step,
            related: None,
            weights: None,
        }
    }

    pub fn with_related(mut self, related: &'a [f64]) -> Self {
        self.related = Some(related);
        self
    }

    pub fn with_weights(mut self, weights: &'a [f64]) -> Self {
        self.weights = Some(weights);
        self
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The first `n` points: the history as it stood at origin `n`.
    pub fn head(&self, n: usize) -> Input<'a> {
        let n = n.min(self.len());
        Input {
            values: &self.values[..n],
            related: self.related.map(|r| &r[..n.min(r.len())]),
            weights: self.weights.map(|w| &w[..n.min(w.len())]),
            ..*self
        }
    }

    /// The timestamp of point `i` (which may lie past the end).
    pub fn time(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    /// Checks the input against what a model needs.
    pub fn validate(&self, need: usize) -> Result<(), ForecastError> {
        if self.len() < need {
            return Err(ForecastError::TooShort {
                series: self.name.into(),
                need,
                got: self.len(),
            });
        }
        if let Some(i) = self.values.iter().position(|v| !v.is_finite()) {
            return Err(ForecastError::NotFinite {
                series: self.name.into(),
                index: i,
                value: self.values[i],
            });
        }
        if let Some(r) = self.related
            && r.len() != self.len()
        {
            return Err(ForecastError::RelatedLength {
                series: self.name.into(),
                need: self.len(),
                got: r.len(),
            });
        }
        Ok(())
    }
}

/// A multi-horizon forecast with its P10-P90 interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Unix seconds of the first forecast point (one step past the origin).
    pub start: i64,
    pub step: i64,
    pub p10: Vec<f64>,
    pub p50: Vec<f64>,
    pub p90: Vec<f64>,
}

impl Forecast {
    pub fn len(&self) -> usize {
        self.p50.len()
    }

    pub fn is_empty(&self) -> bool {
        self.p50.is_empty()
    }

    /// Keeps the quantiles ordered (P10 <= P50 <= P90) whatever a model did.
    pub fn sorted(mut self) -> Self {
        for i in 0..self.len() {
            let mut q = [self.p10[i], self.p50[i], self.p90[i]];
            q.sort_by(f64::total_cmp);
            [self.p10[i], self.p50[i], self.p90[i]] = q;
        }
        self
    }

    /// Widens (or narrows) the interval around P50 by `scale`: the
    /// conformal calibration step.
    pub fn scaled(mut self, scale: f64) -> Self {
        for i in 0..self.len() {
            let m = self.p50[i];
            self.p10[i] = m - scale * (m - self.p10[i]);
            self.p90[i] = m + scale * (self.p90[i] - m);
        }
        self
    }

    pub fn truncated(mut self, horizon: usize) -> Self {
        self.p10.truncate(horizon);
        self.p50.truncate(horizon);
        self.p90.truncate(horizon);
        self
    }
}

/// A forecasting model. `fit` learns from a history; `forecast` predicts
/// the `horizon` steps after the end of `input`, which may be a newer
/// history than the one it was fitted on.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// A short stable name (`seasonal_naive`, `ets`, `mstl`, `lstm`).
    fn name(&self) -> &'static str;

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError>;

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError>;

    /// The fewest points `fit` accepts.
    fn min_history(&self) -> usize {
        2
    }
}

/// Empirical quantile (linear interpolation) of unsorted data.
pub fn quantile(data: &[f64], q: f64) -> f64 {
    if data.is_empty() {
        return f64::NAN;
    }
    let mut v = data.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}
