//! `shadow-bench regime`: does the forecast survive a regime change, and
//! does the guard stay out of the way on ordinary days?
//!
//! On every `timestamp,value` file under the data directory (real series,
//! nothing synthetic but the splice):
//! - **false shifts**: at every hour of the last days, would the regime
//!   guard fire on the real, unmodified series? Reported as firings per
//!   day of origins, with the MASE of the served forecast against the
//!   models' own at those origins (a firing that helps is not false).
//! - **spliced changes**: a saturation (pinned just under the series' own
//!   maximum, with its own jitter scaled down) and a level shift (+3x the
//!   P10-P90 range) spliced in 1 h, 3 h and 12 h before the test day. The
//!   forecaster (classical candidates; the LSTM would multiply the run time
//!   and is not what follows a level) is trained on the history before the
//!   test day and scored against the post-shift truth, on the scale of the
//!   seasonal naive MAE before the shift: the served forecast, and the
//!   models alone (what shadow did before the guard).

use std::{fmt::Write as _, path::Path, time::Instant};

use anyhow::{Context, Result, bail};
use shadow_forecast::{
    Candidate, ForecasterConfig, GridPolicy, Input, Series, forecaster, metrics, regime,
};

struct Case {
    rel: String,
    series: Series,
    season: usize,
    horizon: usize,
}

fn load(data: &Path) -> Result<Vec<Case>> {
    let mut files = Vec::new();
    walk(data, &mut files)?;
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(data)
            .unwrap_or(&path)
            .display()
            .to_string();
        let head = std::fs::read_to_string(&path)?;
        // Arrival traces (one row per request) are not a metric series.
        if head.starts_with("TIMESTAMP,ContextTokens") {
            continue;
        }
        let policy = GridPolicy {
            snap_to_grid: true,
            ..GridPolicy::default()
        };
        let series = match Series::read_csv(&path, policy) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("  {rel}: skipped: {e}");
                continue;
            }
        };
        let day = series.steps_per_day();
        if series.len() < 5 * day {
            eprintln!("  {rel}: skipped: under 5 days");
            continue;
        }
        cases.push(Case {
            rel,
            season: day,
            horizon: day,
            series,
        });
    }
    Ok(cases)
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "csv") {
            out.push(p);
        }
    }
    Ok(())
}

fn config(case: &Case) -> ForecasterConfig {
    ForecasterConfig {
        horizon: case.horizon,
        season: Some(case.season),
        candidates: vec![
            Candidate::SeasonalNaive,
            Candidate::Ets,
            Candidate::Damped,
            Candidate::Mstl,
            Candidate::LastLevel,
        ],
        ..ForecasterConfig::default()
    }
}

fn input<'a>(s: &'a Series, values: &'a [f64]) -> Input<'a> {
    Input {
        name: &s.name,
        values,
        start: s.start,
        step: s.step,
        related: None,
        weights: None,
    }
}

#[derive(Default)]
struct Spliced {
    kind: &'static str,
    before_h: f64,
    served: f64,
    models: f64,
    named: bool,
}

struct FalseShifts {
    origins: usize,
    fired: usize,
    /// Mean MASE over the firings: served, models alone.
    served: f64,
    models: f64,
}

