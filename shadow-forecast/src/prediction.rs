//! The seed's `PredictionData`: one forecast point in the shape the control
//! API, `shadowctl forecast --json` and provisioning exchange.

use serde::{Deserialize, Serialize};

use crate::model::Forecast;

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

impl PredictionData {
    pub fn from_forecast(server_id: &str, metric: &str, f: &Forecast) -> Vec<Self> {
        (0..f.len())
            .map(|i| Self {
                server_id: server_id.to_owned(),
                metric: metric.to_owned(),
                predicted_value: f.p50[i],
                confidence_interval: ConfidenceInterval {
                    lower: f.p10[i],
                    upper: f.p90[i],
                    level: 0.8,
                },
                timeframe: Timeframe {
                    at: f.start + i as i64 * f.step,
                    ahead: (i as i64 + 1) * f.step,
                },
            })
            .collect()
    }
}
