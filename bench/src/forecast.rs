//! Forecast evaluation: a rolling-origin backtest of shadow's forecaster on
//! a directory of real series, side by side with statsforecast and Prophet
//! on the same splits, plus the residual anomaly detector under NAB's
//! scorer. Writes a Markdown report and PNG plots.
//!
//! Protocol (Prophet's `cross_validation` style): horizon H = one day at
//! the series' own step (at most an eighth of the series); the last
//! `folds` windows of H are the test folds, each forecast from everything
//! before it. Two more windows before the first test fold let shadow's
//! selection backtest before its first forecast: at test fold k it chooses
//! and calibrates from folds k-2 and k-1 only, which end where fold k
//! starts, so nothing from the future leaks in.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use shadow_forecast::{
    Candidate, ForecasterConfig, GridPolicy, Input, Model, Series,
    detect::{Detector, DetectorSettings},
    forecaster::{Fold, backtest, combine, select},
    lstm::{LstmConfig, LstmModel},
    metrics,
    model::Forecast,
    series::{format_timestamp, parse_timestamp},
};

use crate::plot;

#[derive(Debug, Clone)]
pub struct Args {
    pub data: PathBuf,
    pub report: PathBuf,
    pub folds: usize,
    /// Only series whose path contains this.
    pub only: Option<String>,
    pub python: bool,
    pub nab_repo: Option<PathBuf>,
    pub epochs: usize,
    /// Bin width (seconds) for request-arrival traces.
    pub arrival_bin: i64,
    pub skip_nab: bool,
    /// statsforecast/Prophet models to run (all when empty).
    pub py_models: Vec<String>,
    /// Only the NAB detector run (its own report section, no backtests).
    pub nab_only: bool,
    /// Only the LSTM timing (its own report, no backtests).
    pub timing_only: bool,
    /// Seconds one statsforecast/Prophet fit may take before it is stopped
    /// and recorded as timed out.
    pub py_fit_timeout: f64,
    /// Earlier baselines.py outputs to read instead of running it.
    pub py_results: Vec<PathBuf>,
}

/// Selection warm-up folds before the first test fold.
const WARMUP: usize = 2;
const PY_MODELS: [&str; 6] = [
    "SeasonalNaive",
    "AutoETS",
    "AutoARIMA",
    "AutoTheta",
    "MSTL",
    "Prophet",
];

struct Case {
    rel: String,
    series: Series,
    horizon: usize,
    season: usize,
    origins: Vec<usize>,
}

/// Per model, the test folds (None where the model failed on a fold).
type Results = BTreeMap<String, Vec<Option<Fold>>>;

