//! Forecast serving: shadow-forecast's models kept up to date from a
//! [`Source`] of samples and served from memory, never waiting on a fit.
//! The agent's source is its in-memory history; the fleet's will be
//! Prometheus.
//!
//! Data enters from the source: each configured metric's samples are
//! averaged onto a coarser grid ([`resample`], default 60 s bins). Two
//! threads, both at lowered priority, work from there and never hold a lock
//! across a fit:
//!
//! - the refresher ([`service`], on a thread of [`threads`]) runs every step: it moves new samples onto
//!   the grid, scores each new bin against the interval forecast for it
//!   ([`watch`], residual anomaly detection), recomputes the forecast from
//!   the newest grid with the latest trained model and publishes it as an
//!   `Arc` swapped under a `RwLock`, so readers never wait;
//! - the trainer ([`trainer`]) retrains each metric every `every` (and as
//!   soon as enough history exists), with flagged anomalies weighted out,
//!   saves the model under `dir/<metric>/` and swaps it in.
//!
//! Data leaves through [`answer`] (what the API serves), [`Service`]'s
//! published forecasts (the agent exports them to Prometheus) and the files
//! in `dir`, which a restarted service loads ([`store`]).

pub mod answer;
pub mod resample;
pub mod service;
pub mod store;
pub mod threads;
pub mod trainer;
pub mod watch;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Duration};

use crate::{ForecasterConfig, anomaly::DetectorConfig};

pub use crate::Candidate;
pub use service::Service;
pub use threads::Source;

/// Forecast by default: host CPU, memory, network and disk throughput, and
/// the kernel-derived request rates (block I/O and new TCP connections).
pub const DEFAULT_METRICS: [&str; 8] = [
    "host.cpu_utilisation",
    "host.memory_utilisation",
    "host.net_rx_bytes_per_second",
    "host.net_tx_bytes_per_second",
    "host.disk_read_bytes_per_second",
    "host.disk_write_bytes_per_second",
    "block.iops",
    "tcp.connections_per_second",
];

/// Label sets are per metric, so the list is bounded.
pub const MAX_METRICS: usize = 16;
/// Grid points kept per metric at most (two weeks at 60 s).
const MAX_GRID_POINTS: usize = 20_160;

/// The forecasting service's settings, validated.
#[derive(Debug, Clone)]
pub struct ForecastSettings {
    /// Models and grid history live in `dir/<metric>/`.
    pub dir: PathBuf,
    pub metrics: Vec<String>,
    /// Time between retrainings of a metric.
    pub every: Duration,
    /// Grid step in whole seconds.
    pub step: i64,
    /// Steps forecast.
    pub horizon: usize,
    pub candidates: Vec<Candidate>,
    pub folds: usize,
    /// Grid points kept per metric.
    pub grid_points: usize,
    /// The longest run of empty bins interpolated (and weighted out of
    /// training); a longer gap restarts the grid.
    pub max_gap: usize,
    pub detector: DetectorConfig,
    /// Bins judged against one forecast before it is replaced by the
    /// newest (leads 1..=N, as the NAB benchmark re-forecasts).
    pub judge_every: usize,
    /// Anomaly events kept (newest).
    pub events: usize,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/shadow/forecast"),
            metrics: DEFAULT_METRICS.map(str::to_owned).to_vec(),
            every: Duration::from_secs(3600),
            step: 60,
            horizon: 60,
            candidates: Candidate::ALL.to_vec(),
            folds: 2,
            grid_points: grid_points_for(60),
            max_gap: 12,
            detector: DetectorConfig::default(),
            judge_every: 12,
            events: 256,
        }
    }
}

/// A week of points at `step`, at most [`MAX_GRID_POINTS`].
pub fn grid_points_for(step: i64) -> usize {
    ((7 * 86_400 / step.max(1)) as usize).clamp(64, MAX_GRID_POINTS)
}

impl ForecastSettings {
    /// What the trainer hands shadow-forecast: the season is a day at the
    /// step (shadow-forecast falls back while the history is shorter).
    pub fn forecaster_config(&self) -> ForecasterConfig {
        ForecasterConfig {
            horizon: self.horizon,
            season: None,
            candidates: self.candidates.clone(),
            folds: self.folds,
            ..ForecasterConfig::default()
        }
    }

