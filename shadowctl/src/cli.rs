//! `shadowctl`'s command line.

use std::time::Duration;

use clap::{Parser, Subcommand};
use shadow_api::duration;

#[cfg(feature = "offline")]
use crate::Result;
#[cfg(feature = "offline")]
use crate::offline;

#[derive(Debug, Parser)]
#[command(version, about = "Talk to a running shadow agent")]
pub(crate) struct Cli {
    /// The agent's admin address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9464",
        env = "SHADOW_ADMIN"
    )]
    pub(crate) admin: String,
    /// The agent's control socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/shadow/control.sock",
        env = "SHADOW_CONTROL"
    )]
    pub(crate) control: std::path::PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Diff {
    /// The verdict per shadow target: regressed fields first (with rates and
    /// example ids), then a count of healthy routes.
    Summary {
        #[arg(long)]
        json: bool,
        /// Also list every route with its comparison counts.
        #[arg(long)]
        all: bool,
    },
    /// One exchange, live and shadow side by side, with its differences.
    Show { id: u64 },
    /// Mark a field of a route as noise (or --unmark).
    Noise {
        service: String,
        /// e.g. "GET /users/{id}".
        route: String,
        /// e.g. "$.items[*].price" or "header.etag".
        path: String,
        #[arg(long)]
        unmark: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Mirror {
    /// Set the share of connections mirrored for a service (0-100, 0.01 steps).
    Set { service: String, percent: f64 },
    /// Sampling rate, counters and coverage of every service.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Capture path counters: perf samples, losses, truncation, reassembly.
    Capture,
    /// Replace a service's rules with a JSON document, e.g.
    /// '{"allow_methods":["POST"],"routes":[{"path_prefix":"/orders","allow_methods":["PUT"]}],"rps_limit":50}'.
    /// Fields: methods, path_prefixes, allow_methods, routes, sample_key, rps_limit.
    Rules { service: String, json: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Live block-I/O and TCP latency histograms, refreshed in place.
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = duration::parse)]
        interval: Duration,
        /// Stop after this many screens (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Print screens one after another instead of redrawing.
        #[arg(long)]
        no_clear: bool,
    },
    /// Print the Prometheus page.
    Metrics,
    /// Traffic mirroring: rates and status.
    #[command(subcommand)]
    Mirror(Mirror),
    /// Record sampled exchanges to FILE (JSON lines, gzip if it ends in .gz)
    /// for DURATION, then stop.
    Record {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = "30s", value_parser = duration::parse)]
        duration: Duration,
    },
    /// Replay a recording against a target at N times the recorded pace.
    Replay {
        file: std::path::PathBuf,
        /// Where to send the requests, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        target: String,
        /// Speed factor (2 = twice as fast); 0 sends as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Live vs shadow differences.
    #[command(subcommand)]
    Diff(Diff),
    /// The latest replayed exchanges (JSON), live and shadow side by side.
    Exchanges {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The forecaster's history: metric names, or one metric's samples.
    History {
        /// Metric name, e.g. host.cpu_utilisation.
        metric: Option<String>,
    },
    /// Forecasts: every metric and its model, or one metric's P10/P50/P90;
    /// offline on a CSV file with `train` and `--model DIR --csv FILE`.
    Forecast(ForecastCmd),
    /// Failure probability of this host and each service within the
    /// horizon, its level (ok, warn, stage, cutover) and top signals.
    Predict {
        /// The level changes seen instead (with their reasons).
        #[arg(long)]
        events: bool,
        #[arg(long)]
        json: bool,
    },
    /// The provisioner's plan: current vs desired capacity per loop, the
    /// lead time, the reason, and capacity queued ahead of a threshold.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Provisioning decisions, or one round now (applied or dry-run).
    #[command(subcommand)]
    Provision(Provision),
    /// The capacity pool: units per zone and class, cost, primary and shadow.
    Pool {
        #[arg(long)]
        json: bool,
    },
    /// Failover: where each service is served from, and its transitions;
    /// cut over, roll back or promote by hand.
    #[command(subcommand)]
    Failover(Failover),
    /// What a traffic change would do: predicted utilisation, when each
    /// threshold is crossed, the plan and its cost.
    Whatif {
        /// Traffic factor: 2, 2x, 0.5.
        #[arg(long, default_value = "1", value_parser = parse_factor)]
        traffic: f64,
        /// Capacity factor applied to today's.
        #[arg(long, default_value = "1", value_parser = parse_factor)]
        scale: f64,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the completion script for a shell, e.g.
    /// `shadowctl completion bash > /etc/bash_completion.d/shadowctl`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Provision {
    /// Every decision kept, oldest first: inputs, forecast, lead, result.
    Events {
        #[arg(long)]
        json: bool,
    },
    /// Runs one decision round now and applies it through the backends.
    Apply {
        #[arg(long)]
        json: bool,
    },
    /// Runs one decision round now and shows it; changes nothing.
    DryRun {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Failover {
    /// Per service: phase, cause, share on the shadow, checks, level.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Every transition kept, oldest first, with its reason.
    Events {
        #[arg(long)]
        json: bool,
    },
    /// Per service: the failure probability and level, the signals behind
    /// it, and what the machine does next.
    Predict {
        #[arg(long)]
        json: bool,
    },
    /// Moves new connections for SERVICE to its shadow (its gate must pass
    /// unless --force).
    Cutover(FailoverAction),
    /// Moves new connections for SERVICE back to its primary.
    Rollback(FailoverAction),
    /// Keeps SERVICE on its shadow for good.
    Promote(FailoverAction),
}

#[derive(Debug, clap::Args)]
pub(crate) struct FailoverAction {
    pub service: String,
    /// Check and report; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Cut over to a shadow that fails its gate (logged loudly).
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

/// `2`, `2x`, `1.5`: a positive factor.
pub(crate) fn parse_factor(s: &str) -> Result<f64, String> {
    s.trim_end_matches(['x', 'X'])
        .parse::<f64>()
        .ok()
        .filter(|f| *f > 0.0 && f.is_finite())
        .ok_or_else(|| format!("{s:?} is not a positive factor like 2 or 1.5x"))
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ForecastCmd {
    #[command(subcommand)]
    pub(crate) action: Option<ForecastAction>,
    /// Metric name, e.g. host.cpu_utilisation (default: list every metric).
    pub(crate) metric: Option<String>,
    /// How far ahead: steps (12) or a duration (30m); default the whole horizon.
    #[arg(long)]
    pub(crate) horizon: Option<String>,
    /// Print JSON: the model, why, and PredictionData points.
    #[arg(long)]
    pub(crate) json: bool,
    /// Offline: forecast from a model saved by `forecast train` (with --csv).
    #[arg(long, requires = "csv", conflicts_with = "metric")]
    pub(crate) model: Option<std::path::PathBuf>,
    /// Offline: the history to forecast from, `timestamp,value`.
    #[arg(long, requires = "model")]
    pub(crate) csv: Option<std::path::PathBuf>,
    /// Offline: the related series the model was trained with.
    #[arg(long, requires = "model")]
    pub(crate) related: Option<std::path::PathBuf>,
    /// Offline: the longest gap (missing steps) interpolated; longer gaps are
    /// masked out (up to 30 days of steps; history before a longer one is dropped).
    #[arg(long, default_value_t = 12, requires = "model")]
    pub(crate) max_gap: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ForecastAction {
    /// Train on a `timestamp,value` CSV file (no agent needed) and save the model.
    Train(TrainFlags),
    /// Anomaly events the agent has seen (forecast interval left persistently).
    Events {
        #[arg(long)]
        json: bool,
    },
    /// A resource as a line in a load, from the agent's history: what one
    /// more request per second costs, with its uncertainty.
    /// `shadowctl forecast regress cpu --on web.rate --at 500,1000`.
    Regress {
        /// The resource (full name or a short one that names one series: cpu).
        metric: String,
        /// The load it is explained by (e.g. web.rate).
        #[arg(long)]
        on: String,
        /// Loads to predict at, comma-separated (default: the mean, the busiest, twice that).
        #[arg(long, value_delimiter = ',')]
        at: Vec<f64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct TrainFlags {
    /// The history: `timestamp,value` lines (unix seconds or `YYYY-MM-DD HH:MM:SS`, UTC).
    #[arg(long)]
    pub(crate) csv: std::path::PathBuf,
    /// A related series on the same grid (e.g. request rate for CPU); the LSTM uses it.
    #[arg(long)]
    pub(crate) related: Option<std::path::PathBuf>,
    /// Steps forecast (and backtested per fold).
    #[arg(long, default_value_t = 60)]
    pub(crate) horizon: usize,
    /// Candidate models, comma-separated (seasonal_naive, ets, damped, mstl, last_level, arima, prophet, lstm).
    #[arg(
        long,
        default_value = "seasonal_naive,ets,damped,mstl,last_level,arima,prophet,lstm"
    )]
    pub(crate) models: String,
    /// Rolling-origin folds for the selection.
    #[arg(long, default_value_t = 2)]
    pub(crate) folds: usize,
    /// Steps per season (default: a day at the file's step).
    #[arg(long)]
    pub(crate) season: Option<usize>,
    /// Model directory (default: <csv name>.model in the current directory).
    #[arg(long)]
    pub(crate) out: Option<std::path::PathBuf>,
    /// The longest gap (missing steps) interpolated; longer gaps are masked out
    /// of training (up to 30 days of steps; history before a longer one is dropped).
    #[arg(long, default_value_t = 12)]
    pub(crate) max_gap: usize,
}

#[cfg(feature = "offline")]
impl TrainFlags {
    pub(crate) fn args(self) -> Result<offline::TrainArgs, offline::OfflineError> {
        let models = shadow_forecast::serve::parse_models(&self.models)
            .map_err(|e| offline::OfflineError::Usage(format!("--models: {e}")))?;
        let stem = self
            .csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let out = self
            .out
            .unwrap_or_else(|| format!("{}.model", stem.unwrap_or_default()).into());
        Ok(offline::TrainArgs {
            csv: self.csv,
            related: self.related,
            horizon: self.horizon,
            models,
            folds: self.folds,
            season: self.season,
            out,
            max_gap: self.max_gap,
        })
    }
}
