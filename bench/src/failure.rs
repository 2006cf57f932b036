//! `shadow-bench failure`: the failure probability on NAB's labelled
//! series: lead time before each labelled failure, false alarms per week at
//! each threshold, and calibration (a reliability curve).
//!
//! Every NAB file is streamed point by point. The signals a bare metric
//! series can give are computed causally at each point:
//! - `anomaly`: the streaming detector's score ([`shadow_forecast::detect`]);
//! - `exhaustion`: seconds until the P90 of a last-level forecast (refitted
//!   every hour on the last four days) reaches 98 % of capacity, for
//!   utilisation series (capacity 100 %); none for the others;
//! - `spike`: the value over the previous step's P90.
//!
//! Labels: a NAB window marks a failure; its labelled moment is the
//! window's centre (NAB centres each window on its label). A moment is
//! positive when a failure follows within the horizon. The model is the
//! prior, then learnt leave-one-file-out: for each file, [`FailureModel::
//! learn`] on the other files' moments, scored on this one, so no file is
//! scored by a model that saw its labels. The reliability curve pools every
//! file's held-out predictions.
//!
//! Lead time is reported against the window's start and its centre (a
//! positive lead is an alarm before it); the alarm is the first crossing of
//! the threshold from a day before the window's start to its end. False
//! alarms are rising crossings elsewhere (more than one horizon before any
//! window and not inside one), per week of scored data.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use shadow_forecast::{
    GridPolicy, Input, Model, Series,
    baseline::LastLevel,
    detect::{Detector, DetectorSettings},
    failure::{self, Example, FailureModel, Signals, Thresholds},
    series::parse_timestamp,
};

struct File {
    rel: String,
    /// `(start, end)` unix seconds.
    windows: Vec<(i64, i64)>,
    /// Per point: unix seconds and features.
    moments: Vec<(i64, [f64; failure::SIGNALS.len()])>,
}

fn windows(data: &Path) -> Result<BTreeMap<String, Vec<(i64, i64)>>> {
    let path = data.join("nab/anomaly_windows.json");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let mut out = BTreeMap::new();
    for (file, ws) in v.as_object().context("windows: not an object")? {
        let mut list = Vec::new();
        for w in ws.as_array().context("windows: not a list")? {
            let t = |i: usize| {
                w[i].as_str()
                    .and_then(parse_timestamp)
                    .with_context(|| format!("{file}: bad window {w}"))
            };
            list.push((t(0)?, t(1)?));
        }
        out.insert(file.clone(), list);
    }
    Ok(out)
}

/// Streams one file and computes its features at every point.
fn signals(
    series: &Series,
    rel: &str,
    horizon_s: i64,
) -> Vec<(i64, [f64; failure::SIGNALS.len()])> {
    let utilisation = rel.contains("cpu_utilization");
    let mut detector = Detector::new(DetectorSettings::default());
    let steps = (horizon_s / series.step).max(1) as usize;
    let refit = (3600 / series.step).max(1) as usize;
    let model = LastLevel::new(series.steps_per_day());
    let mut p90_next = f64::INFINITY;
    let mut exhaustion: Option<f64> = None;
    let mut out = Vec::with_capacity(series.len());
    for i in 0..series.len() {
        let t = series.start + i as i64 * series.step;
        let v = series.values[i];
        let anomaly = detector.update(t, v);
        let spike = if p90_next.is_finite() && p90_next > 0.0 && v > p90_next {
            v / p90_next - 1.0
        } else {
            0.0
        };
        if i >= 50 && i % refit == 0 {
            let from = (i + 1).saturating_sub(4 * series.steps_per_day());
            let input = Input {
                name: rel,
                values: &series.values[from..=i],
                start: t - (i - from) as i64 * series.step,
                step: series.step,
                related: None,
                weights: None,
            };
            if let Ok(f) = model.forecast(&input, steps) {
                p90_next = f.p90[0];
                exhaustion = utilisation
                    .then(|| f.p90.iter().position(|&p| p >= 98.0))
                    .flatten()
                    .map(|k| ((k + 1) as i64 * series.step) as f64);
            }
        }
        let s = Signals {
            anomaly,
            exhaustion_s: exhaustion,
            spike,
            latency_ratio: 1.0,
            ..Signals::default()
        };
        out.push((t, s.features(horizon_s as f64)));
    }
    out
}

