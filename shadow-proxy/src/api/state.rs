//! State the poller publishes and the admin server reads.

use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    forecast,
    host::history::History,
    kernel::view::{View, Views},
};

/// What the admin server reads: published by the agent's poller.
pub struct Shared {
    /// The newest two views (the poller swaps them).
    pub views: Arc<Views>,
    pub history: Mutex<History>,
    /// The forecasting service, unless `--no-forecast`.
    pub forecast: Option<Arc<forecast::Service>>,
    /// Failure probabilities, updated by the poller.
    pub predict: Option<Arc<forecast::predict::Predictor>>,
    /// The provisioning loops, when `[provision]` configures any.
    pub provision: Option<Arc<crate::provision::Provisioner>>,
    /// Failover profiles, when `[failover]` configures any.
    pub failover: Option<Arc<crate::failover::Orchestrator>>,
    pub prometheus: PrometheusHandle,
    pub max_endpoint_series: usize,
}

impl Shared {
    pub fn view(&self) -> Arc<View> {
        self.views.current()
    }

    pub fn render_metrics(&self) -> String {
        let mut out = self.prometheus.render();
        crate::kernel::prometheus::render(&self.view().kernel, self.max_endpoint_series, &mut out);
        out
    }
}
