//! shadow's agent, one module per box of ARCHITECTURE.md. Dependencies
//! point one way (`cargo xtask test` checks it):
//!
//! util, metrics -> kernel, host, http -> capture -> diff -> replay ->
//! forecast -> provision -> failover -> api -> config -> agent
//!
//! The inline proxy is part of replay (`replay::inline`); the dashboard's
//! routes will be in api.

pub mod agent;
pub mod api;
pub mod capture;
pub mod config;
pub mod diff;
pub mod failover;
pub mod forecast;
pub mod host;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod provision;
pub mod replay;
pub mod util;
