//! One control loop: a policy's proposal through the safety rules, the
//! learnt lead time, alert-driven pre-provisioning, and backend results.
//!
//! The loop does not touch a system. [`Controller::decide`] returns a
//! [`Step`]: the decision as an event, and the capacity to apply if the
//! rules let it through. Whoever owns the backend applies it (or, in
//! forecast-only mode, does not) and reports back with
//! [`Controller::applied`] or [`Controller::failed`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use shadow_api::provision::{Decision, Outcome, PreProvision, Resource};

use super::policy::{Basis, Observation, Policy, forecast_max};
use crate::Forecast;

/// Bounds and safety settings of one loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub min: f64,
    pub max: f64,
    /// The largest change per action, as a fraction of current capacity
    /// (1 = may double or halve); never less than one `granularity`.
    pub max_step: f64,
    /// Capacity is a whole number of these (1 replica, 0.1 core, 64 MiB).
    pub granularity: f64,
    /// After a change, no scale-up for this long, and no scale-down for
    /// `cooldown_down_s` (HPA's 300 s stabilisation by default).
    pub cooldown_up_s: f64,
    pub cooldown_down_s: f64,
    /// After start, decisions are shown but not applied for this long:
    /// start-up spikes do not scale anything.
    pub grace_s: f64,
    /// Backoff after a backend failure: `backoff_s * 2^(failures - 1)`, at
    /// most `backoff_max_s`.
    pub backoff_s: f64,
    pub backoff_max_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min: 1.0,
            max: f64::MAX,
            max_step: 1.0,
            granularity: 1.0,
            cooldown_up_s: 60.0,
            cooldown_down_s: 300.0,
            grace_s: 120.0,
            backoff_s: 30.0,
            backoff_max_s: 900.0,
        }
    }
}

impl Limits {
    /// The first setting that makes no sense, as `(key, reason)`.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        let positive = [
            ("granularity", self.granularity),
            ("max_step", self.max_step),
        ];
        let non_negative = [
            ("min", self.min),
            ("cooldown_up", self.cooldown_up_s),
            ("cooldown_down", self.cooldown_down_s),
            ("grace", self.grace_s),
            ("backoff", self.backoff_s),
            ("backoff_max", self.backoff_max_s),
        ];
        if let Some((k, v)) = positive.iter().find(|(_, v)| !v.is_finite() || *v <= 0.0) {
            return Some((k, format!("must be a positive number, got {v}")));
        }
        if let Some((k, v)) = non_negative
            .iter()
            .find(|(_, v)| !v.is_finite() || *v < 0.0)
        {
            return Some((k, format!("must be zero or more, got {v}")));
        }
        (self.min > self.max)
            .then(|| ("min", format!("min {} is above max {}", self.min, self.max)))
    }
}

/// The lead time: the backend's measured time-to-ready over its recent
/// actions (the configured default until one is measured).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadTime {
    pub default_s: f64,
    samples: VecDeque<f64>,
}

impl LeadTime {
    const KEEP: usize = 32;

    pub fn new(default_s: f64) -> Self {
        Self {
            default_s,
            samples: VecDeque::new(),
        }
    }

    pub fn record(&mut self, ready_s: f64) {
        if self.samples.len() == Self::KEEP {
            self.samples.pop_front();
        }
        self.samples.push_back(ready_s.max(0.0));
    }

    pub fn samples(&self) -> usize {
        self.samples.len()
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return self.default_s;
        }
        let v: Vec<f64> = self.samples.iter().copied().collect();
        crate::model::quantile(&v, q)
    }

    pub fn median_s(&self) -> f64 {
        self.quantile(0.5)
    }

    /// How far ahead the controller looks.
    pub fn p90_s(&self) -> f64 {
        self.quantile(0.9)
    }
}

/// One decision: the event, and the capacity to apply if it goes through.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub decision: Decision,
    /// `Some(capacity)`: the rules let this change through.
    pub apply: Option<f64>,
    /// Thresholds the forecast crosses within the lead time.
    pub queued: Vec<PreProvision>,
}

pub struct Controller {
    pub target: String,
    pub resource: Resource,
    pub limits: Limits,
    pub lead: LeadTime,
    /// Seconds between decisions.
    pub interval_s: f64,
    /// Predicted-utilisation thresholds (0.9 = 90 %) that queue capacity
    /// ahead of the crossing.
    pub alerts: Vec<f64>,
    policy: Box<dyn Policy>,
    started: i64,
    last_up: Option<i64>,
    last_down: Option<i64>,
    failures: u32,
    retry_at: Option<i64>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("target", &self.target)
            .field("resource", &self.resource)
            .field("policy", &self.policy.name())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl Controller {
    pub fn new(
        target: impl Into<String>,
        resource: Resource,
        policy: Box<dyn Policy>,
        limits: Limits,
        lead: LeadTime,
        interval_s: f64,
        started: i64,
    ) -> Self {
        Self {
            target: target.into(),
            resource,
            limits,
            lead,
            interval_s,
            alerts: Vec::new(),
            policy,
            started,
            last_up: None,
            last_down: None,
            failures: 0,
            retry_at: None,
        }
    }

    pub fn policy(&self) -> &'static str {
        self.policy.name()
    }

    /// Backend failures in a row, and when the next attempt may be made.
    pub fn failures(&self) -> (u32, Option<i64>) {
        (self.failures, self.retry_at)
    }

