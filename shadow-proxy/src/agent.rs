//! The agent's main loop.
//!
//! A poller thread owns the kernel programs and the host sampler: every
//! interval it copies the kernel maps into a [`KernelSnapshot`], samples
//! procfs, updates the `metrics` recorder and appends to the [`History`].
//! The admin server only reads what the poller published, so a scrape never
//! touches the kernel. SIGINT/SIGTERM stop the poller, which drops the
//! programs (detaching them), and remove the pid file. The forecasting
//! service ([`crate::forecast`]) reads the history on threads of its own.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::{
    capture::{
        TcCapture,
        pipeline::{self, PipelineConfig},
    },
    config::Config,
    control::{self, Control},
    forecast::{self, ForecastSettings},
    history::History,
    host::HostSampler,
    lifecycle::{LifecycleError, PidFile},
    metrics::{self as m, names},
    replay::{Replayer, ServiceReplay},
    stats::ServiceStats,
    telemetry::{KernelSnapshot, KernelTelemetry, TelemetryError},
};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub admin: SocketAddr,
    pub interval: Duration,
    pub pid_file: PathBuf,
    /// Written once the programs are attached and the admin port listens.
    pub ready_file: Option<PathBuf>,
    pub history_len: usize,
    pub history_max_metrics: usize,
    /// A series silent this long gives its slot to a new one.
    pub history_stale: Duration,
    pub max_endpoint_series: usize,
    pub server_id: String,
    /// Services to shadow; `None` runs telemetry only.
    pub shadow: Option<Config>,
    /// Where the control API listens (mode 0600).
    pub control_socket: PathBuf,
    /// Attach the per-syscall TCP byte counters.
    pub tcp_bytes: bool,
    /// Forecasting; `None` is `--no-forecast`.
    pub forecast: Option<ForecastSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("kernel telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    #[error("admin address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("capture: {0}")]
    Capture(#[from] crate::capture::CaptureError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("metrics recorder: {0}")]
    Recorder(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the ready file says, for tests and the demo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub admin: SocketAddr,
    pub pid: u32,
}

/// The JSON view served at `/api/v1/snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct View {
    /// Unix milliseconds of the poll that produced this view.
    pub timestamp: u64,
    pub server_id: String,
    pub kernel: KernelSnapshot,
    pub host: Vec<(String, f64)>,
}

/// State the poller publishes and the admin server reads.
pub struct Shared {
    view: RwLock<Arc<View>>,
    /// The view before `view`: the two bound the last poll interval.
    prev_view: RwLock<Arc<View>>,
    pub history: Mutex<History>,
    /// The forecasting service, unless `--no-forecast`.
    pub forecast: Option<Arc<forecast::Service>>,
    prometheus: PrometheusHandle,
    max_endpoint_series: usize,
}

impl Shared {
    pub fn view(&self) -> Arc<View> {
        self.view.read().expect("view lock").clone()
    }

    /// Kernel activity over the last poll interval: block-I/O latency per
    /// device and the RTT to `target` (an `ip:port` shadow target).
    pub fn kernel_context(&self, target: &hyper::Uri) -> Option<crate::diff::KernelContext> {
        let (cur, prev) = (
            self.view(),
            self.prev_view.read().expect("view lock").clone(),
        );
        if cur.timestamp == 0 || prev.timestamp == 0 {
            return None;
        }
        let block = cur
            .kernel
            .block
            .iter()
            .filter_map(|b| {
                let before = prev.kernel.block(&b.device, &b.op);
                let lat =
                    before.map_or(b.latency_ns.clone(), |p| b.latency_ns.delta(&p.latency_ns));
                (lat.count() > 0).then(|| crate::diff::BlockContext {
                    device: b.device.clone(),
                    op: b.op.clone(),
                    requests: lat.count(),
                    p50_ns: lat.quantile(0.5).unwrap_or(0),
                    p99_ns: lat.quantile(0.99).unwrap_or(0),
                })
            })
            .collect();
        let addr: Option<std::net::SocketAddr> =
            target.authority().and_then(|a| a.as_str().parse().ok());
        let shadow_rtt = addr.and_then(|a| {
            let e = cur.kernel.endpoint(a.ip(), a.port(), "outbound")?;
            let before = prev.kernel.endpoint(a.ip(), a.port(), "outbound");
            let rtt = before.map_or(e.srtt_ns.clone(), |p| e.srtt_ns.delta(&p.srtt_ns));
            Some(crate::diff::RttContext {
                endpoint: a.to_string(),
                samples: rtt.count(),
                p50_ns: rtt.quantile(0.5).unwrap_or(0),
                p99_ns: rtt.quantile(0.99).unwrap_or(0),
            })
        });
        Some(crate::diff::KernelContext {
            window_ms: cur.timestamp.saturating_sub(prev.timestamp),
            block,
            shadow_rtt,
        })
    }

