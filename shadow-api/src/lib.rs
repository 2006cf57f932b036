//! shadow's wire crate: every type the agent's APIs answer and its clients
//! read, and the route paths, in one serde-only place. The agent
//! (`shadow-proxy`) serialises these; `shadowctl` and the tests
//! deserialise them, without linking the agent, aya or burn.
//!
//! | module | what |
//! |---|---|
//! | [`routes`] | every path of the admin port and the control socket |
//! | [`kernel`] | `GET /api/v1/snapshot`: the kernel snapshot and host sample |
//! | [`history`] | `GET /api/v1/history`: `PerformanceData` |
//! | [`forecast`] | `GET /v1/forecast...`: status, `PredictionData`, anomaly events |
//! | [`predict`] | `GET /v1/predict`: failure probabilities, levels, contributing signals |
//! | [`provision`] | `GET /v1/provision/...`, `/v1/whatif`: plans, decisions, the pool, what-if |
//! | [`duration`] | `500ms`, `30s`, `5m`, `1h` as the flags and queries take them |
//!
//! | [`mirror`] | `GET /v1/mirror`, `GET /v1/diff`: shadowing status and verdicts |
//! | [`time`] | UTC timestamps and forecast leads as shown |
//! | `recording` (feature `recording`) | recording files of sampled exchanges |
//! | `client` (feature `client`) | a typed client for both servers |

#[cfg(feature = "client")]
pub mod client;
pub mod duration;
pub mod failover;
pub mod forecast;
pub mod history;
pub mod kernel;
pub mod mirror;
pub mod predict;
pub mod provision;
#[cfg(feature = "recording")]
pub mod recording;
pub mod routes;
pub mod time;
