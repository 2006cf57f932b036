//! The provisioner's answers as text: the plan, decisions, the pool and
//! a what-if; and failover's status and events.

use std::fmt::Write as _;

use shadow_api::{
    provision::{Decision, Events, Outcome, Plan, Pool, Resource, WhatIf},
    time::format_timestamp,
};

/// Capacity in its resource's unit: cores, MiB, replicas.
fn cap(resource: Resource, v: f64) -> String {
    match resource {
        Resource::Cpu => format!("{v:.2} cores"),
        Resource::Memory => format!("{:.0} MiB", v / 1_048_576.0),
        Resource::Replicas => format!("{v:.0}"),
    }
}

pub fn render_plan(p: &Plan) -> String {
    let mut out = format!(
        "mode {}{}\n",
        p.mode.name(),
        if p.mode.name() == "apply" {
            ""
        } else {
            " (nothing is applied; `mode = \"apply\"` or `shadowctl provision apply` acts)"
        }
    );
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:<10} {:<11} {:>14} {:>14} {:>12}  REASON",
        "TARGET", "RESOURCE", "BACKEND", "POLICY", "CURRENT", "DESIRED", "LEAD P50/P90"
    );
    for r in &p.rows {
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<10} {:<11} {:>14} {:>14} {:>5.0}/{:<5.0}s  {}{}",
            r.target,
            r.resource.name(),
            r.backend,
            r.policy,
            cap(r.resource, r.current),
            cap(r.resource, r.desired),
            r.lead_median_s,
            r.lead_p90_s,
            r.reason,
            match (r.failures, r.retry_at) {
                (0, _) => String::new(),
                (n, Some(at)) =>
                    format!(" [backend failed {n}x, retry at {}]", format_timestamp(at)),
                (n, None) => format!(" [backend failed {n}x]"),
            }
        );
    }
    for q in &p.queued {
        let _ = writeln!(
            out,
            "queued: {} {} {} ahead of {:.0}% at {} ({})",
            q.target,
            q.resource.name(),
            cap(q.resource, q.capacity),
            q.threshold * 100.0,
            format_timestamp(q.crossing_at),
            q.state
        );
    }
    if p.cost_per_hour > 0.0 {
        let _ = writeln!(out, "cost {:.3}/h", p.cost_per_hour);
    }
    out
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Applied { ready_s } => format!("applied (ready in {ready_s:.2}s)"),
        Outcome::Held(why) => format!("held: {why}"),
        Outcome::Failed(e) => format!("FAILED: {e}"),
        other => other.label().to_string(),
    }
}

pub fn render_decisions(ds: &[Decision]) -> String {
    if ds.is_empty() {
        return "no decisions (no loop has a demand sample yet)\n".into();
    }
    let mut out = String::new();
    for d in ds {
        let forecast = match (d.forecast, d.quantile) {
            (Some(v), Some(q)) => format!(", P{:.0} forecast {v:.3}", q * 100.0),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{} {} {}: {} -> {} [{}; demand {:.3}{forecast}; lead {:.0}s] {}: {}",
            format_timestamp(d.time),
            d.target,
            d.resource.name(),
            cap(d.resource, d.current),
            cap(d.resource, d.desired),
            d.policy,
            d.demand,
            d.lead_s,
            outcome(&d.outcome),
            d.reason
        );
    }
    out
}

pub fn render_events(e: &Events) -> String {
    let mut out = render_decisions(&e.events);
    if e.dropped > 0 {
        let _ = writeln!(out, "({} older decisions no longer kept)", e.dropped);
    }
    out
}

pub fn render_pool(p: &Pool) -> String {
    let mut out = format!(
        "{} live units wanted, shadow at {:.0}% of live; cost {:.3}/h\n",
        p.primary_wanted,
        p.shadow_fraction * 100.0,
        p.cost_per_hour
    );
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<12} {:>10} {:>6} {:>8} {:>7}",
        "ZONE", "HEALTH", "CLASS", "COST/UNIT-H", "UNITS", "PRIMARY", "SHADOW"
    );
    for r in &p.rows {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<12} {:>10.3} {:>6} {:>8} {:>7}",
            r.zone,
            if r.healthy { "healthy" } else { "DOWN" },
            r.class,
            r.cost_per_unit_hour,
            r.total,
            r.primary,
            r.shadow
        );
    }
    if let Some(s) = &p.shortfall {
        let _ = writeln!(out, "short: {s}");
    }
    out
}

pub fn render_whatif(w: &WhatIf) -> String {
    let mut out = format!("traffic x{} with capacity x{}", w.traffic, w.scale);
    if let Some(s) = &w.service {
        let _ = write!(out, " for {s}");
    }
    out.push('\n');
    for r in &w.resources {
        let peak = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "{} {}: utilisation P50 peak {:.0}%, P90 peak {:.0}% over {} points ({})",
            r.target,
            r.resource.name(),
            100.0 * peak(&r.utilisation_p50),
            100.0 * peak(&r.utilisation_p90),
            r.utilisation_p90.len(),
            r.method
        );
        for c in &r.crossings {
            let when =
                c.at.map_or_else(|| "not within the horizon".into(), format_timestamp);
            let _ = writeln!(out, "  crosses {:.0}%: {when}", c.threshold * 100.0);
        }
    }
    for p in &w.plan {
        let _ = writeln!(
            out,
            "plan: {} {} {} -> {} ({})",
            p.target,
            p.resource.name(),
            cap(p.resource, p.current),
            cap(p.resource, p.desired),
            p.reason
        );
    }
    let _ = writeln!(
        out,
        "cost {:.3}/h (now {:.3}/h)",
        w.cost_per_hour, w.cost_per_hour_now
    );
    out
}

