//! shadow's agent: kernel telemetry today; traffic shadowing, diffing and
//! forecasting build on it. See ARCHITECTURE.md for the data flow.

pub mod admin;
pub mod agent;
pub mod client;
pub mod duration;
pub mod hist;
pub mod history;
pub mod host;
pub mod lifecycle;
pub mod metrics;
pub mod telemetry;
pub mod top;
