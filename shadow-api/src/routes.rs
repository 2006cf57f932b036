//! Every route of the agent's two servers. The admin port (TCP, read-only)
//! serves [`METRICS`], [`SNAPSHOT`], [`HISTORY`], [`HEALTHZ`] and the
//! forecast routes under [`ADMIN_PREFIX`]; the control socket (unix, 0600)
//! serves the rest.

/// Prometheus text.
pub const METRICS: &str = "/metrics";
/// [`crate::kernel::View`].
pub const SNAPSHOT: &str = "/api/v1/snapshot";
/// Metric names; `?metric=NAME` for its [`crate::history::PerformanceData`].
pub const HISTORY: &str = "/api/v1/history";
pub const HEALTHZ: &str = "/healthz";
/// The admin port serves the control socket's forecast routes under this.
pub const ADMIN_PREFIX: &str = "/api";

/// Every service's mirror status; `PUT {MIRROR}/{service}` sets the
/// percentage, `PUT {MIRROR}/{service}/rules` replaces the rules.
pub const MIRROR: &str = "/v1/mirror";
/// Diff summaries; `{DIFF}/{id}` is one exchange.
pub const DIFF: &str = "/v1/diff";
/// `PUT`: mark or unmark a field as noise.
pub const DIFF_NOISE: &str = "/v1/diff/noise";
/// Capture counters.
pub const CAPTURE: &str = "/v1/capture";
/// The latest replayed exchanges (`?limit=N`).
pub const EXCHANGES: &str = "/v1/exchanges";
/// `POST` starts a recording, `DELETE` stops it.
pub const RECORD: &str = "/v1/record";
/// Every metric's forecast status; `{FORECAST}/{metric}?horizon=` one forecast.
pub const FORECAST: &str = "/v1/forecast";
pub const FORECAST_EVENTS: &str = "/v1/forecast/events";
/// `?y=METRIC&on=METRIC[&at=X,Y]`: a resource-per-load regression on the
/// history (both servers; the admin port under [`ADMIN_PREFIX`]).
pub const REGRESS: &str = "/v1/regress";
/// Failure probabilities per host and service ([`crate::predict::PredictAnswer`]).
pub const PREDICT: &str = "/v1/predict";
/// Their level changes, oldest first.
pub const PREDICT_EVENTS: &str = "/v1/predict/events";
/// Current vs desired capacity per control loop ([`crate::provision::Plan`]).
pub const PROVISION_PLAN: &str = "/v1/provision/plan";
/// Every decision, oldest first ([`crate::provision::Events`]).
pub const PROVISION_EVENTS: &str = "/v1/provision/events";
/// The capacity pool ([`crate::provision::Pool`]).
pub const PROVISION_POOL: &str = "/v1/provision/pool";
/// `POST` on the control socket: one decision round now, applied
/// (`?dry_run=1`: computed and shown only, whatever the mode).
pub const PROVISION_APPLY: &str = "/v1/provision/apply";
/// `?traffic=2&scale=1.5[&service=web]` ([`crate::provision::WhatIf`]).
pub const WHATIF: &str = "/v1/whatif";
/// Failover state per service ([`crate::failover::FailoverStatus`]).
pub const FAILOVER: &str = "/v1/failover";
/// Every transition, oldest first ([`crate::failover::FailoverEvent`]).
pub const FAILOVER_EVENTS: &str = "/v1/failover/events";
/// `POST` on the control socket, `?service=web[&dry_run=1][&force=1]`.
pub const FAILOVER_CUTOVER: &str = "/v1/failover/cutover";
pub const FAILOVER_ROLLBACK: &str = "/v1/failover/rollback";
pub const FAILOVER_PROMOTE: &str = "/v1/failover/promote";

/// The control socket's shadowing routes (answered 409 when nothing is shadowed).
pub const SHADOW_ROUTES: [&str; 5] = [MIRROR, DIFF, CAPTURE, EXCHANGES, RECORD];

/// `{MIRROR}/{service}`.
pub fn mirror(service: &str) -> String {
    format!("{MIRROR}/{service}")
}

/// `{MIRROR}/{service}/rules`.
pub fn mirror_rules(service: &str) -> String {
    format!("{MIRROR}/{service}/rules")
}

/// `{DIFF}/{id}`.
pub fn diff(id: u64) -> String {
    format!("{DIFF}/{id}")
}