    /// Cross-field checks against the poll interval and the history span
    /// (history length x interval); each error names its key, which the
    /// caller turns into a flag or a file key, whichever set it.
    pub fn validate(
        &self,
        poll_interval: Duration,
        history: Duration,
    ) -> Result<(), SettingsError> {
        let err = |key, reason| Err(SettingsError { key, reason });
        if (self.step as f64) < poll_interval.as_secs_f64() {
            return err(
                "step",
                format!(
                    "{}s is shorter than the poll interval ({poll_interval:?}): bins would be empty",
                    self.step
                ),
            );
        }
        // The refresher reads the history once a step; a bin must still be
        // in the ring then.
        if self.step as f64 > history.as_secs_f64() / 2.0 {
            return err(
                "step",
                format!(
                    "{}s is more than half the history kept ({history:?}; raise the history length)",
                    self.step
                ),
            );
        }
        if self.every.as_secs_f64() < self.step as f64 {
            return err(
                "every",
                format!("{:?} is shorter than one step ({}s)", self.every, self.step),
            );
        }
        if !(1..=10_080).contains(&self.horizon) {
            return err("horizon", format!("{} steps; use 1 to 10080", self.horizon));
        }
        if self.grid_points < (self.folds + 1) * self.horizon {
            return err(
                "horizon",
                format!(
                    "{} steps x {} folds do not fit the {} grid points kept",
                    self.horizon, self.folds, self.grid_points
                ),
            );
        }
        Ok(())
    }
}

/// `a,b,c` -> metric names: 1 to [`MAX_METRICS`], no duplicates, and only
/// characters that are safe as a directory name and a label value.
pub fn parse_metrics(s: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let ok = m.len() <= 128
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]:".contains(c))
            && !m.starts_with('.');
        if !ok {
            return Err(format!(
                "{m:?} is not a metric name (letters, digits and ._-[]: only)"
            ));
        }
        if out.iter().any(|o| o == m) {
            return Err(format!("{m:?} is listed twice"));
        }
        out.push(m.to_owned());
    }
    if out.is_empty() || out.len() > MAX_METRICS {
        return Err(format!(
            "list 1 to {MAX_METRICS} metrics, got {}",
            out.len()
        ));
    }
    Ok(out)
}

/// `seasonal_naive,ets,mstl,lstm` -> candidates.
pub fn parse_models(s: &str) -> Result<Vec<Candidate>, String> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let c = Candidate::parse(name).ok_or_else(|| {
            let all: Vec<&str> = Candidate::ALL.iter().map(|c| c.name()).collect();
            format!("unknown model {name:?} (choose from {})", all.join(", "))
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err("list at least one model".into());
    }
    Ok(out)
}

/// A duration as a whole number of seconds (the grid is in seconds).
/// A forecasting setting that does not hold: its key (`step`, `every`,
/// `horizon`) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SettingsError {
    pub key: &'static str,
    pub reason: String,
}

pub fn whole_seconds(d: Duration) -> Result<i64, String> {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!("{d:?} must be a whole number of seconds"));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("{d:?} is too long"))
}

pub use shadow_api::time::format_ahead;

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn metric_lists_are_checked() {
        assert_eq!(
            parse_metrics("host.cpu_utilisation, block.iops").unwrap(),
            ["host.cpu_utilisation", "block.iops"]
        );
        assert!(parse_metrics("a,a").unwrap_err().contains("twice"));
        assert!(
            parse_metrics("../etc")
                .unwrap_err()
                .contains("not a metric")
        );
        assert!(parse_metrics(" , ").unwrap_err().contains("1 to 16"));
        assert!(parse_models("ets,tbats").unwrap_err().contains("tbats"));
        assert_eq!(
            parse_models("ets,seasonal_naive,ets").unwrap(),
            [Candidate::Ets, Candidate::SeasonalNaive]
        );
    }

    #[test]
    fn settings_refuse_what_cannot_work() {
        let s = ForecastSettings::default();
        let hour = Duration::from_secs(3600);
        assert!(s.validate(Duration::from_secs(1), hour).is_ok());
        let short = ForecastSettings {
            step: 1,
            ..s.clone()
        };
        assert!(short.validate(Duration::from_secs(2), hour).is_err());
        let wide = ForecastSettings {
            step: 1800,
            every: hour,
            ..s.clone()
        };
        assert!(wide.validate(Duration::from_secs(1), hour).is_ok());
        let e = wide.validate(Duration::from_secs(1), hour / 2).unwrap_err();
        assert_eq!(e.key, "step");
        assert!(e.reason.contains("history length"), "{e}");
        let long = ForecastSettings {
            horizon: 10_000,
            ..s
        };
        let e = long.validate(Duration::from_secs(1), hour).unwrap_err();
        assert_eq!(e.key, "horizon");
        assert!(e.reason.contains("grid"), "{e}");
        assert_eq!(
            whole_seconds(Duration::from_millis(1500)).map_err(|_| ()),
            Err(())
        );
        assert_eq!(format_ahead(300), "5m");
        assert_eq!(format_ahead(3600), "1h");
        assert_eq!(format_ahead(45), "45s");
    }
}
