//! The failover routes (both servers; the admin port under `/api`,
//! read-only there):
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/failover` | per service: phase, cause, share, checks, level |
//! | `GET /v1/failover/events` | every transition with its reason, oldest first |
//! | `POST /v1/failover/{cutover,rollback,promote}?service=web[&dry_run=1][&force=1]` | control socket only |
//!
//! 409 when no `[[failover.service]]` is configured.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use shadow_api::routes;

use super::{Answer, error, json, query_param, state::Shared};
use crate::failover::{Command, FailoverError};

fn flag(query: &str, key: &str) -> bool {
    query_param(query, key).is_some_and(|v| v == "1" || v == "true")
}

/// Answers a failover path; `None` for any other. `control` allows the
/// `POST`s that act.
pub async fn route(
    shared: Option<&Arc<Shared>>,
    method: &Method,
    path: &str,
    query: &str,
    control: bool,
) -> Option<Answer> {
    let path = path.trim_end_matches('/');
    let command = match path {
        routes::FAILOVER_CUTOVER => Some(Command::Cutover),
        routes::FAILOVER_ROLLBACK => Some(Command::Rollback),
        routes::FAILOVER_PROMOTE => Some(Command::Promote),
        routes::FAILOVER | routes::FAILOVER_EVENTS => None,
        _ => return None,
    };
    let Some(o) = shared.and_then(|s| s.failover.clone()) else {
        return Some(error(
            StatusCode::CONFLICT,
            "no failover profiles are configured (add [[failover.service]] to the --config file)"
                .into(),
        ));
    };
    Some(match (method, command) {
        (&Method::GET, None) if path == routes::FAILOVER => json(StatusCode::OK, &o.status()),
        (&Method::GET, None) => json(StatusCode::OK, &o.events()),
        (&Method::POST, Some(c)) if control => {
            let Some(service) = query_param(query, "service") else {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "service= names the service".into(),
                ));
            };
            let (dry, force) = (flag(query, "dry_run"), flag(query, "force"));
            // Hooks and checks block: off the runtime.
            let done =
                tokio::task::spawn_blocking(move || o.command(&service, c, dry, force)).await;
            match done {
                Ok(Ok(event)) => json(StatusCode::OK, &event),
                Ok(Err(e @ FailoverError::UnknownService(_))) => {
                    error(StatusCode::NOT_FOUND, e.to_string())
                }
                Ok(Err(e @ FailoverError::Refused { .. })) => {
                    error(StatusCode::CONFLICT, e.to_string())
                }
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (&Method::POST, Some(_)) => error(
            StatusCode::FORBIDDEN,
            "failover actions are for the control socket".into(),
        ),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        ),
    })
}
