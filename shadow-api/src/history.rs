//! `GET /api/v1/history?metric=NAME`: the samples the forecaster learns
//! from.

use serde::{Deserialize, Serialize};

/// One observation of one metric on one server (the seed's data structure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceData {
    /// Unix time in milliseconds.
    pub timestamp: u64,
    pub server_id: String,
    pub metric: String,
    pub value: f64,
}
