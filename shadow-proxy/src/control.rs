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
//! | `PUT /v1/mirror/{service}/rules` body: [`crate::config::RawRules`] JSON | replace the service's rules now |
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
//!
//! The forecast routes are [`crate::forecast::api`]'s.
//!
//! Bad input gets a 4xx with `{"error": "..."}` and changes nothing.

use std::{
    convert::Infallible,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::{
    capture::TcCapture, config::percent_to_hundredths, metrics::names, replay::Replayer,
    stats::StatsView,
};

/// One service as `GET /v1/mirror` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub service: String,
    pub port: u16,
    pub percent: f64,
    pub targets: Vec<String>,
    pub packets_seen: u64,
    pub packets_sampled: u64,
    pub truncated: u64,
    pub stats: StatsView,
    pub coverage: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMirror {
    percent: f64,
}

/// One shadow target's diff state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetDiff {
    pub verdict: crate::diff::noise::Verdict,
    pub routes: std::collections::BTreeMap<String, crate::diff::noise::RouteStats>,
}

/// One service's diff summary: a verdict per shadow target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffSummary {
    pub service: String,
    pub targets: std::collections::BTreeMap<String, TargetDiff>,
    pub marked_noise: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkNoise {
    service: String,
    route: String,
    path: String,
    noise: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecord {
    path: PathBuf,
}

/// What the control API acts on.
pub struct Control {
    pub capture: Mutex<TcCapture>,
    pub replayer: Arc<Replayer>,
    /// Service name -> (port, slot in the kernel's counters).
    pub ports: Vec<(String, u16, u32)>,
    pub pipeline: Arc<crate::capture::pipeline::PipelineCounters>,
}

impl Control {
    pub fn status(&self) -> Vec<MirrorStatus> {
        let capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        self.ports
            .iter()
            .filter_map(|(name, port, slot)| {
                let svc = self.replayer.services.get(port)?;
                let cfg = svc.cfg.read().unwrap_or_else(|p| p.into_inner());
                let k = capture.counters(*slot).unwrap_or_default();
                let stats = svc.stats.view();
                Some(MirrorStatus {
                    service: name.clone(),
                    port: *port,
                    percent: f64::from(cfg.per_ten_thousand) / 100.0,
                    targets: cfg.targets.iter().map(ToString::to_string).collect(),
                    packets_seen: k.packets_seen,
                    packets_sampled: k.packets_sampled,
                    truncated: k.truncated,
                    coverage: stats.coverage(),
                    stats,
                })
            })
            .collect()
    }

    /// Publishes the per-service counters to the metrics recorder.
    pub fn publish_metrics(&self) {
        for s in self.status() {
            let l = [("service", s.service.clone())];
            metrics::counter!(names::CAPTURE_PACKETS_SEEN, &l).absolute(s.packets_seen);
            metrics::counter!(names::CAPTURE_PACKETS_SAMPLED, &l).absolute(s.packets_sampled);
            metrics::gauge!(names::MIRROR_PERCENT, &l).set(s.percent);
            if let Some(c) = s.coverage {
                metrics::gauge!(names::COVERAGE, &l).set(c);
            }
        }
    }

    pub fn diff_summary(&self) -> Vec<DiffSummary> {
        self.ports
            .iter()
            .filter_map(|(name, port, _)| {
                let svc = self.replayer.services.get(port)?;
                let d = svc.diff.lock().unwrap_or_else(|p| p.into_inner());
                let mut targets = std::collections::BTreeMap::new();
                let mut regressed = 0usize;
                for (target, e) in &d.targets {
                    let verdict = e.verdict();
                    if let crate::diff::noise::Verdict::Regressed { regressions } = &verdict {
                        regressed += regressions.len();
                    }
                    targets.insert(
                        target.clone(),
                        TargetDiff {
                            verdict,
                            routes: e.routes.clone(),
                        },
                    );
                }
                metrics::gauge!(names::DIFF_REGRESSIONS, "service" => name.clone())
                    .set(regressed as f64);
                Some(DiffSummary {
                    service: name.clone(),
                    targets,
                    marked_noise: d.marked.iter().cloned().collect(),
                })
            })
            .collect()
    }

    fn mark_noise(&self, m: MarkNoise) -> Response<Full<Bytes>> {
        let Some((_, port, _)) = self.ports.iter().find(|(n, _, _)| *n == m.service) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown service {:?}", m.service),
            );
        };
        let Some(svc) = self.replayer.services.get(port) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown service {:?}", m.service),
            );
        };
        let path = crate::diff::json::generic_path(&m.path);
        svc.diff.lock().unwrap_or_else(|p| p.into_inner()).mark(
            m.route.clone(),
            path.clone(),
            m.noise,
        );
        json(
            StatusCode::OK,
            &serde_json::json!({ "route": m.route, "path": path, "noise": m.noise }),
        )
    }

    fn start_recording(&self, path: &Path) -> Response<Full<Bytes>> {
        let mut slot = self
            .replayer
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return error(
                StatusCode::CONFLICT,
                "a recording is already running".into(),
            );
        }
        let mut redact: Vec<String> = Vec::new();
        for svc in self.replayer.services.values() {
            redact.extend(
                svc.cfg
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .redact_headers
                    .clone(),
            );
        }
        match crate::replay::record::Recorder::start(path, redact) {
            Ok(r) => {
                *slot = Some(r);
                tracing::info!(path = %path.display(), "Recording started");
                json(StatusCode::OK, &serde_json::json!({ "path": path }))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    fn stop_recording(&self) -> Response<Full<Bytes>> {
        let taken = self
            .replayer
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match taken.map(crate::replay::record::Recorder::finish) {
            None => error(StatusCode::CONFLICT, "no recording is running".into()),
            Some(Ok((written, dropped))) => json(
                StatusCode::OK,
                &serde_json::json!({ "written": written, "dropped": dropped }),
            ),
            Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    fn set_percent(
        &self,
        service: &str,
        percent: f64,
    ) -> Result<MirrorStatus, (StatusCode, String)> {
        let (_, port, slot) = self
            .ports
            .iter()
            .find(|(n, _, _)| n == service)
            .ok_or_else(|| {
                let known: Vec<&str> = self.ports.iter().map(|(n, _, _)| n.as_str()).collect();
                (
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown service {service:?} (configured: {})",
                        known.join(", ")
                    ),
                )
            })?;
        let hundredths = percent_to_hundredths(percent)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("percent {e}")))?;
        let svc = self.replayer.services.get(port).ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "service has no replayer".into(),
        ))?;
        self.capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_sampling(*port, *slot, hundredths)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        svc.cfg
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .per_ten_thousand = hundredths;
        tracing::info!(service, percent, "Mirror percentage changed");
        self.status()
            .into_iter()
            .find(|s| s.service == service)
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "service vanished".into()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket with mode 0600 (replacing a stale one).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Socket {
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
}

