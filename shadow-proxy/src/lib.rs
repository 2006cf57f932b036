//! shadow's agent, one module per box of ARCHITECTURE.md. Dependencies
//! point one way (`cargo xtask test` checks it):
//!
//! util, metrics -> kernel, host, http -> capture -> diff -> replay ->
//! forecast -> provision -> api -> config -> agent
//!
//! Failover and the inline proxy will sit between provision and api; the
//! dashboard's routes in api.

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
