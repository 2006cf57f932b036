//! The forecast API, shared by the control socket (`/v1/forecast...`) and
//! the admin port (`/api/v1/forecast...`, read-only like everything there).
//!
//! | path | answer |
//! |---|---|
//! | `GET /v1/forecast` | [`MetricStatus`] per metric: model, reason, trained_until, status, anomaly state |
//! | `GET /v1/forecast/{metric}?horizon=N\|30m` | [`ForecastAnswer`]: model, reason and `PredictionData` points |
//! | `GET /v1/forecast/events` | [`AnomalyEvent`](super::watch::AnomalyEvent)s, oldest first |
//!
//! Every answer is JSON; errors are `{"error": "..."}` with 400 (bad
//! horizon), 404 (unknown metric), 409 (forecasting off) or 503 (no model
//! or no forecast yet, with what is missing).

use hyper::{Method, StatusCode};
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
            let d = crate::duration::parse(s).map_err(|_| {
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

/// Answers a `/v1/forecast...` path; `None` for any other path. `service`
/// is `None` when forecasting is off.
pub fn route(
    service: Option<&Service>,
    method: &Method,
    path: &str,
    query: &str,
) -> Option<(StatusCode, Vec<u8>)> {
    let rest = path.strip_prefix("/v1/forecast")?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    let fail = |code: StatusCode, m: String| reply(code, &serde_json::json!({ "error": m }));
    if method != Method::GET {
        return fail(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} is read-only (GET)"),
        );
    }
    let Some(service) = service else {
        return fail(
            StatusCode::CONFLICT,
            "forecasting is off (shadow-proxy runs with --no-forecast)".into(),
        );
    };
    match rest.trim_end_matches('/') {
        "" => reply(StatusCode::OK, &service.status()),
        "/events" => reply(StatusCode::OK, &service.events()),
        m => {
            let metric = crate::admin::percent_decode(m.trim_start_matches('/'));
            let horizon = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("horizon="))
                .map(crate::admin::percent_decode);
            match service.answer(&metric, horizon.as_deref()) {
                Ok(a) => reply(StatusCode::OK, &a),
                Err((code, m)) => fail(code, m),
            }
        }
    }
}

fn reply<T: Serialize>(code: StatusCode, v: &T) -> Option<(StatusCode, Vec<u8>)> {
    Some((code, serde_json::to_vec(v).unwrap_or_default()))
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
