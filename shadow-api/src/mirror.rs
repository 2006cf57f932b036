//! The shadowing routes of the control socket: `GET /v1/mirror` (one
//! [`MirrorStatus`] per service), `GET /v1/diff` (a [`DiffSummary`] per
//! service, a [`Verdict`] per shadow target) and `PUT /v1/diff/noise`
//! ([`MarkNoise`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A serialisable copy of a service's statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsView {
    pub flows_reassembled: u64,
    pub flow_drops: BTreeMap<String, u64>,
    pub requests_parsed: u64,
    /// Requests parsed on a captured connection that request-level
    /// sampling left out (`sample = "request"`): not asked for, not lost.
    #[serde(default)]
    pub sampled_out: u64,
    pub replayed: u64,
    pub not_replayed: BTreeMap<String, u64>,
    pub shadow_status: BTreeMap<u16, u64>,
    /// Shadow minus live latency: sum and count, milliseconds.
    pub latency_delta_ms_sum: f64,
    pub latency_delta_count: u64,
}

impl StatsView {
    /// Replayed share of the requests parsed from sampled connections.
    pub fn coverage(&self) -> Option<f64> {
        let asked = self.requests_parsed.saturating_sub(self.sampled_out);
        (asked > 0).then(|| self.replayed as f64 / asked as f64)
    }
}

/// One service as `GET /v1/mirror` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorStatus {
    pub service: String,
    pub port: u16,
    pub percent: f64,
    /// `connection` (the kernel samples connections at `percent`) or
    /// `request` (it captures more, and requests are kept at `percent`).
    #[serde(default)]
    pub sample: String,
    /// Connections the kernel captures, in percent.
    #[serde(default)]
    pub capture_percent: f64,
    pub targets: Vec<String>,
    pub packets_seen: u64,
    pub packets_sampled: u64,
    pub truncated: u64,
    pub stats: StatsView,
    pub coverage: Option<f64>,
    /// The inline proxy in front of the service (`[service.inline]`).
    #[serde(default)]
    pub inline: Option<InlineStatus>,
    /// The agent's CPU budget, when one is set.
    #[serde(default)]
    pub budget: Option<BudgetStatus>,
}

/// The agent's CPU budget: `capture_percent` is what was asked times
/// `scale`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct BudgetStatus {
    /// Cores the agent may use.
    pub cores: f64,
    /// Cores it used in the last interval.
    pub used: f64,
    /// The share of the asked capture rate in force, in (0, 1].
    pub scale: f64,
    /// Whether forecast training is held to keep within the budget.
    #[serde(default)]
    pub training_held: bool,
}

/// A service the inline proxy fronts: where it listens, where live goes,
/// and what it has seen.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InlineStatus {
    pub listen: String,
    pub upstream: String,
    /// Where the cutover switch sends a share of new requests, and that
    /// share in percent (0 unless a failover moved the service).
    pub alternate: Option<String>,
    pub alternate_percent: f64,
    /// Live requests proxied, and those of them teed to the shadow.
    pub requests: u64,
    pub teed: u64,
    /// Live requests the upstream did not answer (a 502 was sent).
    pub upstream_errors: u64,
    /// Requests in flight to the upstream and to the alternate.
    pub in_flight: u64,
    pub in_flight_alternate: u64,
}

/// One shadow target's diff state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetDiff {
    pub verdict: Verdict,
    pub routes: BTreeMap<String, RouteStats>,
}

/// One service's diff summary: a verdict per shadow target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffSummary {
    pub service: String,
    pub targets: BTreeMap<String, TargetDiff>,
    pub marked_noise: Vec<(String, String)>,
}

/// `PUT /v1/diff/noise`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkNoise {
    pub service: String,
    pub route: String,
    pub path: String,
    pub noise: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    /// Live-vs-shadow comparisons in which this field differed.
    pub diffs: u64,
    /// Noise-only comparisons in which it differed.
    pub noise_diffs: u64,
    /// Live-vs-shadow comparisons where both values had the same volatile shape.
    pub shape_noise: u64,
    /// Up to three exchange ids that showed the difference.
    pub examples: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    pub compared: u64,
    pub noise_compared: u64,
    pub fields: BTreeMap<String, FieldStats>,
}

/// A reported field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub route: String,
    pub path: String,
    pub diff_rate: f64,
    pub noise_rate: f64,
    pub examples: Vec<u64>,
}

/// What other modules act on (promotion, rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    Healthy { compared: u64 },
    Regressed { regressions: Vec<Regression> },
    Inconclusive { reason: String },
}
