//! `shadowctl forecast`'s tables: a forecast, every metric's state, the
//! anomaly events. Times are UTC, as the CSV files and the API have them.

use std::fmt::Write as _;

use shadow_api::{
    forecast::{AnomalyEvent, ForecastAnswer, MetricStatus},
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
