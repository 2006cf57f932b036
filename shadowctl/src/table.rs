//! `shadowctl forecast`'s tables: a forecast, every metric's state, the
//! anomaly events, a regression, the failure probabilities. Times are UTC, as the CSV files and the API have them.

use std::fmt::Write as _;

use shadow_api::{
    forecast::{AnomalyEvent, ForecastAnswer, MetricStatus, Regression},
    predict::{LevelEvent, PredictAnswer},
    time::{format_ahead, format_timestamp},
};

/// A forecast as a table, under a line with the model and why.
pub fn render_forecast(a: &ForecastAnswer) -> String {
    let mut out = format!("{}: model {} ({})\n", a.metric, a.model, a.reason);
    let _ = writeln!(
        out,
        "{:<19}  {:>6}  {:>12}  {:>12}  {:>12}",
        "TIME (UTC)", "AHEAD", "P10", "P50", "P90"
    );
    for p in &a.points {
        let _ = writeln!(
            out,
            "{:<19}  {:>6}  {:>12}  {:>12}  {:>12}",
            format_timestamp(p.timeframe.at),
            format_ahead(p.timeframe.ahead),
            num(p.confidence_interval.lower),
            num(p.predicted_value),
            num(p.confidence_interval.upper)
        );
    }
    out
}

/// Every metric's state as a table.
pub fn render_status(all: &[MetricStatus]) -> String {
    let mut out = format!(
        "{:<34} {:<10} {:<28} {:>11} {:<19}  ANOMALY\n",
        "METRIC", "STATUS", "MODEL", "POINTS", "TRAINED UNTIL"
    );
    for s in all {
        let status = serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<34} {:<10} {:<28} {:>11} {:<19}  {}",
            s.metric,
            status,
            s.model.as_deref().unwrap_or("-"),
            format!("{}/{}", s.points, s.need),
            s.trained_until.map_or("-".into(), format_timestamp),
            if s.anomaly {
                format!("yes ({:.2})", s.anomaly_score)
            } else {
                format!("no ({} seen)", s.anomalies)
            }
        );
        if let Some(e) = &s.error {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

/// Anomaly events, one a line.
pub fn render_events(events: &[AnomalyEvent]) -> String {
    if events.is_empty() {
        return "no anomalies seen\n".into();
    }
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{} {:<32} {} .. {} ({} points{}): peak {} at {}, expected {} .. {}",
            if e.open { "OPEN " } else { "ended" },
            e.metric,
            format_timestamp(e.start),
            format_timestamp(e.end),
            e.points,
            if e.open { ", ongoing" } else { "" },
            num(e.peak_value),
            format_timestamp(e.peak_at),
            num(e.expected[0]),
            num(e.expected[2])
        );
    }
    out
}

/// A regression: the line with its standard errors, then the predictions.
pub fn render_regression(r: &Regression) -> String {
    let mut out = format!(
        "{y} = {a} (± {ase}) + {b} (± {bse}) × {on}\n\
         {n} samples, R² {r2:.3}, residual sd {sd}; {on} seen from {lo} to {hi}\n",
        y = r.y,
        on = r.on,
        a = num(r.intercept),
        ase = num(r.intercept_se),
        b = num(r.slope),
        bse = num(r.slope_se),
        n = r.n,
        r2 = r.r_squared,
        sd = num(r.residual_sd),
        lo = num(r.on_min),
        hi = num(r.on_max),
    );
    let _ = writeln!(
        out,
        "{:>14}  {:>12}  {:>12}  {:>12}",
        r.on, "P10", "P50", "P90"
    );
    for p in &r.at {
        let _ = writeln!(
            out,
            "{:>14}  {:>12}  {:>12}  {:>12}{}",
            num(p.on),
            num(p.p10),
            num(p.p50),
            num(p.p90),
            if p.extrapolated {
                "  (outside what was seen)"
            } else {
                ""
            }
        );
    }
    out
}

/// Failure probabilities: one line per scope, then its top three signals.
pub fn render_predict(a: &PredictAnswer) -> String {
    let t = &a.thresholds;
    let mut out = format!(
        "{} at {} (warn {}, stage {}, cutover {}; learnt from {} failures)\n",
        a.server_id,
        format_timestamp(a.at),
        t.warn,
        t.stage,
        t.cutover,
        a.learnt_from
    );
    let _ = writeln!(
        out,
        "{:<8} {:<24} {:>9}  {:<8} WITHIN",
        "SCOPE", "NAME", "P(FAIL)", "LEVEL"
    );
    for s in &a.scopes {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:>8.1}%  {:<8} {}",
            s.scope,
            s.name,
            100.0 * s.probability,
            s.level.name(),
            format_ahead(s.horizon_s)
        );
        for c in s.signals.iter().take(3) {
            let _ = writeln!(
                out,
                "  {:<11} +{:.2} log-odds  {}",
                c.signal, c.log_odds, c.detail
            );
        }
    }
    out
}

/// Level changes, one a line.
pub fn render_level_events(events: &[LevelEvent]) -> String {
    if events.is_empty() {
        return "no level changes seen\n".into();
    }
    let mut out = String::new();
    for e in events {
        let _ = writeln!(
            out,
            "{} {:<8} {:<24} {} -> {} ({:.1}%): {}",
            format_timestamp(e.at),
            e.scope,
            e.name,
            e.from.name(),
            e.to.name(),
            100.0 * e.probability,
            e.reason
        );
    }
    out
}

/// Four significant digits or so, whatever the scale (utilisation ratios
/// and bytes per second share the table).
fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 1e5 => format!("{v:.0}"),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.3}"),
        _ => format!("{v:.4}"),
    }
}
