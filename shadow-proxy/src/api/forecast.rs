//! The forecast API, shared by the control socket (`/v1/forecast...`) and
//! the admin port (`/api/v1/forecast...`, read-only like everything there).
//!
//! | path | answer |
//! |---|---|
//! | `GET /v1/forecast` | [`MetricStatus`](crate::forecast::answer::MetricStatus) per metric: model, reason, trained_until, status, anomaly state |
//! | `GET /v1/forecast/{metric}?horizon=N\|30m` | [`ForecastAnswer`](crate::forecast::answer::ForecastAnswer): model, reason and `PredictionData` points |
//! | `GET /v1/forecast/events` | [`AnomalyEvent`](crate::forecast::watch::AnomalyEvent)s, oldest first |
//!
//! Every answer is JSON; errors are `{"error": "..."}` with 400 (bad
//! horizon), 404 (unknown metric), 409 (forecasting off) or 503 (no model
//! or no forecast yet, with what is missing).

use hyper::{Method, StatusCode};
use shadow_api::routes;

use super::{Answer, error, json, percent_decode, query_param};
use crate::forecast::{Service, answer::Refusal};

fn status_of(refusal: Refusal) -> StatusCode {
    match refusal {
        Refusal::UnknownMetric => StatusCode::NOT_FOUND,
        Refusal::BadHorizon => StatusCode::BAD_REQUEST,
        Refusal::NotReady => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Answers a `/v1/forecast...` path; `None` for any other path. `service`
/// is `None` when forecasting is off.
pub fn route(
    service: Option<&Service>,
    method: &Method,
    path: &str,
    query: &str,
) -> Option<Answer> {
    let rest = path.strip_prefix(routes::FORECAST)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    if method != Method::GET {
        return Some(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} is read-only (GET)"),
        ));
    }
    let Some(service) = service else {
        return Some(error(
            StatusCode::CONFLICT,
            "forecasting is off (shadow-proxy runs with --no-forecast)".into(),
        ));
    };
    Some(match rest.trim_end_matches('/') {
        "" => json(StatusCode::OK, &service.status()),
        "/events" => json(StatusCode::OK, &service.events()),
        m => {
            let metric = percent_decode(m.trim_start_matches('/'));
            let horizon = query_param(query, "horizon");
            match service.answer(&metric, horizon.as_deref()) {
                Ok(a) => json(StatusCode::OK, &a),
                Err((refusal, m)) => error(status_of(refusal), m),
            }
        }
    })
}
