//! The agent's failure probabilities: every interval the poller reads the
//! signals for the host and each shadowed service (forecast anomalies and
//! P90s, live error rate and p99, sensors, slow block I/O, past incidents),
//! asks [`FailureModel`] for P(failure within the horizon), exports
//! `shadow_failure_probability{scope,name}`, and logs an event whenever a
//! scope's level (ok, warn, stage, cutover) changes, with its reason.
//!
//! It learns from its own failures: a service whose live error rate stays
//! at or above [`PredictSettings::failure_error_rate`] for two intervals
//! has failed; the moments of the horizon before it become positive
//! examples, and moments that aged past the horizon with no failure after
//! them negative ones. Imported incidents (`--incidents FILE`) set each
//! scope's base rate.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, RwLock},
};

use shadow_api::predict::{
    Contribution, FailureAnswer, Level, LevelEvent, PredictAnswer, Thresholds,
};
use shadow_forecast::failure::{self, Example, FailureModel, Incident, Signals};

use super::Service;
use crate::{host::history::History, metrics::names};

/// Level changes kept for `GET /v1/predict/events`.
const EVENTS: usize = 256;
/// Moments kept per scope for labelling (at 5 s, two 30-minute horizons).
const MOMENTS: usize = 1024;
/// Examples gathered before a learning step.
const BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct PredictSettings {
    pub horizon_s: i64,
    pub thresholds: Thresholds,
    pub incidents: Vec<Incident>,
    /// A service has failed when this share of its live requests fail.
    pub failure_error_rate: f64,
}

impl Default for PredictSettings {
    fn default() -> Self {
        Self {
            horizon_s: 1800,
            thresholds: Thresholds::default(),
            incidents: Vec::new(),
            failure_error_rate: 0.5,
        }
    }
}

#[derive(Debug, Default)]
struct ScopeState {
    level: Option<Level>,
    moments: VecDeque<(i64, [f64; failure::SIGNALS.len()])>,
    /// Intervals in a row at a failing error rate.
    failing: u32,
}

pub struct Predictor {
    pub settings: PredictSettings,
    server_id: String,
    model: Mutex<FailureModel>,
    scopes: Mutex<BTreeMap<(String, String), ScopeState>>,
    pending: Mutex<Vec<Example>>,
    latest: RwLock<Option<PredictAnswer>>,
    events: Mutex<VecDeque<LevelEvent>>,
}

/// The last value of `metric`, if any.
fn last(history: &History, metric: &str) -> Option<f64> {
    history.last(metric).map(|p| p.1)
}

impl Predictor {
    pub fn new(settings: PredictSettings, server_id: impl Into<String>) -> Self {
        let model = FailureModel {
            horizon_s: settings.horizon_s as f64,
            ..FailureModel::default()
        };
        Self {
            settings,
            server_id: server_id.into(),
            model: Mutex::new(model),
            scopes: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(Vec::new()),
            latest: RwLock::new(None),
            events: Mutex::new(VecDeque::new()),
        }
    }

    pub fn latest(&self) -> Option<PredictAnswer> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn events(&self) -> Vec<LevelEvent> {
        let e = self.events.lock().unwrap_or_else(|p| p.into_inner());
        e.iter().cloned().collect()
    }

    /// The services with live-traffic series in the history (`web.rate`).
    fn services(history: &History) -> Vec<String> {
        history
            .metrics()
            .filter_map(|m| m.strip_suffix(".rate"))
            .filter(|s| !s.contains('[') && !s.contains('.'))
            .map(str::to_owned)
            .collect()
    }