pub fn run(args: &Args) -> Result<()> {
    let cases = load_cases(args)?;
    if cases.is_empty() {
        bail!("no series found under {}", args.data.display());
    }
    if args.nab_only {
        let nab = nab_detection(&cases, args)?;
        let mut s = String::from("# Anomaly detector under NAB's scorer\n\n");
        let _ = writeln!(
            s,
            "Command: `cargo xtask bench-forecast --data {}{} -- --nab-only{} --report {}`.\n",
            args.data.display(),
            args.nab_repo
                .as_ref()
                .map_or(String::new(), |r| format!(" --nab-repo {}", r.display())),
            args.only
                .as_ref()
                .map_or(String::new(), |o| format!(" --only {o}")),
            args.report.display()
        );
        render_nab(&mut s, &nab);
        std::fs::write(&args.report, s)
            .with_context(|| format!("writing {}", args.report.display()))?;
        eprintln!("report: {}", args.report.display());
        return Ok(());
    }
    if args.timing_only {
        let mut s = String::from("# LSTM training and serving time\n\n");
        let _ = writeln!(
            s,
            "Command: `shadow-bench forecast --timing-only --data {} --epochs {}`; \
             machine: {} CPUs.\n",
            args.data.display(),
            args.epochs,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        match lstm_timing(&cases, args)? {
            Some(t) => render_timing(&mut s, &t),
            None => s.push_str("No series to time.\n"),
        }
        std::fs::write(&args.report, &s)
            .with_context(|| format!("writing {}", args.report.display()))?;
        print!("{s}");
        eprintln!("report: {}", args.report.display());
        return Ok(());
    }
    let plots = args.report.with_extension("");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let mut all: Vec<(String, Results, BTreeMap<String, String>)> = Vec::new();
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    // The Python baselines run on the other core while ours are evaluated.
    let python = if !args.py_results.is_empty() {
        Some(PythonRun {
            child: None,
            outs: args.py_results.clone(),
        })
    } else if args.python {
        Some(start_python(&cases, &args.py_models, args.py_fit_timeout)?)
    } else {
        None
    };
    for (i, case) in cases.iter().enumerate() {
        eprintln!(
            "[{}/{}] {}: {} points at {} s, horizon {}, season {}",
            i + 1,
            cases.len(),
            case.rel,
            case.series.len(),
            case.series.step,
            case.horizon,
            case.season
        );
        let (results, chosen) = evaluate(case, args, &mut seconds, &plots)?;
        all.push((case.rel.clone(), results, chosen));
    }
    let py_errors = match python {
        Some(py) => finish_python(py, &cases, &mut all, &mut seconds)?,
        None => Vec::new(),
    };
    let timing = lstm_timing(&cases, args)?;
    let nab = if args.skip_nab {
        None
    } else {
        Some(nab_detection(&cases, args)?)
    };
    let report = render(
        args,
        &cases,
        &all,
        &seconds,
        &timing,
        nab.as_ref(),
        &py_errors,
    );
    std::fs::write(&args.report, report)
        .with_context(|| format!("writing {}", args.report.display()))?;
    eprintln!("report: {}", args.report.display());
    Ok(())
}

fn load_cases(args: &Args) -> Result<Vec<Case>> {
    let mut files = Vec::new();
    walk(&args.data, &mut files)?;
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&args.data)
            .unwrap_or(&path)
            .display()
            .to_string();
        if args.only.as_deref().is_some_and(|o| !rel.contains(o)) {
            continue;
        }
        let head = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let series = if head.starts_with("TIMESTAMP,ContextTokens") {
            arrivals(&path, &head, args.arrival_bin)?
        } else {
            // Real exports repeat a timestamp now and then, or are a
            // minute off the grid (NAB has both): snap and average, say so.
            let policy = GridPolicy {
                snap_to_grid: true,
                ..GridPolicy::default()
            };
            let s = match Series::read_csv(&path, policy) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("  {rel}: skipped: {e}");
                    continue;
                }
            };
            if !s.cleaning.is_clean() {
                eprintln!("  {rel}: {} points; {}", s.len(), s.cleaning);
            }
            s
        };
        let day = series.steps_per_day();
        let horizon = day.min(series.len() / 8).max(1);
        let season = if series.len() >= 3 * day { day } else { 1 };
        let k = args.folds + WARMUP;
        let origins = (0..k).map(|j| series.len() - (k - j) * horizon).collect();
        cases.push(Case {
            rel,
            series,
            horizon,
            season,
            origins,
        });
    }
    Ok(cases)
}

pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
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

/// A request-arrival trace binned into counts per `bin` seconds.
pub(crate) fn arrivals(path: &Path, text: &str, bin: i64) -> Result<Series> {
    let mut times = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let ts = line.split(',').next().unwrap_or_default();
        times.push(
            parse_timestamp(ts)
                .with_context(|| format!("{}: line {}: bad time {ts:?}", path.display(), n + 1))?,
        );
    }
    let (first, last) = (
        times.iter().min().copied().unwrap_or(0),
        times.iter().max().copied().unwrap_or(0),
    );
    let start = first - first.rem_euclid(bin);
    let mut counts = vec![0.0; ((last - start) / bin + 1) as usize];
    for t in times {
        counts[((t - start) / bin) as usize] += 1.0;
    }
    let points: Vec<(i64, f64)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (start + i as i64 * bin, c))
        .collect();
    let name = format!(
        "{}_per_{bin}s",
        path.file_stem().unwrap_or_default().to_string_lossy()
    );
    Ok(Series::from_points(
        name,
        &points,
        GridPolicy {
            step: Some(bin),
            max_fill: 0,
            ..GridPolicy::default()
        },
    )?)
}

fn config(case: &Case, args: &Args) -> ForecasterConfig {
    ForecasterConfig {
        horizon: case.horizon,
        season: Some(case.season),
        folds: WARMUP,
        lstm: LstmConfig {
            epochs: args.epochs,
            ..LstmConfig::default()
        },
        ..ForecasterConfig::default()
    }
}

