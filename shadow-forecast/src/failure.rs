//! The failure probability: P(failure within H) for a host or a service,
//! from the signals that precede failures, learnt from recorded ones.
//!
//! The model is a logistic one: each [`Signals`] field becomes a feature
//! in a comparable unit ([`Signals::features`]) and adds `weight *
//! feature` to the log-odds, so every probability comes with what each
//! signal added ([`FailureModel::assess`]). It starts from a prior (the
//! weights in [`PRIOR`]) and learns from failure events, imported
//! ([`read_incidents`]) or its own: [`FailureModel::learn`] is a MAP fit
//! with a Gaussian prior centred on the current weights, so a handful of
//! events moves it only as far as they support. Beyond MTBF, the base rate
//! is the scope's own incident rate (component age and history), and
//! workload spikes and environment (temperatures against their limits)
//! are features of their own.
//!
//! [`reliability`] checks calibration on labelled data: predicted
//! probability against the observed frequency, by bin.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use shadow_api::predict::{Contribution, Level, Thresholds};

/// Signals, by name, in [`Signals::features`]' order.
pub const SIGNALS: [&str; 8] = [
    "anomaly",
    "exhaustion",
    "error_rate",
    "latency",
    "hardware",
    "block_io",
    "spike",
    "history",
];

const N: usize = SIGNALS.len();

/// Prior log-odds weights, and the bias: a quiet host fails within 30 min
/// with probability about 0.4 %. An anomaly score of 1 alone gives 9 %;
/// a forecast P90 at its capacity now gives 62 %; half the requests failing
/// gives 15 %; a sensor at its critical limit 31 %. An anomaly with half
/// the requests failing reaches `stage` (81 %), an anomaly with a sensor
/// at its limit `cutover` (92 %).
pub const PRIOR: ([f64; N], f64) = ([3.2, 6.0, 7.5, 1.2, 4.7, 0.8, 1.5, 4.0], -5.5);

/// What precedes a failure, as measured now for one scope.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Signals {
    /// The largest anomaly score of the scope's metrics, 0..1.
    pub anomaly: f64,
    /// Seconds until a forecast P90 reaches its capacity (disk full, memory
    /// limit, CPU saturation); `None` when none does within the forecast.
    pub exhaustion_s: Option<f64>,
    /// Live requests answered 5xx or cut by a reset, 0..1.
    pub error_rate: f64,
    /// Live p99 latency over its usual level (the history's median p99): 1
    /// is usual.
    pub latency_ratio: f64,
    /// The worst sensor's way to its critical limit: 0 at its usual
    /// reading, 1 at the limit.
    pub hardware: f64,
    /// Block I/Os of 67 ms or more per second (the kernel's latency outliers).
    pub slow_ios: f64,
    /// Block I/Os the driver failed, per second. One weighs as much as 10
    /// latency outliers in the `block_io` feature: a disk that returns
    /// errors is further gone than one that is slow.
    #[serde(default)]
    pub io_errors: f64,
    /// How far the load is above its forecast P90, as a share of it (0
    /// within).
    pub spike: f64,
    /// The scope's past incidents per day (its own and imported).
    pub incidents_per_day: f64,
}

impl Signals {
    /// Each signal in a unit where 1 is "strong": see [`PRIOR`].
    pub fn features(&self, horizon_s: f64) -> [f64; N] {
        let h = horizon_s.max(1.0);
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        [
            finite(self.anomaly).clamp(0.0, 1.0),
            // 1 when exhausted now, 1/e when it is one horizon away.
            self.exhaustion_s
                .map_or(0.0, |t| (-finite(t).max(0.0) / h).exp()),
            finite(self.error_rate).clamp(0.0, 1.0),
            finite(self.latency_ratio).max(1.0).ln().min(3.0),
            finite(self.hardware).clamp(0.0, 1.5),
            (finite(self.slow_ios).max(0.0) + 10.0 * finite(self.io_errors).max(0.0))
                .ln_1p()
                .min(5.0),
            finite(self.spike).clamp(0.0, 3.0),
            // The MTBF-style chance of an incident within H from the rate alone.
            1.0 - (-finite(self.incidents_per_day).max(0.0) * h / 86_400.0).exp(),
        ]
    }
}

