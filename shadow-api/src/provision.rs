//! `GET /v1/provision/{plan,events,pool}` and `/v1/whatif`: what the
//! provisioner wants per resource and why, every decision it took, the
//! capacity pool, and what a change of traffic would do.

use serde::{Deserialize, Serialize};

/// A resource one control loop sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU, in cores (cgroup `cpu.max` / `cpu.cfs_quota_us`).
    Cpu,
    /// Memory, in bytes (cgroup `memory.max` / `memory.limit_in_bytes`).
    Memory,
    /// Copies of a service, each one capacity unit.
    Replicas,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Replicas => "replicas",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Cpu, Self::Memory, Self::Replicas]
            .into_iter()
            .find(|r| r.name() == s)
    }

    /// The unit capacities of this resource are given in.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "cores",
            Self::Memory => "bytes",
            Self::Replicas => "replicas",
        }
    }
}

/// Whether decisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Plans are computed, shown and exported; nothing is changed (the default).
    #[default]
    ForecastOnly,
    /// Decisions are applied through the backend.
    Apply,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::ForecastOnly => "forecast_only",
            Self::Apply => "apply",
        }
    }
}

/// What a decision was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The forecast asked for more than the actuals did.
    Forecast,
    /// The actuals (the reactive floor, or a reactive policy).
    Actual,
    /// A fixed allocation.
    Fixed,
}

/// What happened to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum Outcome {
    /// Desired equals current: nothing to do.
    Unchanged,
    /// Forecast-only mode: what would have been applied.
    Planned,
    /// Applied by the backend; the capacity was ready after `ready_s`.
    Applied { ready_s: f64 },
    /// Not applied for a safety reason (cooldown, grace, backoff, no
    /// scale-in on the forecast alone, bounds): the reason.
    Held(String),
    /// The backend failed; the previous allocation stays. The error.
    Failed(String),
}

impl Outcome {
    /// The label of `shadow_provision_actions_total{result}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Planned => "planned",
            Self::Applied { .. } => "applied",
            Self::Held(_) => "held",
            Self::Failed(_) => "failed",
        }
    }
}

/// One decision of one control loop: its inputs, the forecast it used and
/// what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Unix seconds.
    pub time: i64,
    /// `host`, or a service name.
    pub target: String,
    pub resource: Resource,
    pub policy: String,
    /// Capacity in effect when deciding, in the resource's unit.
    pub current: f64,
    /// What the policy asked for after the bounds, step and safety rules.
    pub desired: f64,
    /// What the policy asked for before them.
    pub proposed: f64,
    /// The latest demand measured.
    pub demand: f64,
    /// The forecast value used, if any, and its quantile (0.9 = P90).
    pub forecast: Option<f64>,
    pub quantile: Option<f64>,
    /// How far ahead the controller looked, seconds.
    pub lead_s: f64,
    pub basis: Basis,
    pub outcome: Outcome,
    /// In words: why this capacity.
    pub reason: String,
}

/// A forecast that crosses an alert threshold within the lead time: the
/// capacity queued ahead of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreProvision {
    pub target: String,
    pub resource: Resource,
    /// Predicted utilisation threshold crossed (0.9 = 90 % of capacity).
    pub threshold: f64,
    /// Unix seconds when the forecast crosses it.
    pub crossing_at: i64,
    /// Capacity queued so that utilisation stays under the threshold.
    pub capacity: f64,
    /// `queued`, `in_progress` or `done`.
    pub state: String,
}

/// `GET /v1/provision/plan`: one row per control loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub target: String,
    pub resource: Resource,
    pub backend: String,
    pub policy: String,
    pub current: f64,
    pub desired: f64,
    pub min: f64,
    pub max: f64,
    /// Lead time: the backend's measured time-to-ready, median and P90
    /// (the configured default until one is measured), and how many
    /// actions it was measured on.
    pub lead_median_s: f64,
    pub lead_p90_s: f64,
    pub lead_samples: usize,
    /// Backend failures in a row, and when it is tried again.
    pub failures: u32,
    pub retry_at: Option<i64>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    pub rows: Vec<PlanRow>,
    pub queued: Vec<PreProvision>,
    /// Cost per hour of what the pool has placed (0 without a pool).
    pub cost_per_hour: f64,
}

/// `GET /v1/provision/events`: the newest decisions, oldest first, from a
/// bounded ring; `dropped` counts those the ring no longer holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<Decision>,
    pub dropped: u64,
}

/// Whether a pool unit serves live or the shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Shadow,
}

/// Units of one class in one zone, and how many of them each role holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRow {
    pub zone: String,
    pub healthy: bool,
    pub class: String,
    pub cost_per_unit_hour: f64,
    pub total: u32,
    pub primary: u32,
    pub shadow: u32,
}

/// `GET /v1/provision/pool`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    pub rows: Vec<PoolRow>,
    pub cost_per_hour: f64,
    /// Live units wanted, and the shadow's share of them.
    pub primary_wanted: u32,
    pub shadow_fraction: f64,
    /// Why the placement is short, if it is.
    pub shortfall: Option<String>,
}

/// `GET /v1/whatif?traffic=2&scale=1.5[&service=web]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    pub traffic: f64,
    pub scale: f64,
    pub service: Option<String>,
    pub resources: Vec<WhatIfResource>,
    /// The controller's plan under that traffic.
    pub plan: Vec<PlanRow>,
    /// Cost per hour of that plan (from the pool's cheapest feasible class),
    /// and of today's.
    pub cost_per_hour: f64,
    pub cost_per_hour_now: f64,
}

/// One resource under the what-if traffic: predicted utilisation of the
/// current capacity (scaled by `scale`) over the horizon, and when each
/// alert threshold would be crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIfResource {
    pub target: String,
    pub resource: Resource,
    /// Unix seconds of the first point, and the step.
    pub start: i64,
    pub step: i64,
    pub utilisation_p50: Vec<f64>,
    pub utilisation_p90: Vec<f64>,
    /// How demand was scaled: `regression` (fitted against the request
    /// rate) or `proportional` (no fit: demand scales with traffic).
    pub method: String,
    pub crossings: Vec<Crossing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    pub threshold: f64,
    /// Unix seconds; `None`: not within the horizon.
    pub at: Option<i64>,
}
