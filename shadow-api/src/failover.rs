//! `GET /v1/failover` and `/v1/failover/events`, `POST
//! /v1/failover/{cutover,rollback,promote}`: where each service's traffic
//! is served from, why, and every transition with its reason.

use serde::{Deserialize, Serialize};

use crate::predict::Level;

/// Where new connections for a service go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// On the primary; nothing prepared.
    #[default]
    Primary,
    /// On the primary; the shadow is synced and warm (staging ran).
    Staged,
    /// On the shadow, under analysis: a rollback may follow.
    OnShadow,
    /// On the shadow for good: the analysis passed and it was promoted.
    Promoted,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Staged => "staged",
            Self::OnShadow => "on_shadow",
            Self::Promoted => "promoted",
        }
    }
}

/// Why traffic moved to the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The failure probability reached `cutover` (or `stage`, for staging).
    Predicted,
    /// The primary failed its health checks.
    PrimaryFailed,
    /// `shadowctl failover cutover`.
    Manual,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Self::Predicted => "predicted",
            Self::PrimaryFailed => "primary_failed",
            Self::Manual => "manual",
        }
    }
}

/// One transition, or an action that was refused or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverEvent {
    /// Unix milliseconds.
    pub at_ms: u64,
    pub service: String,
    pub from: Phase,
    pub to: Phase,
    /// `stage`, `cutover`, `rollback`, `promote`, `unstage`, `refused`,
    /// `failed`, `resume`.
    pub action: String,
    pub reason: String,
    /// The failure probability when it was decided, if one was known.
    pub probability: Option<f64>,
    /// How long the kernel took to change where new connections go.
    pub took_us: Option<u64>,
    /// Kept as it was: the action did not happen.
    pub refused: bool,
}

/// One service, as `shadowctl failover status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub service: String,
    pub port: u16,
    pub phase: Phase,
    pub cause: Option<Cause>,
    /// Unix milliseconds the phase began.
    pub since_ms: u64,
    /// New connections given to the shadow, in hundredths of a percent.
    pub share: u32,
    pub primary_healthy: bool,
    pub shadow_healthy: bool,
    /// Consecutive failed checks of the primary and of the shadow.
    pub primary_failures: u32,
    pub shadow_failures: u32,
    pub level: Level,
    pub probability: Option<f64>,
    /// The last event's reason.
    pub reason: String,
    /// Failed requests during transitions, counted by the agent (resets
    /// from the service's ports; kernel-switched services only).
    #[serde(default)]
    pub failed_requests: u64,
    /// What the machine does next, and on what (`dry run: ` first when
    /// the agent's mode only reports).
    #[serde(default)]
    pub next: String,
}

/// `POST /v1/failover/{cutover,rollback,promote}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    pub service: String,
    /// Compute and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Cut over to a shadow that fails its gate (logged loudly).
    #[serde(default)]
    pub force: bool,
}
