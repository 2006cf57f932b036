//! The provisioner box: one control loop per resource per target, each a
//! [`Controller`] of `shadow_forecast::provision` driving a real
//! [`Backend`].
//!
//! Every `interval` a loop reads its demand (a history metric, divided by
//! `demand_per_unit`), the latest forecast of that metric, and the capacity
//! in effect (from the backend where it can say, else the last applied),
//! and decides. In `forecast_only` mode (the default) the decision is a
//! plan: shown, exported, never applied. In `apply` mode the backend
//! applies it; the wall time it took is the backend's time-to-ready, from
//! which the lead time is learnt. A failure leaves the previous allocation,
//! backs off and is counted. Every decision is an event in a bounded ring.

pub mod backend;
pub mod cgroup;
pub mod config;
pub mod hook;
pub mod iac;
pub mod replicas;

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant},
};

use shadow_api::provision::{
    Crossing, Decision, Events, Mode, Outcome, Plan, PlanRow, PreProvision, Resource, WhatIf,
    WhatIfResource,
};
use shadow_forecast::provision::{
    Controller, LeadTime, Limits, PolicyConfig,
    policy::forecast_max,
    pool::{Placed, Placement, Pool},
};

pub use backend::{Backend, BackendError, Change};

use crate::{forecast, host::history::History, metrics::names};

/// Decisions kept for `GET /v1/provision/events`.
pub const EVENTS: usize = 1024;

/// Where a loop's capacity is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSettings {
    /// A cgroup path (`shadow/web`), v2 or v1 as the host has it.
    Cgroup { path: String },
    /// A command given the change as JSON on stdin.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
    /// A Terraform `*.auto.tfvars.json` file.
    Terraform { path: std::path::PathBuf },
    /// A CloudFormation parameters file.
    CloudFormation { path: std::path::PathBuf },
    /// Local copies of a command, each on its own port (`{port}`).
    Replicas {
        command: Vec<String>,
        base_port: u16,
        ready_path: Option<String>,
        ready_timeout: Duration,
        drain: Duration,
        stop_timeout: Duration,
    },
}

impl BackendSettings {
    /// `on_change`, for local replicas, is told every change of the ready
    /// copies' addresses (the agent registers them as shadow targets).
    pub fn build(&self, on_change: Option<replicas::OnChange>) -> Box<dyn Backend> {
        match self {
            Self::Cgroup { path } => Box::new(cgroup::Cgroup::at(path)),
            Self::Exec { command, timeout } => Box::new(hook::ExecHook {
                command: command.clone(),
                timeout: *timeout,
            }),
            Self::Terraform { path } => Box::new(iac::IacFile {
                format: iac::Format::Terraform,
                path: path.clone(),
            }),
            Self::CloudFormation { path } => Box::new(iac::IacFile {
                format: iac::Format::CloudFormation,
                path: path.clone(),
            }),
            Self::Replicas {
                command,
                base_port,
                ready_path,
                ready_timeout,
                drain,
                stop_timeout,
            } => {
                let mut r = replicas::Replicas::new(command.clone(), *base_port);
                r.ready_path.clone_from(ready_path);
                r.ready_timeout = *ready_timeout;
                r.drain = *drain;
                r.stop_timeout = *stop_timeout;
                r.on_change = on_change;
                Box::new(r)
            }
        }
    }
}

/// One loop as configured (`[[provision.loop]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSettings {
    /// `host` or a service name.
    pub target: String,
    pub resource: Resource,
    pub backend: BackendSettings,
    pub policy: PolicyConfig,
    pub limits: Limits,
    /// The history metric that measures demand (`cgroup.web.cpu_cores`).
    pub demand: String,
    /// Demand per capacity unit: 1 for cores and bytes; the load one
    /// replica serves for replicas.
    pub demand_per_unit: f64,
    /// The lead time until the backend's time-to-ready is measured.
    pub time_to_ready: Duration,
    pub interval: Duration,
    /// Predicted-utilisation thresholds that queue capacity ahead.
    pub alerts: Vec<f64>,
    /// Capacity assumed at start when the backend cannot report it.
    pub initial: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProvisionSettings {
    pub mode: Mode,
    pub loops: Vec<LoopSettings>,
    pub pool: Option<Pool>,
}