/// Backtests our candidates at every origin, then shadow's choice at each
/// test fold.
fn evaluate(
    case: &Case,
    args: &Args,
    seconds: &mut BTreeMap<String, f64>,
    plots: &Path,
) -> Result<(Results, BTreeMap<String, String>)> {
    let cfg = config(case, args);
    let input = Input::from_series(&case.series);
    let mut per: Vec<(Candidate, Vec<Option<Fold>>)> = Vec::new();
    for c in Candidate::ALL {
        let mut model = c.build(&cfg, case.season);
        let mut folds = Vec::new();
        for (j, &o) in case.origins.iter().enumerate() {
            let t = Instant::now();
            let r = if o < model.model().min_history() {
                Err(anyhow::anyhow!(
                    "history of {o} points is below the model's minimum {}",
                    model.model().min_history()
                ))
            } else {
                backtest(model.model_mut(), &input, o, case.horizon, case.season)
                    .map_err(Into::into)
            };
            let dt = t.elapsed().as_secs_f64();
            *seconds.entry(c.name().to_owned()).or_default() += dt;
            match r {
                Ok(f) => {
                    eprintln!(
                        "  {:<15} fold {}/{}: MASE {:.3} ({dt:.1} s)",
                        c.name(),
                        j + 1,
                        case.origins.len(),
                        f.mase()
                    );
                    folds.push(Some(f));
                }
                Err(e) => {
                    eprintln!(
                        "  {:<15} fold {}/{}: failed: {e}",
                        c.name(),
                        j + 1,
                        case.origins.len()
                    );
                    folds.push(None);
                }
            }
        }
        per.push((c, folds));
    }
    let mut results = Results::new();
    let mut chosen = BTreeMap::new();
    let mut auto = Vec::new();
    for j in WARMUP..case.origins.len() {
        // Only candidates that worked on both warm-up folds and this fold.
        let usable: Vec<(Candidate, Vec<Fold>)> = per
            .iter()
            .filter_map(|(c, f)| {
                let prior: Option<Vec<Fold>> = f[j - WARMUP..j].iter().cloned().collect();
                f[j].as_ref().and(prior).map(|p| (*c, p))
            })
            .collect();
        let Some(sel) = select(&usable, &cfg) else {
            auto.push(None);
            continue;
        };
        let members: Vec<&Forecast> = sel
            .members
            .iter()
            .map(|m| {
                &per.iter().find(|(c, _)| c == m).expect("member").1[j]
                    .as_ref()
                    .expect("usable")
                    .forecast
            })
            .collect();
        let base = per[0].1[j]
            .clone()
            .or_else(|| per.iter().find_map(|p| p.1[j].clone()))
            .expect("some fold");
        // As `Forecaster::forecast` serves it: the regime guard last.
        let head = input.head(case.origins[j]);
        let (forecast, shift) = shadow_forecast::regime::guard(
            &head,
            case.season,
            &cfg.regime,
            combine(&members, sel.interval_scale),
        );
        let fold = Fold { forecast, ..base };
        chosen.insert(
            format!("fold {}", j - WARMUP + 1),
            match shift {
                Some(s) => format!(
                    "{} -> following a shift ({}) — {}",
                    sel.label(),
                    s.describe(&head),
                    sel.reason
                ),
                None => format!("{} — {}", sel.label(), sel.reason),
            },
        );
        if j + 1 == case.origins.len() {
            let o = case.origins[j];
            let from = o.saturating_sub(2 * case.horizon);
            let name = plots.join(format!("{}.png", case.series.name));
            let title = format!("{} — shadow: {}, last fold", case.series.name, sel.label());
            plot::write_png(
                &name,
                &plot::ForecastPlot {
                    title: &title,
                    history: &case.series.values[from..o],
                    actual: &fold.actual,
                    p10: &fold.forecast.p10,
                    p50: &fold.forecast.p50,
                    p90: &fold.forecast.p90,
                    step_seconds: case.series.step,
                },
            )
            .map_err(anyhow::Error::msg)?;
        }
        auto.push(Some(fold));
    }
    for (c, f) in per {
        results.insert(c.name().to_owned(), f[WARMUP..].to_vec());
    }
    results.insert("shadow".to_owned(), auto);
    Ok((results, chosen))
}

struct PythonRun {
    /// None when earlier results are read instead.
    child: Option<std::process::Child>,
    outs: Vec<PathBuf>,
}

fn start_python(cases: &[Case], models: &[String], fit_timeout: f64) -> Result<PythonRun> {
    let py = ensure_venv()?;
    let series: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "name": c.rel,
                "timestamps": (0..c.series.len()).map(|i| c.series.time(i)).collect::<Vec<_>>(),
                "values": c.series.values,
                "step": c.series.step,
                "season": c.season,
                "horizon": c.horizon,
                "origins": c.origins[WARMUP..],
            })
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("shadow-forecast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (splits, out) = (dir.join("splits.json"), dir.join("forecasts.json"));
    std::fs::write(
        &splits,
        serde_json::to_vec(&json!({"quantiles": [0.1, 0.5, 0.9], "series": series}))?,
    )?;
    eprintln!(
        "statsforecast and Prophet on the same splits, in the background ({})",
        py.display()
    );
    let log = std::fs::File::create(dir.join("baselines.log"))?;
    let mut cmd = Command::new(&py);
    cmd.args(["bench/python/baselines.py", "--splits"])
        .arg(&splits)
        .arg("--out")
        .arg(&out)
        .arg("--fit-timeout")
        .arg(fit_timeout.to_string());
    if !models.is_empty() {
        cmd.arg("--models").arg(models.join(","));
    }
    let child = cmd
        .stderr(log)
        .spawn()
        .context("running bench/python/baselines.py")?;
    Ok(PythonRun {
        child: Some(child),
        outs: vec![out],
    })
}

