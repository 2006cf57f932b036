//! The forecasts in Prometheus, through the `metrics` recorder.
//!
//! The poller calls [`publish`] every interval, as it does
//! for the other gauges, so the recorder's idle timeout never drops a
//! forecast between refreshes; a model label that stops being set (the
//! model changed) ages out the same way. Labels are bounded: the configured
//! metrics, three quantiles, four horizons and the model families' labels.

use super::{Service, format_ahead};
use crate::metrics::names;

/// The horizons exported, in seconds ahead: those that land on a step
/// within the forecast are.
const HORIZONS: [i64; 4] = [300, 900, 1800, 3600];
const QUANTILES: [&str; 3] = ["0.1", "0.5", "0.9"];

/// The forecast index of each exported horizon that fits `step` x `len`.
pub fn horizons(step: i64, len: usize) -> Vec<(String, usize)> {
    HORIZONS
        .iter()
        .filter(|&&s| s % step.max(1) == 0 && (s / step.max(1)) as usize <= len)
        .map(|&s| (format_ahead(s), (s / step.max(1)) as usize - 1))
        .collect()
}

/// Sets every forecast gauge from what `service` published last.
pub fn publish(service: &Service) {
    for slot in &service.slots {
        let metric = slot.name.clone();
        let published = slot.published();
        if let Some(f) = &published.forecast {
            for (horizon, i) in horizons(f.step, f.len()) {
                for (q, v) in QUANTILES.iter().zip([f.p10[i], f.p50[i], f.p90[i]]) {
                    let labels = [
                        ("metric", metric.clone()),
                        ("quantile", (*q).to_owned()),
                        ("horizon", horizon.clone()),
                    ];
                    metrics::gauge!(names::FORECAST, &labels).set(v);
                }
            }
        }
        if let Some((model, _)) = &published.model {
            metrics::gauge!(names::FORECAST_MODEL_INFO, "metric" => metric.clone(), "model" => model.clone()).set(1.0);
        }
        metrics::gauge!(names::FORECAST_REFRESH_SECONDS, "metric" => metric.clone())
            .set(published.refresh_seconds);
        let (anomalous, events) = (published.anomalous, published.anomalies);
        metrics::gauge!(names::FORECAST_ANOMALY, "metric" => metric.clone())
            .set(f64::from(u8::from(anomalous)));
        metrics::counter!(names::FORECAST_ANOMALIES, "metric" => metric.clone()).absolute(events);
        let t = slot.training();
        metrics::counter!(names::FORECAST_TRAININGS, "metric" => metric.clone(), "result" => "ok")
            .absolute(t.ok);
        metrics::counter!(names::FORECAST_TRAININGS, "metric" => metric.clone(), "result" => "error").absolute(t.failed);
        if let Some(s) = t.last_seconds {
            metrics::gauge!(names::FORECAST_TRAINING_SECONDS, "metric" => metric).set(s);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_horizons_on_the_grid_and_within_the_forecast() {
        let all: Vec<String> = super::horizons(60, 60).into_iter().map(|h| h.0).collect();
        assert_eq!(all, ["5m", "15m", "30m", "1h"]);
        assert_eq!(super::horizons(60, 60)[3].1, 59);
        assert_eq!(
            super::horizons(60, 20).len(),
            2,
            "30m and 1h are past 20 steps"
        );
        assert_eq!(
            super::horizons(420, 100).len(),
            0,
            "no horizon lands on a 7 min grid"
        );
    }
}