fn examples(f: &File, horizon_s: i64) -> Vec<Example> {
    let centres: Vec<i64> = f.windows.iter().map(|w| (w.0 + w.1) / 2).collect();
    let times: Vec<i64> = f.moments.iter().map(|m| m.0).collect();
    let labels = failure::label(&times, &centres, horizon_s);
    // NAB's probation (the first 15 %) is learning time, not scored.
    let skip = f.moments.len() * 15 / 100;
    f.moments
        .iter()
        .zip(labels)
        .skip(skip)
        .map(|(m, failed)| Example {
            features: m.1,
            failed,
        })
        .collect()
}

struct Alarms {
    /// Per window: (file, lead vs start, lead vs centre), hours; None: missed.
    leads: Vec<(String, Option<(f64, f64)>)>,
    false_alarms: usize,
    weeks: f64,
}

fn alarms(files: &[(&File, Vec<f64>)], threshold: f64, horizon_s: i64) -> Alarms {
    let mut a = Alarms {
        leads: Vec::new(),
        false_alarms: 0,
        weeks: 0.0,
    };
    for (f, p) in files {
        let skip = f.moments.len() * 15 / 100;
        let scored = &f.moments[skip..];
        let probs = &p[skip..];
        if let (Some(first), Some(last)) = (scored.first(), scored.last()) {
            a.weeks += (last.0 - first.0) as f64 / (7.0 * 86_400.0);
        }
        for &(start, end) in &f.windows {
            let centre = (start + end) / 2;
            let first = scored
                .iter()
                .zip(probs.iter())
                .find(|(m, p)| m.0 >= start - 86_400 && m.0 <= end && **p >= threshold);
            a.leads.push((
                f.rel.clone(),
                first.map(|(m, _)| {
                    (
                        (start - m.0) as f64 / 3600.0,
                        (centre - m.0) as f64 / 3600.0,
                    )
                }),
            ));
        }
        let near = |t: i64| {
            f.windows
                .iter()
                .any(|&(s, e)| t >= s - 86_400.max(horizon_s) && t <= e)
        };
        for k in 1..scored.len() {
            if probs[k] >= threshold && probs[k - 1] < threshold && !near(scored[k].0) {
                a.false_alarms += 1;
            }
        }
    }
    a
}

