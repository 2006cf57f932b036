//! Trace-driven scoring: replays a demand series against a controller with
//! a time-to-ready, and measures what users compare autoscalers by.
//!
//! Time runs in intervals of the series' step. At the start of interval
//! `i` the controller knows demand up to `i - 1` and the forecast made from
//! it; capacity it adds is ready `time_to_ready_s` later, capacity it
//! removes goes at once. Interval `i`'s demand is served by the capacity
//! ready during it.

use std::collections::VecDeque;

use serde::Serialize;
use shadow_api::provision::Outcome;

use super::controller::Controller;
use crate::Forecast;

/// The figures of one policy on one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    /// Share of scored intervals with demand above ready capacity, %.
    pub under_time_pct: f64,
    /// Demand above ready capacity over all demand, %.
    pub unmet_pct: f64,
    /// Mean (capacity - demand) / demand over the intervals where capacity
    /// covers demand, %.
    pub slack_pct: f64,
    /// Capacity changes per day.
    pub actions_per_day: f64,
    /// Allocated capacity (what is paid for, ready or not) in unit-hours.
    pub unit_hours: f64,
}

/// Scores a capacity trace against demand over `[from, len)`.
pub fn score(
    demand: &[f64],
    ready: &[f64],
    allocated: &[f64],
    step_s: i64,
    unit: f64,
    from: usize,
) -> Score {
    let n = demand.len();
    let scored = from..n;
    let count = scored.len().max(1) as f64;
    let (mut under, mut unmet, mut total, mut slack, mut over) = (0usize, 0.0, 0.0, 0.0, 0usize);
    for i in scored.clone() {
        let (d, c) = (demand[i], ready[i]);
        total += d.max(0.0);
        if d > c + 1e-9 {
            under += 1;
            unmet += d - c;
        } else if d > 1e-9 {
            slack += (c - d) / d;
            over += 1;
        }
    }
    let actions = scored
        .clone()
        .skip(1)
        .filter(|&i| (allocated[i] - allocated[i - 1]).abs() > 1e-9)
        .count();
    let days = count * step_s as f64 / 86_400.0;
    Score {
        under_time_pct: 100.0 * under as f64 / count,
        unmet_pct: if total > 0.0 {
            100.0 * unmet / total
        } else {
            0.0
        },
        slack_pct: if over > 0 {
            100.0 * slack / over as f64
        } else {
            0.0
        },
        actions_per_day: actions as f64 / days.max(1e-9),
        unit_hours: scored.map(|i| allocated[i] / unit).sum::<f64>() * step_s as f64 / 3600.0,
    }
}

/// What a replay produced: capacity ready and allocated per interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    pub ready: Vec<f64>,
    pub allocated: Vec<f64>,
    /// Decisions held by a safety rule.
    pub held: usize,
}

/// Replays `demand` (one value per `step_s` interval from `start`) through
/// `controller`, starting at `initial` capacity. `forecast(i)` is the
/// forecast made at the start of interval `i` from demand `[0, i)`.
pub fn replay(
    controller: &mut Controller,
    demand: &[f64],
    start: i64,
    step_s: i64,
    initial: f64,
    time_to_ready_s: f64,
    mut forecast: impl FnMut(usize) -> Option<Forecast>,
) -> Trace {
    let mut allocated = initial;
    let mut ready = initial;
    // (ready at, capacity) of scale-ups in flight.
    let mut pending: VecDeque<(i64, f64)> = VecDeque::new();
    let mut trace = Trace::default();
    for i in 0..demand.len() {
        let now = start + step_s * i as i64;
        while pending.front().is_some_and(|&(at, _)| at <= now) {
            let (_, c) = pending.pop_front().unwrap_or_default();
            ready = ready.max(c.min(allocated));
        }
        if i > 0 {
            let f = forecast(i);
            let mut step = controller.decide(now, allocated, demand[i - 1], f.as_ref());
            if matches!(step.decision.outcome, Outcome::Held(_)) {
                trace.held += 1;
            }
            if let Some(c) = step.apply {
                controller.applied(&mut step, time_to_ready_s);
                if c > allocated {
                    let at = now + time_to_ready_s.ceil() as i64;
                    if at <= now {
                        ready = c;
                    } else {
                        pending.push_back((at, c));
                    }
                } else {
                    ready = ready.min(c);
                    pending.iter_mut().for_each(|p| p.1 = p.1.min(c));
                }
                allocated = c;
            }
        }
        trace.ready.push(ready);
        trace.allocated.push(allocated);
    }
    trace
}

/// The oracle: exactly the whole units each interval's demand needs, in
/// place when it arrives.
pub fn oracle(demand: &[f64], unit: f64, min_units: f64) -> Vec<f64> {
    demand
        .iter()
        .map(|&d| ((d / unit - 1e-9).ceil().max(min_units)) * unit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provision::controller::{LeadTime, Limits};
    use crate::provision::policy::{Predictive, Reactive};
    use shadow_api::provision::Resource;

    fn controller(policy: Box<dyn super::super::policy::Policy>, ttr: f64) -> Controller {
        let limits = Limits {
            grace_s: 0.0,
            cooldown_up_s: 0.0,
            max_step: 10.0,
            ..Limits::default()
        };
        Controller::new(
            "t",
            Resource::Replicas,
            policy,
            limits,
            LeadTime::new(ttr),
            300.0,
            0,
        )
    }

    /// A step from 2 to 8 units at interval 20.
    fn ramp() -> Vec<f64> {
        (0..40).map(|i| if i < 20 { 2.0 } else { 8.0 }).collect()
    }

    #[test]
    fn reactive_lags_a_step_by_the_time_to_ready_and_the_oracle_does_not() {
        let d = ramp();
        let mut c = controller(Box::new(Reactive::default()), 300.0);
        let t = replay(&mut c, &d, 0, 300, 3.0, 300.0, |_| None);
        // Demand at 20 is seen at 21, ready at 22: two intervals short.
        assert!(
            t.ready[20] < 8.0 && t.ready[21] < 8.0 && t.ready[22] >= 8.0,
            "{:?}",
            &t.ready[18..24]
        );
        let s = score(&d, &t.ready, &t.allocated, 300, 1.0, 1);
        assert!((s.under_time_pct - 200.0 / 39.0).abs() < 1e-9, "{s:?}");
        let o = oracle(&d, 1.0, 1.0);
        let so = score(&d, &o, &o, 300, 1.0, 1);
        assert_eq!((so.under_time_pct, so.slack_pct), (0.0, 0.0));
    }

    #[test]
    fn a_forecast_that_sees_the_step_has_capacity_ready_for_it() {
        let d = ramp();
        let mut c = controller(Box::new(Predictive::default()), 300.0);
        // A perfect forecast: the demand that will come.
        let dd = d.clone();
        let t = replay(&mut c, &d, 0, 300, 3.0, 300.0, |i| {
            let future: Vec<f64> = dd[i..(i + 12).min(dd.len())].to_vec();
            Some(Forecast {
                start: 300 * i as i64,
                step: 300,
                p10: future.clone(),
                p50: future.clone(),
                p90: future,
            })
        });
        let s = score(&d, &t.ready, &t.allocated, 300, 1.0, 1);
        assert_eq!(s.under_time_pct, 0.0, "{:?}", &t.ready[16..24]);
        assert!(
            t.allocated[19] >= 8.0,
            "scaled before the step: {:?}",
            &t.allocated[16..24]
        );
    }
}