    pub fn render_metrics(&self) -> String {
        let mut out = self.prometheus.render();
        m::kernel::render(&self.view().kernel, self.max_endpoint_series, &mut out);
        out
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let pid_file = PidFile::acquire(&cfg.pid_file)?;
    let mut telemetry = KernelTelemetry::load_with(cfg.tcp_bytes)?;
    tracing::info!("Kernel telemetry attached");
    let stop = Arc::new(AtomicBool::new(false));
    let forecast = cfg
        .forecast
        .clone()
        .map(|f| Arc::new(forecast::Service::new(f, cfg.server_id.clone())));
    let shadowing = match &cfg.shadow {
        Some(c) if !c.services.is_empty() => {
            Some(start_shadowing(&mut telemetry, c, stop.clone())?)
        }
        _ => None,
    };
    let control_bound = serve_control(&cfg.control_socket, &shadowing, &forecast)?;
    let prometheus = m::install_recorder(cfg.interval * 30 + Duration::from_secs(30))
        .map_err(AgentError::Recorder)?;
    let listener = tokio::net::TcpListener::bind(cfg.admin)
        .await
        .map_err(|source| AgentError::Bind {
            addr: cfg.admin,
            source,
        })?;
    let admin = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: cfg.admin,
        source,
    })?;
    let shared = Arc::new(Shared {
        view: RwLock::new(Arc::new(View::default())),
        prev_view: RwLock::new(Arc::new(View::default())),
        history: Mutex::new(History::with_staleness(
            cfg.server_id.clone(),
            cfg.history_len,
            cfg.history_max_metrics,
            cfg.history_stale,
        )),
        forecast,
        prometheus,
        max_endpoint_series: cfg.max_endpoint_series,
    });
    let forecast_threads = start_forecast(&shared, &stop, cfg.interval)?;

    if let Some(s) = &shadowing {
        let shared = shared.clone();
        let _ = s
            .control
            .replayer
            .kernel_context
            .set(Box::new(move |target| shared.kernel_context(target)));
    }
    let poller = {
        let (shared, stop, cfg) = (shared.clone(), stop.clone(), cfg.clone());
        let control = shadowing.as_ref().map(|s| s.control.clone());
        std::thread::Builder::new()
            .name("shadow-poller".into())
            .spawn(move || poll_loop(telemetry, &shared, &stop, &cfg, control.as_deref()))
            .map_err(|source| AgentError::Io {
                what: "spawning the poller".into(),
                source,
            })?
    };
    let server = tokio::spawn(crate::admin::serve(listener, shared.clone()));
    tracing::info!(%admin, "Serving metrics at http://{admin}/metrics");
    if let Some(path) = &cfg.ready_file {
        let ready = Ready {
            admin,
            pid: std::process::id(),
        };
        let body = serde_json::to_string(&ready).expect("ready serialises");
        std::fs::write(path, body).map_err(|source| AgentError::Io {
            what: format!("writing ready file {}", path.display()),
            source,
        })?;
    }

    wait_for_signal().await;
    tracing::info!("Shutting down: detaching kernel programs");
    server.abort();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = shadowing
        && s.capture_thread.join().is_err()
    {
        tracing::error!("Capture thread panicked");
    }
    if control_bound {
        let _ = std::fs::remove_file(&cfg.control_socket);
    }
    // The refresher saves the forecast grids; a running fit is left to the
    // process exit (see forecast/threads.rs).
    if let Some(t) = forecast_threads
        && t.refresher.join().is_err()
    {
        tracing::error!("Forecast refresher panicked");
    }
    if poller.join().is_err() {
        tracing::error!("Poller thread panicked");
    }
    drop(pid_file);
    tracing::info!("Detached; bye");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("Cannot install signal handlers; exiting");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The running shadowing path.
struct Shadowing {
    control: Arc<Control>,
    capture_thread: std::thread::JoinHandle<()>,
}