pub fn render_failover(rows: &[shadow_api::failover::FailoverStatus]) -> String {
    let mut out = format!(
        "{:<14} {:>6} {:<10} {:<15} {:>7} {:<9} {:<9} {:<8} {:>6} {:>6}  REASON\n",
        "SERVICE", "PORT", "PHASE", "CAUSE", "SHADOW%", "PRIMARY", "SHADOW", "LEVEL", "P", "FAILED"
    );
    let health = |ok: bool, fails: u32| {
        if ok {
            "healthy".to_string()
        } else {
            format!("fail x{fails}")
        }
    };
    for r in rows {
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:<10} {:<15} {:>7.1} {:<9} {:<9} {:<8} {:>6} {:>6}  {}",
            r.service,
            r.port,
            r.phase.name(),
            r.cause.map_or("-", |c| c.name()),
            f64::from(r.share) / 100.0,
            health(r.primary_healthy, r.primary_failures),
            health(r.shadow_healthy, r.shadow_failures),
            r.level.name(),
            r.probability.map_or("-".into(), |p| format!("{p:.2}")),
            r.failed_requests,
            r.reason
        );
    }
    out
}

/// One service of `shadowctl failover predict`: its failure probability
/// from `/v1/predict` beside what its failover machine does next.
#[derive(Debug, serde::Serialize)]
pub struct FailoverPrediction<'a> {
    pub service: &'a str,
    pub phase: shadow_api::failover::Phase,
    /// `None`: the failure model has no answer for this service yet.
    pub probability: Option<f64>,
    pub level: shadow_api::predict::Level,
    pub horizon_s: Option<i64>,
    /// The largest contributions first (at most three).
    pub signals: &'a [shadow_api::predict::Contribution],
    pub next: &'a str,
}

/// `predict` is `None` when the agent has no probabilities (predicting
/// off, or before its first interval): each row then has the level the
/// failover machine last saw.
pub fn failover_predictions<'a>(
    predict: Option<&'a shadow_api::predict::PredictAnswer>,
    status: &'a [shadow_api::failover::FailoverStatus],
) -> Vec<FailoverPrediction<'a>> {
    status
        .iter()
        .map(|s| {
            let answer = predict.and_then(|p| {
                p.scopes
                    .iter()
                    .find(|a| a.scope == "service" && a.name == s.service)
            });
            FailoverPrediction {
                service: &s.service,
                phase: s.phase,
                probability: answer.map(|a| a.probability).or(s.probability),
                level: answer.map_or(s.level, |a| a.level),
                horizon_s: answer.map(|a| a.horizon_s),
                signals: answer.map_or(&[][..], |a| &a.signals[..a.signals.len().min(3)]),
                next: &s.next,
            }
        })
        .collect()
}

/// `predict` is the agent's answer, or why there is none.
pub fn render_failover_predictions(
    predict: Result<&shadow_api::predict::PredictAnswer, String>,
    rows: &[FailoverPrediction<'_>],
) -> String {
    let mut out = match predict {
        Ok(p) => format!(
            "thresholds: stage at {:.2}, cut over at {:.2}; learnt from {} failures\n",
            p.thresholds.stage, p.thresholds.cutover, p.learnt_from
        ),
        Err(why) => format!("no failure probabilities: {why}\n"),
    };
    if rows.is_empty() {
        out.push_str("no failover profiles: add [[failover.service]] to the agent's config\n");
    }
    for r in rows {
        let _ = writeln!(
            out,
            "\n{}  phase {}  level {}  P(fail{}) {}",
            r.service,
            r.phase.name(),
            r.level.name(),
            r.horizon_s
                .map_or(String::new(), |h| format!(" in {}m", h / 60)),
            r.probability.map_or("-".into(), |p| format!("{p:.3}")),
        );
        for c in r.signals {
            let _ = writeln!(out, "  {:+.2}  {}: {}", c.log_odds, c.signal, c.detail);
        }
        let _ = writeln!(out, "  next: {}", r.next);
    }
    out
}

pub fn render_failover_events(events: &[shadow_api::failover::FailoverEvent]) -> String {
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("no failover transitions yet\n");
    }
    for e in events {
        let _ = writeln!(
            out,
            "{} {} {}: {} -> {}{}{}: {}",
            format_timestamp((e.at_ms / 1000) as i64),
            e.service,
            e.action,
            e.from.name(),
            e.to.name(),
            e.took_us.map_or(String::new(), |t| format!(" in {t} us")),
            if e.refused { " (nothing changed)" } else { "" },
            e.reason
        );
    }
    out
}
