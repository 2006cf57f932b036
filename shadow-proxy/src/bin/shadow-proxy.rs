//! The shadow agent.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use shadow_proxy::util::Sourced as _;
use shadow_proxy::{
    agent, config, forecast,
    kernel::{self as telemetry, prometheus::DEFAULT_MAX_ENDPOINT_SERIES},
    util::duration,
};

/// The agent allocates and frees a few dozen small buffers per mirrored
/// request, across threads; glibc malloc spent a third of its CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shadow's agent: attaches the kernel telemetry programs and serves
/// Prometheus metrics and the admin API.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Admin listen address (metrics at /metrics). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9464")]
    admin: SocketAddr,
    /// How often the kernel maps and procfs are read (500ms, 1s, ...).
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    interval: Duration,
    /// Pid file; a second agent with the same file refuses to start.
    #[arg(long, default_value = "/run/shadow/shadow-proxy.pid")]
    pid_file: PathBuf,
    /// Write `{"admin":..,"pid":..}` here once attached and listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Samples kept per metric for the forecaster.
    #[arg(long, default_value_t = 3600)]
    history_len: usize,
    /// Distinct metrics kept in the history.
    #[arg(long, default_value_t = 256)]
    history_max_metrics: usize,
    /// A history series with no sample for this long gives its slot to a
    /// new one (processes and devices come and go).
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    history_stale: Duration,
    /// Cores the agent may use: over it, new connections are captured at a
    /// lower rate until it fits (0: no budget).
    #[arg(long, default_value_t = 1.0)]
    cpu_budget: f64,
    /// Endpoints exported by name; the rest are summed into endpoint="other".
    #[arg(long, default_value_t = DEFAULT_MAX_ENDPOINT_SERIES)]
    max_endpoint_series: usize,
    /// Name of this host in the history (default: the hostname).
    #[arg(long)]
    server_id: Option<String>,
    /// The configuration file (TOML): `[agent]`, `[telemetry]`, `[forecast]`,
    /// `[capture]`, `[[service]]`. A flag given here overrides its key;
    /// without `[[service]]` the agent runs telemetry only.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Control API socket (created with mode 0600).
    #[arg(long, default_value = "/run/shadow/control.sock")]
    control_socket: PathBuf,
    /// Leave out the per-syscall TCP byte counters (sock_send_length and
    /// sock_recv_length): cheaper on busy request/response servers.
    #[arg(long)]
    no_tcp_bytes: bool,
    /// Load no eBPF program (hosts without eBPF, containers without
    /// CAP_BPF): no kernel telemetry and no capture, so every shadowed
    /// service must be behind the inline proxy (`[service.inline]`).
    #[arg(long)]
    no_kernel: bool,
    /// Validate the configuration, load and attach the programs, report,
    /// detach and exit.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    forecast: ForecastFlags,
    #[command(flatten)]
    predict: PredictFlags,
}

/// Failure probabilities (on by default).
#[derive(Debug, clap::Args)]
struct PredictFlags {
    /// Turn failure probabilities off.
    #[arg(long)]
    no_predict: bool,
    /// P(failure within this long).
    #[arg(long, default_value = "30m", value_parser = duration::parse)]
    predict_horizon: Duration,
    /// Levels: `warn=0.3,stage=0.6,cutover=0.85` (any subset; they must rise).
    #[arg(long, value_parser = parse_thresholds)]
    predict_thresholds: Option<Thresholds>,
    /// Past incidents, CSV `time,host,component,cause`: each host's and
    /// component's base rate.
    #[arg(long)]
    incidents: Option<PathBuf>,
}

type Thresholds = shadow_api::predict::Thresholds;

fn parse_thresholds(s: &str) -> Result<Thresholds, String> {
    let mut t = Thresholds::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected KEY=PROBABILITY"))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| format!("{k}: {v:?} is not a number"))?;
        match k.trim() {
            "warn" => t.warn = v,
            "stage" => t.stage = v,
            "cutover" => t.cutover = v,
            other => return Err(format!("{other:?} is not a level (warn, stage, cutover)")),
        }
    }
    t.validate()?;
    Ok(t)
}

impl PredictFlags {
    fn settings(self) -> Result<Option<forecast::predict::PredictSettings>, String> {
        if self.no_predict {
            return Ok(None);
        }
        let incidents = match &self.incidents {
            Some(path) => shadow_forecast::failure::read_incidents(path)
                .map_err(|e| format!("--incidents: {e}"))?,
            None => Vec::new(),
        };
        let horizon_s = i64::try_from(self.predict_horizon.as_secs())
            .ok()
            .filter(|&s| s > 0)
            .ok_or("--predict-horizon: must be at least a second")?;
        Ok(Some(forecast::predict::PredictSettings {
            horizon_s,
            thresholds: self.predict_thresholds.unwrap_or_default(),
            incidents,
            ..Default::default()
        }))
    }
}

