use super::*;
use crate::provision::policy::{Predictive, Reactive, Seed};

fn flat(start: i64, p90: f64, n: usize) -> Forecast {
    Forecast {
        start,
        step: 60,
        p10: vec![p90 * 0.5; n],
        p50: vec![p90 * 0.8; n],
        p90: vec![p90; n],
    }
}

/// A predictive loop started at 0 with no grace, learnt lead 300 s.
fn predictive(limits: Limits) -> Controller {
    Controller::new(
        "web",
        Resource::Replicas,
        Box::new(Predictive::default()),
        limits,
        LeadTime::new(300.0),
        60.0,
        0,
    )
}

fn no_grace() -> Limits {
    Limits {
        grace_s: 0.0,
        ..Limits::default()
    }
}

#[test]
fn a_forecast_rise_within_the_lead_time_scales_up_before_demand_does() {
    let mut c = predictive(no_grace());
    let f = flat(1060, 7.2, 30);
    let step = c.decide(1000, 4.0, 2.0, Some(&f));
    assert_eq!(step.apply, Some(8.0), "{:?}", step.decision);
    assert_eq!(step.decision.basis, Basis::Forecast);
    assert_eq!(step.decision.forecast, Some(7.2));
    assert_eq!(step.decision.quantile, Some(0.9));
    assert_eq!(step.decision.lead_s, 300.0);
    assert_eq!(step.decision.outcome, Outcome::Planned);
}

#[test]
fn bounds_and_the_largest_step_hold() {
    let limits = Limits {
        max: 6.0,
        max_step: 0.25,
        ..no_grace()
    };
    let mut c = predictive(limits);
    let f = flat(1060, 50.0, 30);
    // 4 + 25 % is 5: one step at a time.
    let step = c.decide(1000, 4.0, 2.0, Some(&f));
    assert_eq!(step.apply, Some(5.0));
    assert!(
        step.decision.reason.contains("step"),
        "{}",
        step.decision.reason
    );
    // From 5, one step would be 7 (rounded up), but max is 6.
    let step = c.decide(2000, 5.0, 2.0, Some(&f));
    assert_eq!(step.apply, Some(6.0));
    assert!(
        step.decision.reason.contains("bounded"),
        "{}",
        step.decision.reason
    );
    // Below min: a dying demand still leaves min.
    let mut c = predictive(Limits {
        min: 3.0,
        ..no_grace()
    });
    let step = c.decide(1000, 4.0, 0.0, Some(&flat(1060, 0.1, 30)));
    assert_eq!(step.apply, Some(3.0));
}

#[test]
fn no_scale_in_on_the_forecast_alone() {
    // The forecast says demand will vanish; actuals need 9 / 0.9 = 10.
    let mut c = predictive(no_grace());
    let step = c.decide(1000, 10.0, 9.0, Some(&flat(1060, 1.0, 30)));
    assert_eq!((step.apply, step.decision.desired), (None, 10.0));
    // A policy that proposes less than actuals need (the seed rule on a
    // forecast P50 of 0.8) is held by the controller.
    let mut c = Controller::new(
        "web",
        Resource::Replicas,
        Box::new(Seed::default()),
        no_grace(),
        LeadTime::new(300.0),
        60.0,
        0,
    );
    let step = c.decide(1000, 10.0, 9.0, Some(&flat(1060, 1.0, 30)));
    assert_eq!(step.decision.proposed, 5.5);
    assert_eq!(step.apply, None);
    assert!(
        matches!(&step.decision.outcome, Outcome::Held(r) if r.contains("forecast alone")),
        "{:?}",
        step.decision.outcome
    );
    // Actuals fall too: now it may scale in, as far as actuals allow.
    let mut c = predictive(no_grace());
    let step = c.decide(1000, 10.0, 4.5, Some(&flat(1060, 1.0, 30)));
    assert_eq!(step.apply, Some(5.0));
}

#[test]
fn cooldowns_follow_a_change() {
    // No scale-down window: the cooldown alone holds.
    let mut c = Controller::new(
        "web",
        Resource::Replicas,
        Box::new(Predictive {
            stabilisation_s: 0.0,
            ..Predictive::default()
        }),
        no_grace(),
        LeadTime::new(300.0),
        60.0,
        0,
    );
    let mut step = c.decide(1000, 4.0, 2.0, Some(&flat(1060, 8.0, 30)));
    c.applied(&mut step, 30.0);
    // Up again 30 s later: inside the 60 s up cooldown.
    let step = c.decide(1030, 8.0, 2.0, Some(&flat(1090, 12.0, 30)));
    assert!(matches!(&step.decision.outcome, Outcome::Held(r) if r.contains("cooldown")));
    let step = c.decide(1061, 8.0, 2.0, Some(&flat(1121, 12.0, 30)));
    assert_eq!(step.apply, Some(12.0));
    // Down 200 s after the change: inside the 300 s down cooldown.
    let step = c.decide(1200, 8.0, 1.0, Some(&flat(1260, 1.0, 30)));
    assert!(
        matches!(&step.decision.outcome, Outcome::Held(r) if r.contains("scale-down cooldown"))
    );
    let step = c.decide(1301, 8.0, 1.0, Some(&flat(1361, 1.0, 30)));
    assert_eq!(step.apply, Some(2.0));
}