fn finish_python(
    mut run: PythonRun,
    cases: &[Case],
    all: &mut [(String, Results, BTreeMap<String, String>)],
    seconds: &mut BTreeMap<String, f64>,
) -> Result<Vec<String>> {
    if let Some(child) = &mut run.child {
        let log = run.outs[0].with_file_name("baselines.log");
        eprintln!(
            "waiting for statsforecast and Prophet (progress: {})",
            log.display()
        );
        let status = child.wait()?;
        if !status.success() {
            bail!(
                "bench/python/baselines.py failed: {status} (see {})",
                log.display()
            );
        }
    }
    // One result per (series, model, origin): a forecast beats an error,
    // and a later file beats an earlier one.
    let mut merged: BTreeMap<(String, String, u64), Value> = BTreeMap::new();
    for out in &run.outs {
        let v: Value = serde_json::from_slice(
            &std::fs::read(out).with_context(|| format!("reading {}", out.display()))?,
        )
        .with_context(|| format!("{}: not baselines.py output", out.display()))?;
        for r in v["results"]
            .as_array()
            .with_context(|| format!("{}: no results", out.display()))?
        {
            let key = (
                r["series"].as_str().unwrap_or("").to_owned(),
                r["model"].as_str().unwrap_or("").to_owned(),
                r["origin"].as_u64().unwrap_or(0),
            );
            let keep_old =
                r["error"].is_string() && merged.get(&key).is_some_and(|o| !o["error"].is_string());
            if !keep_old {
                merged.insert(key, r.clone());
            }
        }
    }
    let mut errors = Vec::new();
    for r in merged.values() {
        let (name, model, origin) = (
            r["series"].as_str().unwrap_or(""),
            r["model"].as_str().unwrap_or(""),
            r["origin"].as_u64().unwrap_or(0) as usize,
        );
        let Some(ci) = cases.iter().position(|c| c.rel == name) else {
            continue;
        };
        let case = &cases[ci];
        let Some(j) = case.origins[WARMUP..].iter().position(|&o| o == origin) else {
            continue;
        };
        *seconds.entry(format!("py:{model}")).or_default() += r["seconds"].as_f64().unwrap_or(0.0);
        let slot = all[ci]
            .1
            .entry(format!("py:{model}"))
            .or_insert_with(|| vec![None; case.origins.len() - WARMUP]);
        if let Some(e) = r["error"].as_str() {
            eprintln!("  {name} {model} @{origin}: {e}");
            errors.push(format!("{name} {model} at origin {origin}: {e}"));
            continue;
        }
        let q = |k: &str| -> Vec<f64> {
            r[k].as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let end = (origin + case.horizon).min(case.series.len());
        slot[j] = Some(Fold {
            forecast: Forecast {
                start: case.series.time(origin),
                step: case.series.step,
                p10: q("p10"),
                p50: q("p50"),
                p90: q("p90"),
            },
            actual: case.series.values[origin..end].to_vec(),
            scale: metrics::naive_scale(&case.series.values[..origin], case.season),
        });
    }
    Ok(errors)
}

/// bench/.venv with statsforecast and Prophet, created on first use.
fn ensure_venv() -> Result<PathBuf> {
    let py = PathBuf::from("bench/.venv/bin/python");
    let stamp = PathBuf::from("bench/.venv/.installed");
    let req =
        std::fs::read("bench/python/requirements.txt").context("bench/python/requirements.txt")?;
    if std::fs::read(&stamp).ok().as_deref() == Some(&req[..]) {
        return Ok(py);
    }
    eprintln!("creating bench/.venv (statsforecast, Prophet; a few minutes the first time)");
    let ok = Command::new("python3")
        .args(["-m", "venv", "bench/.venv"])
        .status()?
        .success()
        && Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                "bench/python/requirements.txt",
            ])
            .status()?
            .success();
    if !ok {
        bail!("could not create bench/.venv from bench/python/requirements.txt");
    }
    std::fs::write(&stamp, req)?;
    Ok(py)
}

