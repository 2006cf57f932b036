//! The agent: wires every box together, starts the background tasks in
//! one place and stops them on SIGINT/SIGTERM.
//!
//! Start-up order: pid file (and leftovers of a killed run), kernel
//! programs, classifier, control socket, metrics recorder, admin port;
//! only then the tasks ([`tasks`]): poller, capture reader, replayer,
//! forecast refresher and trainer, admin and control servers. At a signal
//! one watch fires; each task ends, the poller drops the programs
//! (detaching them) and the pid file goes.

pub mod lifecycle;
mod poller;
pub mod tasks;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    api::{
        control::{self, Api},
        state::Shared,
    },
    capture::{
        TcCapture,
        pipeline::{self, PipelineConfig},
    },
    config::Config,
    forecast::{
        self, ForecastSettings,
        predict::{PredictSettings, Predictor},
    },
    host::history::History,
    kernel::{KernelTelemetry, TelemetryError, view::Views},
    metrics::{self as m, service::ServiceStats},
    provision::Provisioner,
    replay::{Replayer, ServiceReplay, budget::Budget, control::Control, inline::Proxy},
    util::{page_size, task::Shutdown},
};
use lifecycle::{LifecycleError, PidFile};
use tasks::Tasks;

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
    /// Cores the agent may use; 0: no budget.
    pub cpu_budget: f64,
    pub max_endpoint_series: usize,
    pub server_id: String,
    /// Services to shadow; `None` runs telemetry only.
    pub shadow: Option<Config>,
    /// Where the control API listens (mode 0600).
    pub control_socket: PathBuf,
    /// Attach the per-syscall TCP byte counters.
    pub tcp_bytes: bool,
    /// Load the kernel programs; `false` is `--no-kernel` (only inline
    /// services can be shadowed).
    pub kernel: bool,
    /// Forecasting; `None` is `--no-forecast`.
    pub forecast: Option<ForecastSettings>,
    /// Failure probabilities; `None` is `--no-predict`.
    pub predict: Option<PredictSettings>,
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
    Control(#[from] control::SocketError),
    #[error("failover: {0}")]
    Failover(#[from] crate::failover::FailoverError),
    #[error("metrics recorder: {0}")]
    Recorder(#[source] metrics_exporter_prometheus::BuildError),
    #[error(
        "service {service:?} is captured in the kernel, which --no-kernel leaves out: give it [service.inline]"
    )]
    NeedsKernel { service: String },
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

/// Start-up errors are the agent's own; none comes from live traffic.
impl crate::util::Sourced for AgentError {
    fn error_source(&self) -> crate::util::ErrorSource {
        match self {
            Self::Capture(e) => e.error_source(),
            _ => crate::util::ErrorSource::Internal,
        }
    }
}

/// Each shadowed service's live rate, p99 latency and error rate are
/// forecast too, while there is room under [`forecast::MAX_METRICS`].
fn add_service_metrics(f: &mut ForecastSettings, shadow: &Config) {
    for svc in &shadow.services {
        for field in ["rate", "p99_latency_ms", "error_rate"] {
            let m = format!("{}.{field}", svc.name);
            if f.metrics.len() < forecast::MAX_METRICS && !f.metrics.contains(&m) {
                f.metrics.push(m);
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Registers a replicas loop's ready copies as the shadow targets of the
/// shadowed service it is named for (its `target`). `None`, with a
/// warning, when no shadowed service has that name.
fn replica_routing(
    shadowing: Option<&Control>,
    target: &str,
) -> Option<crate::provision::replicas::OnChange> {
    let svc = shadowing.and_then(|c| {
        c.replayer
            .services
            .values()
            .find(|s| s.name() == target)
            .cloned()
    });
    let Some(svc) = svc else {
        tracing::warn!(
            target,
            "Local replicas are not registered as shadow targets: no shadowed service has this name"
        );
        return None;
    };
    // The copies change on the provisioning thread; the stack they are
    // balanced by needs the runtime (its rate limit's timer).
    let runtime = tokio::runtime::Handle::current();
    let name = target.to_string();
    Some(Box::new(move |addrs| {
        let _entered = runtime.enter();
        let uris: Vec<hyper::Uri> = addrs
            .iter()
            .filter_map(|a| format!("http://{a}").parse().ok())
            .collect();
        tracing::info!(service = %name, replicas = uris.len(), "Shadow targets: local replicas changed");
        svc.set_discovered(uris);
    }))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let pid_file = PidFile::acquire(&cfg.pid_file)?;
    let mut telemetry = if cfg.kernel {
        let t = KernelTelemetry::load_with(cfg.tcp_bytes)?;
        tracing::info!("Kernel telemetry attached");
        Some(t)
    } else {
        kernel_free(cfg.shadow.as_ref())?;
        tracing::info!("No kernel programs (--no-kernel): host metrics and inline services only");
        None
    };
    let (stop, shutdown) = Shutdown::new();
    let mut tasks = Tasks::new(shutdown);
    let views = Arc::new(Views::default());
    let provision = cfg
        .shadow
        .as_ref()
        .map(|c| c.provision.clone())
        .unwrap_or_default();
    let forecast = cfg.forecast.clone().map(|mut f| {
        if let Some(shadow) = &cfg.shadow {
            add_service_metrics(&mut f, shadow);
        }
        // Every provisioning loop's demand is forecast: the loop looks ahead on it.
        for m in Provisioner::demand_metrics(&provision) {
            if !f.metrics.contains(&m) {
                f.metrics.push(m);
            }
        }
        Arc::new(forecast::Service::new(f, cfg.server_id.clone()))
    });
    let shadowing = match &cfg.shadow {
        Some(c) if !c.services.is_empty() => Some(start_shadowing(
            telemetry.as_mut(),
            c,
            &views,
            &mut tasks,
            Budget::new(cfg.cpu_budget, forecast.as_ref().map(|f| f.hold.clone())),
        )?),
        _ => None,
    };
    // After the capture, whose start removes leftovers of ours. The cutover
    // program is pinned, so that a service cut over stays on its shadow
    // while no agent runs: the orchestrator adopts the pins, and an agent
    // with no failover profile removes them.
    let failover = match cfg.shadow.as_ref().and_then(|c| c.failover.clone()) {
        Some(f) => {
            let inline = shadowing
                .as_ref()
                .map(|c| c.replayer.inline_upstreams())
                .unwrap_or_default();
            let o = crate::failover::Orchestrator::start(f, &inline)?;
            tracing::info!(services = o.status().len(), "Failover profiles loaded");
            Some(Arc::new(o))
        }
        None => {
            crate::failover::cutover::clean_pins(
                std::path::Path::new(crate::failover::cutover::PIN_ROOT),
                true,
            );
            None
        }
    };
    let control = bind_control(&cfg.control_socket, shadowing.is_some())?;
    // The socket is ours to remove at exit only if we bound it.
    let control_bound = control.is_some();
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
        views,
        history: Mutex::new(History::with_staleness(
            cfg.server_id.clone(),
            cfg.history_len,
            cfg.history_max_metrics,
            cfg.history_stale,
        )),
        forecast: forecast.clone(),
        predict: cfg
            .predict
            .clone()
            .map(|p| Arc::new(Predictor::new(p, cfg.server_id.clone()))),
        provision: (!provision.loops.is_empty()).then(|| {
            let route = |target: &str| replica_routing(shadowing.as_deref(), target);
            Arc::new(Provisioner::with_routing(provision, unix_now(), &route))
        }),
        failover: failover.clone(),
        prometheus,
        max_endpoint_series: cfg.max_endpoint_series,
    });
    if let Some(o) = failover {
        if let Some(p) = shared.predict.clone() {
            o.set_outcome(Box::new(move |service, failed| {
                if failed {
                    p.record_failure(service);
                } else {
                    tracing::info!(
                        service,
                        "Failover: a predicted failure did not come (false positive)"
                    );
                }
            }));
        }
        let (sh, control) = (shared.clone(), shadowing.clone());
        o.set_signals(Box::new(move |service| {
            let diff_regressed = control.as_ref().and_then(|c| {
                let summary = c.diff_summary();
                let d = summary.iter().find(|d| d.service == service)?;
                let n: usize = d
                    .targets
                    .values()
                    .map(|t| match &t.verdict {
                        shadow_api::mirror::Verdict::Regressed { regressions } => regressions.len(),
                        _ => 0,
                    })
                    .sum();
                (n > 0).then(|| format!("{n} regressed fields"))
            });
            let h = sh.history.lock().unwrap_or_else(|p| p.into_inner());
            crate::failover::Signals {
                diff_regressed,
                error_rate: h.last(&format!("{service}.error_rate")).map(|p| p.1),
                p99_ms: h.last(&format!("{service}.p99_latency_ms")).map(|p| p.1),
            }
        }));
        // The built-in warm step replays what the capture saw live.
        if let Some(c) = shadowing.clone() {
            o.set_recent(Box::new(move |port, since_ms| {
                c.replayer
                    .recent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .since(port, since_ms)
            }));
        }
        tasks.start(Box::new(tasks::FailoverLoop {
            orchestrator: o,
            shared: shared.clone(),
        }))?;
    }
    if let Some(p) = &shared.provision {
        tasks.start(Box::new(tasks::ProvisionLoop {
            provisioner: p.clone(),
            shared: shared.clone(),
        }))?;
        tracing::info!(mode = p.mode().name(), "Provisioning");
    }
    if let Some(service) = &forecast {
        // Run just after a bin boundary, once the sample that completes it is in.
        let delay = cfg.interval + Duration::from_millis(250);
        tasks.start_forecast(service, &shared, delay)?;
        tracing::info!(
            metrics = service.settings.metrics.len(),
            step = service.settings.step,
            horizon = service.settings.horizon,
            dir = %service.settings.dir.display(),
            "Forecasting"
        );
    }
    tasks.start(Box::new(tasks::Poller {
        telemetry,
        shared: shared.clone(),
        cfg: cfg.clone(),
        control: shadowing.clone(),
    }))?;
    if let Some(listener) = control {
        let api = Api {
            shadow: shadowing.clone(),
            forecast,
            shared: Some(shared.clone()),
        };
        tasks.start(Box::new(tasks::ControlServer {
            listener,
            api: Arc::new(api),
        }))?;
        tracing::info!(socket = %cfg.control_socket.display(), "Control API listening");
    }
    tasks.start(Box::new(tasks::AdminServer {
        listener,
        shared: shared.clone(),
    }))?;
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
    let _ = stop.send(true);
    tasks.stop().await;
    if let Some(control) = &shadowing
        && let Some(c) = control
            .capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
    {
        c.remove_added_qdisc();
    }
    if control_bound {
        let _ = std::fs::remove_file(&cfg.control_socket);
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

/// Binds the control socket. Shadowing cannot run without it; in
/// telemetry-only mode a failure is logged and the forecasts stay on the
/// admin port.
fn bind_control(
    socket: &std::path::Path,
    required: bool,
) -> Result<Option<tokio::net::UnixListener>, AgentError> {
    match control::bind(socket) {
        Ok(l) => Ok(Some(l)),
        Err(e) if required => Err(e.into()),
        Err(error) => {
            tracing::warn!(%error, "Control API unavailable");
            Ok(None)
        }
    }
}

/// Without kernel programs only services behind the inline proxy can be
/// shadowed.
pub fn kernel_free(shadow: Option<&Config>) -> Result<(), AgentError> {
    match shadow
        .into_iter()
        .flat_map(|c| &c.services)
        .find(|s| s.inline.is_none())
    {
        Some(s) => Err(AgentError::NeedsKernel {
            service: s.name.clone(),
        }),
        None => Ok(()),
    }
}

/// Attaches the classifier (with kernel programs), starts the capture
/// thread, the inline proxies and the replayer.
fn start_shadowing(
    telemetry: Option<&mut KernelTelemetry>,
    config: &Config,
    views: &Arc<Views>,
    tasks: &mut Tasks,
    budget: Budget,
) -> Result<Arc<Control>, AgentError> {
    let (mut capture, perf) = match telemetry {
        Some(t) => {
            let (c, p) = TcCapture::attach(t.ebpf_mut(), &config.capture)?;
            (Some(c), Some(p))
        }
        None => (None, None),
    };
    let mut stats = HashMap::new();
    let mut services = HashMap::new();
    let mut ports = Vec::new();
    for (slot, svc) in config.services.iter().enumerate() {
        let st = Arc::new(ServiceStats::new(&svc.name));
        let replay = Arc::new(ServiceReplay::new(svc.clone(), st.clone()));
        let captured = replay.captured.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(c) = capture.as_mut() {
            c.set_sampling(svc.port, slot as u32, svc.kernel_rate(captured))?;
        }
        stats.insert(svc.port, st);
        services.insert(svc.port, replay);
        ports.push((svc.name.clone(), svc.port, slot as u32));
        tracing::info!(
            service = %svc.name,
            port = svc.port,
            percent = f64::from(svc.per_ten_thousand) / 100.0,
            sample = if svc.inline.is_some() {
                "inline"
            } else if svc.per_request {
                "request"
            } else {
                "connection"
            },
            capture_percent = f64::from(captured) / 100.0,
            targets = svc.targets.len(),
            "Shadowing"
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel(config.capture.queue);
    // Bound before any task starts, so that a taken address fails start-up.
    let mut proxies = Vec::new();
    for replay in services.values() {
        let Some(proxy) = Proxy::new(replay.clone(), tx.clone()) else {
            continue;
        };
        let listen = replay
            .inline
            .as_ref()
            .expect("a proxy has inline settings")
            .settings
            .clone();
        let listener = std::net::TcpListener::bind(listen.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| AgentError::Io {
                what: format!(
                    "service {:?}: inline proxy listen address {}",
                    replay.name(),
                    listen.listen
                ),
                source,
            })?;
        tracing::info!(
            service = %replay.name(),
            listen = %listen.listen,
            upstream = %listen.upstream,
            "Inline proxy listening"
        );
        proxies.push((Arc::new(proxy), listener));
    }
    let pipeline_config = PipelineConfig {
        // A power of two as long as the page size is one (it is).
        perf_pages: (config.capture.ring_mib << 20) / page_size(),
        ..PipelineConfig::default()
    };
    let pipeline = Arc::new(pipeline::PipelineCounters::default());
    match perf {
        Some(perf) => tasks.start(Box::new(tasks::CaptureReader {
            perf,
            stats,
            tx,
            cfg: pipeline_config,
            counters: pipeline.clone(),
        }))?,
        None => drop((stats, tx, pipeline_config)),
    }
    let replayer = Arc::new(Replayer::new(services, Some(views.clone())));
    tasks.start(Box::new(tasks::ReplayLoop {
        replayer: replayer.clone(),
        rx,
    }))?;
    for (proxy, listener) in proxies {
        tasks.start(Box::new(tasks::InlineServer { proxy, listener }))?;
    }
    Ok(Arc::new(Control {
        capture: Mutex::new(capture),
        budget: Mutex::new(budget),
        replayer,
        ports,
        pipeline,
    }))
}
