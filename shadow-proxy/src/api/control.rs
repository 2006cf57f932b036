//! The authenticated control API: HTTP/1.1 over a unix socket created with
//! mode 0600, so only root (or the socket's owner) can change what is
//! mirrored. `shadowctl mirror ...` and `shadowctl forecast` talk to it.
//!
//! It runs in telemetry-only mode too (for the forecasts); the shadowing
//! routes then answer 409 "no services are shadowed".
//!
//! | method, path | what |
//! |---|---|
//! | `GET /v1/mirror` | every service: rate, targets, kernel and replay counters, coverage |
//! | `PUT /v1/mirror/{service}` body `{"percent": 12.5}` | change the sampling rate now |
//! | `PUT /v1/mirror/{service}/rules` body: [`crate::replay::config::RawRules`] JSON | replace the service's rules now |
//! | `GET /v1/diff` | per service: verdict, per-route comparisons, regressed fields with rates and example ids |
//! | `GET /v1/diff/{id}` | one exchange: live and shadow side by side (secrets redacted) with its diffs |
//! | `PUT /v1/diff/noise` body `{"service","route","path","noise":bool}` | mark or unmark a field as noise |
//! | `GET /v1/capture` | perf samples, losses, truncation, reassembly counters |
//! | `GET /v1/exchanges?limit=N` | the latest replayed exchanges with live and shadow answers |
//! | `POST /v1/record` body `{"path": "/tmp/x.jsonl.gz"}` | start recording sampled exchanges |
//! | `DELETE /v1/record` | stop; answers `{"written": N, "dropped": M}` |
//! | `GET /v1/forecast` | every forecast metric: model, reason, trained_until, status, anomaly state |
//! | `GET /v1/forecast/{metric}?horizon=N\|30m` | `{"metric","model","reason","points":[PredictionData]}` |
//! | `GET /v1/forecast/events` | anomaly events (the newest kept), oldest first |
//! | `GET /v1/predict` | failure probability per host and service, level, top signals ([`super::predict`]) |
//! | `GET /v1/predict/events` | level changes (ok, warn, stage, cutover) with their reasons |
//! | `GET /v1/regress?y=cpu&on=web.rate[&at=X,Y]` | resource per load fitted on the history, with P10-P90 at each load ([`super::regress`]) |
//!
//! The forecast routes are [`crate::forecast::api`]'s.
//!
//! Bad input gets a 4xx with `{"error": "..."}` and changes nothing.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use hyper::{Method, Request, StatusCode, body::Incoming};
use serde::Deserialize;
use tokio::{net::UnixListener, sync::watch};

