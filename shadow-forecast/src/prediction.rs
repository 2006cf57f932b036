//! The seed's `PredictionData`: one forecast point in the shape the control
//! API, `shadowctl forecast --json` and provisioning exchange.

use crate::model::Forecast;

pub use shadow_api::forecast::{ConfidenceInterval, PredictionData, Timeframe};

/// One [`PredictionData`] per step of `f`.
pub fn from_forecast(server_id: &str, metric: &str, f: &Forecast) -> Vec<PredictionData> {
    (0..f.len())
        .map(|i| PredictionData {
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
