//! `GET /v1/predict` and `/v1/predict/events` (both servers; the admin
//! port under `/api`): the poller's latest failure probabilities
//! ([`crate::forecast::predict`]) and the level changes. 409 when
//! `--no-predict`, 503 before the first interval.

use hyper::StatusCode;
use shadow_api::routes;

use super::{Answer, error, json, state::Shared};

/// Answers a predict path; `None` for any other.
pub fn route(shared: Option<&Shared>, path: &str) -> Option<Answer> {
    let path = path.trim_end_matches('/');
    if path != routes::PREDICT && path != routes::PREDICT_EVENTS {
        return None;
    }
    let Some(p) = shared.and_then(|s| s.predict.as_ref()) else {
        return Some(error(
            StatusCode::CONFLICT,
            "failure probabilities are off (shadow-proxy runs with --no-predict)".into(),
        ));
    };
    Some(if path == routes::PREDICT_EVENTS {
        json(StatusCode::OK, &p.events())
    } else {
        match p.latest() {
            Some(a) => json(StatusCode::OK, &a),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no probabilities yet: the first interval has not ended".into(),
            ),
        }
    })
}