/// Binds the control socket and serves it. Shadowing cannot run without
/// it; in telemetry-only mode a failure is logged and the forecasts stay
/// on the admin port. Returns whether the socket is ours to remove.
fn serve_control(
    socket: &std::path::Path,
    shadowing: &Option<Shadowing>,
    forecast: &Option<Arc<forecast::Service>>,
) -> Result<bool, AgentError> {
    let listener = match control::bind(socket) {
        Ok(l) => l,
        Err(e) if shadowing.is_some() => return Err(e.into()),
        Err(error) => {
            tracing::warn!(%error, "Control API unavailable");
            return Ok(false);
        }
    };
    let api = control::Api {
        shadow: shadowing.as_ref().map(|s| s.control.clone()),
        forecast: forecast.clone(),
    };
    tokio::spawn(control::serve(listener, Arc::new(api)));
    tracing::info!(socket = %socket.display(), "Control API listening");
    Ok(true)
}

/// Starts the forecast refresher and trainer on the shared history.
fn start_forecast(
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    interval: Duration,
) -> Result<Option<forecast::threads::Threads>, AgentError> {
    let Some(service) = &shared.forecast else {
        return Ok(None);
    };
    let history = shared.clone();
    let source: forecast::threads::Source = Arc::new(move |metric: &str| {
        let h = history.history.lock().expect("history lock");
        h.get(metric)
            .into_iter()
            .map(|p| (p.timestamp, p.value))
            .collect()
    });
    // Run just after a bin boundary, once the sample that completes it is in.
    let delay = interval + Duration::from_millis(250);
    let threads =
        forecast::threads::spawn(service, source, stop.clone(), delay).map_err(|source| {
            AgentError::Io {
                what: "starting the forecast threads".into(),
                source,
            }
        })?;
    tracing::info!(
        metrics = service.settings.metrics.len(),
        step = service.settings.step,
        horizon = service.settings.horizon,
        dir = %service.settings.dir.display(),
        "Forecasting"
    );
    Ok(Some(threads))
}

/// Attaches the classifier, starts the capture thread and the replayer.
fn start_shadowing(
    telemetry: &mut KernelTelemetry,
    config: &Config,
    stop: Arc<AtomicBool>,
) -> Result<Shadowing, AgentError> {
    let (mut capture, perf) = TcCapture::attach(telemetry.ebpf_mut(), &config.capture)?;
    let mut stats = std::collections::HashMap::new();
    let mut services = std::collections::HashMap::new();
    let mut ports = Vec::new();
    for (slot, svc) in config.services.iter().enumerate() {
        let st = Arc::new(ServiceStats::new(&svc.name));
        capture.set_sampling(svc.port, slot as u32, svc.per_ten_thousand)?;
        stats.insert(svc.port, st.clone());
        services.insert(svc.port, Arc::new(ServiceReplay::new(svc.clone(), st)));
        ports.push((svc.name.clone(), svc.port, slot as u32));
        tracing::info!(
            service = %svc.name,
            port = svc.port,
            percent = f64::from(svc.per_ten_thousand) / 100.0,
            targets = svc.targets.len(),
            "Shadowing"
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel(config.capture.queue);
    let pipeline_config = PipelineConfig {
        // A power of two as long as the page size is one (it is).
        perf_pages: (config.capture.ring_mib << 20) / page_size(),
        ..PipelineConfig::default()
    };
    let (capture_thread, pipeline_counters) =
        pipeline::spawn(perf, stats, tx, stop, pipeline_config).map_err(|source| {
            AgentError::Io {
                what: "starting the capture thread".into(),
                source,
            }
        })?;
    let replayer = Arc::new(Replayer::new(services));
    tokio::spawn(replayer.clone().run(rx));
    let control = Arc::new(Control {
        capture: Mutex::new(capture),
        replayer,
        ports,
        pipeline: pipeline_counters,
    });
    Ok(Shadowing {
        control,
        capture_thread,
    })
}

fn poll_loop(
    mut telemetry: KernelTelemetry,
    shared: &Shared,
    stop: &AtomicBool,
    cfg: &AgentConfig,
    control: Option<&Control>,
) {
    let mut host = HostSampler::new();
    let mut previous: Option<(u64, KernelSnapshot)> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        telemetry.flush_logs();
        let now = unix_ms();
        match telemetry.snapshot() {
            Ok(kernel) => {
                let host_sample = host.sample();
                publish_metrics(&kernel, &host_sample);
                let derived = derived_series(previous.as_ref(), now, &kernel);
                {
                    let mut history = shared.history.lock().expect("history lock");
                    for (metric, value) in host_sample.iter().chain(derived.iter()) {
                        history.push(now, metric, *value);
                    }
                    metrics::counter!(names::HISTORY_REFUSED).absolute(history.refused);
                    metrics::counter!(names::HISTORY_EVICTED).absolute(history.evicted);
                }
                let view = View {
                    timestamp: now,
                    server_id: cfg.server_id.clone(),
                    kernel: kernel.clone(),
                    host: host_sample,
                };
                let old = std::mem::replace(
                    &mut *shared.view.write().expect("view lock"),
                    Arc::new(view),
                );
                *shared.prev_view.write().expect("view lock") = old;
                previous = Some((now, kernel));
            }
            Err(error) => {
                metrics::counter!(names::POLL_ERRORS).increment(1);
                tracing::warn!(%error, "Reading kernel maps failed");
            }
        }
        if let Some(c) = control {
            c.publish_metrics();
        }
        if let Some(f) = &shared.forecast {
            f.publish_metrics();
        }
        if let Some(rss) = self_rss() {
            metrics::gauge!(names::AGENT_RSS).set(rss as f64);
        }
        // Sleep in short steps so a stop request is seen promptly.
        while started.elapsed() < cfg.interval && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(cfg.interval));
        }
    }
    telemetry.flush_logs();
}

