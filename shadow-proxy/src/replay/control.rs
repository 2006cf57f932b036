//! What the control API acts on: the attached classifier's sampling table
//! and the replayer's per-service state. Operations return typed answers
//! and [`ControlError`]s; `crate::api::control` only routes and renders.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use super::{
    Replayer,
    config::{RawRules, percent_to_hundredths},
    record::{RecordError, Recorder},
};
use crate::{
    capture::{CaptureError, TcCapture, pipeline::PipelineCounters},
    diff::noise::Verdict,
    metrics::names,
};

pub use shadow_api::mirror::{DiffSummary, MarkNoise, MirrorStatus, TargetDiff};

/// Why a control operation was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown service {service:?} (configured: {known})")]
    UnknownService { service: String, known: String },
    #[error("{key} {reason}")]
    Invalid { key: String, reason: String },
    #[error("{0}")]
    Conflict(&'static str),
    /// The recording could not start (its path, usually): the caller's to fix.
    #[error("{0}")]
    RecordStart(#[source] RecordError),
    #[error("recording: {0}")]
    Record(#[source] RecordError),
    #[error("the classifier's sampling table: {0}")]
    Capture(#[source] CaptureError),
}

/// A refused operation is the caller's or the agent's, never live's.
impl crate::util::Sourced for ControlError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// The running shadowing path, as the control API sees it.
pub struct Control {
    /// `None` with `--no-kernel` (every service is inline).
    pub capture: Mutex<Option<TcCapture>>,
    pub replayer: Arc<Replayer>,
    /// Service name -> (port, slot in the kernel's counters).
    pub ports: Vec<(String, u16, u32)>,
    pub pipeline: Arc<PipelineCounters>,
    /// The agent's CPU budget.
    pub budget: Mutex<super::budget::Budget>,
}

impl Control {
    fn service(
        &self,
        service: &str,
    ) -> Result<(u16, u32, &Arc<super::ServiceReplay>), ControlError> {
        self.ports
            .iter()
            .find(|(n, _, _)| n == service)
            .and_then(|(_, port, slot)| Some((*port, *slot, self.replayer.services.get(port)?)))
            .ok_or_else(|| ControlError::UnknownService {
                service: service.to_owned(),
                known: self
                    .ports
                    .iter()
                    .map(|(n, _, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    pub fn status(&self) -> Vec<MirrorStatus> {
        let budget = {
            let b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            b.enabled().then(|| shadow_api::mirror::BudgetStatus {
                cores: b.cores,
                used: b.used,
                scale: b.scale,
                training_held: b.training_held(),
            })
        };
        let capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        self.ports
            .iter()
            .filter_map(|(name, port, slot)| {
                let svc = self.replayer.services.get(port)?;
                let cfg = svc.cfg.read().unwrap_or_else(|p| p.into_inner());
                let k = capture
                    .as_ref()
                    .and_then(|c| c.counters(*slot).ok())
                    .unwrap_or_default();
                let stats = svc.stats.view();
                Some(MirrorStatus {
                    service: name.clone(),
                    port: *port,
                    percent: f64::from(cfg.per_ten_thousand) / 100.0,
                    sample: if cfg.inline.is_some() {
                        "inline"
                    } else if cfg.per_request {
                        "request"
                    } else {
                        "connection"
                    }
                    .into(),
                    capture_percent: f64::from(
                        svc.captured.load(std::sync::atomic::Ordering::Relaxed),
                    ) / 100.0,
                    // The configured targets, then the local replicas the
                    // provisioner registered.
                    targets: cfg
                        .targets
                        .iter()
                        .chain(&svc.discovered())
                        .map(ToString::to_string)
                        .collect(),
                    packets_seen: k.packets_seen,
                    packets_sampled: k.packets_sampled,
                    truncated: k.truncated,
                    coverage: stats.coverage(),
                    stats,
                    inline: svc.inline.as_ref().map(|i| i.status()),
                    budget,
                })
            })
            .collect()
    }

    /// Publishes the per-service counters to the metrics recorder.
    pub fn publish_metrics(&self) {
        for s in self.status() {
            let l = [("service", s.service.clone())];
            metrics::counter!(names::CAPTURE_PACKETS_SEEN, &l).absolute(s.packets_seen);
            metrics::counter!(names::CAPTURE_PACKETS_SAMPLED, &l).absolute(s.packets_sampled);
            metrics::gauge!(names::MIRROR_PERCENT, &l).set(s.percent);
            if let Some(c) = s.coverage {
                metrics::gauge!(names::COVERAGE, &l).set(c);
            }
        }
    }

    pub fn diff_summary(&self) -> Vec<DiffSummary> {
        self.ports
            .iter()
            .filter_map(|(name, port, _)| {
                let svc = self.replayer.services.get(port)?;
                let d = svc.diff.lock().unwrap_or_else(|p| p.into_inner());
                let mut targets = BTreeMap::new();
                let mut regressed = 0usize;
                for (target, e) in &d.targets {
                    let verdict = e.verdict();
                    if let Verdict::Regressed { regressions } = &verdict {
                        regressed += regressions.len();
                    }
                    targets.insert(
                        target.clone(),
                        TargetDiff {
                            verdict,
                            routes: e.routes.clone(),
                        },
                    );
                }
                metrics::gauge!(names::DIFF_REGRESSIONS, "service" => name.clone())
                    .set(regressed as f64);
                Some(DiffSummary {
                    service: name.clone(),
                    targets,
                    marked_noise: d.marked.iter().cloned().collect(),
                })
            })
            .collect()
    }

    /// Marks or unmarks a field as noise; answers the generic path stored.
    pub fn mark_noise(&self, m: &MarkNoise) -> Result<String, ControlError> {
        let (_, _, svc) = self.service(&m.service)?;
        let path = crate::diff::json::generic_path(&m.path);
        svc.diff.lock().unwrap_or_else(|p| p.into_inner()).mark(
            m.route.clone(),
            path.clone(),
            m.noise,
        );
        Ok(path)
    }

    pub fn start_recording(&self, path: &Path) -> Result<(), ControlError> {
        let mut slot = self
            .replayer
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(ControlError::Conflict("a recording is already running"));
        }
        let mut redact: Vec<String> = Vec::new();
        for svc in self.replayer.services.values() {
            redact.extend(
                svc.cfg
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .redact_headers
                    .clone(),
            );
        }
        *slot = Some(Recorder::start(path, redact).map_err(ControlError::RecordStart)?);
        tracing::info!(path = %path.display(), "Recording started");
        Ok(())
    }

    /// Stops the recording; answers (written, dropped).
    pub fn stop_recording(&self) -> Result<(u64, u64), ControlError> {
        let taken = self
            .replayer
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        taken
            .ok_or(ControlError::Conflict("no recording is running"))?
            .finish()
            .map_err(ControlError::Record)
    }

    pub fn set_percent(&self, service: &str, percent: f64) -> Result<MirrorStatus, ControlError> {
        let (port, slot, svc) = self.service(service)?;
        let hundredths =
            percent_to_hundredths(percent).map_err(|reason| ControlError::Invalid {
                key: "percent".into(),
                reason,
            })?;
        let scale = self.budget.lock().unwrap_or_else(|p| p.into_inner()).scale;
        let (captured, kernel) = capture_rates(svc, hundredths, scale);
        if let Some(c) = self
            .capture
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            c.set_sampling(port, slot, kernel)
                .map_err(ControlError::Capture)?;
        }
        svc.cfg
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .per_ten_thousand = hundredths;
        self.captured_now(service, svc, captured);
        tracing::info!(service, percent, "Mirror percentage changed");
        Ok(self
            .status()
            .into_iter()
            .find(|s| s.service == service)
            .expect("a configured service has a status"))
    }

    /// The CPU budget's step, once an interval: `cpu_seconds` is the
    /// process's CPU time so far. When the scale moves, every service's
    /// capture rate for new connections follows.
    pub fn apply_budget(&self, cpu_seconds: f64, now: std::time::Instant) {
        let (scale, used, cores) = {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            let held = b.training_held();
            let scale = b.observe(cpu_seconds, now);
            if b.training_held() != held {
                tracing::info!(
                    used_cores = format!("{:.2}", b.used),
                    budget_cores = b.cores,
                    held = !held,
                    "CPU budget: forecast training {}",
                    if held {
                        "resumes"
                    } else {
                        "is held (it yields before the capture is cut)"
                    }
                );
            }
            match scale {
                Some(s) => (s, b.used, b.cores),
                None => return,
            }
        };
        let mut capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        for (name, port, slot) in &self.ports {
            let Some(svc) = self.replayer.services.get(port) else {
                continue;
            };
            let asked = svc
                .cfg
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .per_ten_thousand;
            let (captured, kernel) = capture_rates(svc, asked, scale);
            if let Some(c) = capture.as_mut()
                && let Err(error) = c.set_sampling(*port, *slot, kernel)
            {
                tracing::warn!(service = %name, %error, "CPU budget: the capture rate could not be set");
                continue;
            }
            self.captured_now(name, svc, captured);
        }
        tracing::info!(
            used_cores = format!("{used:.2}"),
            budget_cores = cores,
            scale = format!("{scale:.3}"),
            "CPU budget: new connections are captured at this share of what was asked"
        );
    }

    /// The capture rate now in force for `svc`: what its replay and its
    /// live series are scaled by.
    fn captured_now(&self, name: &str, svc: &super::ServiceReplay, captured: u32) {
        svc.captured
            .store(captured, std::sync::atomic::Ordering::Relaxed);
        self.replayer.traffic.set_sampling(name, captured);
    }

    /// Replaces a service's rules; on error nothing changes.
    pub fn set_rules(&self, service: &str, raw: RawRules) -> Result<(), ControlError> {
        let (_, _, svc) = self.service(service)?;
        svc.set_rules(raw).map_err(|e| ControlError::Invalid {
            key: format!("rules.{}:", e.key),
            reason: e.reason,
        })?;
        tracing::info!(service, "Mirror rules replaced");
        Ok(())
    }
}

/// `(captured, kernel)` rates for `svc` when `hundredths` are asked under
/// the CPU budget's `scale`: what is captured (per request, the sampler's
/// input) and what the kernel is told (per connection).
fn capture_rates(svc: &super::ServiceReplay, hundredths: u32, scale: f64) -> (u32, u32) {
    let cfg = svc.cfg.read().unwrap_or_else(|p| p.into_inner());
    let captured = super::budget::scaled(
        super::sample::capture_rate(hundredths, cfg.per_request),
        scale,
    );
    (captured, cfg.kernel_rate(captured))
}