/// One labelled moment: the features then, and whether a failure followed
/// within the horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Example {
    pub features: [f64; N],
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureModel {
    pub horizon_s: f64,
    pub weights: [f64; N],
    pub bias: f64,
    /// How strongly the current weights hold against new examples (the
    /// Gaussian prior's precision).
    pub prior_precision: f64,
    /// Labelled moments and failures learnt from so far.
    pub examples: usize,
    pub failures: usize,
}

impl Default for FailureModel {
    fn default() -> Self {
        Self {
            horizon_s: 1800.0,
            weights: PRIOR.0,
            bias: PRIOR.1,
            prior_precision: 1.0,
            examples: 0,
            failures: 0,
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// A probability and the signals behind it, largest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub probability: f64,
    /// `(signal, feature, log-odds added)`.
    pub contributions: Vec<(&'static str, f64, f64)>,
}

impl FailureModel {
    pub fn probability(&self, features: &[f64; N]) -> f64 {
        sigmoid(self.bias + dot(&self.weights, features))
    }

    pub fn assess(&self, s: &Signals) -> Assessment {
        let x = s.features(self.horizon_s);
        let mut contributions: Vec<(&'static str, f64, f64)> = SIGNALS
            .iter()
            .zip(x)
            .zip(self.weights)
            .map(|((name, x), w)| (*name, x, w * x))
            .collect();
        contributions.sort_by(|a, b| b.2.total_cmp(&a.2));
        Assessment {
            probability: self.probability(&x),
            contributions,
        }
    }

    /// A MAP fit on `examples`: logistic likelihood plus a Gaussian prior
    /// centred on the current weights (the bias is free), by Newton's
    /// method. Rare failures are not up-weighted: the probability stays a
    /// probability, which the reliability curve checks.
    pub fn learn(&mut self, examples: &[Example]) {
        if examples.is_empty() {
            return;
        }
        let centre: Vec<f64> = self.weights.to_vec();
        // Parameters: [bias, weights...].
        let mut theta: Vec<f64> = std::iter::once(self.bias).chain(self.weights).collect();
        let k = N + 1;
        for _ in 0..50 {
            let mut grad = vec![0.0; k];
            let mut hess = vec![0.0; k * k];
            for e in examples {
                let x: Vec<f64> = std::iter::once(1.0).chain(e.features).collect();
                let p = sigmoid(dot(&theta, &x));
                let y = if e.failed { 1.0 } else { 0.0 };
                let w = (p * (1.0 - p)).max(1e-9);
                for r in 0..k {
                    grad[r] += (p - y) * x[r];
                    for c in 0..k {
                        hess[r * k + c] += w * x[r] * x[c];
                    }
                }
            }
            for j in 1..k {
                grad[j] += self.prior_precision * (theta[j] - centre[j - 1]);
                hess[j * k + j] += self.prior_precision;
            }
            // A weak prior on the bias too, so all-negative data stays finite.
            grad[0] += 1e-3 * (theta[0] - PRIOR.1);
            hess[0] += 1e-3;
            let Some(step) = solve(hess, grad, k) else {
                break;
            };
            let mut moved = 0.0_f64;
            for (t, s) in theta.iter_mut().zip(&step) {
                *t -= s.clamp(-5.0, 5.0);
                moved = moved.max(s.abs());
            }
            if moved < 1e-8 {
                break;
            }
        }
        self.bias = theta[0];
        self.weights.copy_from_slice(&theta[1..]);
        self.examples += examples.len();
        self.failures += examples.iter().filter(|e| e.failed).count();
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Gaussian elimination with partial pivoting on a small dense system.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, k: usize) -> Option<Vec<f64>> {
    for col in 0..k {
        let pivot =
            (col..k).max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-12 {
            return None;
        }
        if pivot != col {
            for c in 0..k {
                a.swap(pivot * k + c, col * k + c);
            }
            b.swap(pivot, col);
        }
        for r in col + 1..k {
            let f = a[r * k + col] / a[col * k + col];
            for c in col..k {
                a[r * k + c] -= f * a[col * k + c];
            }
            b[r] -= f * b[col];
        }
    }
    for r in (0..k).rev() {
        let s: f64 = (r + 1..k).map(|c| a[r * k + c] * b[c]).sum();
        b[r] = (b[r] - s) / a[r * k + r];
    }
    Some(b)
}

/// One bin of a reliability curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    pub mean_predicted: f64,
    /// The share of these moments a failure followed.
    pub observed: f64,
}

/// Calibration on labelled `(predicted, failed)` moments: the reliability
/// curve (`bins` equal-width bins, empty ones left out), the Brier score,
/// and the expected calibration error (count-weighted mean |observed -
/// predicted|).
pub fn reliability(points: &[(f64, bool)], bins: usize) -> (Vec<Bin>, f64, f64) {
    let bins = bins.max(1);
    let mut acc = vec![(0usize, 0.0, 0usize); bins];
    let mut brier = 0.0;
    for &(p, y) in points {
        let i = ((p * bins as f64) as usize).min(bins - 1);
        acc[i].0 += 1;
        acc[i].1 += p;
        acc[i].2 += usize::from(y);
        brier += (p - f64::from(u8::from(y))).powi(2);
    }
    let n = points.len().max(1) as f64;
    let curve: Vec<Bin> = acc
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(i, &(count, sum, pos))| Bin {
            lo: i as f64 / bins as f64,
            hi: (i + 1) as f64 / bins as f64,
            count,
            mean_predicted: sum / count as f64,
            observed: pos as f64 / count as f64,
        })
        .collect();
    let ece = curve
        .iter()
        .map(|b| b.count as f64 * (b.observed - b.mean_predicted).abs())
        .sum::<f64>()
        / n;
    (curve, brier / n, ece)
}

/// A past failure: when, where, what and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Unix seconds.
    pub time: i64,
    pub host: String,
    /// The service, disk, or other part that failed.
    pub component: String,
    pub cause: String,
}

/// Why an incidents file was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Reads a CSV of past incidents with the header `time,host,component,cause`
/// (time as unix seconds or `YYYY-MM-DD HH:MM:SS` UTC; the cause may
/// contain commas). Lines starting with `#` are comments.
pub fn read_incidents(path: &Path) -> Result<Vec<Incident>, IncidentError> {
    let text = std::fs::read_to_string(path).map_err(|source| IncidentError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_incidents(&text, &path.display().to_string())
}

pub fn parse_incidents(text: &str, path: &str) -> Result<Vec<Incident>, IncidentError> {
    let bad = |line: usize, reason: String| IncidentError::Line {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((n, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols != ["time", "host", "component", "cause"] {
        return Err(bad(
            n,
            format!("the header is {header:?}; expected \"time,host,component,cause\""),
        ));
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        let mut f = line.splitn(4, ',').map(str::trim);
        let (Some(t), Some(host), Some(component)) = (f.next(), f.next(), f.next()) else {
            return Err(bad(n, "expected time,host,component,cause".into()));
        };
        let time = crate::series::parse_timestamp(t).ok_or_else(|| {
            bad(
                n,
                format!("time {t:?} is neither unix seconds nor YYYY-MM-DD HH:MM:SS"),
            )
        })?;
        if host.is_empty() {
            return Err(bad(n, "the host is empty".into()));
        }
        out.push(Incident {
            time,
            host: host.to_owned(),
            component: component.to_owned(),
            cause: f.next().unwrap_or_default().to_owned(),
        });
    }
    out.sort_by_key(|i| i.time);
    Ok(out)
}

/// Whether a failure follows each of `times` within `horizon_s`: a moment
/// is positive when an incident lies in `(t, t + horizon]`. Moments inside
/// an incident's aftermath are the caller's to drop.
pub fn label(times: &[i64], failures: &[i64], horizon_s: i64) -> Vec<bool> {
    let mut f = failures.to_vec();
    f.sort_unstable();
    times
        .iter()
        .map(|&t| {
            let i = f.partition_point(|&x| x <= t);
            f.get(i).is_some_and(|&x| x <= t + horizon_s)
        })
        .collect()
}

/// Incidents per day of `host` (and `component`, when given) over the
/// span they cover, with one imaginary quiet month so a single incident
/// does not make a high rate.
pub fn incident_rate(incidents: &[Incident], host: &str, component: Option<&str>, now: i64) -> f64 {
    let own: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.host == host && component.is_none_or(|c| i.component == c) && i.time <= now)
        .collect();
    let Some(first) = own.first() else {
        return 0.0;
    };
    let days = (now - first.time) as f64 / 86_400.0 + 30.0;
    own.len() as f64 / days
}

#[cfg(test)]
mod tests;
