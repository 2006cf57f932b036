//! What the forecast API answers: each metric's status, and a forecast
//! cut to the horizon asked for. The agent routes it (shadow-proxy's
//! `api::forecast`) and maps [`Refusal`] to an HTTP status.

pub use shadow_api::forecast::{ForecastAnswer, MetricStatus, Status};

use crate::prediction;

use super::{Service, format_ahead};

/// Why no forecast is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such metric is forecast (404).
    UnknownMetric,
    /// The horizon asked for is malformed or too long (400).
    BadHorizon,
    /// No model or no forecast yet; the message says what is missing (503).
    NotReady,
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
    ) -> Result<ForecastAnswer, (Refusal, String)> {
        let slot = self.slot(metric).ok_or_else(|| {
            let known: Vec<&str> = self.slots.iter().map(|s| s.name.as_str()).collect();
            (
                Refusal::UnknownMetric,
                format!("unknown metric {metric:?} (forecast: {})", known.join(", ")),
            )
        })?;
        let h = match horizon {
            Some(h) => parse_horizon(h, self.settings.step, self.settings.horizon)
                .map_err(|e| (Refusal::BadHorizon, e))?,
            None => self.settings.horizon,
        };
        let published = slot.published();
        let unavailable = |m: String| (Refusal::NotReady, m);
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
            points: prediction::from_forecast(&self.server_id, metric, &f.clone().truncated(h)),
        })
    }
}

/// `12` (steps) or `30m` (a duration, rounded up to whole steps), at most
/// `max` steps.
pub fn parse_horizon(s: &str, step: i64, max: usize) -> Result<usize, String> {
    let n = match s.trim().parse::<usize>() {
        Ok(n) => n,
        Err(_) => {
            let d = shadow_api::duration::parse(s).map_err(|_| {
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
