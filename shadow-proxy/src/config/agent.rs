//! The agent-wide tables of the configuration file: `[agent]`,
//! `[telemetry]` and `[forecast]`. Each key is the long flag of the same
//! name without the prefix (`[agent] interval` is `--interval`,
//! `[forecast] horizon` is `--forecast-horizon`); a flag given on the
//! command line overrides its key. Values are checked here, so an error
//! names the file and the key.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::ConfigError;
use crate::{forecast, util::duration};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    admin: Option<String>,
    interval: Option<String>,
    pid_file: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    control_socket: Option<PathBuf>,
    server_id: Option<String>,
    history_len: Option<usize>,
    history_max_metrics: Option<usize>,
    history_stale: Option<String>,
    cpu_budget: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    kernel: Option<bool>,
    tcp_bytes: Option<bool>,
    max_endpoint_series: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForecast {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    metrics: Option<Vec<String>>,
    every: Option<String>,
    step: Option<String>,
    horizon: Option<usize>,
    models: Option<Vec<String>>,
}

/// `[agent]`: what the file sets (unset keys are `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFile {
    pub admin: Option<SocketAddr>,
    pub interval: Option<Duration>,
    pub pid_file: Option<PathBuf>,
    pub ready_file: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    pub server_id: Option<String>,
    pub history_len: Option<usize>,
    pub history_max_metrics: Option<usize>,
    pub history_stale: Option<Duration>,
    /// Cores the agent may use (0: no budget).
    pub cpu_budget: Option<f64>,
}

/// `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryFile {
    /// `false` is `--no-kernel`.
    pub kernel: Option<bool>,
    pub tcp_bytes: Option<bool>,
    pub max_endpoint_series: Option<usize>,
}

/// `[forecast]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForecastFile {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub metrics: Option<Vec<String>>,
    pub every: Option<Duration>,
    pub step: Option<Duration>,
    pub horizon: Option<usize>,
    pub models: Option<Vec<forecast::Candidate>>,
}

type Invalid<'a> = &'a dyn Fn(&str, String) -> ConfigError;

fn dur(v: Option<String>, key: &str, invalid: Invalid) -> Result<Option<Duration>, ConfigError> {
    v.map(|s| duration::parse(&s).map_err(|e| invalid(key, e)))
        .transpose()
}

fn positive(v: Option<usize>, key: &str, invalid: Invalid) -> Result<Option<usize>, ConfigError> {
    match v {
        Some(0) => Err(invalid(key, "must be at least 1".into())),
        v => Ok(v),
    }
}

pub(super) fn agent(raw: RawAgent, invalid: Invalid) -> Result<AgentFile, ConfigError> {
    let admin = raw
        .admin
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| invalid("agent.admin", format!("{a:?} is not ip:port ({e})")))
        })
        .transpose()?;
    Ok(AgentFile {
        admin,
        interval: dur(raw.interval, "agent.interval", invalid)?,
        pid_file: raw.pid_file,
        ready_file: raw.ready_file,
        control_socket: raw.control_socket,
        server_id: raw.server_id,
        history_len: positive(raw.history_len, "agent.history_len", invalid)?,
        history_max_metrics: positive(
            raw.history_max_metrics,
            "agent.history_max_metrics",
            invalid,
        )?,
        history_stale: dur(raw.history_stale, "agent.history_stale", invalid)?,
        cpu_budget: match raw.cpu_budget {
            Some(c) if !c.is_finite() || c < 0.0 => {
                return Err(invalid(
                    "agent.cpu_budget",
                    format!("{c} must be a number of cores, at least 0 (0: no budget)"),
                ));
            }
            c => c,
        },
    })
}

pub(super) fn telemetry(raw: RawTelemetry, invalid: Invalid) -> Result<TelemetryFile, ConfigError> {
    Ok(TelemetryFile {
        kernel: raw.kernel,
        tcp_bytes: raw.tcp_bytes,
        max_endpoint_series: positive(
            raw.max_endpoint_series,
            "telemetry.max_endpoint_series",
            invalid,
        )?,
    })
}

pub(super) fn forecast(raw: RawForecast, invalid: Invalid) -> Result<ForecastFile, ConfigError> {
    let metrics = raw
        .metrics
        .map(|m| forecast::parse_metrics(&m.join(",")).map_err(|e| invalid("forecast.metrics", e)))
        .transpose()?;
    let models = raw
        .models
        .map(|m| forecast::parse_models(&m.join(",")).map_err(|e| invalid("forecast.models", e)))
        .transpose()?;
    Ok(ForecastFile {
        enabled: raw.enabled,
        dir: raw.dir,
        metrics,
        every: dur(raw.every, "forecast.every", invalid)?,
        step: dur(raw.step, "forecast.step", invalid)?,
        horizon: positive(raw.horizon, "forecast.horizon", invalid)?,
        models,
    })
}