struct Timing {
    series: String,
    points: usize,
    train_s: f64,
    epochs: usize,
    /// Median of one 24-step forecast: the serving path, and burn's forward
    /// on the same model (the baseline it replaced).
    forecast_24_us: f64,
    forecast_24_burn_us: f64,
}

/// Training time on a whole 4,032-point series and one 24-step forecast.
fn lstm_timing(cases: &[Case], args: &Args) -> Result<Option<Timing>> {
    let Some(case) = cases
        .iter()
        .find(|c| c.rel.contains("elb_request_count"))
        .or_else(|| cases.iter().max_by_key(|c| c.series.len()))
    else {
        return Ok(None);
    };
    let mut m = LstmModel::new(LstmConfig {
        horizon: case.horizon,
        season: case.season,
        epochs: args.epochs,
        ..LstmConfig::default()
    });
    let input = Input::from_series(&case.series);
    eprintln!(
        "timing: LSTM training on all {} points of {}",
        case.series.len(),
        case.rel
    );
    let t = Instant::now();
    m.fit(&input)?;
    let train_s = t.elapsed().as_secs_f64();
    // Interleaved, so both paths see the same machine load.
    let (mut plain, mut burn) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let t = Instant::now();
        std::hint::black_box(m.forecast(&input, 24)?);
        plain.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::hint::black_box(m.forecast_with_burn(&input, 24)?);
        burn.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Some(Timing {
        series: case.rel.clone(),
        points: case.series.len(),
        train_s,
        epochs: m.training_summary().map_or(0, |s| s.0),
        forecast_24_us: metrics_median(&mut plain),
        forecast_24_burn_us: metrics_median(&mut burn),
    }))
}

fn render_timing(s: &mut String, t: &Timing) {
    let _ = writeln!(
        s,
        "- One 24-step LSTM forecast: {:.0} µs median of 300 (goal: under 1 ms) — {}. \
         burn's own forward on the same model, interleaved: {:.0} µs ({:.1}x slower).",
        t.forecast_24_us,
        if t.forecast_24_us < 1000.0 {
            "met"
        } else {
            "not met"
        },
        t.forecast_24_burn_us,
        t.forecast_24_burn_us / t.forecast_24_us.max(1e-9)
    );
    let _ = writeln!(
        s,
        "- LSTM training on all {} points of {}: {:.1} s, {} epochs (goal: under 60 s) — {}.",
        t.points,
        t.series,
        t.train_s,
        t.epochs,
        if t.train_s < 60.0 { "met" } else { "not met" }
    );
}

fn metrics_median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Nab {
    files: usize,
    flagged: usize,
    /// Mean detector time per point, in microseconds.
    per_point_us: f64,
    scores: Option<Value>,
    note: String,
}

/// Streams every NAB file through the detector and, given a NAB checkout,
/// scores it with NAB's own scorer.
fn nab_detection(cases: &[Case], args: &Args) -> Result<Nab> {
    let out = PathBuf::from("target/forecast-bench/nab-results");
    let _ = std::fs::remove_dir_all(&out);
    let mut files = 0;
    let mut flagged = 0;
    let mut points = 0usize;
    let mut busy = 0.0f64;
    for case in cases.iter().filter(|c| c.rel.starts_with("nab/")) {
        let rel = case.rel.trim_start_matches("nab/");
        // The agent's streaming detector, fed the file's rows in order, one
        // output row per input row (as NAB requires); NAB's probation
        // period is only the detector's own warm-up.
        let mut det = Detector::new(DetectorSettings::default());
        let text = std::fs::read_to_string(args.data.join(&case.rel))?;
        let mut csv = String::from("timestamp,value,anomaly_score\n");
        let mut alerts = 0;
        let t = Instant::now();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let (ts, value) = line.split_once(',').unwrap_or((line, ""));
            let when =
                parse_timestamp(ts).with_context(|| format!("{}: bad time {ts:?}", case.rel))?;
            let score = det.update(when, value.trim().parse().unwrap_or(f64::NAN));
            alerts += usize::from(score >= det.settings().alarm_threshold);
            points += 1;
            let _ = writeln!(csv, "{ts},{value},{score:.6}");
        }
        busy += t.elapsed().as_secs_f64();
        flagged += alerts;
        eprintln!(
            "  NAB detector {rel}: {alerts} alerts over {} points ({:.2} s)",
            det.points(),
            t.elapsed().as_secs_f64()
        );
        let path = out.join(rel);
        std::fs::create_dir_all(path.parent().expect("nested"))?;
        std::fs::write(&path, csv)?;
        files += 1;
    }
    let per_point_us = 1e6 * busy / points.max(1) as f64;
    let Some(repo) = &args.nab_repo else {
        return Ok(Nab {
            files,
            flagged,
            per_point_us,
            scores: None,
            note: format!(
                "detector output in {}; pass --nab-repo <NAB checkout> to score it with NAB's scorer",
                out.display()
            ),
        });
    };
    let py = ensure_venv()?;
    let scores = std::env::temp_dir().join("shadow-nab-scores.json");
    let status = Command::new(py)
        .arg("bench/python/nab_score.py")
        .arg("--nab-repo")
        .arg(repo)
        .arg("--detector-results")
        .arg(&out)
        .arg("--out")
        .arg(&scores)
        .status()?;
    if !status.success() {
        bail!("bench/python/nab_score.py failed: {status}");
    }
    Ok(Nab {
        files,
        flagged,
        per_point_us,
        scores: Some(serde_json::from_slice(&std::fs::read(&scores)?)?),
        note: String::new(),
    })
}

