//! Every background loop of the agent as a [`Task`], and [`Tasks`], which
//! starts them and, at shutdown, waits for each (the shutdown watch has
//! fired by then).

use std::{collections::HashMap, sync::Arc, time::Duration};

use aya::maps::MapData;
use tokio::sync::mpsc;

use super::{AgentConfig, AgentError, poller};
use crate::{
    api::{admin, control, state::Shared},
    capture::pipeline::{self, CapturedExchange, PipelineConfig, PipelineCounters},
    forecast,
    kernel::KernelTelemetry,
    metrics::service::ServiceStats,
    replay::{Replayer, control::Control},
    util::task::{Running, Shutdown, Task},
};

/// A task still running past this at shutdown is reported and left to
/// the process exit.
const STOP_WAIT: Duration = Duration::from_millis(1500);

/// The started tasks.
pub struct Tasks {
    shutdown: Shutdown,
    running: Vec<(&'static str, Running)>,
}

impl Tasks {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            running: Vec::new(),
        }
    }

    pub fn start(&mut self, task: Box<dyn Task>) -> Result<(), AgentError> {
        let name = task.name();
        let running = task
            .start(self.shutdown.clone())
            .map_err(|source| AgentError::Io {
                what: format!("starting {name}"),
                source,
            })?;
        tracing::debug!(task = name, "Started");
        self.running.push((name, running));
        Ok(())
    }

    /// The forecast refresher and trainer on the shared history.
    pub fn start_forecast(
        &mut self,
        service: &Arc<forecast::Service>,
        shared: &Arc<Shared>,
        delay: Duration,
    ) -> Result<(), AgentError> {
        let source = Arc::new(HistorySource(shared.clone()));
        let threads = forecast::threads::spawn(service, source, self.shutdown.flag(), delay)
            .map_err(|source| AgentError::Io {
                what: "starting the forecast threads".into(),
                source,
            })?;
        // The refresher saves the grids on its way out; a running fit is
        // left to the process exit (see forecast/threads.rs).
        self.running
            .push(("forecast refresher", Running::Thread(threads.refresher)));
        drop(threads.trainer);
        self.running.push(("forecast trainer", Running::Detached));
        Ok(())
    }

    /// Waits for every task, newest first (servers before the loops they
    /// read from), each at most [`STOP_WAIT`].
    pub async fn stop(mut self) {
        while let Some((name, running)) = self.running.pop() {
            let ended = match running {
                Running::Detached => continue,
                Running::Async(handle) => tokio::time::timeout(STOP_WAIT, handle)
                    .await
                    .map(|r| r.is_ok()),
                Running::Thread(handle) => {
                    let joined = tokio::task::spawn_blocking(move || handle.join().is_ok());
                    tokio::time::timeout(STOP_WAIT, joined)
                        .await
                        .map(|r| r.unwrap_or(false))
                }
            };
            match ended {
                Ok(true) => tracing::debug!(task = name, "Stopped"),
                Ok(false) => tracing::error!(task = name, "Task panicked"),
                Err(_) => tracing::warn!(task = name, "Task did not stop in time"),
            }
        }
    }
}

/// The forecaster reads the agent's in-memory history.
struct HistorySource(Arc<Shared>);

impl forecast::Source for HistorySource {
    fn samples(&self, metric: &str) -> Vec<(u64, f64)> {
        let h = self.0.history.lock().unwrap_or_else(|p| p.into_inner());
        h.get(metric)
            .into_iter()
            .map(|p| (p.timestamp, p.value))
            .collect()
    }
}

/// Copies the kernel maps and host sample every interval (a thread: it
/// owns the programs, and dropping them at the end detaches them).
pub struct Poller {
    /// `None` with `--no-kernel`: host metrics and traffic series only.
    pub telemetry: Option<KernelTelemetry>,
    pub shared: Arc<Shared>,
    pub cfg: AgentConfig,
    pub control: Option<Arc<Control>>,
}

impl Task for Poller {
    fn name(&self) -> &'static str {
        "poller"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        let stop = shutdown.flag();
        let Self {
            telemetry,
            shared,
            cfg,
            control,
        } = *self;
        std::thread::Builder::new()
            .name("shadow-poller".into())
            .spawn(move || poller::poll_loop(telemetry, &shared, &stop, &cfg, control.as_deref()))
            .map(Running::Thread)
    }
}