use super::{Answer, error, json, query_param, read_json};
use crate::replay::{
    RECORDS,
    config::RawRules,
    control::{Control, ControlError, MarkNoise},
};
use crate::util::Sourced as _;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMirror {
    percent: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecord {
    path: PathBuf,
}

/// Bodies the control API reads at most (rules are the largest).
const SMALL_BODY: usize = 4096;
const RULES_BODY: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The control socket is the agent's own.
impl crate::util::Sourced for SocketError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// Binds the socket with mode 0600 (replacing a stale one).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let err = |source| SocketError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let _ = std::fs::remove_file(path);
    // SAFETY: umask only affects this process's file creation mode.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// What the socket serves: the shadowing path when services are
/// shadowed, the forecasts unless forecasting is off.
#[derive(Default)]
pub struct Api {
    pub shadow: Option<Arc<Control>>,
    pub forecast: Option<Arc<crate::forecast::Service>>,
    /// The agent's history, for `/v1/regress` (`None` in tests without one).
    pub shared: Option<Arc<super::state::Shared>>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(listener: UnixListener, api: Arc<Api>, shutdown: watch::Receiver<bool>) {
    super::serve("control", listener, api, route_api, shutdown).await;
}

/// The shadowing routes' prefixes, answered 409 when nothing is shadowed.
const SHADOW_ROUTES: [&str; 5] = [
    "/v1/mirror",
    "/v1/diff",
    "/v1/capture",
    "/v1/exchanges",
    "/v1/record",
];

async fn route_api(req: Request<Incoming>, api: Arc<Api>) -> Answer {
    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or_default());
    if let Some(answer) = super::forecast::route(api.forecast.as_deref(), req.method(), path, query)
    {
        return answer;
    }
    if path == shadow_api::routes::REGRESS {
        return match &api.shared {
            Some(shared) => super::regress::answer(&shared.history, query),
            None => error(StatusCode::NOT_FOUND, "this agent keeps no history".into()),
        };
    }
    if let Some(answer) = super::predict::route(api.shared.as_deref(), path) {
        return answer;
    }
    if let Some(answer) =
        super::provision::route(api.shared.as_ref(), req.method(), path, query, true).await
    {
        return answer;
    }
    if let Some(answer) =
        super::failover::route(api.shared.as_ref(), req.method(), path, query, true).await
    {
        return answer;
    }
    match &api.shadow {
        Some(control) => route(req, control).await,
        None if SHADOW_ROUTES.iter().any(|p| path.starts_with(p)) => error(
            StatusCode::CONFLICT,
            "no services are shadowed (start shadow-proxy with --config FILE)".into(),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

/// The answer for a refused operation.
fn refused(e: &ControlError) -> Answer {
    tracing::debug!(error = %e, source = ?e.error_source(), "Control request refused");
    let status = match e {
        ControlError::UnknownService { .. } => StatusCode::NOT_FOUND,
        ControlError::Invalid { .. } | ControlError::RecordStart(_) => StatusCode::BAD_REQUEST,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::Record(_) | ControlError::Capture(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn route(req: Request<Incoming>, control: &Control) -> Answer {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/mirror") => json(StatusCode::OK, &control.status()),
        (Method::GET, "/v1/diff") => json(StatusCode::OK, &control.diff_summary()),
        (Method::PUT, "/v1/diff/noise") => {
            let m: MarkNoise = match read_json(req, SMALL_BODY, "body").await {
                Ok(m) => m,
                Err(answer) => return answer,
            };
            match control.mark_noise(&m) {
                Ok(path) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "route": m.route, "path": path, "noise": m.noise }),
                ),
                Err(e) => refused(&e),
            }
        }
        (Method::GET, p) if p.starts_with("/v1/diff/") => {
            let Ok(id) = p.trim_start_matches("/v1/diff/").parse::<u64>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "exchange id must be a number".into(),
                );
            };
            match control
                .replayer
                .records(RECORDS)
                .into_iter()
                .find(|r| r.id == id)
            {
                Some(r) => json(StatusCode::OK, &r),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("exchange {id} is not among the recent ones"),
                ),
            }
        }
        (Method::GET, "/v1/capture") => json(StatusCode::OK, &control.pipeline.view()),
        (Method::PUT, p) if p.starts_with("/v1/mirror/") && p.ends_with("/rules") => {
            let service = p
                .trim_start_matches("/v1/mirror/")
                .trim_end_matches("/rules")
                .to_owned();
            let raw: RawRules = match read_json(req, RULES_BODY, "rules").await {
                Ok(r) => r,
                Err(answer) => return answer,
            };
            match control.set_rules(&service, raw) {
                Ok(()) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "service": service, "rules": "replaced" }),
                ),
                Err(e) => refused(&e),
            }
        }
        (Method::PUT, p) if p.starts_with("/v1/mirror/") => {
            let service = p.trim_start_matches("/v1/mirror/").to_owned();
            let set: SetMirror =
                match read_json(req, SMALL_BODY, "body must be {\"percent\": N}").await {
                    Ok(s) => s,
                    Err(answer) => return answer,
                };
            match control.set_percent(&service, set.percent) {
                Ok(s) => json(StatusCode::OK, &s),
                Err(e) => refused(&e),
            }
        }
        (Method::POST, "/v1/record") => {
            let start: StartRecord =
                match read_json(req, SMALL_BODY, "body must be {\"path\": ...}").await {
                    Ok(s) => s,
                    Err(answer) => return answer,
                };
            match control.start_recording(&start.path) {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "path": start.path })),
                Err(e) => refused(&e),
            }
        }
        (Method::DELETE, "/v1/record") => match control.stop_recording() {
            Ok((written, dropped)) => json(
                StatusCode::OK,
                &serde_json::json!({ "written": written, "dropped": dropped }),
            ),
            Err(e) => refused(&e),
        },
        (Method::GET, "/v1/exchanges") => {
            let limit = query_param(&query, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20);
            json(StatusCode::OK, &control.replayer.records(limit))
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::forecast::{ForecastSettings, Service};

    /// Serves `api` on a fresh socket in a temp directory.
    fn start(tag: &str, api: Api) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("shadow-control-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("control.sock");
        let listener = bind(&socket).expect("binds the socket");
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner may talk to it");
        let (stop, shutdown) = watch::channel(false);
        std::mem::forget(stop);
        tokio::spawn(serve(listener, Arc::new(api), shutdown));
        (dir, socket)
    }

    async fn get(socket: &Path, path: &str) -> (StatusCode, String) {
        let (status, body) = shadow_api::client::control(socket, Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn telemetry_only_serves_forecasts_and_refuses_the_mirror_routes() {
        let models =
            std::env::temp_dir().join(format!("shadow-control-models-{}", std::process::id()));
        let settings = ForecastSettings {
            dir: models.clone(),
            metrics: vec!["host.cpu_utilisation".into()],
            ..ForecastSettings::default()
        };
        let api = Api {
            shadow: None,
            forecast: Some(Arc::new(Service::new(settings, "h"))),
            shared: None,
        };
        let (dir, socket) = start("telemetry", api);
        let (status, body) = get(&socket, "/v1/mirror").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("no services are shadowed"), "{body}");
        let (status, body) = get(&socket, "/v1/forecast").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let all: Vec<crate::forecast::answer::MetricStatus> = serde_json::from_str(&body).unwrap();
        assert_eq!(all[0].metric, "host.cpu_utilisation");
        let (status, body) = get(&socket, "/v1/forecast/host.cpu_utilisation?horizon=30m").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body.contains("not trained yet: need") && body.contains("have 0"),
            "{body}"
        );
        let (status, body) = get(&socket, "/v1/forecast/host.cpu_utilisation?horizon=2h").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            get(&socket, "/v1/forecast/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&socket, "/v1/forecast/events").await,
            (StatusCode::OK, "[]".into())
        );
        assert_eq!(get(&socket, "/v1/nothing").await.0, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&models);
    }

    #[tokio::test]
    async fn forecast_routes_say_when_forecasting_is_off() {
        let (dir, socket) = start("off", Api::default());
        let (status, body) = get(&socket, "/v1/forecast").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(body.contains("--no-forecast"), "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
