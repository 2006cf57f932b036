//! What the forecast API answers: each metric's status, and a forecast
//! cut to the horizon asked for. Routed by `crate::api::forecast`.

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use shadow_forecast::PredictionData;

use super::{Service, format_ahead};

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

impl Service {
    pub fn status(&self) -> Vec<MetricStatus> {
        self.slots
            .iter()
            .map(|slot| {
                let (model, published, training) =
                    (slot.model(), slot.published(), slot.training());
                let d = slot.data();
                let status = match (&published.forecast, &model) {
                    (Some(_), _) => Status::Ready,
                    (None, None) if training.running => Status::Training,
                    (None, None) if d.grid.span() < self.need => Status::Collecting,
                    _ => Status::Error,
                };
                MetricStatus {
                    metric: slot.name.clone(),
                    status,
                    model: model.as_ref().map(|m| m.selection.label()),
                    reason: model.as_ref().map(|m| m.selection.reason.clone()),
                    trained_until: model.as_ref().map(|m| m.trained_until),
                    points: d.grid.span(),
                    need: self.need,
                    step: self.settings.step,
                    horizon: self.settings.horizon,
                    anomaly: d.watch.anomalous,
                    anomaly_score: d.watch.score,
                    anomalies: d.watch.events,
                    trainings: training.ok,
                    training_failures: training.failed,
                    last_training_seconds: training.last_seconds,
                    refresh_seconds: published.refresh_seconds,
                    error: published.error.clone().or(training.last_error),
                }
            })
            .collect()
    }

    /// One metric's forecast, `horizon` steps (all when `None`).
    pub fn answer(
        &self,
        metric: &str,
        horizon: Option<&str>,
    ) -> Result<ForecastAnswer, (StatusCode, String)> {
        let slot = self.slot(metric).ok_or_else(|| {
            let known: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
            (
                StatusCode::NOT_FOUND,
                format!("unknown metric {metric:?} (forecast: {})", known.join(", ")),
            )
        })?;
        let h = match horizon {
            Some(h) => parse_horizon(h, self.settings.step, self.settings.horizon)
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?,
            None => self.settings.horizon,
        };
        let published = slot.published();
        let unavailable = |m: String| (StatusCode::SERVICE_UNAVAILABLE, m);
        let Some((model, reason)) = published.model.clone() else {
            let have = slot.data().grid.span();
            return Err(unavailable(format!(
                "not trained yet: need {} points, have {have}",
                self.need
            )));
        };
        let Some(f) = &published.forecast else {
            let why = published
                .error
                .clone()
                .unwrap_or_else(|| "not computed yet".into());
            return Err(unavailable(format!("no forecast yet: {why}")));
        };
        Ok(ForecastAnswer {
            metric: metric.to_owned(),
            model,
            reason,
            points: PredictionData::from_forecast(&self.server_id, metric, &f.clone().truncated(h)),
        })
    }
}

/// `12` (steps) or `30m` (a duration, rounded up to whole steps), at most
/// `max` steps.
pub fn parse_horizon(s: &str, step: i64, max: usize) -> Result<usize, String> {
    let n = match s.trim().parse::<usize>() {
        Ok(n) => n,
        Err(_) => {
            let d = crate::util::duration::parse(s).map_err(|_| {
                format!("horizon {s:?} is not a step count or a duration (e.g. 12 or 30m)")
            })?;
            (d.as_secs_f64() / step.max(1) as f64).ceil() as usize
        }
    };
    if n == 0 {
        return Err("horizon must be at least one step".into());
    }
    if n > max {
        return Err(format!(
            "horizon {s} is {n} steps, beyond the {max} forecast ({} at {}s steps)",
            format_ahead(max as i64 * step),
            step
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_are_steps_or_durations_within_the_model() {
        assert_eq!(parse_horizon("12", 60, 60), Ok(12));
        assert_eq!(parse_horizon("30m", 60, 60), Ok(30));
        assert_eq!(
            parse_horizon("90s", 60, 60),
            Ok(2),
            "rounded up to whole steps"
        );
        assert!(
            parse_horizon("0", 60, 60)
                .unwrap_err()
                .contains("at least one")
        );
        let long = parse_horizon("2h", 60, 60).unwrap_err();
        assert!(long.contains("120 steps") && long.contains("1h"), "{long}");
        assert!(
            parse_horizon("soon", 60, 60)
                .unwrap_err()
                .contains("not a step count")
        );
    }
}