    /// One interval: reads the signals, updates levels, events and gauges.
    pub fn update(
        &self,
        history: &History,
        forecast: Option<&Service>,
        hardware: Option<f64>,
        now: i64,
    ) {
        let slow_ios = last(history, "block.slow_ios_per_second").unwrap_or(0.0);
        let io_errors = last(history, "block.errors_per_second").unwrap_or(0.0);
        let services = Self::services(history);
        let mut scopes: Vec<(String, String, Signals, Vec<String>)> = Vec::new();
        let mut host = Signals {
            hardware: hardware.unwrap_or(0.0),
            slow_ios,
            io_errors,
            incidents_per_day: failure::incident_rate(
                &self.settings.incidents,
                &self.server_id,
                None,
                now,
            ),
            latency_ratio: 1.0,
            ..Signals::default()
        };
        let mut host_detail = Vec::new();
        if let Some(f) = forecast {
            read_forecasts(f, history, None, &mut host, &mut host_detail);
        }
        for svc in &services {
            let mut s = Signals {
                hardware: host.hardware,
                slow_ios,
                io_errors,
                incidents_per_day: failure::incident_rate(
                    &self.settings.incidents,
                    &self.server_id,
                    Some(svc),
                    now,
                ),
                latency_ratio: 1.0,
                ..Signals::default()
            };
            let mut detail = Vec::new();
            s.error_rate = last(history, &format!("{svc}.error_rate")).unwrap_or(0.0);
            let p99 = history.values(&format!("{svc}.p99_latency_ms"));
            if let (Some(&now_p99), true) = (p99.last(), p99.len() >= 10) {
                let usual = shadow_forecast::model::quantile(&p99, 0.5);
                if usual > 0.0 {
                    s.latency_ratio = now_p99 / usual;
                    detail.push(format!(
                        "latency p99 {now_p99:.1} ms, usually {usual:.1} ms"
                    ));
                }
            }
            if let Some(f) = forecast {
                read_forecasts(f, history, Some(svc), &mut s, &mut detail);
            }
            host.error_rate = host.error_rate.max(s.error_rate);
            host.latency_ratio = host.latency_ratio.max(s.latency_ratio);
            host.spike = host.spike.max(s.spike);
            scopes.push(("service".into(), svc.clone(), s, detail));
        }
        scopes.insert(
            0,
            ("host".into(), self.server_id.clone(), host, host_detail),
        );

        let model = self.model.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut answers = Vec::new();
        for (scope, name, signals, detail) in scopes {
            let a = model.assess(&signals);
            let level = self.settings.thresholds.level(a.probability);
            let contributions: Vec<Contribution> = a
                .contributions
                .iter()
                .filter(|c| c.2.abs() > 1e-9)
                .map(|&(signal, value, log_odds)| Contribution {
                    signal: signal.into(),
                    value,
                    log_odds,
                    detail: describe(signal, &signals, &detail),
                })
                .collect();
            metrics::gauge!(names::FAILURE_PROBABILITY, "scope" => scope.clone(), "name" => name.clone())
                .set(a.probability);
            let answer = FailureAnswer {
                scope: scope.clone(),
                name: name.clone(),
                probability: a.probability,
                level,
                horizon_s: self.settings.horizon_s,
                signals: contributions,
            };
            self.track(&answer, &signals, now);
            answers.push(answer);
        }
        self.maybe_learn();
        let learnt = model.failures;
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Some(PredictAnswer {
            server_id: self.server_id.clone(),
            at: now,
            thresholds: self.settings.thresholds,
            learnt_from: learnt + self.settings.incidents.len(),
            scopes: answers,
        });
    }

    /// Level changes become events; moments are kept for labelling; a
    /// failing service labels the moments before it.
    fn track(&self, a: &FailureAnswer, signals: &Signals, now: i64) {
        let features = signals.features(self.settings.horizon_s as f64);
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let st = scopes.entry((a.scope.clone(), a.name.clone())).or_default();
        let from = st.level.unwrap_or(Level::Ok);
        if st.level.is_some_and(|l| l != a.level) || (st.level.is_none() && a.level != Level::Ok) {
            let reason = a
                .signals
                .iter()
                .take(3)
                .map(|c| format!("{} +{:.1}", c.signal, c.log_odds))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(
                scope = %a.scope, name = %a.name, from = from.name(), to = a.level.name(),
                probability = a.probability, %reason, "Failure probability level changed"
            );
            let mut e = self.events.lock().unwrap_or_else(|p| p.into_inner());
            if e.len() == EVENTS {
                e.pop_front();
            }
            e.push_back(LevelEvent {
                at: now,
                scope: a.scope.clone(),
                name: a.name.clone(),
                from,
                to: a.level,
                probability: a.probability,
                reason,
            });
        }
        st.level = Some(a.level);
        let h = self.settings.horizon_s;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Moments older than the horizon saw no failure after them.
        while st.moments.front().is_some_and(|m| m.0 + h < now) {
            if let Some((_, f)) = st.moments.pop_front() {
                pending.push(Example {
                    features: f,
                    failed: false,
                });
            }
        }
        st.failing = if signals.error_rate >= self.settings.failure_error_rate {
            st.failing + 1
        } else {
            0
        };
        if st.failing == 2 {
            tracing::warn!(scope = %a.scope, name = %a.name, "Failure recorded (live error rate)");
            pending.extend(st.moments.drain(..).map(|(_, f)| Example {
                features: f,
                failed: true,
            }));
        } else if st.failing == 0 {
            if st.moments.len() == MOMENTS {
                st.moments.pop_front();
            }
            st.moments.push_back((now, features));
        }
    }

