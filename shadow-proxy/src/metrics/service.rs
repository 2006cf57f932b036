//! Per-service shadowing statistics: what was captured, replayed and
//! dropped, and why. Every count also goes to the `metrics` recorder; the
//! in-memory copy answers `shadowctl mirror status` and gives the coverage
//! figure (the share of sampled requests fully replayed).

use std::sync::Mutex;

use crate::metrics::{names, reason::Drop};

pub use shadow_api::mirror::StatsView;

/// Statistics of one service.
#[derive(Debug)]
pub struct ServiceStats {
    service: String,
    inner: Mutex<StatsView>,
}

impl ServiceStats {
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            inner: Mutex::new(StatsView::default()),
        }
    }

    fn with(&self, f: impl FnOnce(&mut StatsView)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn view(&self) -> StatsView {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn flow_reassembled(&self) {
        self.with(|s| s.flows_reassembled += 1);
        metrics::counter!(names::FLOWS, "service" => self.service.clone(), "outcome" => "reassembled").increment(1);
    }

    /// A flow that was not rebuilt, by reason.
    pub fn flow_dropped(&self, reason: impl Into<Drop>) {
        let reason = reason.into().as_str();
        self.with(|s| *s.flow_drops.entry(reason.to_owned()).or_default() += 1);
        metrics::counter!(names::FLOWS, "service" => self.service.clone(), "outcome" => reason)
            .increment(1);
    }

    pub fn request_parsed(&self) {
        self.with(|s| s.requests_parsed += 1);
        metrics::counter!(names::REQUESTS_PARSED, "service" => self.service.clone()).increment(1);
    }

    /// A request on a captured connection that request-level sampling left
    /// out (not a drop: it was never asked for).
    pub fn sampled_out(&self) {
        self.with(|s| s.sampled_out += 1);
        metrics::counter!(names::REQUESTS_SAMPLED_OUT, "service" => self.service.clone())
            .increment(1);
    }

    /// A sampled request that was not replayed (or not fully), by reason.
    pub fn not_replayed(&self, reason: impl Into<Drop>) {
        let reason = reason.into().as_str();
        self.with(|s| *s.not_replayed.entry(reason.to_owned()).or_default() += 1);
        metrics::counter!(names::REPLAY_DROPS, "service" => self.service.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn replayed(&self, status: u16, delta_ms: Option<f64>) {
        self.with(|s| {
            s.replayed += 1;
            *s.shadow_status.entry(status).or_default() += 1;
            if let Some(d) = delta_ms {
                s.latency_delta_ms_sum += d;
                s.latency_delta_count += 1;
            }
        });
        metrics::counter!(names::REPLAYED, "service" => self.service.clone(), "status" => status.to_string())
            .increment(1);
        if let Some(d) = delta_ms {
            metrics::histogram!(names::LATENCY_DELTA, "service" => self.service.clone())
                .record(d / 1000.0);
        }
    }
}
