//! Prometheus exposition.
//!
//! Two sources, one page: the kernel's histograms and per-endpoint counters
//! are rendered straight from the latest [`KernelSnapshot`] (`crate::kernel::prometheus`), so
//! their buckets are exactly the kernel's log2 buckets with exact sums; the
//! agent's own counters and gauges (drops, host utilisation) go through the
//! `metrics` crate and its Prometheus recorder. Every name is in [`names`].
//!
//! [`KernelSnapshot`]: crate::kernel::KernelSnapshot

pub mod names;
pub mod reason;
pub mod service;

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Installs the global `metrics` recorder. Gauges not updated for
/// `idle` (processes that exited, cgroups removed) are dropped from the page.
pub fn install_recorder(idle: Duration) -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(idle))
        .install_recorder()
}