#[test]
fn the_start_up_grace_shows_decisions_without_applying_them() {
    let mut c = predictive(Limits::default());
    let step = c.decide(60, 4.0, 2.0, Some(&flat(120, 8.0, 30)));
    assert!(matches!(&step.decision.outcome, Outcome::Held(r) if r.contains("grace")));
    assert_eq!(
        step.decision.desired, 8.0,
        "the plan is still computed and shown"
    );
    let step = c.decide(121, 4.0, 2.0, Some(&flat(181, 8.0, 30)));
    assert_eq!(step.apply, Some(8.0));
}

#[test]
fn a_backend_failure_keeps_the_allocation_and_backs_off() {
    let mut c = predictive(no_grace());
    let f = flat(1060, 8.0, 30);
    let mut step = c.decide(1000, 4.0, 2.0, Some(&f));
    c.failed(&mut step, "write cpu.max: permission denied".into());
    assert_eq!(c.failures(), (1, Some(1030)));
    assert!(matches!(step.decision.outcome, Outcome::Failed(_)));
    // Still 4 in effect: the retry waits 30 s, then 60 s after a second failure.
    let step = c.decide(1010, 4.0, 2.0, Some(&f));
    assert!(matches!(&step.decision.outcome, Outcome::Held(r) if r.contains("retry")));
    let mut step = c.decide(1031, 4.0, 2.0, Some(&f));
    assert_eq!(step.apply, Some(8.0));
    c.failed(&mut step, "again".into());
    assert_eq!(c.failures(), (2, Some(1091)));
    let mut step = c.decide(1092, 4.0, 2.0, Some(&f));
    c.applied(&mut step, 12.0);
    assert_eq!(c.failures(), (0, None));
}

#[test]
fn the_lead_time_is_the_measured_time_to_ready() {
    let mut lead = LeadTime::new(300.0);
    assert_eq!((lead.median_s(), lead.p90_s()), (300.0, 300.0));
    for s in [10.0, 12.0, 11.0, 13.0, 40.0] {
        lead.record(s);
    }
    assert_eq!(lead.median_s(), 12.0);
    assert!(
        lead.p90_s() > 20.0 && lead.p90_s() < 40.0,
        "{}",
        lead.p90_s()
    );
    // A fast backend looks less far ahead: a rise 200 s out is not yet
    // asked for with a 40 s lead, but is with 300 s.
    let mut f = flat(1060, 2.0, 30);
    f.p90[3] = 8.0; // at +240 s
    let mut fast = predictive(no_grace());
    fast.lead = lead;
    assert_eq!(fast.decide(1000, 4.0, 3.6, Some(&f)).apply, None);
    let mut slow = predictive(no_grace());
    assert_eq!(slow.decide(1000, 4.0, 3.6, Some(&f)).apply, Some(8.0));
}

#[test]
fn a_threshold_crossed_within_the_lead_time_queues_capacity() {
    // A reactive loop (no forecast in its rule) with a 75 % alert: the
    // forecast reaching 6 of 8 at +120 s queues 6 / 0.75 = 8 -> 9 (P90 peak 6.5).
    let mut c = Controller::new(
        "web",
        Resource::Replicas,
        Box::new(Reactive::default()),
        no_grace(),
        LeadTime::new(300.0),
        15.0,
        0,
    );
    c.alerts = vec![0.75];
    let mut f = flat(1060, 4.0, 30);
    f.p90[1] = 6.0;
    f.p90[2] = 6.5;
    let step = c.decide(1000, 8.0, 6.0, Some(&f));
    assert_eq!(step.queued.len(), 1);
    assert_eq!(step.queued[0].crossing_at, 1120);
    assert_eq!(step.queued[0].capacity, 9.0);
    assert_eq!(step.apply, Some(9.0));
    assert!(step.decision.reason.contains("pre-provisioning"));
    // Crossing beyond lead + interval: nothing queued.
    let mut f = flat(1060, 4.0, 30);
    f.p90[20] = 7.0;
    assert!(c.decide(1000, 8.0, 6.0, Some(&f)).queued.is_empty());
}

#[test]
fn limits_that_make_no_sense_are_named() {
    let bad = Limits {
        min: 5.0,
        max: 2.0,
        ..Limits::default()
    };
    assert_eq!(bad.invalid().unwrap().0, "min");
    let bad = Limits {
        granularity: 0.0,
        ..Limits::default()
    };
    assert_eq!(bad.invalid().unwrap().0, "granularity");
    assert!(Limits::default().invalid().is_none());
}

#[test]
fn predictive_scales_down_only_to_the_largest_proposal_of_its_window() {
    let mut c = predictive(Limits {
        cooldown_down_s: 0.0,
        ..no_grace()
    });
    let mut step = c.decide(1000, 4.0, 2.0, Some(&flat(1060, 8.0, 30)));
    assert_eq!(step.apply, Some(8.0));
    c.applied(&mut step, 30.0);
    // The forecast drops at once: 600 s later the 900 s window still holds
    // the 8 it proposed, so one dip in the forecast is not an action.
    let step = c.decide(1600, 8.0, 1.0, Some(&flat(1660, 1.0, 30)));
    assert_eq!(step.apply, None, "{:?}", step.decision);
    // Once the 8 has left the window, down it goes.
    let step = c.decide(1960, 8.0, 1.0, Some(&flat(2020, 1.0, 30)));
    assert_eq!(step.apply, Some(2.0), "{:?}", step.decision);
}