#[derive(Default, Clone, Copy)]
struct Row {
    mae: f64,
    rmse: f64,
    smape: f64,
    mase: f64,
    coverage: f64,
}

fn row(folds: &[Option<Fold>]) -> Option<Row> {
    let ok: Vec<&Fold> = folds.iter().flatten().collect();
    if ok.len() != folds.len() || ok.is_empty() {
        return None;
    }
    let n = ok.len() as f64;
    let mean = |f: &dyn Fn(&Fold) -> f64| ok.iter().map(|x| f(x)).sum::<f64>() / n;
    Some(Row {
        mae: mean(&|f| metrics::mae(&f.actual, &f.forecast.p50)),
        rmse: mean(&|f| metrics::rmse(&f.actual, &f.forecast.p50)),
        smape: mean(&|f| metrics::smape(&f.actual, &f.forecast.p50)),
        mase: mean(&|f| f.mase()),
        coverage: mean(&|f| metrics::coverage(&f.actual, &f.forecast.p10, &f.forecast.p90)),
    })
}

fn render(
    args: &Args,
    cases: &[Case],
    all: &[(String, Results, BTreeMap<String, String>)],
    seconds: &BTreeMap<String, f64>,
    timing: &Option<Timing>,
    nab: Option<&Nab>,
    py_errors: &[String],
) -> String {
    let mut models: Vec<String> = std::iter::once("shadow".to_owned())
        .chain(Candidate::ALL.iter().map(|c| c.name().to_owned()))
        .collect();
    models.extend(
        PY_MODELS
            .iter()
            .map(|m| format!("py:{m}"))
            .filter(|m| all.iter().any(|a| a.1.contains_key(m))),
    );
    let mut s = String::new();
    let _ = writeln!(s, "# Forecast evaluation\n");
    let _ = writeln!(
        s,
        "Command: `cargo xtask bench-forecast --data {} -- --folds {} --epochs {}{}` (`shadow-bench forecast` with those arguments). \
         Rolling origin: {} test folds of one day (at most an eighth of the series) per series, each forecast from all history before it; \
         shadow's selection sees only the {WARMUP} folds before each test fold. MASE is scaled by the in-sample seasonal naive MAE of each fold's training part. \
         `py:` models are statsforecast 2.1.1 and Prophet 1.5.0 on the same splits. Generated {}.\n",
        args.data.display(),
        args.folds,
        args.epochs,
        [
            args.nab_repo
                .as_ref()
                .map(|p| format!(" --nab-repo {}", p.display()))
                .unwrap_or_default(),
            if args.skip_nab {
                " --skip-nab".into()
            } else {
                String::new()
            },
            if args.py_models.is_empty() {
                String::new()
            } else {
                format!(" --py-models {}", args.py_models.join(","))
            },
            format!(" --py-fit-timeout {}", args.py_fit_timeout),
            if args.py_results.is_empty() {
                String::new()
            } else {
                format!(
                    " --py-results {}",
                    args.py_results
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
        ]
        .concat(),
        args.folds,
        format_timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        ),
    );
    // Summary.
    let _ = writeln!(
        s,
        "## Summary (over series)\n\n| model | geomean MASE | mean MASE | vs seasonal naive (geomean) | median MASE | P10-P90 coverage | series | seconds (all folds) |\n|---|---|---|---|---|---|---|---|"
    );
    let mut means: BTreeMap<String, f64> = BTreeMap::new();
    let complete: Vec<&(String, Results, BTreeMap<String, String>)> = all
        .iter()
        .filter(|a| {
            ["shadow", "py:AutoARIMA"]
                .iter()
                .all(|m| !a.1.contains_key(*m) || a.1.get(*m).and_then(|f| row(f)).is_some())
        })
        .collect();
    let naive_geo = geomean_of(&complete, "seasonal_naive");
    let mut geos: BTreeMap<String, f64> = BTreeMap::new();
    for m in &models {
        let rows: Vec<Row> = complete
            .iter()
            .filter_map(|a| a.1.get(m).and_then(|f| row(f)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mase = rows.iter().map(|r| r.mase).sum::<f64>() / rows.len() as f64;
        let mut v: Vec<f64> = rows.iter().map(|r| r.mase).collect();
        let med = metrics_median(&mut v);
        let cov = rows.iter().map(|r| r.coverage).sum::<f64>() / rows.len() as f64;
        let geo = geomean(rows.iter().map(|r| r.mase));
        means.insert(m.clone(), mase);
        geos.insert(m.clone(), geo);
        let _ = writeln!(
            s,
            "| {m} | {geo:.3} | {mase:.3} | {:.3} | {med:.3} | {:.1}% | {} | {:.0} |",
            geo / naive_geo,
            cov * 100.0,
            rows.len(),
            seconds.get(m).copied().unwrap_or(0.0)
        );
    }
    let best_peer = geos
        .iter()
        .filter(|(m, _)| m.starts_with("py:"))
        .min_by(|a, b| a.1.total_cmp(b.1));
    let lstm_wins = complete
        .iter()
        .filter(|a| matches!((a.1.get("lstm").and_then(|f| row(f)), a.1.get("seasonal_naive").and_then(|f| row(f))), (Some(l), Some(n)) if l.mase < n.mase))
        .count();
    let _ = writeln!(
        s,
        "\nSeries where shadow and AutoARIMA scored every test fold: {} of {}; any other series is left out of the summary. Every other model is averaged over those series where it gave a forecast for every fold (its `series` column), so compare geomeans only at equal counts; the per-series ratio to the best peer uses the peers that answered there.",
        complete.len(),
        cases.len()
    );
    if !py_errors.is_empty() {
        let _ = writeln!(
            s,
            "\nstatsforecast/Prophet fits with no result ({}):\n",
            py_errors.len()
        );
        for e in py_errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    let _ = writeln!(s, "\n## Goals\n");
    if let (Some(arima), Some(ours)) = (geos.get("py:AutoARIMA"), geos.get("shadow")) {
        let gain = 100.0 * (1.0 - ours / arima);
        let _ = writeln!(
            s,
            "- Geomean MASE {ours:.3} vs py:AutoARIMA {arima:.3} over {} series: {gain:.1}% better (goal: at least 10%) — {}.",
            complete.len(),
            if gain >= 10.0 { "met" } else { "not met" }
        );
    }
    if let (Some((bm, bv)), Some(ours)) = (best_peer, geos.get("shadow")) {
        let _ = writeln!(
            s,
            "- Best statsforecast/Prophet model by geomean: {bm} {bv:.3}; shadow {ours:.3} ({:.1}% better).",
            100.0 * (1.0 - ours / bv)
        );
    }
    // Per series: shadow against the best statsforecast/Prophet model there.
    let mut ratios: Vec<(f64, &str, String, f64)> = complete
        .iter()
        .filter_map(|a| {
            let ours = a.1.get("shadow").and_then(|f| row(f))?.mase;
            let (bm, bv) =
                a.1.iter()
                    .filter(|(m, _)| m.starts_with("py:"))
                    .filter_map(|(m, f)| row(f).map(|r| (m.clone(), r.mase)))
                    .min_by(|x, y| x.1.total_cmp(&y.1))?;
            Some((ours / bv.max(1e-9), a.0.as_str(), bm, bv))
        })
        .collect();
    ratios.sort_by(|a, b| b.0.total_cmp(&a.0));
    let over = ratios.iter().filter(|r| r.0 > 2.0).count();
    let _ = writeln!(
        s,
        "- Series worse than 2x the best peer model there: {over} of {} (goal: none) — {}.",
        ratios.len(),
        if over == 0 { "met" } else { "not met" }
    );
    let _ = writeln!(
        s,
        "- Worst ratios (shadow MASE / best peer MASE on that series):"
    );
    for (r, rel, bm, bv) in ratios.iter().take(3) {
        let _ = writeln!(s, "  - {rel}: {r:.2}x ({bm} {bv:.3})");
    }
    let _ = writeln!(
        s,
        "- LSTM alone better than seasonal naive on {lstm_wins} of {} series (goal: most) — {}.",
        complete.len(),
        if 2 * lstm_wins > complete.len() {
            "met"
        } else {
            "not met"
        }
    );
    if let Some(cov) = complete
        .iter()
        .filter_map(|a| a.1.get("shadow").and_then(|f| row(f)))
        .map(|r| r.coverage)
        .reduce(|a, b| a + b)
    {
        let cov = 100.0 * cov / complete.len().max(1) as f64;
        let _ = writeln!(
            s,
            "- shadow's P10-P90 coverage {cov:.1}% (goal: 75-85%) — {}.",
            if (75.0..=85.0).contains(&cov) {
                "met"
            } else {
                "not met"
            }
        );
    }
    if let Some(t) = timing {
        render_timing(&mut s, t);
    }
    // Per series.
    let _ = writeln!(s, "\n## Per series (mean over test folds)\n");
    for (rel, results, chosen) in all {
        let case = cases.iter().find(|c| &c.rel == rel).expect("case");
        let _ = writeln!(
            s,
            "### {rel}\n\n{} points, step {} s, horizon {}, season {}. ![plot]({}/{}.png)\n",
            case.series.len(),
            case.series.step,
            case.horizon,
            case.season,
            args.report
                .with_extension("")
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            case.series.name
        );
        let _ = writeln!(
            s,
            "| model | MAE | RMSE | sMAPE % | MASE | coverage |\n|---|---|---|---|---|---|"
        );
        for m in &models {
            match results.get(m).map(|f| row(f)) {
                Some(Some(r)) => {
                    let _ = writeln!(
                        s,
                        "| {m} | {:.4} | {:.4} | {:.2} | {:.3} | {:.1}% |",
                        r.mae,
                        r.rmse,
                        r.smape,
                        r.mase,
                        r.coverage * 100.0
                    );
                }
                Some(None) => {
                    let _ = writeln!(s, "| {m} | failed on a fold | | | | |");
                }
                None => {}
            }
        }
        for (fold, why) in chosen {
            let _ = writeln!(s, "\n- shadow {fold}: {why}");
        }
        let _ = writeln!(s);
    }
    if let Some(n) = nab {
        render_nab(&mut s, n);
    }
    s
}

fn render_nab(s: &mut String, n: &Nab) {
    let _ = writeln!(
        s,
        "## Anomaly detector under NAB's scorer\n\n{} NAB files streamed through the agent's streaming contextual-novelty detector \
         (`shadow_forecast::detect`, default settings, the same for every file: 6 levels over the warm-up range, contexts up to 12 symbols, \
         two days of warm-up (the value range), alert at 0.75 then 120 points of rest); {} alerts; {:.1} µs per point. \
         Causal: each score depends only on the points before it. In the agent the same detector runs per metric next to the residual \
         (forecast-interval) detector, and either flags a bin for the feedback loop.\n",
        n.files, n.flagged, n.per_point_us
    );
    match &n.scores {
        Some(v) => nab_table(s, v),
        None => {
            let _ = writeln!(s, "{}", n.note);
        }
    }
}

/// Our detector ranked among NAB's published detectors, all rescored by
/// NAB's own scorer on the same files.
fn nab_table(s: &mut String, v: &Value) {
    let profiles = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];
    let _ = writeln!(
        s,
        "Scored by NAB's own optimiser, scorer and normaliser on the {} files here ({} anomaly windows); \
         the published detectors' result files were rescored the same way on the same files. \
         The last column is each detector's published whole-corpus (58 files) standard score.\n",
        v["subset"].as_array().map_or(0, Vec::len),
        v["anomaly_windows"]
    );
    let _ = writeln!(
        s,
        "| rank | detector | standard | low FP | low FN | whole corpus (published) |\n|---|---|---|---|---|---|"
    );
    let mut rows: Vec<(String, &Value)> = vec![("**shadow (ours)**".into(), &v["ours"])];
    if let Some(o) = v["published_on_subset"].as_object() {
        rows.extend(o.iter().map(|(k, x)| (k.clone(), x)));
    }
    rows.sort_by(|a, b| {
        b.1["standard"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a.1["standard"].as_f64().unwrap_or(0.0))
    });
    for (i, (name, x)) in rows.iter().enumerate() {
        let f = |p: &str| x[p].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        let whole = v["published_whole_corpus"][name.as_str()]["standard"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "| {} | {name} | {} | {} | {} | {whole} |",
            i + 1,
            f(profiles[0]),
            f(profiles[1]),
            f(profiles[2])
        );
    }
}

/// Geometric mean; MASE of exactly 0 is floored so one perfect fold does
/// not zero the mean.
fn geomean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x.max(1e-6).ln(), n + 1));
    (sum / n.max(1) as f64).exp()
}

fn geomean_of(all: &[&(String, Results, BTreeMap<String, String>)], model: &str) -> f64 {
    geomean(
        all.iter()
            .filter_map(|a| a.1.get(model).and_then(|x| row(x)))
            .map(|r| r.mase),
    )
}
