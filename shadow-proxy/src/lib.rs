//! shadow's agent: kernel telemetry today; traffic shadowing, diffing and
//! forecasting build on it. See ARCHITECTURE.md for the data flow.

pub mod admin;
pub mod agent;
pub mod capture;
pub mod client;
pub mod config;
pub mod control;
pub mod diff;
pub mod duration;
pub mod forecast;
pub mod hist;
pub mod history;
pub mod host;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod replay;
pub mod stats;
pub mod telemetry;
pub mod top;