/// Rates from the kernel counters, as forecaster series.
fn derived_series(
    previous: Option<&(u64, KernelSnapshot)>,
    now: u64,
    kernel: &KernelSnapshot,
) -> Vec<(String, f64)> {
    let Some((then, before)) = previous else {
        return Vec::new();
    };
    let dt = now.saturating_sub(*then) as f64 / 1000.0;
    if dt <= 0.0 {
        return Vec::new();
    }
    let requests = |s: &KernelSnapshot| s.block.iter().map(|b| b.size_bytes.count()).sum::<u64>();
    let bytes = |s: &KernelSnapshot| s.block.iter().map(|b| b.size_bytes.sum).sum::<u64>();
    let connects = |s: &KernelSnapshot| s.endpoints.iter().map(|e| e.connections).sum::<u64>();
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
    vec![
        (
            "block.iops".into(),
            rate(requests(kernel), requests(before)),
        ),
        (
            "block.bytes_per_second".into(),
            rate(bytes(kernel), bytes(before)),
        ),
        (
            "tcp.connections_per_second".into(),
            rate(connects(kernel), connects(before)),
        ),
    ]
}

fn publish_metrics(kernel: &KernelSnapshot, host: &[(String, f64)]) {
    for (reason, n) in kernel.drops.by_reason() {
        metrics::counter!(names::KERNEL_DROPS, "reason" => reason).absolute(n);
    }
    metrics::counter!(names::KERNEL_EVENTS, "event" => "block_rq_issue")
        .absolute(kernel.block_issued);
    metrics::counter!(names::KERNEL_EVENTS, "event" => "tcp_probe").absolute(kernel.tcp_probes);
    for (metric, value) in host {
        let (name, label) = gauge_name(metric);
        match label {
            Some((k, v)) => metrics::gauge!(name, k => v).set(*value),
            None => metrics::gauge!(name).set(*value),
        }
    }
}

/// `host.cpu_utilisation` -> `shadow_host_cpu_utilisation`;
/// `cgroup.<name>.cpu_cores` -> `shadow_cgroup_cpu_cores{cgroup="<name>"}`.
pub fn gauge_name(metric: &str) -> (String, Option<(&'static str, String)>) {
    let mut parts = metric.splitn(2, '.');
    let scope = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    match scope {
        "cgroup" | "process" => {
            let (name, field) = rest.rsplit_once('.').unwrap_or((rest, "value"));
            let label = if scope == "cgroup" {
                "cgroup"
            } else {
                "process"
            };
            (
                format!("{}{scope}_{field}", names::HOST_GAUGE_PREFIX),
                Some((label, name.to_owned())),
            )
        }
        _ => (
            format!("{}{}", names::HOST_GAUGE_PREFIX, metric.replace('.', "_")),
            None,
        ),
    }
}

/// Resident set size of this process, in bytes.
pub fn self_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size() as u64)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_names_and_labels() {
        assert_eq!(
            gauge_name("host.cpu_utilisation"),
            ("shadow_host_cpu_utilisation".into(), None)
        );
        assert_eq!(
            gauge_name("cgroup.system.slice.cpu_cores"),
            (
                "shadow_cgroup_cpu_cores".into(),
                Some(("cgroup", "system.slice".into()))
            )
        );
        assert_eq!(
            gauge_name("process.nginx[42].rss_bytes"),
            (
                "shadow_process_rss_bytes".into(),
                Some(("process", "nginx[42]".into()))
            )
        );
    }
}