    fn quantise(&self, v: f64) -> f64 {
        let g = self.limits.granularity;
        // A hair under a whole step is that step (float noise), not one more.
        ((v / g) - 1e-9).ceil().max(0.0) * g
    }

    /// One decision round. `current` is the capacity in effect (as read from
    /// the backend), `demand` the latest measured, `forecast` the latest
    /// demand forecast.
    pub fn decide(
        &mut self,
        now: i64,
        current: f64,
        demand: f64,
        forecast: Option<&Forecast>,
    ) -> Step {
        let lead_s = self.lead.p90_s();
        let obs = Observation {
            now,
            current,
            demand,
            forecast,
            lead_s,
            interval_s: self.interval_s,
        };
        let p = self.policy.propose(&obs);
        let mut desired = p.desired;
        let mut reason = p.reason.clone();
        let mut basis = p.basis;

        // Alerts: a forecast crossing a threshold within the lead time
        // queues the capacity that keeps utilisation under it.
        let mut queued = Vec::new();
        if let Some(f) = forecast {
            for &u in &self.alerts {
                let crossing = (0..f.len())
                    .map(|i| (f.start + f.step * i as i64, f.p90[i]))
                    .find(|&(_, v)| current > 0.0 && v / current >= u);
                let Some((at, _)) = crossing else { continue };
                if (at - now) as f64 > lead_s + self.interval_s {
                    continue;
                }
                let peak =
                    forecast_max(f, now, 0.0, lead_s + self.interval_s, 0.9).map_or(0.0, |m| m.0);
                let capacity = self.quantise(peak / u);
                queued.push(PreProvision {
                    target: self.target.clone(),
                    resource: self.resource,
                    threshold: u,
                    crossing_at: at,
                    capacity,
                    state: "queued".into(),
                });
                if capacity > desired {
                    desired = capacity;
                    basis = Basis::Forecast;
                    reason = format!(
                        "P90 crosses {:.0}% of {current} at +{}s, within lead {lead_s:.0}s: pre-provisioning {capacity}",
                        u * 100.0,
                        at - now
                    );
                }
            }
        }

        let mut held = None;
        // No scale-in on the forecast alone: never below what actuals need.
        if desired < current && desired < p.floor {
            desired = p.floor.min(current);
            if desired >= current {
                held = Some("no scale-in on the forecast alone: actuals still need it".to_string());
            }
        }
        let l = &self.limits;
        let step = (l.max_step * current).max(l.granularity);
        let stepped = desired.clamp(current - step, current + step);
        if stepped != desired {
            reason.push_str(&format!("; limited to a step of {step}"));
        }
        let bounded = self.quantise(stepped).clamp(l.min, l.max);
        if bounded != self.quantise(stepped) {
            reason.push_str(&format!("; bounded to [{}, {}]", l.min, l.max));
        }
        let desired_final = bounded;

        let up = desired_final > current;
        if held.is_none() && desired_final != current {
            let since = |t: Option<i64>| t.map_or(f64::MAX, |t| (now - t) as f64);
            let last_change = since(self.last_up).min(since(self.last_down));
            if ((now - self.started) as f64) < l.grace_s {
                held = Some(format!(
                    "start-up grace: {:.0}s left",
                    l.grace_s - (now - self.started) as f64
                ));
            } else if let Some(at) = self.retry_at.filter(|&at| at > now) {
                held = Some(format!(
                    "backend failed {} time(s) in a row: retry in {}s",
                    self.failures,
                    at - now
                ));
            } else if up && last_change < l.cooldown_up_s {
                held = Some(format!(
                    "cooldown: {:.0}s since the last change",
                    last_change
                ));
            } else if !up && last_change < l.cooldown_down_s {
                held = Some(format!(
                    "scale-down cooldown: {:.0}s since the last change, {:.0}s needed",
                    last_change, l.cooldown_down_s
                ));
            }
        }
        let outcome = match &held {
            Some(why) => Outcome::Held(why.clone()),
            None if desired_final == current => Outcome::Unchanged,
            None => Outcome::Planned,
        };
        let apply = matches!(outcome, Outcome::Planned).then_some(desired_final);
        Step {
            decision: Decision {
                time: now,
                target: self.target.clone(),
                resource: self.resource,
                policy: self.policy.name().into(),
                current,
                desired: desired_final,
                proposed: p.desired,
                demand,
                forecast: p.forecast,
                quantile: p.quantile,
                lead_s,
                basis,
                outcome,
                reason,
            },
            apply,
            queued,
        }
    }

    /// The backend applied `step`'s capacity; it was ready after `ready_s`.
    pub fn applied(&mut self, step: &mut Step, ready_s: f64) {
        let d = &mut step.decision;
        if d.desired > d.current {
            self.last_up = Some(d.time);
        } else {
            self.last_down = Some(d.time);
        }
        self.lead.record(ready_s);
        self.failures = 0;
        self.retry_at = None;
        d.outcome = Outcome::Applied { ready_s };
        for q in &mut step.queued {
            q.state = "in_progress".into();
        }
    }

    /// The backend failed: the previous allocation stays, the next attempt
    /// waits for the backoff.
    pub fn failed(&mut self, step: &mut Step, error: String) {
        self.failures += 1;
        let l = &self.limits;
        let wait = (l.backoff_s * 2f64.powi(self.failures as i32 - 1)).min(l.backoff_max_s);
        self.retry_at = Some(step.decision.time + wait.ceil() as i64);
        step.decision.outcome = Outcome::Failed(error);
    }
}

#[cfg(test)]
mod tests;