/// Forecasting (on by default).
#[derive(Debug, clap::Args)]
struct ForecastFlags {
    /// Turn forecasting off.
    #[arg(long)]
    no_forecast: bool,
    /// Where trained models and their history are kept, one directory per metric.
    #[arg(long, default_value = "/var/lib/shadow/forecast")]
    forecast_dir: PathBuf,
    /// Metrics to forecast, comma-separated (default: host CPU, memory,
    /// network and disk throughput, block IOPS, TCP connections per second).
    #[arg(long, value_parser = forecast::parse_metrics)]
    forecast_metrics: Option<Metrics>,
    /// How often each metric is retrained.
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    forecast_every: Duration,
    /// The forecast grid's step (history is averaged per step).
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    forecast_step: Duration,
    /// Steps forecast ahead.
    #[arg(long, default_value_t = 60)]
    forecast_horizon: usize,
    /// Candidate models, comma-separated (seasonal_naive, ets, damped, mstl, last_level, arima, prophet, lstm).
    #[arg(long, value_parser = forecast::parse_models)]
    forecast_models: Option<Models>,
}

// Aliases, so clap parses each list as one comma-separated value (a bare
// `Vec` field would mean a repeated flag).
type Metrics = Vec<String>;
type Models = Vec<shadow_proxy::forecast::Candidate>;

impl ForecastFlags {
    /// The validated settings, `None` when off; the error names the key.
    fn settings(
        self,
        interval: Duration,
        history: Duration,
    ) -> Result<Option<forecast::ForecastSettings>, forecast::SettingsError> {
        if self.no_forecast {
            return Ok(None);
        }
        let step = forecast::whole_seconds(self.forecast_step).map_err(|reason| {
            forecast::SettingsError {
                key: "step",
                reason,
            }
        })?;
        let defaults = forecast::ForecastSettings::default();
        let settings = forecast::ForecastSettings {
            dir: self.forecast_dir,
            metrics: self.forecast_metrics.unwrap_or(defaults.metrics),
            every: self.forecast_every,
            step,
            horizon: self.forecast_horizon,
            candidates: self.forecast_models.unwrap_or(defaults.candidates),
            grid_points: forecast::grid_points_for(step),
            ..defaults
        };
        settings.validate(interval, history)?;
        Ok(Some(settings))
    }
}