pub fn run(data: &Path, report: &Path, days: usize) -> Result<()> {
    let cases = load(data)?;
    if cases.is_empty() {
        bail!("no series of 5 days or more under {}", data.display());
    }
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        eprintln!("[{}/{}] {}", i + 1, cases.len(), case.rel);
        let fs = match false_shifts(case, days) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{} false shifts: {e:#}", case.rel));
                continue;
            }
        };
        let mut spliced = Vec::new();
        for kind in ["saturation", "level shift"] {
            for hours in [1.0, 3.0, 12.0] {
                let r = match splice(case, kind, hours) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("  {kind} {hours} h before: failed: {e:#}");
                        failures.push(format!("{} {kind} {hours} h: {e:#}", case.rel));
                        continue;
                    }
                };
                eprintln!(
                    "  {kind} {hours} h before: served MASE {:.3}, models alone {:.3}",
                    r.served, r.models
                );
                spliced.push(r);
            }
        }
        rows.push((case, fs, spliced));
    }
    let mut s = String::from("# Regime changes: level shifts and saturation\n\n");
    let _ = writeln!(
        s,
        "Command: `cargo run --release -p shadow-bench -- regime --data {} --days {days}`. \
         Took {:.0} s on {} CPUs. See bench/src/regime.rs for the method.\n",
        data.display(),
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    s.push_str(
        "MASE is against the post-shift truth on the test day, scaled by the seasonal naive \
         MAE of the history before the shift; below 1 is as good as \"same as yesterday\" \
         on an ordinary day. *served* is what shadow serves (regime guard on); *models* is \
         the selected models alone, as before the guard.\n\n",
    );
    s.push_str("## Spliced changes\n\n| series | change | before test day | served MASE | models MASE | guard fired |\n|---|---|---|---|---|---|\n");
    let (mut served_all, mut models_all, mut worst) =
        (Vec::new(), Vec::new(), (0.0, String::new()));
    for (case, _, spliced) in &rows {
        for r in spliced {
            let _ = writeln!(
                s,
                "| {} | {} | {} h | {:.3} | {:.3} | {} |",
                case.rel,
                r.kind,
                r.before_h,
                r.served,
                r.models,
                if r.named { "yes" } else { "no" }
            );
            served_all.push(r.served);
            models_all.push(r.models);
            if r.served > worst.0 {
                worst = (
                    r.served,
                    format!("{} {} {} h", case.rel, r.kind, r.before_h),
                );
            }
        }
    }
    let geo = |v: &[f64]| (v.iter().map(|x| x.max(1e-3).ln()).sum::<f64>() / v.len() as f64).exp();
    let under = served_all.iter().filter(|&&m| m < 1.0).count();
    let _ = writeln!(
        s,
        "\nGeomean MASE: served {:.3}, models alone {:.3} ({:.1}x). Served below 1: {under} of {}. \
         Worst served: {:.3} ({}).\n",
        geo(&served_all),
        geo(&models_all),
        geo(&models_all) / geo(&served_all),
        served_all.len(),
        worst.0,
        worst.1
    );
    s.push_str("## False shifts on the real series\n\nAn origin every hour over the last days; *fired* is how often the guard replaced the models' forecast on unmodified data, with the mean MASE (next day) of the served and the models' forecasts at those origins.\n\n| series | origins | fired | per day | served MASE when fired | models MASE when fired |\n|---|---|---|---|---|---|\n");
    let (mut total_o, mut total_f) = (0, 0);
    for (case, fs, _) in &rows {
        total_o += fs.origins;
        total_f += fs.fired;
        let per_day = fs.fired as f64 / (fs.origins as f64 / 24.0);
        let (a, b) = if fs.fired > 0 {
            (format!("{:.3}", fs.served), format!("{:.3}", fs.models))
        } else {
            ("-".into(), "-".into())
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {per_day:.2} | {a} | {b} |",
            case.rel, fs.origins, fs.fired
        );
    }
    let _ = writeln!(
        s,
        "\nIn all: {total_f} firings at {total_o} hourly origins ({:.2} per day).",
        total_f as f64 / (total_o as f64 / 24.0)
    );
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures ({})\n", failures.len());
        for f in &failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    std::fs::write(report, &s).with_context(|| format!("writing {}", report.display()))?;
    print!("{s}");
    eprintln!("report: {}", report.display());
    Ok(())
}

/// Hourly origins over the last `days` days (each with a whole next day).
fn false_shifts(case: &Case, days: usize) -> Result<FalseShifts> {
    let y = &case.series.values;
    let hour = (3600 / case.series.step).max(1) as usize;
    let cfg = config(case);
    let last = y.len() - case.horizon;
    let first = last
        .saturating_sub(days * case.season)
        .max(3 * case.season + 1);
    let mut out = FalseShifts {
        origins: 0,
        fired: 0,
        served: 0.0,
        models: 0.0,
    };
    for o in (first..=last).step_by(hour) {
        out.origins += 1;
        // Training is needed only where the detector fires.
        if regime::detect(&y[..o], case.season, &cfg.regime).is_none() {
            continue;
        }
        let head = input(&case.series, &y[..o]);
        let scored = forecaster::train(&head, &cfg, &mut |_| {}).and_then(|model| {
            let (served, shift) = model.forecast_explained(&head, case.horizon)?;
            let models = model.models_forecast(&head, case.horizon)?;
            Ok((served, shift, models))
        });
        let Ok((served, shift, models)) = scored else {
            continue;
        };
        // The guard leaves models alone that already follow the level.
        if shift.is_none() {
            continue;
        }
        out.fired += 1;
        let truth = &y[o..o + case.horizon];
        let scale = metrics::naive_scale(&y[..o], case.season);
        out.served += metrics::mase(truth, &served.p50, scale);
        out.models += metrics::mase(truth, &models.p50, scale);
    }
    if out.fired > 0 {
        out.served /= out.fired as f64;
        out.models /= out.fired as f64;
    }
    Ok(out)
}

fn splice(case: &Case, kind: &'static str, hours: f64) -> Result<Spliced> {
    let real = &case.series.values;
    let mut y = real.clone();
    let origin = y.len() - case.horizon;
    let back = (hours * 3600.0 / case.series.step as f64).round() as usize;
    let at = origin - back;
    let mut sorted = real[..at].to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    let range = (q(0.9) - q(0.1)).max(1e-9);
    match kind {
        "saturation" => {
            let ceiling = q(1.0);
            for t in at..y.len() {
                y[t] = ceiling + (real[t] - real[t - 1]).clamp(-range, range) * 0.05;
            }
        }
        _ => {
            for v in &mut y[at..] {
                *v += 3.0 * range;
            }
        }
    }
    let head = input(&case.series, &y[..origin]);
    let model = forecaster::train(&head, &config(case), &mut |_| {})?;
    let (served, shift) = model.forecast_explained(&head, case.horizon)?;
    let models = model.models_forecast(&head, case.horizon)?;
    let truth = &y[origin..];
    let scale = metrics::naive_scale(&y[..at], case.season);
    Ok(Spliced {
        kind,
        before_h: hours,
        served: metrics::mase(truth, &served.p50, scale),
        models: metrics::mase(truth, &models.p50, scale),
        named: shift.is_some(),
    })
}
