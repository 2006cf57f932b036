//! Residual anomaly detection: a point is anomalous when the actual value
//! has left the forecast's P10-P90 interval persistently (most of the last
//! few points outside), not for one blip. The flags feed back into
//! training: flagged stretches get weight 0, so the next fit neither learns
//! the anomaly as normal nor widens its intervals around it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{
    error::ForecastError,
    forecaster::{self, ForecasterConfig, Progress},
    model::{Forecast, Input},
    series::Series,
};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Points looked back over.
    pub window: usize,
    /// Of those, how many must be outside the interval to flag.
    pub min_outside: usize,
    /// Points either side of a flagged stretch also excluded from training.
    pub margin: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: 6,
            min_outside: 4,
            margin: 6,
        }
    }
}

/// The verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub outside: bool,
    /// How far outside, in interval half-widths (0 inside).
    pub excess: f64,
    /// Share of the window outside, lifted by how far outside: in [0, 1].
    pub score: f64,
    pub anomalous: bool,
}

/// Streaming state: feed actuals with the interval that was forecast for them.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectorConfig,
    recent: VecDeque<f64>,
}

impl Detector {
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            cfg,
            recent: VecDeque::with_capacity(cfg.window),
        }
    }

    pub fn observe(&mut self, actual: f64, p10: f64, p50: f64, p90: f64) -> Observation {
        let excess = if actual > p90 {
            (actual - p90) / (p90 - p50).max(f64::MIN_POSITIVE)
        } else if actual < p10 {
            (p10 - actual) / (p50 - p10).max(f64::MIN_POSITIVE)
        } else {
            0.0
        };
        if self.recent.len() == self.cfg.window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(excess);
        let outside = self.recent.iter().filter(|&&e| e > 0.0).count();
        let n = self.cfg.window.max(1) as f64;
        // Each outside point counts half, plus up to half more for distance.
        let score = self
            .recent
            .iter()
            .filter(|&&e| e > 0.0)
            .map(|&e| 0.5 + 0.5 * (e / 2.0).min(1.0))
            .sum::<f64>()
            / n;
        Observation {
            outside: excess > 0.0,
            excess,
            score: score.min(1.0),
            anomalous: excess > 0.0 && outside >= self.cfg.min_outside,
        }
    }

    /// Observes a whole forecast's worth of actuals.
    pub fn observe_all(&mut self, actual: &[f64], f: &Forecast) -> Vec<Observation> {
        actual
            .iter()
            .enumerate()
            .map(|(i, &y)| self.observe(y, f.p10[i], f.p50[i], f.p90[i]))
            .collect()
    }
}

/// Training weights from flags: 0 over flagged stretches and `margin`
/// points either side, 1 elsewhere.
pub fn weights(flags: &[bool], margin: usize) -> Vec<f64> {
    let mut w = vec![1.0; flags.len()];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        let (a, b) = (i.saturating_sub(margin), (i + margin + 1).min(flags.len()));
        w[a..b].iter_mut().for_each(|v| *v = 0.0);
    }
    w
}

/// How [`stream`] walks a series.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// Points never scored at the start (NAB's probationary period).
    pub probation: usize,
    /// Points between retrainings.
    pub retrain: usize,
    /// Points between forecasts from the newest history (<= `retrain`).
    pub reforecast: usize,
    /// Weight flagged stretches out of each retraining.
    pub feedback: bool,
    pub detector: DetectorConfig,
}

/// NAB's protocol, streaming: nothing is scored in the first `probation`
/// points; from there the forecaster is retrained every `retrain` points
/// on the history so far (anomalous stretches weighted out when
/// `feedback`), forecasts are refreshed every `reforecast` points, and each
/// point is judged against the interval forecast before it was seen.
pub fn stream(
    series: &Series,
    cfg: &ForecasterConfig,
    sc: StreamConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Observation>, ForecastError> {
    let n = series.len();
    let none = Observation {
        outside: false,
        excess: 0.0,
        score: 0.0,
        anomalous: false,
    };
    let mut out = vec![none; sc.probation.min(n)];
    let mut detector = Detector::new(sc.detector);
    let cfg = ForecasterConfig {
        horizon: sc.retrain.max(1),
        ..cfg.clone()
    };
    let mut model = None;
    let mut o = sc.probation;
    while o < n {
        let flags: Vec<bool> = out.iter().map(|x| x.anomalous).collect();
        let w = weights(&flags, sc.detector.margin);
        let input = Input::from_series(series).head(o);
        let input = if sc.feedback {
            input.with_weights(&w)
        } else {
            input
        };
        let h = sc.reforecast.clamp(1, cfg.horizon).min(n - o);
        if (o - sc.probation).is_multiple_of(sc.retrain.max(1)) || model.is_none() {
            progress(o, n);
            // A failed retraining keeps the previous model; with none yet,
            // the stretch goes unjudged rather than stopping the stream.
            match forecaster::train(&input, &cfg, &mut |_: Progress| {}) {
                Ok(m) => model = Some(m),
                Err(e) if model.is_none() => {
                    out.extend(std::iter::repeat_n(none, h));
                    o += h;
                    let _ = e;
                    continue;
                }
                Err(_) => {}
            }
        }
        let f = model.as_ref().expect("trained above").forecast(&input, h)?;
        let obs = detector.observe_all(&series.values[o..o + h], &f);
        out.extend(obs.into_iter().enumerate().map(|(i, ob)| {
            // Interpolated points are not evidence either way.
            if series.imputed[o + i] { none } else { ob }
        }));
        o += h;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_blip_is_not_an_anomaly_a_stretch_is() {
        let mut d = Detector::new(DetectorConfig::default());
        let blip: Vec<bool> = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0]
            .iter()
            .map(|&y| d.observe(y, -1.0, 0.0, 1.0).anomalous)
            .collect();
        assert!(blip.iter().all(|a| !a), "{blip:?}");
        let shift: Vec<bool> = [3.0; 6]
            .iter()
            .map(|&y| d.observe(y, -1.0, 0.0, 1.0).anomalous)
            .collect();
        assert_eq!(shift, [false, false, false, true, true, true]);
    }

    #[test]
    fn flagged_stretches_are_weighted_out_with_a_margin() {
        let flags = [false, false, false, true, true, false, false, false];
        assert_eq!(weights(&flags, 1), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    }
}