/// Applies the file's `[agent]`, `[telemetry]` and `[forecast]` keys to
/// every flag not given on the command line (or in the environment).
fn overlay(cli: &mut Cli, m: &clap::ArgMatches, file: &config::Config) {
    let unset = |id: &str| {
        !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    macro_rules! take {
        ($id:literal, $dst:expr, $src:expr) => {
            if unset($id)
                && let Some(v) = $src.clone()
            {
                $dst = v;
            }
        };
    }
    let (a, t, f) = (&file.agent, &file.telemetry, &file.forecast);
    take!("admin", cli.admin, a.admin);
    take!("interval", cli.interval, a.interval);
    take!("pid_file", cli.pid_file, a.pid_file);
    take!("control_socket", cli.control_socket, a.control_socket);
    take!("history_len", cli.history_len, a.history_len);
    take!(
        "history_max_metrics",
        cli.history_max_metrics,
        a.history_max_metrics
    );
    take!("history_stale", cli.history_stale, a.history_stale);
    take!("cpu_budget", cli.cpu_budget, a.cpu_budget);
    take!(
        "max_endpoint_series",
        cli.max_endpoint_series,
        t.max_endpoint_series
    );
    if unset("ready_file") && a.ready_file.is_some() {
        cli.ready_file.clone_from(&a.ready_file);
    }
    if unset("server_id") && a.server_id.is_some() {
        cli.server_id.clone_from(&a.server_id);
    }
    if unset("no_tcp_bytes")
        && let Some(on) = t.tcp_bytes
    {
        cli.no_tcp_bytes = !on;
    }
    if unset("no_kernel")
        && let Some(on) = t.kernel
    {
        cli.no_kernel = !on;
    }
    let ff = &mut cli.forecast;
    if unset("no_forecast")
        && let Some(on) = f.enabled
    {
        ff.no_forecast = !on;
    }
    take!("forecast_dir", ff.forecast_dir, f.dir);
    take!("forecast_every", ff.forecast_every, f.every);
    take!("forecast_step", ff.forecast_step, f.step);
    take!("forecast_horizon", ff.forecast_horizon, f.horizon);
    if unset("forecast_metrics") && f.metrics.is_some() {
        ff.forecast_metrics.clone_from(&f.metrics);
    }
    if unset("forecast_models") && f.models.is_some() {
        ff.forecast_models.clone_from(&f.models);
    }
}

/// Names a forecast setting as its user gave it: the flag, or the file's
/// `[forecast]` key when the value came from the file.
fn forecast_key(
    e: &forecast::SettingsError,
    m: &clap::ArgMatches,
    path: Option<&std::path::Path>,
    file: Option<&config::Config>,
) -> String {
    let on_command_line = matches!(
        m.value_source(&format!("forecast_{}", e.key)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    let in_file = file.is_some_and(|c| {
        let f = &c.forecast;
        match e.key {
            "step" => f.step.is_some(),
            "every" => f.every.is_some(),
            "horizon" => f.horizon.is_some(),
            _ => false,
        }
    });
    match path {
        Some(path) if in_file && !on_command_line => {
            format!("{}: forecast.{}", path.display(), e.key)
        }
        _ => format!("--forecast-{}", e.key),
    }
}

fn main() -> ExitCode {
    // The agent's heap is small and churns: with transparent huge pages
    // each 2 MiB region it touches stays whole (36 of its 53 MiB of heap
    // at 10k mirrored req/s). The kernel then backs it with 4 KiB pages.
    // SAFETY: integer arguments; it sets a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOW_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or journald gets
        // plain `key=value` fields.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let shadow = match cli.config.as_deref().map(config::Config::load).transpose() {
        Ok(c) => c,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(64);
        }
    };
    if let Some(file) = &shadow {
        overlay(&mut cli, &matches, file);
    }
    let history = cli
        .interval
        .saturating_mul(cli.history_len.min(u32::MAX as usize) as u32);
    let forecast = match cli.forecast.settings(cli.interval, history) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "error: {}: {}",
                forecast_key(&e, &matches, cli.config.as_deref(), shadow.as_ref()),
                e.reason
            );
            return ExitCode::from(64);
        }
    };
    let predict = match cli.predict.settings() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.check {
        if let Some(p) = &predict {
            println!(
                "ok: failure probabilities within {}, {} past incidents",
                forecast::format_ahead(p.horizon_s),
                p.incidents.len()
            );
        }
        if let Some(c) = &shadow {
            println!("ok: configuration valid ({} services)", c.services.len());
        }
        if let Some(f) = &forecast {
            println!(
                "ok: forecasting {} metrics every {}, {} steps of {}, into {}",
                f.metrics.len(),
                forecast::format_ahead(f.every.as_secs() as i64),
                f.horizon,
                forecast::format_ahead(f.step),
                f.dir.display()
            );
        }
        if cli.no_kernel {
            return match agent::kernel_free(shadow.as_ref()) {
                Ok(()) => {
                    println!("ok: no kernel programs (--no-kernel)");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        return match check_kernel(!cli.no_tcp_bytes, shadow.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let server_id = cli.server_id.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into())
    });
    let cfg = agent::AgentConfig {
        admin: cli.admin,
        interval: cli.interval,
        pid_file: cli.pid_file,
        ready_file: cli.ready_file,
        history_len: cli.history_len,
        history_max_metrics: cli.history_max_metrics,
        history_stale: cli.history_stale,
        cpu_budget: cli.cpu_budget,
        max_endpoint_series: cli.max_endpoint_series,
        server_id,
        shadow,
        control_socket: cli.control_socket,
        tcp_bytes: !cli.no_tcp_bytes,
        kernel: !cli.no_kernel,
        forecast,
        predict,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, source = ?error.error_source(), "shadow-proxy failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`'s kernel half: the tracepoint programs load and attach, and so
/// does the classifier on the configured interface (then all is detached,
/// and a clsact qdisc added for the check is removed).
fn check_kernel(tcp_bytes: bool, shadow: Option<&config::Config>) -> Result<(), agent::AgentError> {
    let mut telemetry = telemetry::KernelTelemetry::load_with(tcp_bytes)?;
    println!(
        "ok: {} tracepoint programs load and attach",
        telemetry::TRACEPOINTS.len()
    );
    if let Some(c) = shadow.filter(|c| !c.services.is_empty()) {
        let (mut capture, _perf) =
            shadow_proxy::capture::TcCapture::attach(telemetry.ebpf_mut(), &c.capture)?;
        capture.remove_added_qdisc();
        println!(
            "ok: the classifier attaches to {} ({:?})",
            c.capture.interface, c.capture.attach
        );
    }
    Ok(())
}
