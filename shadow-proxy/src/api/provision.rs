//! The provisioner's routes (both servers; the admin port under `/api`,
//! read-only there):
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/provision/plan` | current vs desired per loop, with the reason; queued pre-provisioning |
//! | `GET /v1/provision/events` | every decision, oldest first, from a bounded ring |
//! | `GET /v1/provision/pool` | units, zones, classes, cost per hour, primary and shadow |
//! | `GET /v1/whatif?traffic=2&scale=1.5[&service=web]` | predicted utilisation, crossings, plan and cost under that traffic |
//! | `POST /v1/provision/apply[?dry_run=1]` | control socket only: one decision round now; `dry_run` computes and shows, whatever the mode |
//!
//! 409 when no `[provision]` loop is configured.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use shadow_api::{provision::Mode, routes};

use super::{Answer, error, json, query_param, state::Shared};

/// `2`, `2x`, `1.5`: a positive factor.
fn factor(query: &str, key: &str, default: f64) -> Result<f64, String> {
    match query_param(query, key) {
        None => Ok(default),
        Some(v) => v
            .trim_end_matches(['x', 'X'])
            .parse::<f64>()
            .ok()
            .filter(|f| *f > 0.0 && f.is_finite())
            .ok_or_else(|| format!("{key}={v:?} is not a positive factor like 2 or 1.5x")),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Answers a provisioning path; `None` for any other. `control` allows the
/// `POST` that acts.
pub async fn route(
    shared: Option<&Arc<Shared>>,
    method: &Method,
    path: &str,
    query: &str,
    control: bool,
) -> Option<Answer> {
    let path = path.trim_end_matches('/');
    let known = [
        routes::PROVISION_PLAN,
        routes::PROVISION_EVENTS,
        routes::PROVISION_POOL,
        routes::PROVISION_APPLY,
        routes::WHATIF,
    ];
    if !known.contains(&path) {
        return None;
    }
    let Some((shared, p)) = shared.and_then(|s| s.provision.clone().map(|p| (s, p))) else {
        return Some(error(
            StatusCode::CONFLICT,
            "no provisioning loops are configured (add [[provision.loop]] to the --config file)"
                .into(),
        ));
    };
    Some(match (method, path) {
        (&Method::GET, routes::PROVISION_PLAN) => json(StatusCode::OK, &p.plan()),
        (&Method::GET, routes::PROVISION_EVENTS) => json(StatusCode::OK, &p.events()),
        (&Method::GET, routes::PROVISION_POOL) => match p.pool_view() {
            Some(v) => json(StatusCode::OK, &v),
            None => error(
                StatusCode::NOT_FOUND,
                "no [provision.pool] is configured".into(),
            ),
        },
        (&Method::GET, routes::WHATIF) => {
            let (traffic, scale) =
                match (factor(query, "traffic", 1.0), factor(query, "scale", 1.0)) {
                    (Ok(t), Ok(s)) => (t, s),
                    (Err(e), _) | (_, Err(e)) => return Some(error(StatusCode::BAD_REQUEST, e)),
                };
            let service = query_param(query, "service");
            let shared = shared.clone();
            let answer = tokio::task::spawn_blocking(move || {
                p.what_if(
                    traffic,
                    scale,
                    service.as_deref(),
                    now(),
                    &shared.history,
                    shared.forecast.as_deref(),
                )
            })
            .await;
            match answer {
                Ok(w) if w.resources.is_empty() => error(
                    StatusCode::NOT_FOUND,
                    "no provisioning loop for that service".into(),
                ),
                Ok(w) => json(StatusCode::OK, &w),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::POST, routes::PROVISION_APPLY) if control => {
            let dry = query_param(query, "dry_run").is_some_and(|v| v == "1" || v == "true");
            let mode = if dry { Mode::ForecastOnly } else { Mode::Apply };
            let shared = shared.clone();
            // Backends block until the capacity is ready: off the runtime.
            let done = tokio::task::spawn_blocking(move || {
                p.round(
                    now(),
                    &shared.history,
                    shared.forecast.as_deref(),
                    true,
                    Some(mode),
                )
            })
            .await;
            match done {
                Ok(decisions) => json(StatusCode::OK, &decisions),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::POST, routes::PROVISION_APPLY) => error(
            StatusCode::FORBIDDEN,
            "applying a plan is for the control socket".into(),
        ),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
    })
}