struct Loop {
    settings: LoopSettings,
    controller: Controller,
    backend: Box<dyn Backend>,
    /// What was last applied (or assumed), for backends that cannot say.
    applied: f64,
    next_at: i64,
    last: Option<Decision>,
    queued: Vec<PreProvision>,
}

impl Loop {
    fn current(&self) -> f64 {
        self.backend
            .current(self.settings.resource)
            .unwrap_or(self.applied)
    }
}

/// The provisioner: its loops, their events and counters.
pub struct Provisioner {
    mode: Mode,
    loops: Mutex<Vec<Loop>>,
    events: Mutex<(VecDeque<Decision>, u64)>,
    pool: Option<Pool>,
    /// The pool's placement (made after each round, from the last one, so
    /// placed units stay), and the live units it was made for.
    placed: Mutex<(Placed, u32)>,
    /// The plan as of the last round: what the API reads, so a read never
    /// waits for a backend that is applying.
    snapshot: Mutex<(Vec<PlanRow>, Vec<PreProvision>)>,
}

/// A loop as `shadowctl plan` shows it.
fn row(l: &Loop) -> PlanRow {
    let (failures, retry_at) = l.controller.failures();
    let current = l.current();
    PlanRow {
        target: l.settings.target.clone(),
        resource: l.settings.resource,
        backend: l.backend.name().into(),
        policy: l.controller.policy().into(),
        current,
        desired: l.last.as_ref().map_or(current, |d| d.desired),
        min: l.settings.limits.min,
        max: l.settings.limits.max,
        lead_median_s: l.controller.lead.median_s(),
        lead_p90_s: l.controller.lead.p90_s(),
        lead_samples: l.controller.lead.samples(),
        failures,
        retry_at,
        reason: l
            .last
            .as_ref()
            .map_or_else(|| "no decision yet".into(), |d| d.reason.clone()),
    }
}

impl Provisioner {
    pub fn new(settings: ProvisionSettings, now: i64) -> Self {
        Self::with_routing(settings, now, &|_| None)
    }

    /// `route` gives, per loop target (a service name), what is told of
    /// its local replicas' addresses as they change.
    pub fn with_routing(
        settings: ProvisionSettings,
        now: i64,
        route: &dyn Fn(&str) -> Option<replicas::OnChange>,
    ) -> Self {
        let loops = settings
            .loops
            .into_iter()
            .map(|s| {
                let mut controller = Controller::new(
                    s.target.clone(),
                    s.resource,
                    s.policy.build(),
                    s.limits.clone(),
                    LeadTime::new(s.time_to_ready.as_secs_f64()),
                    s.interval.as_secs_f64(),
                    now,
                );
                controller.alerts = s.alerts.clone();
                let on_change = matches!(s.backend, BackendSettings::Replicas { .. })
                    .then(|| route(&s.target))
                    .flatten();
                let backend = s.backend.build(on_change);
                tracing::info!(
                    target = %s.target,
                    resource = s.resource.name(),
                    backend = backend.name(),
                    policy = controller.policy(),
                    mode = settings.mode.name(),
                    "Provisioning loop"
                );
                Loop {
                    applied: s.initial,
                    controller,
                    backend,
                    settings: s,
                    next_at: now,
                    last: None,
                    queued: Vec::new(),
                }
            })
            .collect::<Vec<Loop>>();
        let snapshot = (loops.iter().map(row).collect(), Vec::new());
        let empty = Placed {
            placement: Placement::new(),
            shortfall: None,
        };
        let p = Self {
            mode: settings.mode,
            loops: Mutex::new(loops),
            events: Mutex::new((VecDeque::new(), 0)),
            pool: settings.pool,
            placed: Mutex::new((empty, 0)),
            snapshot: Mutex::new(snapshot),
        };
        p.place();
        p
    }