pub async fn serve(listener: UnixListener, api: Arc<Api>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(route_api(req, &api).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    json_bytes(status, serde_json::to_vec(v).unwrap_or_default())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message }))
}

/// The shadowing routes' prefixes, answered 409 when nothing is shadowed.
const SHADOW_ROUTES: [&str; 5] = [
    "/v1/mirror",
    "/v1/diff",
    "/v1/capture",
    "/v1/exchanges",
    "/v1/record",
];

async fn route_api(req: Request<hyper::body::Incoming>, api: &Api) -> Response<Full<Bytes>> {
    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or_default());
    if let Some((status, body)) =
        crate::forecast::api::route(api.forecast.as_deref(), req.method(), path, query)
    {
        return json_bytes(status, body);
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

async fn route(req: Request<hyper::body::Incoming>, control: &Control) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/mirror") => json(StatusCode::OK, &control.status()),
        (Method::GET, "/v1/diff") => json(StatusCode::OK, &control.diff_summary()),
        (Method::PUT, "/v1/diff/noise") => {
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match serde_json::from_slice::<MarkNoise>(&body) {
                Ok(m) => control.mark_noise(m),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("body: {e}")),
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
                .records(crate::replay::RECORDS)
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
            let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let raw: crate::config::RawRules = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("rules: {e}")),
            };
            let Some((_, port, _)) = control.ports.iter().find(|(n, _, _)| *n == service) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("unknown service {service:?}"),
                );
            };
            let Some(svc) = control.replayer.services.get(port) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("unknown service {service:?}"),
                );
            };
            match svc.set_rules(raw) {
                Ok(()) => {
                    tracing::info!(service, "Mirror rules replaced");
                    json(
                        StatusCode::OK,
                        &serde_json::json!({ "service": service, "rules": "replaced" }),
                    )
                }
                Err((key, reason)) => {
                    error(StatusCode::BAD_REQUEST, format!("rules.{key}: {reason}"))
                }
            }
        }
        (Method::PUT, p) if p.starts_with("/v1/mirror/") => {
            let service = p.trim_start_matches("/v1/mirror/").to_owned();
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let set: SetMirror = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"percent\": N}}: {e}"),
                    );
                }
            };
            match control.set_percent(&service, set.percent) {
                Ok(s) => json(StatusCode::OK, &s),
                Err((code, msg)) => error(code, msg),
            }
        }
        (Method::POST, "/v1/record") => {
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let start: StartRecord = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("body must be {{\"path\": ...}}: {e}"),
                    );
                }
            };
            control.start_recording(&start.path)
        }
        (Method::DELETE, "/v1/record") => control.stop_recording(),
        (Method::GET, "/v1/exchanges") => {
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
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
        tokio::spawn(serve(listener, Arc::new(api)));
        (dir, socket)
    }

    async fn get(socket: &Path, path: &str) -> (StatusCode, String) {
        let (status, body) = crate::client::control(socket, Method::GET, path, None)
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
        };
        let (dir, socket) = start("telemetry", api);
        let (status, body) = get(&socket, "/v1/mirror").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("no services are shadowed"), "{body}");
        let (status, body) = get(&socket, "/v1/forecast").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let all: Vec<crate::forecast::api::MetricStatus> = serde_json::from_str(&body).unwrap();
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