/// Reads the classifier's perf buffers and rebuilds TCP and HTTP.
pub struct CaptureReader {
    pub perf: MapData,
    pub stats: HashMap<u16, Arc<ServiceStats>>,
    pub tx: mpsc::Sender<CapturedExchange>,
    pub cfg: PipelineConfig,
    pub counters: Arc<PipelineCounters>,
}

impl Task for CaptureReader {
    fn name(&self) -> &'static str {
        "capture reader"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        let s = *self;
        pipeline::spawn(s.perf, s.stats, s.tx, shutdown.flag(), s.cfg, s.counters)
            .map(Running::Thread)
    }
}

/// Replays captured exchanges; ends when the capture reader (the queue's
/// only sender) has ended, so queued exchanges are not cut off mid-way.
pub struct ReplayLoop {
    pub replayer: Arc<Replayer>,
    pub rx: mpsc::Receiver<CapturedExchange>,
}

impl Task for ReplayLoop {
    fn name(&self) -> &'static str {
        "replayer"
    }

    fn start(self: Box<Self>, _shutdown: Shutdown) -> std::io::Result<Running> {
        Ok(Running::Async(tokio::spawn(self.replayer.run(self.rx))))
    }
}

/// Runs the provisioning loops that are due, every second (a thread: a
/// backend blocks until its capacity is ready).
pub struct ProvisionLoop {
    pub provisioner: Arc<crate::provision::Provisioner>,
    pub shared: Arc<Shared>,
}

impl Task for ProvisionLoop {
    fn name(&self) -> &'static str {
        "provisioner"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        let stop = shutdown.flag();
        std::thread::Builder::new()
            .name("shadow-provision".into())
            .spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = super::unix_now();
                    let s = &self.shared;
                    self.provisioner
                        .round(now, &s.history, s.forecast.as_deref(), false, None);
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .map(Running::Thread)
    }
}

/// Checks every failover profile's primary and shadow each check
/// interval and acts on what their machines decide (a thread: hooks and
/// checks block).
pub struct FailoverLoop {
    pub orchestrator: Arc<crate::failover::Orchestrator>,
    pub shared: Arc<Shared>,
}

impl Task for FailoverLoop {
    fn name(&self) -> &'static str {
        "failover"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        let stop = shutdown.flag();
        std::thread::Builder::new()
            .name("shadow-failover".into())
            .spawn(move || {
                // A service's level is its own scope's, or the host's when
                // the model has no scope for it.
                let level = |service: &str| {
                    let Some(answer) = self.shared.predict.as_ref().and_then(|p| p.latest()) else {
                        return (shadow_api::predict::Level::Ok, None);
                    };
                    let scope = answer
                        .scopes
                        .iter()
                        .find(|s| s.scope == "service" && s.name == service)
                        .or_else(|| answer.scopes.iter().find(|s| s.scope == "host"));
                    scope.map_or((shadow_api::predict::Level::Ok, None), |s| {
                        (s.level, Some(s.probability))
                    })
                };
                self.orchestrator
                    .run_until(&level, &|| stop.load(std::sync::atomic::Ordering::Relaxed));
            })
            .map(Running::Thread)
    }
}

pub struct AdminServer {
    pub listener: tokio::net::TcpListener,
    pub shared: Arc<Shared>,
}

impl Task for AdminServer {
    fn name(&self) -> &'static str {
        "admin server"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        Ok(Running::Async(tokio::spawn(admin::serve(
            self.listener,
            self.shared,
            shutdown.receiver(),
        ))))
    }
}

/// One service's inline proxy.
pub struct InlineServer {
    pub proxy: Arc<crate::replay::inline::Proxy>,
    pub listener: tokio::net::TcpListener,
}

impl Task for InlineServer {
    fn name(&self) -> &'static str {
        "inline proxy"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        Ok(Running::Async(tokio::spawn(
            self.proxy.serve(self.listener, shutdown.receiver()),
        )))
    }
}

pub struct ControlServer {
    pub listener: tokio::net::UnixListener,
    pub api: Arc<control::Api>,
}

impl Task for ControlServer {
    fn name(&self) -> &'static str {
        "control server"
    }

    fn start(self: Box<Self>, shutdown: Shutdown) -> std::io::Result<Running> {
        Ok(Running::Async(tokio::spawn(control::serve(
            self.listener,
            self.api,
            shutdown.receiver(),
        ))))
    }
}
