//! shadow's benchmark harness. Run through `cargo xtask bench`.
//!
//! `telemetry-overhead`: a TCP workload (wrk against nginx on 127.0.0.1) and
//! a disk workload (fio, 4 KiB O_DIRECT random read/write) with the agent
//! detached and attached, alternating the order each round so drift cancels.
//! Reports medians and attached/detached ratios, measured in the same run.

mod bpfstats;
mod diff;
mod failover;
mod failure;
mod forecast;
mod inline;
mod mirror;
mod overhead;
mod plot;
mod provision;
mod regime;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Throughput and p99 with the telemetry programs attached vs detached.
    TelemetryOverhead {
        /// The agent binary (a release build).
        #[arg(long, default_value = "target/release/shadow-proxy")]
        agent: PathBuf,
        /// Seconds per workload run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Detached/attached pairs.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Markdown report to write.
        #[arg(long, default_value = "bench/reports/telemetry-overhead.md")]
        report: PathBuf,
    },
    /// Diff engine: pairs/s per core, and recall / false positives on a
    /// labelled set with planted regressions and realistic noise.
    Diff {
        #[arg(long, default_value_t = 10_000)]
        pairs: u64,
        #[arg(long, default_value = "bench/reports/diff.md")]
        report: PathBuf,
    },
    /// Forecast accuracy (rolling origin) vs statsforecast and Prophet, and
    /// the residual anomaly detector under NAB's scorer.
    Forecast {
        /// Directory of `timestamp,value` CSV files, searched recursively.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "bench/reports/forecast.md")]
        report: PathBuf,
        /// Test folds (one day each) per series.
        #[arg(long, default_value_t = 3)]
        folds: usize,
        /// Only series whose path contains this.
        #[arg(long)]
        only: Option<String>,
        /// Leave out statsforecast and Prophet (no venv).
        #[arg(long)]
        no_python: bool,
        /// A NAB checkout, to score the anomaly detector with NAB's scorer.
        #[arg(long)]
        nab_repo: Option<PathBuf>,
        /// Skip the NAB detector run.
        #[arg(long)]
        skip_nab: bool,
        /// Most LSTM epochs (early stopping usually ends sooner).
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Bin width in seconds for request-arrival traces.
        #[arg(long, default_value_t = 5)]
        arrival_bin: i64,
        /// statsforecast/Prophet models, comma-separated (default: all six).
        #[arg(long, value_delimiter = ',')]
        py_models: Vec<String>,
        /// Only stream the NAB files through the anomaly detector.
        #[arg(long)]
        nab_only: bool,
        /// Only time LSTM training and one 24-step forecast (plain serving
        /// path vs burn's forward on the same model).
        #[arg(long)]
        timing_only: bool,
        /// Seconds one statsforecast/Prophet fit may take; it is then
        /// stopped and recorded as timed out (0: no limit).
        #[arg(long, default_value_t = 600.0)]
        py_fit_timeout: f64,
        /// Read statsforecast/Prophet results from these baselines.py output
        /// files (comma-separated) instead of running it; where files give
        /// the same fit, a result beats an error and a later file wins.
        #[arg(long, value_delimiter = ',')]
        py_results: Vec<PathBuf>,
    },
    /// Forecasts across level shifts and saturation spliced into real series,
    /// and how often the regime guard fires on the unmodified ones.
    Regime {
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "bench/reports/regime.md")]
        report: PathBuf,
        /// Days of hourly origins checked for false shifts per series.
        #[arg(long, default_value_t = 7)]
        days: usize,
    },
    /// The failure probability on NAB's labelled series: lead times, false
    /// alarms per week at each threshold, and a reliability curve.
    Failure {
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        #[arg(long, default_value = "bench/reports/failure.md")]
        report: PathBuf,
        /// Seconds ahead: P(failure within this).
        #[arg(long, default_value_t = 1800)]
        horizon: i64,
    },
    /// The provisioner's policies replayed on real demand series: under-
    /// provisioned time, unmet demand, slack, actions per day and cost of
    /// reactive (HPA), seed, predictive, fixed-at-peak and an oracle.
    Provision {
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// More directories of `timestamp,value` CSV files (every file is a demand series).
        #[arg(long)]
        extra: Vec<PathBuf>,
        #[arg(long, default_value = "bench/reports/provision.md")]
        report: PathBuf,
        /// Capacity of one unit, in the series' unit (default: median / --units-at-median).
        #[arg(long)]
        unit: Option<f64>,
        #[arg(long, default_value_t = 10.0)]
        units_at_median: f64,
        /// Seconds from asking for capacity to its being ready.
        #[arg(long = "time-to-ready", default_value_t = 300.0)]
        time_to_ready_s: f64,
        /// The predictive policy's forecast quantile.
        #[arg(long, default_value_t = 0.9)]
        quantile: f64,
        /// Seconds per bin of an arrival trace.
        #[arg(long, default_value_t = 10)]
        arrival_bin: i64,
    },
    /// An unpredicted crash of the primary under constant load: shadow's
    /// kernel cutover vs keepalived (default and fastest advert_int).
    Failover {
        /// The test servers' binary.
        #[arg(long, default_value = "target/debug/http-peer")]
        peer: PathBuf,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "bench/reports/failover.md")]
        report: PathBuf,
    },
    /// The inline proxy against nginx `mirror` on the same upstreams, with a
    /// fast and a 50 ms shadow.
    InlineProxy {
        #[arg(long, default_value = "target/release/shadow-proxy")]
        agent: PathBuf,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "bench/reports/inline-proxy.md")]
        report: PathBuf,
    },
    /// Live overhead of shadow capture at 100 % vs none vs nginx `mirror`,
    /// and replay completeness.
    MirrorOverhead {
        #[arg(long, default_value = "target/release/shadow-proxy")]
        agent: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "bench/reports/mirror-overhead.md")]
        report: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::TelemetryOverhead {
            agent,
            seconds,
            rounds,
            report,
        } => overhead::run(&agent, seconds, rounds, &report),
        Command::Diff { pairs, report } => diff::run(pairs, &report),
        Command::Forecast {
            data,
            report,
            folds,
            only,
            no_python,
            nab_repo,
            skip_nab,
            epochs,
            arrival_bin,
            py_models,
            nab_only,
            timing_only,
            py_fit_timeout,
            py_results,
        } => forecast::run(&forecast::Args {
            data,
            report,
            folds,
            only,
            python: !no_python,
            nab_repo,
            epochs,
            arrival_bin,
            skip_nab,
            py_models,
            nab_only,
            timing_only,
            py_fit_timeout,
            py_results,
        }),
        Command::Regime { data, report, days } => regime::run(&data, &report, days),
        Command::Provision {
            data,
            extra,
            report,
            unit,
            units_at_median,
            time_to_ready_s,
            quantile,
            arrival_bin,
        } => provision::run(&provision::Args {
            data,
            extra,
            report,
            unit,
            units_at_median,
            time_to_ready_s,
            quantile,
            arrival_bin,
        }),
        Command::Failure {
            data,
            report,
            horizon,
        } => failure::run(&data, &report, horizon),
        Command::MirrorOverhead {
            agent,
            seconds,
            rounds,
            report,
        } => mirror::run(&agent, seconds, rounds, &report),
        Command::InlineProxy {
            agent,
            seconds,
            rounds,
            report,
        } => inline::run(&agent, seconds, rounds, &report),
        Command::Failover {
            peer,
            rate,
            rounds,
            report,
        } => failover::run(&peer, rate, rounds, &report),
    }
}
