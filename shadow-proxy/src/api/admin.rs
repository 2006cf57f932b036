//! The admin HTTP endpoint: Prometheus metrics and JSON views for `shadowctl`.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text: kernel histograms plus the agent's metrics |
//! | `/api/v1/snapshot` | JSON: latest kernel snapshot and host sample |
//! | `/api/v1/history` | JSON: metric names; `?metric=NAME` for its samples |
//! | `/api/v1/predict`, `/api/v1/predict/events` | JSON: failure probabilities and level changes ([`super::predict`]) |
//! | `/api/v1/regress?y=&on=` | JSON: a resource-per-load regression on the history ([`super::regress`]) |
//! | `/api/v1/provision/{plan,events,pool}`, `/api/v1/whatif` | JSON: the provisioner ([`super::provision`]) |
//! | `/api/v1/failover`, `/api/v1/failover/events` | JSON: failover state and transitions ([`super::failover`]) |
//! | `/api/v1/forecast...` | JSON: the control API's read-only forecast routes ([`super::forecast`]) |
//! | `/healthz` | `ok` |

use std::sync::Arc;

use hyper::{Method, Request, StatusCode, body::Incoming};
use tokio::{net::TcpListener, sync::watch};

use super::{Answer, json, query_param, respond, state::Shared, text};

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    super::serve("admin", listener, shared, route, shutdown).await;
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Answer {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/api")
        && let Some(answer) =
            super::forecast::route(shared.forecast.as_deref(), req.method(), rest, query)
    {
        return answer;
    }
    if let Some(rest) = path.strip_prefix("/api")
        && let Some(answer) =
            super::provision::route(Some(&shared), req.method(), rest, query, false).await
    {
        return answer;
    }
    if let Some(rest) = path.strip_prefix("/api")
        && let Some(answer) =
            super::failover::route(Some(&shared), req.method(), rest, query, false).await
    {
        return answer;
    }
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.render_metrics(),
        ),
        "/api/v1/snapshot" => json(StatusCode::OK, shared.view().as_ref()),
        "/api/v1/regress" => super::regress::answer(&shared.history, query),
        p if p.starts_with("/api/v1/predict") => {
            super::predict::route(Some(&shared), &p["/api".len()..])
                .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        }
        "/api/v1/history" => {
            let metric = query_param(query, "metric");
            let history = shared.history.lock().unwrap_or_else(|p| p.into_inner());
            match metric {
                Some(m) if history.len(&m) == 0 => text(
                    StatusCode::NOT_FOUND,
                    &format!("no history for metric {m:?}\n"),
                ),
                Some(m) => json(StatusCode::OK, &history.get(&m)),
                None => json(StatusCode::OK, &history.metrics().collect::<Vec<_>>()),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
