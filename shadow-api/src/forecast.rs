//! The forecast API (`GET /v1/forecast...` on the control socket, and
//! `/api/v1/forecast...` on the admin port): each metric's status, its
//! forecast as the seed's `PredictionData`, and the anomaly events.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionData {
    pub server_id: String,
    pub metric: String,
    /// The P50 forecast.
    pub predicted_value: f64,
    pub confidence_interval: ConfidenceInterval,
    pub timeframe: Timeframe,
}

/// The P10-P90 interval (an 80 % prediction interval).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
}

/// When the prediction is for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timeframe {
    /// Unix seconds of the predicted point.
    pub at: i64,
    /// Seconds ahead of the forecast origin (the newest known point).
    pub ahead: i64,
}

/// Where a metric stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fewer grid points than a first training needs.
    Collecting,
    /// The first training is running.
    Training,
    /// A forecast is served.
    Ready,
    /// No forecast: see `error`.
    Error,
}

/// One metric as `GET /v1/forecast` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricStatus {
    pub metric: String,
    pub status: Status,
    pub model: Option<String>,
    pub reason: Option<String>,
    /// Unix seconds of the newest point the model was trained on.
    pub trained_until: Option<i64>,
    /// Grid points held, and needed for a first training.
    pub points: usize,
    pub need: usize,
    pub step: i64,
    pub horizon: usize,
    pub anomaly: bool,
    pub anomaly_score: f64,
    pub anomalies: u64,
    pub trainings: u64,
    pub training_failures: u64,
    pub last_training_seconds: Option<f64>,
    pub refresh_seconds: f64,
    /// Why there is no forecast, or why the last training failed.
    pub error: Option<String>,
}

/// `GET /v1/forecast/{metric}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForecastAnswer {
    pub metric: String,
    pub model: String,
    pub reason: String,
    pub points: Vec<PredictionData>,
}

/// One stretch of a metric outside its forecast interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    pub metric: String,
    /// Unix seconds of the first and the latest flagged bin.
    pub start: i64,
    pub end: i64,
    pub points: usize,
    /// Still going on.
    pub open: bool,
    /// The most anomalous bin: its value, the interval forecast for it
    /// (P10, P50, P90) and the detector's score in [0, 1].
    pub peak_at: i64,
    pub peak_value: f64,
    pub expected: [f64; 3],
    pub peak_score: f64,
}

/// `GET /v1/regress?y=METRIC&on=METRIC`: a resource as a linear function
/// of a load (CPU per request per second), fitted by least squares on the
/// history's samples taken at the same moments, with its uncertainty. The
/// provisioner's what-if uses it: at `on = x`, `y` is [`Regression::at`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// The series explained, and the one it is explained by.
    pub y: String,
    pub on: String,
    /// Sample pairs fitted.
    pub n: usize,
    /// `y` per unit of `on` (CPU utilisation per request per second).
    pub slope: f64,
    /// `y` at no load: the idle cost.
    pub intercept: f64,
    /// Standard errors of the two.
    pub slope_se: f64,
    pub intercept_se: f64,
    /// Share of `y`'s variance the load explains.
    pub r_squared: f64,
    /// The residuals' standard deviation.
    pub residual_sd: f64,
    /// The range of `on` seen: outside it the line is an extrapolation.
    pub on_min: f64,
    pub on_max: f64,
    pub on_mean: f64,
    /// Sum of squared deviations of `on` (for the prediction interval).
    pub on_sxx: f64,
    /// Predictions at the loads asked for (default: the mean, the largest
    /// seen and twice that).
    pub at: Vec<RegressionPoint>,
}

/// `y` predicted at one load, with its P10-P90 prediction interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionPoint {
    pub on: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    /// `on` lies outside the range fitted.
    pub extrapolated: bool,
}

impl Regression {
    /// `y` at load `on`: the line, and the 80 % prediction interval (the
    /// residual spread plus the line's own uncertainty, which grows away
    /// from the mean load).
    pub fn at(&self, on: f64) -> RegressionPoint {
        let p50 = self.intercept + self.slope * on;
        let n = self.n.max(1) as f64;
        let lever = if self.on_sxx > 0.0 {
            (on - self.on_mean).powi(2) / self.on_sxx
        } else {
            0.0
        };
        let se = self.residual_sd * (1.0 + 1.0 / n + lever).sqrt();
        // Student's t 90 % point for n - 2 degrees of freedom (Cornish-Fisher
        // from the normal's; within 1 % of the table from 3 on).
        let z: f64 = 1.281_551_565_545;
        let df = (n - 2.0).max(1.0);
        let z = z
            + (z.powi(3) + z) / (4.0 * df)
            + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df);
        RegressionPoint {
            on,
            p10: p50 - z * se,
            p50,
            p90: p50 + z * se,
            extrapolated: on < self.on_min || on > self.on_max,
        }
    }
}
