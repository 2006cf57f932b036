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