    /// A failure seen elsewhere (failover found the service's primary down):
    /// the moments kept before it are labelled as leading to a failure, as
    /// a failing error rate labels them. `false` when no moments were kept
    /// for the service or the host.
    pub fn record_failure(&self, service: &str) -> bool {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let key = [("service", service), ("host", self.server_id.as_str())]
            .into_iter()
            .map(|(s, n)| (s.to_owned(), n.to_owned()))
            .find(|k| scopes.contains_key(k))
            .or_else(|| scopes.keys().find(|k| k.0 == "host").cloned());
        let Some(st) = key.and_then(|k| scopes.get_mut(&k)) else {
            return false;
        };
        tracing::warn!(
            service,
            moments = st.moments.len(),
            "Failure recorded (failover: the primary failed)"
        );
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(st.moments.drain(..).map(|(_, f)| Example {
            features: f,
            failed: true,
        }));
        true
    }

    fn maybe_learn(&self) {
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() < BATCH || !pending.iter().any(|e| e.failed) {
                // Without a failure in it, a batch only teaches the base
                // rate; keep gathering (bounded) until one comes.
                if pending.len() > 8 * BATCH {
                    pending.drain(..BATCH);
                }
                return;
            }
            std::mem::take(&mut *pending)
        };
        let mut m = self.model.lock().unwrap_or_else(|p| p.into_inner());
        m.learn(&batch);
        tracing::info!(
            examples = m.examples,
            failures = m.failures,
            weights = ?m.weights,
            "Failure model learnt from its own failures"
        );
    }
}

/// Anomaly scores, exhaustion and spikes from the forecasts of `service`'s
/// metrics (`web.*`), or of every metric for the host.
fn read_forecasts(
    f: &Service,
    history: &History,
    service: Option<&str>,
    s: &mut Signals,
    detail: &mut Vec<String>,
) {
    for slot in &f.slots {
        let mine = service.is_none_or(|svc| {
            slot.name
                .strip_prefix(svc)
                .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
        });
        if !mine {
            continue;
        }
        let p = slot.published();
        if p.anomaly_score > s.anomaly {
            s.anomaly = p.anomaly_score;
            detail.push(format!(
                "anomaly {}: score {:.2}",
                slot.name, p.anomaly_score
            ));
        }
        let Some(fc) = &p.forecast else { continue };
        // Utilisations are ratios: their capacity is 1.
        if slot.name.ends_with("_utilisation")
            && let Some(i) = fc.p90.iter().position(|&v| v >= 0.98)
        {
            let secs = (i as i64 + 1) * fc.step;
            if s.exhaustion_s.is_none_or(|t| (secs as f64) < t) {
                s.exhaustion_s = Some(secs as f64);
                detail.push(format!(
                    "exhaustion {}: P90 reaches capacity in {}",
                    slot.name,
                    super::format_ahead(secs)
                ));
            }
        }
        if slot.name.ends_with(".rate")
            && let (Some(&p90), Some(actual)) = (fc.p90.first(), last(history, &slot.name))
            && p90 > 0.0
            && actual > p90
        {
            s.spike = s.spike.max(actual / p90 - 1.0);
            detail.push(format!(
                "spike {}: {actual:.1} over P90 {p90:.1}",
                slot.name
            ));
        }
    }
}

/// A contribution's detail: the matching line of `detail`, else the value.
fn describe(signal: &str, s: &Signals, detail: &[String]) -> String {
    if let Some(d) = detail.iter().rev().find(|d| d.starts_with(signal)) {
        return d
            .split_once(' ')
            .map_or(d.clone(), |(_, rest)| rest.to_owned());
    }
    match signal {
        "error_rate" => format!("{:.1} % of live requests failed", 100.0 * s.error_rate),
        "latency" => format!("p99 {:.1}x its usual", s.latency_ratio),
        "hardware" => format!(
            "a sensor {:.0} % of the way to its limit",
            100.0 * s.hardware
        ),
        "block_io" => format!(
            "{:.2} slow and {:.2} failed block I/Os per second",
            s.slow_ios, s.io_errors
        ),
        "history" => format!("{:.2} past incidents a day", s.incidents_per_day),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