pub fn run(data: &Path, report: &Path, horizon_s: i64) -> Result<()> {
    let started = std::time::Instant::now();
    let labelled = windows(data)?;
    let mut files = Vec::new();
    for (rel, ws) in &labelled {
        let path = data.join("nab").join(rel);
        if !path.exists() {
            continue;
        }
        let policy = GridPolicy {
            snap_to_grid: true,
            ..GridPolicy::default()
        };
        let series = Series::read_csv(&path, policy).with_context(|| path.display().to_string())?;
        let t = std::time::Instant::now();
        let moments = signals(&series, rel, horizon_s);
        eprintln!(
            "  {rel}: {} points, {} windows ({:.1} s)",
            moments.len(),
            ws.len(),
            t.elapsed().as_secs_f64()
        );
        files.push(File {
            rel: rel.clone(),
            windows: ws.clone(),
            moments,
        });
    }
    let prior = FailureModel {
        horizon_s: horizon_s as f64,
        ..FailureModel::default()
    };
    let all: Vec<Vec<Example>> = files.iter().map(|f| examples(f, horizon_s)).collect();
    // Leave one file out: learn on the others, predict this one.
    let mut learnt_probs = Vec::new();
    let mut pooled_learnt = Vec::new();
    let mut pooled_prior = Vec::new();
    let mut weights = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut m = prior.clone();
        let train: Vec<Example> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, e)| e.iter().copied())
            .collect();
        m.learn(&train);
        weights.push(m.weights);
        let p: Vec<f64> = f.moments.iter().map(|x| m.probability(&x.1)).collect();
        for e in &all[i] {
            pooled_learnt.push((m.probability(&e.features), e.failed));
            pooled_prior.push((prior.probability(&e.features), e.failed));
        }
        learnt_probs.push((f, p));
    }
    let prior_probs: Vec<(&File, Vec<f64>)> = files
        .iter()
        .map(|f| {
            (
                f,
                f.moments.iter().map(|x| prior.probability(&x.1)).collect(),
            )
        })
        .collect();

    let mut s = String::from("# Failure probability on NAB's labelled series\n\n");
    let _ = writeln!(
        s,
        "Command: `cargo run -p shadow-bench -- failure --data {} --horizon {}` ({:.0} s). \
         Horizon {} min. {} files, {} labelled windows, {} scored moments, {} of them positive \
         (a failure follows within the horizon).\n",
        data.display(),
        horizon_s,
        started.elapsed().as_secs_f64(),
        horizon_s / 60,
        files.len(),
        files.iter().map(|f| f.windows.len()).sum::<usize>(),
        pooled_prior.len(),
        pooled_prior.iter().filter(|p| p.1).count()
    );
    s.push_str("Signals a bare metric series gives: the streaming anomaly score, exhaustion of a utilisation's capacity from a last-level P90, and spikes over the previous P90. The live-traffic, sensor, block-I/O and incident signals need an agent and are 0 here.\n\n");
    let t = Thresholds::default();
    for (label, probs) in [
        ("prior", &prior_probs),
        ("learnt (leave one file out)", &learnt_probs),
    ] {
        let _ = writeln!(s, "## Lead times and false alarms: {label}\n");
        s.push_str("| threshold | caught | median lead vs start (h) | median lead vs centre (h) | false alarms / week |\n|---|---|---|---|---|\n");
        for (name, thr) in [("warn", t.warn), ("stage", t.stage), ("cutover", t.cutover)] {
            let a = alarms(probs, thr, horizon_s);
            let caught: Vec<(f64, f64)> = a.leads.iter().filter_map(|l| l.1).collect();
            let med = |k: usize| {
                let mut v: Vec<f64> = caught
                    .iter()
                    .map(|c| if k == 0 { c.0 } else { c.1 })
                    .collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).map_or("-".into(), |m| format!("{m:.1}"))
            };
            let _ = writeln!(
                s,
                "| {name} {thr} | {}/{} | {} | {} | {:.2} |",
                caught.len(),
                a.leads.len(),
                med(0),
                med(1),
                a.false_alarms as f64 / a.weeks.max(1e-9)
            );
        }
        s.push('\n');
    }
    s.push_str("## Lead time per failure window (realKnownCause, learnt model, stage threshold)\n\n| file | window | lead vs start (h) | lead vs centre (h) |\n|---|---|---|---|\n");
    let a = alarms(&learnt_probs, t.stage, horizon_s);
    let mut k = 0;
    for f in &files {
        for w in &f.windows {
            let lead = &a.leads[k];
            k += 1;
            if !f.rel.starts_with("realKnownCause") {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                f.rel,
                shadow_forecast::series::format_timestamp(w.0),
                lead.1.map_or("missed".into(), |l| format!("{:.1}", l.0)),
                lead.1.map_or("missed".into(), |l| format!("{:.1}", l.1)),
            );
        }
    }
    for (label, pooled) in [("prior", &pooled_prior), ("learnt", &pooled_learnt)] {
        let (curve, brier, ece) = failure::reliability(pooled, 10);
        let base = pooled.iter().filter(|p| p.1).count() as f64 / pooled.len().max(1) as f64;
        let _ = writeln!(
            s,
            "\n## Reliability: {label}\n\nBrier {brier:.5} (the base rate alone: {:.5}), expected calibration error {ece:.4}.\n\n| predicted | moments | mean predicted | observed |\n|---|---|---|---|",
            base * (1.0 - base)
        );
        for b in curve {
            let _ = writeln!(
                s,
                "| {:.1}-{:.1} | {} | {:.4} | {:.4} |",
                b.lo, b.hi, b.count, b.mean_predicted, b.observed
            );
        }
    }
    s.push_str("\n## Learnt weights (mean over the leave-one-out fits)\n\n| signal | prior | learnt |\n|---|---|---|\n");
    for (j, name) in failure::SIGNALS.iter().enumerate() {
        let mean = weights.iter().map(|w| w[j]).sum::<f64>() / weights.len().max(1) as f64;
        let _ = writeln!(s, "| {name} | {:.2} | {mean:.2} |", failure::PRIOR.0[j]);
    }
    std::fs::write(report, &s)?;
    print!("{s}");
    Ok(())
}
