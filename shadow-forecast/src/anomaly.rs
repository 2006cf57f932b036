//! Residual anomaly detection: a point is anomalous when the actual value
//! has left the forecast's P10-P90 interval persistently (most of the last
//! few points outside), not for one blip. The flags feed back into
//! training: flagged stretches get weight 0, so the next fit neither learns
//! the anomaly as normal nor widens its intervals around it.
//!
//! The score says how unusual the recent excursion is *for this series*:
//! an 80 % interval is left by a fifth of the points by design, so a score
//! from the flag alone is high all the time. Instead the mean excess over
//! the window is compared with its own long-run distribution (exponentially
//! weighted mean and variance), and the Gaussian tail probability is
//! log-scaled so that thresholds near 1 stay distinguishable; the same idea
//! as Numenta's anomaly likelihood (Ahmad et al., "Unsupervised real-time
//! anomaly detection for streaming data", 2017).

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
    /// Points the long-run excess statistics remember (the EWMA's span).
    pub memory: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window: 6,
            min_outside: 4,
            margin: 6,
            memory: 2016,
        }
    }
}

/// The verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub outside: bool,
    /// How far outside, in interval half-widths (0 inside).
    pub excess: f64,
    /// How unusual the window's mean excess is against this series' own
    /// history of it, log-scaled tail probability: in [0, 1].
    pub score: f64,
    /// `score` where it rises above every score of the last `2 * window`
    /// points, else 0: each excursion reported once, at its rising edge,
    /// rather than on every point it lasts (what NAB's scorer expects: it
    /// counts every point above its threshold outside a window as a false
    /// positive).
    pub alert: f64,
    pub anomalous: bool,
}

/// Streaming state: feed actuals with the interval that was forecast for them.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectorConfig,
    recent: VecDeque<f64>,
    /// The last `2 * window` scores.
    scores: VecDeque<f64>,
    /// Long-run statistics of the window's mean excess.
    seen: usize,
    mean: f64,
    var: f64,
}

/// The most an excess counts, in interval half-widths.
const MAX_EXCESS: f64 = 10.0;
/// Windows of long-run statistics before a score is given at all.
const WARMUP: usize = 72;
/// The spread assumed at least, in half-widths: a series that never left
/// its interval is not alarmed by the first small step outside.
const MIN_STD: f64 = 0.1;

impl Detector {
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            cfg,
            recent: VecDeque::with_capacity(cfg.window),
            scores: VecDeque::with_capacity(2 * cfg.window),
            seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    pub fn observe(&mut self, actual: f64, p10: f64, p50: f64, p90: f64) -> Observation {
        // Capped, so a collapsed interval (a flat stretch) cannot dominate
        // the long-run statistics with near-infinite excesses.
        let excess = if actual > p90 {
            (actual - p90) / (p90 - p50).max(f64::MIN_POSITIVE)
        } else if actual < p10 {
            (p10 - actual) / (p50 - p10).max(f64::MIN_POSITIVE)
        } else {
            0.0
        }
        .min(MAX_EXCESS);
        if self.recent.len() == self.cfg.window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(excess);
        let outside = self.recent.iter().filter(|&&e| e > 0.0).count();
        let m = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let score = if self.seen >= WARMUP {
            let z = (m - self.mean) / self.var.sqrt().max(MIN_STD);
            log_scaled(normal_cdf(z))
        } else {
            0.0
        };
        // Then learn from this window (the score never judges a point
        // against statistics that already contain it).
        self.seen += 1;
        let a = 1.0 / (self.seen.min(self.cfg.memory.max(1))) as f64;
        let d = m - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
        let alert = if self.scores.iter().all(|&p| score > p) {
            score
        } else {
            0.0
        };
        if self.scores.len() >= 2 * self.cfg.window.max(1) {
            self.scores.pop_front();
        }
        self.scores.push_back(score);
        Observation {
            outside: excess > 0.0,
            excess,
            alert,
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

/// The standard normal CDF (Abramowitz and Stegun 7.1.26 for erf,
/// |error| < 1.5e-7).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Maps a likelihood in [0, 1] so that 0.9, 0.99, 0.999 ... spread out:
/// `ln(1 - p) / ln(1e-10)`, clamped to [0, 1].
fn log_scaled(p: f64) -> f64 {
    ((1.0 - p + 1e-10).ln() / 1e-10f64.ln()).clamp(0.0, 1.0)
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
        alert: 0.0,
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
    fn the_score_is_low_for_routine_excursions_and_high_for_a_rare_one() {
        let mut d = Detector::new(DetectorConfig::default());
        // A week of routine behaviour: about a fifth of the points just
        // outside the interval, as an 80 % band is built to be.
        let mut routine = Vec::new();
        for i in 0..2000 {
            let y = if i % 5 == 0 { 1.3 } else { 0.2 };
            routine.push(d.observe(y, -1.0, 0.0, 1.0).score);
        }
        let late = &routine[1000..];
        let high = late.iter().filter(|&&s| s >= 0.5).count();
        assert!(high < 10, "{high} routine points scored >= 0.5");
        // Then a level shift far outside, held.
        let shift: Vec<f64> = (0..6)
            .map(|_| d.observe(8.0, -1.0, 0.0, 1.0).score)
            .collect();
        assert!(shift[5] > 0.9, "{shift:?}");
        assert!(
            shift.windows(2).all(|w| w[1] >= w[0]),
            "the score grows while the excursion persists: {shift:?}"
        );
        // Reported at its rising edge, then quiet while it lasts.
        let alerts: Vec<f64> = (0..30)
            .map(|_| d.observe(8.0, -1.0, 0.0, 1.0).alert)
            .collect();
        assert!(alerts.iter().all(|&a| a == 0.0 || a > 0.9), "{alerts:?}");
        assert!(alerts[12..].iter().all(|&a| a == 0.0), "{alerts:?}");
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        for (z, p) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746),
            (-1.959_964, 0.025),
            (3.0, 0.998_650_102),
        ] {
            assert!((normal_cdf(z) - p).abs() < 1e-6, "{z}: {}", normal_cdf(z));
        }
    }

    #[test]
    fn flagged_stretches_are_weighted_out_with_a_margin() {
        let flags = [false, false, false, true, true, false, false, false];
        assert_eq!(weights(&flags, 1), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    }
}