    /// Places the live replicas the plan wants in the pool, starting from
    /// the last placement.
    fn place(&self) {
        let Some(pool) = &self.pool else { return };
        let wanted: f64 = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .iter()
            .filter(|r| r.resource == Resource::Replicas)
            .map(|r| r.desired)
            .sum();
        let primary = wanted.ceil().max(0.0) as u32;
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        let next = pool.place(primary, &placed.0.placement);
        metrics::gauge!(names::PROVISION_COST).set(pool.cost_per_hour(&next.placement));
        *placed = (next, primary);
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Loop>> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The demand metrics, which the forecaster must forecast.
    pub fn demand_metrics(settings: &ProvisionSettings) -> Vec<String> {
        let mut m: Vec<String> = settings.loops.iter().map(|l| l.demand.clone()).collect();
        m.sort();
        m.dedup();
        m
    }

    /// Runs the loops that are due (every loop when `force`). `mode`
    /// overrides the configured one for this round (`dry-run` forces
    /// forecast-only). Backends block until ready: call off the async
    /// runtime.
    pub fn round(
        &self,
        now: i64,
        history: &Mutex<History>,
        forecasts: Option<&forecast::Service>,
        force: bool,
        mode: Option<Mode>,
    ) -> Vec<Decision> {
        let mode = mode.unwrap_or(self.mode);
        let mut out = Vec::new();
        let mut loops = self.lock();
        for l in loops.iter_mut().filter(|l| force || l.next_at <= now) {
            l.next_at = now + l.settings.interval.as_secs().max(1) as i64;
            let window = l.settings.interval.as_secs().max(1);
            let demand = {
                let h = history.lock().unwrap_or_else(|p| p.into_inner());
                let recent: Vec<f64> = h
                    .get(&l.settings.demand)
                    .into_iter()
                    .filter(|p| p.timestamp as i64 > now - window as i64)
                    .map(|p| p.value)
                    .collect();
                (!recent.is_empty()).then(|| {
                    recent.iter().sum::<f64>() / recent.len() as f64 / l.settings.demand_per_unit
                })
            };
            let Some(demand) = demand else {
                tracing::debug!(metric = %l.settings.demand, "No demand sample yet");
                continue;
            };
            let forecast = forecasts
                .and_then(|f| f.slot(&l.settings.demand))
                .and_then(|s| s.published().forecast.clone())
                .map(|f| {
                    let scale = 1.0 / l.settings.demand_per_unit;
                    let by = |v: Vec<f64>| v.into_iter().map(|x| x * scale).collect();
                    shadow_forecast::Forecast {
                        p10: by(f.p10),
                        p50: by(f.p50),
                        p90: by(f.p90),
                        ..f
                    }
                });
            let current = l.current();
            let mut step = l.controller.decide(now, current, demand, forecast.as_ref());
            if let Some(to) = step.apply
                && mode == Mode::Apply
            {
                let change = Change {
                    target: &l.settings.target,
                    resource: l.settings.resource,
                    from: current,
                    to,
                    unit: l.settings.resource.unit(),
                    decision: &step.decision,
                };
                let started = Instant::now();
                match l.backend.apply(&change) {
                    Ok(()) => {
                        let ready = started.elapsed().as_secs_f64();
                        l.controller.applied(&mut step, ready);
                        l.applied = to;
                    }
                    Err(e) => {
                        metrics::counter!(names::PROVISION_BACKEND_ERRORS, "backend" => l.backend.name(), "kind" => e.kind())
                            .increment(1);
                        tracing::warn!(target = %l.settings.target, resource = l.settings.resource.name(), error = %e, "Provisioning failed; the previous allocation stays");
                        l.controller.failed(&mut step, e.to_string());
                    }
                }
            }
            let d = &step.decision;
            let labels = [
                ("target", d.target.clone()),
                ("resource", d.resource.name().to_string()),
            ];
            metrics::gauge!(names::PROVISION_DESIRED, &labels).set(d.desired);
            metrics::gauge!(names::PROVISION_CURRENT, &labels).set(match d.outcome {
                Outcome::Applied { .. } => d.desired,
                _ => current,
            });
            metrics::gauge!(names::PROVISION_LEAD, &labels).set(l.controller.lead.p90_s());
            metrics::counter!(names::PROVISION_ACTIONS, "result" => d.outcome.label()).increment(1);
            if !matches!(d.outcome, Outcome::Unchanged) {
                tracing::info!(
                    target = %d.target,
                    resource = d.resource.name(),
                    current = d.current,
                    desired = d.desired,
                    result = d.outcome.label(),
                    reason = %d.reason,
                    "Provisioning decision"
                );
            }
            l.queued = step.queued.clone();
            l.last = Some(step.decision.clone());
            out.push(step.decision);
        }
        let rows = loops.iter().map(row).collect();
        let queued = loops.iter().flat_map(|l| l.queued.clone()).collect();
        drop(loops);
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = (rows, queued);
        if !out.is_empty() {
            self.place();
        }
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for d in &out {
            if ev.0.len() == EVENTS {
                ev.0.pop_front();
                ev.1 += 1;
            }
            ev.0.push_back(d.clone());
        }
        out
    }

    pub fn events(&self) -> Events {
        let ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        Events {
            events: ev.0.iter().cloned().collect(),
            dropped: ev.1,
        }
    }

    /// The plan as of the last round (never waits for a backend).
    pub fn plan(&self) -> Plan {
        let (rows, queued) = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Plan {
            mode: self.mode,
            rows,
            queued,
            cost_per_hour: self.pool_view().map_or(0.0, |p| p.cost_per_hour),
        }
    }

    /// The pool as placed after the last round.
    pub fn pool_view(&self) -> Option<shadow_api::provision::Pool> {
        let pool = self.pool.as_ref()?;
        let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        Some(pool.view(&placed.0, placed.1))
    }
}

/// Thresholds a what-if reports crossings of when a loop has no alerts.
const WHATIF_THRESHOLDS: [f64; 2] = [0.8, 1.0];

impl Provisioner {
    /// What `traffic` times today's load would do, with capacity scaled by
    /// `scale`: each loop's predicted utilisation over the forecast, when
    /// its thresholds are crossed, the plan its controller would make, and
    /// the cost. Demand follows traffic through the fitted line on the
    /// service's request rate (`<target>.rate`) where one fits (R² ≥ 0.5),
    /// else in proportion.
    pub fn what_if(
        &self,
        traffic: f64,
        scale: f64,
        service: Option<&str>,
        now: i64,
        history: &Mutex<History>,
        forecasts: Option<&forecast::Service>,
    ) -> WhatIf {
        let loops = self.lock();
        let mut resources = Vec::new();
        let mut plan = Vec::new();
        let mut replicas_now = 0.0;
        let mut replicas_then = 0.0;
        for l in loops
            .iter()
            .filter(|l| service.is_none_or(|s| s == l.settings.target))
        {
            let s = &l.settings;
            let per = s.demand_per_unit;
            let (samples, rate) = {
                let h = history.lock().unwrap_or_else(|p| p.into_inner());
                let get = |m: &str| -> Vec<(u64, f64)> {
                    h.get(m)
                        .into_iter()
                        .map(|p| (p.timestamp, p.value))
                        .collect()
                };
                (get(&s.demand), get(&format!("{}.rate", s.target)))
            };
            let line = shadow_forecast::regress::fit(&s.demand, "rate", &samples, &rate, &[])
                .ok()
                .filter(|r| r.r_squared >= 0.5 && r.slope.is_finite());
            let rate_now = rate.last().map_or(0.0, |r| r.1);
            let (method, shift) = match &line {
                Some(r) => ("regression", r.slope * (traffic - 1.0) * rate_now),
                None => ("proportional", 0.0),
            };
            let scaled = |v: f64| {
                if line.is_some() {
                    (v + shift).max(0.0)
                } else {
                    v * traffic
                }
            };
            let base = forecasts
                .and_then(|f| f.slot(&s.demand))
                .and_then(|sl| sl.published().forecast.clone())
                .unwrap_or_else(|| {
                    let last = samples.last().map_or(0.0, |p| p.1);
                    shadow_forecast::Forecast {
                        start: now + 60,
                        step: 60,
                        p10: vec![last],
                        p50: vec![last],
                        p90: vec![last],
                    }
                });
            let f = shadow_forecast::Forecast {
                p10: base.p10.iter().map(|&v| scaled(v) / per).collect(),
                p50: base.p50.iter().map(|&v| scaled(v) / per).collect(),
                p90: base.p90.iter().map(|&v| scaled(v) / per).collect(),
                ..base
            };
            let capacity = (l.current() * scale).max(f64::MIN_POSITIVE);
            let util = |v: &[f64]| v.iter().map(|x| x / capacity).collect::<Vec<f64>>();
            let (u50, u90) = (util(&f.p50), util(&f.p90));
            let thresholds = if s.alerts.is_empty() {
                WHATIF_THRESHOLDS.to_vec()
            } else {
                s.alerts.clone()
            };
            let crossings = thresholds
                .iter()
                .map(|&t| Crossing {
                    threshold: t,
                    at: u90
                        .iter()
                        .position(|&u| u >= t)
                        .map(|i| f.start + f.step * i as i64),
                })
                .collect();
            // The plan: a fresh controller of the same policy, past its grace.
            let mut c = Controller::new(
                s.target.clone(),
                s.resource,
                s.policy.build(),
                Limits {
                    grace_s: 0.0,
                    ..s.limits.clone()
                },
                l.controller.lead.clone(),
                s.interval.as_secs_f64(),
                now,
            );
            c.alerts = s.alerts.clone();
            let demand_now = samples.last().map_or(0.0, |p| scaled(p.1) / per);
            let step = c.decide(now, capacity, demand_now, Some(&f));
            if s.resource == Resource::Replicas {
                replicas_now += l.current();
                replicas_then += step.decision.desired;
            }
            let peak = forecast_max(&f, now, 0.0, f64::MAX / 4.0, 0.9).map_or(0.0, |p| p.0);
            plan.push(PlanRow {
                target: s.target.clone(),
                resource: s.resource,
                backend: l.backend.name().into(),
                policy: c.policy().into(),
                current: capacity,
                desired: step.decision.desired,
                min: s.limits.min,
                max: s.limits.max,
                lead_median_s: c.lead.median_s(),
                lead_p90_s: c.lead.p90_s(),
                lead_samples: c.lead.samples(),
                failures: 0,
                retry_at: None,
                reason: format!(
                    "{}; P90 peak over the horizon {peak:.3}",
                    step.decision.reason
                ),
            });
            resources.push(WhatIfResource {
                target: s.target.clone(),
                resource: s.resource,
                start: f.start,
                step: f.step,
                utilisation_p50: u50,
                utilisation_p90: u90,
                method: method.into(),
                crossings,
            });
        }
        drop(loops);
        let cost = |replicas: f64| {
            self.pool.as_ref().map_or(0.0, |p| {
                let n = replicas.ceil().max(0.0) as u32;
                p.cost_per_hour(&p.place(n, &Placement::new()).placement)
            })
        };
        WhatIf {
            traffic,
            scale,
            service: service.map(str::to_owned),
            resources,
            plan,
            cost_per_hour: cost(replicas_then),
            cost_per_hour_now: cost(replicas_now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replicas loop on web's request rate (100 req/s per replica) that
    /// writes Terraform variables, with 150 req/s in the history.
    fn setup(mode: Mode, tag: &str) -> (Provisioner, Mutex<History>, std::path::PathBuf, i64) {
        let dir = std::env::temp_dir().join(format!("shadow-prov-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tfvars = dir.join("shadow.auto.tfvars.json");
        let now = 1_700_000_000;
        let settings = ProvisionSettings {
            mode,
            loops: vec![LoopSettings {
                target: "web".into(),
                resource: Resource::Replicas,
                backend: BackendSettings::Terraform {
                    path: tfvars.clone(),
                },
                policy: PolicyConfig::default(),
                limits: Limits {
                    grace_s: 0.0,
                    ..Limits::default()
                },
                demand: "web.rate".into(),
                demand_per_unit: 100.0,
                time_to_ready: Duration::from_secs(300),
                interval: Duration::from_secs(60),
                alerts: vec![0.8],
                initial: 2.0,
            }],
            pool: None,
        };
        let mut h = History::new("test", 1000, 16);
        for t in 0..30 {
            h.push((now - 30 + t) as u64, "web.rate", 150.0);
        }
        (
            Provisioner::new(settings, now - 300),
            Mutex::new(h),
            tfvars,
            now,
        )
    }

    #[test]
    fn forecast_only_plans_and_writes_nothing_then_apply_writes_the_variables() {
        let (p, h, tfvars, now) = setup(Mode::ForecastOnly, "modes");
        let d = p.round(now, &h, None, false, None);
        assert_eq!(d.len(), 1);
        // 150 req/s at 100 per replica, at 90 %: 1.67 -> 2 replicas; 2 in place.
        assert_eq!(d[0].outcome, Outcome::Unchanged, "{:?}", d[0]);
        // Not due again within the interval, unless forced.
        assert!(p.round(now + 10, &h, None, false, None).is_empty());
        // A minute at 450 req/s: 5 replicas wanted (4: one step doubles at most).
        for t in 1..=60 {
            h.lock().unwrap().push(now as u64 + t, "web.rate", 450.0);
        }
        let planned = p.round(now + 61, &h, None, true, None);
        assert_eq!(planned[0].desired, 4.0, "{:?}", planned[0]);
        assert_eq!(planned[0].outcome, Outcome::Planned, "{:?}", planned[0]);
        assert!(!tfvars.exists(), "forecast-only wrote {}", tfvars.display());
        let applied = p.round(now + 62, &h, None, true, Some(Mode::Apply));
        assert!(
            matches!(applied[0].outcome, Outcome::Applied { .. }),
            "{:?}",
            applied[0]
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&tfvars).unwrap()).unwrap();
        assert_eq!(v["shadow_web_replicas"], applied[0].desired as i64);
        let plan = p.plan();
        assert_eq!(
            plan.rows[0].current, applied[0].desired,
            "the last applied is current"
        );
        assert_eq!(plan.rows[0].lead_samples, 1);
        assert_eq!(p.events().events.len(), 3);
        let _ = std::fs::remove_dir_all(tfvars.parent().unwrap());
    }

    #[test]
    fn the_pool_is_placed_after_each_round_and_the_plan_shows_its_cost() {
        use shadow_forecast::provision::pool::{UnitClass, Zone};
        let (mut p, h, tfvars, now) = setup(Mode::Apply, "pool");
        let zone = |name: &str| Zone {
            name: name.into(),
            healthy: true,
            demand_weight: 1.0,
            classes: vec![UnitClass {
                class: "spot".into(),
                units: 4,
                cost_per_unit_hour: 0.5,
            }],
        };
        p.pool = Some(Pool {
            zones: vec![zone("a"), zone("b")],
            shadow_fraction: 0.5,
            min_zones: 2,
        });
        for t in 1..=60 {
            h.lock().unwrap().push(now as u64 + t, "web.rate", 450.0);
        }
        let d = p.round(now + 61, &h, None, true, None);
        assert!(
            matches!(d[0].outcome, Outcome::Applied { .. }),
            "{:?}",
            d[0]
        );
        // 4 live replicas and a shadow of 2, at 0.5 per unit-hour.
        let plan = p.plan();
        assert!((plan.cost_per_hour - 3.0).abs() < 1e-9, "{plan:?}");
        let pool = p.pool_view().unwrap();
        assert_eq!(pool.primary_wanted, 4);
        assert_eq!(pool.rows.iter().map(|r| r.shadow).sum::<u32>(), 2);
        let _ = std::fs::remove_dir_all(tfvars.parent().unwrap());
    }

    #[test]
    fn what_if_scales_demand_and_says_when_thresholds_are_crossed() {
        let (p, h, tfvars, now) = setup(Mode::ForecastOnly, "whatif");
        let w = p.what_if(2.0, 1.0, Some("web"), now, &h, None);
        assert_eq!(w.resources.len(), 1);
        let r = &w.resources[0];
        // No request-rate line to fit (web.rate is the demand itself):
        // demand doubles, 300 req/s on 2 replicas is 150 %.
        assert_eq!(r.method, "proportional");
        assert!((r.utilisation_p90[0] - 1.5).abs() < 1e-9, "{r:?}");
        assert!(r.crossings.iter().all(|c| c.at.is_some()), "{r:?}");
        assert!(w.plan[0].desired >= 4.0, "{:?}", w.plan[0]);
        // Twice the capacity at the same traffic: 75 %, under the 80 % alert.
        let w = p.what_if(1.5, 2.0, None, now, &h, None);
        assert!(
            w.resources[0].crossings[0].at.is_none(),
            "{:?}",
            w.resources[0]
        );
        assert!(
            p.what_if(2.0, 1.0, Some("db"), now, &h, None)
                .resources
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(tfvars.parent().unwrap());
    }
}
