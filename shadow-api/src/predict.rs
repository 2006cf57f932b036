//! `GET /v1/predict`: the failure probability of the host and of each
//! service within the horizon, its level against the thresholds, and the
//! signals that contribute most.

use serde::{Deserialize, Serialize};

/// Where a probability stands against the configured thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    /// At or above `warn`: tell a person.
    Warn,
    /// At or above `stage`: prepare a migration (pre-stage capacity).
    Stage,
    /// At or above `cutover`: fail over.
    Cutover,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Stage => "stage",
            Self::Cutover => "cutover",
        }
    }
}

/// One signal's part in a probability: its value as measured, and what it
/// adds to the log-odds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub signal: String,
    /// The signal as measured (its unit is in [`Contribution::detail`]).
    pub value: f64,
    /// Added to the log-odds of failure (0: no part in it).
    pub log_odds: f64,
    /// Where it comes from, e.g. `host.cpu_utilisation P90 reaches 100 in 12m`.
    pub detail: String,
}

/// The probability for one host or service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureAnswer {
    /// `host` or `service`.
    pub scope: String,
    pub name: String,
    /// P(failure within `horizon_s`).
    pub probability: f64,
    pub level: Level,
    pub horizon_s: i64,
    /// The largest contributions first.
    pub signals: Vec<Contribution>,
}

/// `GET /v1/predict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictAnswer {
    pub server_id: String,
    /// Unix seconds the signals were read at.
    pub at: i64,
    pub thresholds: Thresholds,
    /// Failure events the model has learnt from (imported and its own).
    pub learnt_from: usize,
    pub scopes: Vec<FailureAnswer>,
}

/// The probabilities at which the next steps start; `warn <= stage <= cutover`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub warn: f64,
    pub stage: f64,
    pub cutover: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warn: 0.3,
            stage: 0.6,
            cutover: 0.85,
        }
    }
}

impl Thresholds {
    pub fn level(&self, p: f64) -> Level {
        if p >= self.cutover {
            Level::Cutover
        } else if p >= self.stage {
            Level::Stage
        } else if p >= self.warn {
            Level::Warn
        } else {
            Level::Ok
        }
    }

    /// Checks the order and range, naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("warn", self.warn),
            ("stage", self.stage),
            ("cutover", self.cutover),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("{k} = {v} is not a probability in (0, 1]"));
            }
        }
        if !(self.warn <= self.stage && self.stage <= self.cutover) {
            return Err(format!(
                "thresholds must rise: warn {} <= stage {} <= cutover {}",
                self.warn, self.stage, self.cutover
            ));
        }
        Ok(())
    }
}

/// A level change of one scope (`GET /v1/predict/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelEvent {
    /// Unix seconds.
    pub at: i64,
    pub scope: String,
    pub name: String,
    pub from: Level,
    pub to: Level,
    pub probability: f64,
    /// The top contributing signals, as `signal +log-odds, ...`.
    pub reason: String,
}
