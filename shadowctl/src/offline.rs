//! `shadowctl forecast`'s offline mode, which needs no agent: train on a
//! `timestamp,value` CSV file with a live progress display, and forecast
//! from a saved model.

use std::{
    fmt::Write as _,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use shadow_forecast::{
    Candidate, ForecastError, Forecaster, ForecasterConfig, GridPolicy, Input, Series,
    forecaster::{self, Progress},
    series::format_timestamp,
};

use shadow_api::{forecast::ForecastAnswer, time::format_ahead};
use shadow_forecast::serve::answer::parse_horizon;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// Bad flags (the CLI exits 64 on these).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Forecast(#[from] ForecastError),
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
}

/// `shadowctl forecast train`'s settings.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub csv: PathBuf,
    pub related: Option<PathBuf>,
    pub horizon: usize,
    pub models: Vec<Candidate>,
    pub folds: usize,
    pub season: Option<usize>,
    pub out: PathBuf,
    /// The longest gap interpolated (`--max-gap`).
    pub max_gap: usize,
}

/// A target series and, optionally, a related one cut to the same grid.
struct Loaded {
    series: Series,
    related: Option<Vec<f64>>,
    /// Zero over long gaps, which are masked out of training.
    weights: Option<Vec<f64>>,
}

impl Loaded {
    fn read(csv: &Path, related: Option<&Path>, max_gap: usize) -> Result<Self, OfflineError> {
        let policy = GridPolicy {
            max_fill: max_gap,
            ..GridPolicy::default()
        };
        let series = Series::read_csv(csv, policy)?;
        let related = related.map(|r| align(&series, r, policy)).transpose()?;
        let weights = series.weights();
        Ok(Self {
            series,
            related,
            weights,
        })
    }

    fn input(&self) -> Input<'_> {
        let mut input = Input::from_series(&self.series);
        if let Some(r) = &self.related {
            input = input.with_related(r);
        }
        if let Some(w) = &self.weights {
            input = input.with_weights(w);
        }
        input
    }
}

/// The related series' values at each of the target's timestamps.
fn align(target: &Series, path: &Path, policy: GridPolicy) -> Result<Vec<f64>, OfflineError> {
    let r = Series::read_csv(
        path,
        GridPolicy {
            step: Some(target.step),
            ..policy
        },
    )?;
    let first = (target.start - r.start) / r.step;
    let end = target.time(target.len() - 1);
    if target.start < r.start || r.time(r.len() - 1) < end || (target.start - r.start) % r.step != 0
    {
        return Err(OfflineError::Input {
            path: path.display().to_string(),
            reason: format!(
                "the related series covers {} .. {}, not the target's {} .. {} on its grid",
                format_timestamp(r.start),
                format_timestamp(r.time(r.len() - 1)),
                format_timestamp(target.start),
                format_timestamp(end)
            ),
        });
    }
    Ok(r.values[first as usize..first as usize + target.len()].to_vec())
}

/// Trains on `args.csv` with progress on stderr, saves the model to
/// `args.out` and returns the summary for stdout.
pub fn train(args: &TrainArgs) -> Result<String, OfflineError> {
    if args.horizon == 0 || args.folds == 0 {
        return Err(OfflineError::Usage(
            "--horizon and --folds must be at least 1".into(),
        ));
    }
    let data = Loaded::read(&args.csv, args.related.as_deref(), args.max_gap)?;
    let cfg = ForecasterConfig {
        horizon: args.horizon,
        season: args.season,
        candidates: args.models.clone(),
        folds: args.folds,
        ..ForecasterConfig::default()
    };
    let need = shadow_forecast::serve::trainer::need_for(&cfg, data.series.step);
    if data.series.len() < need {
        return Err(ForecastError::TooShort {
            series: data.series.name.clone(),
            need,
            got: data.series.len(),
        }
        .into());
    }
    let started = Instant::now();
    let mut display = ProgressDisplay::start();
    let result = forecaster::train(&data.input(), &cfg, &mut |p| display.update(&p));
    display.finish();
    let model = result?;
    model.save(&args.out)?;
    Ok(summary(
        &data.series,
        &model,
        started.elapsed().as_secs_f64(),
        &args.out,
    ))
}

fn summary(s: &Series, m: &Forecaster, seconds: f64, out: &Path) -> String {
    let sel = &m.selection;
    let mut text = String::new();
    let span = format!(
        "{} .. {}",
        format_timestamp(s.start),
        format_timestamp(s.time(s.len() - 1))
    );
    let _ = writeln!(
        text,
        "{}: {} points, {} steps, {span} (UTC)",
        s.name,
        s.len(),
        format_ahead(s.step)
    );
    let _ = writeln!(text, "input:    {}", s.cleaning);
    let _ = writeln!(text, "model:    {}", sel.label());
    let _ = writeln!(text, "why:      {}", sel.reason);
    let scores: Vec<String> = sel
        .scores
        .iter()
        .map(|(n, v)| format!("{n} {v:.3}"))
        .collect();
    let _ = writeln!(
        text,
        "scores:   {} (backtest MASE, lower is better)",
        scores.join(", ")
    );
    let _ = writeln!(
        text,
        "interval: x{:.2}; backtest P10-P90 coverage {:.0}% raw, {:.0}% calibrated",
        sel.interval_scale,
        sel.coverage_raw * 100.0,
        sel.coverage_calibrated * 100.0
    );
    let _ = write!(text, "trained in {seconds:.1}s; saved to {}", out.display());
    text
}

/// Forecasts from a saved model and the history in `csv`.
pub fn forecast(
    model_dir: &Path,
    csv: &Path,
    related: Option<&Path>,
    horizon: Option<&str>,
    max_gap: usize,
) -> Result<ForecastAnswer, OfflineError> {
    if !model_dir.join("forecaster.json").exists() {
        return Err(OfflineError::Input {
            path: model_dir.display().to_string(),
            reason: "no saved model here (forecaster.json); `shadowctl forecast train --out DIR` makes one".into(),
        });
    }
    let model = Forecaster::load(model_dir)?;
    let data = Loaded::read(csv, related, max_gap)?;
    if !data.series.cleaning.is_clean() {
        eprintln!("{}: {}", csv.display(), data.series.cleaning);
    }
    if data.series.step != model.step {
        return Err(OfflineError::Input {
            path: csv.display().to_string(),
            reason: format!(
                "{} s steps, but the model in {} was trained on {} s steps",
                data.series.step,
                model_dir.display(),
                model.step
            ),
        });
    }
    let h = match horizon {
        Some(h) => parse_horizon(h, model.step, model.config.horizon)
            .map_err(|e| OfflineError::Usage(format!("--horizon: {e}")))?,
        None => model.config.horizon,
    };
    let input = data.input();
    let (f, shift) = model.forecast_explained(&input, h)?;
    let (label, reason) = match shift {
        Some(shift) => (
            format!("{} -> following a shift", model.selection.label()),
            format!(
                "{}; trained: {}",
                shift.describe(&input),
                model.selection.reason
            ),
        ),
        None => (model.selection.label(), model.selection.reason.clone()),
    };
    Ok(ForecastAnswer {
        metric: data.series.name.clone(),
        model: label,
        reason,
        points: shadow_forecast::prediction::from_forecast("offline", &data.series.name, &f),
    })
}

/// Which model, which fold, elapsed: redrawn in place on a terminal (a
/// ticker keeps the clock moving during a long fit), one line per step
/// otherwise.
struct ProgressDisplay {
    started: Instant,
    tty: bool,
    state: Arc<Mutex<Option<(String, Instant)>>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    fn start() -> Self {
        let tty = std::io::stderr().is_terminal();
        let state: Arc<Mutex<Option<(String, Instant)>>> =
            Arc::new(Mutex::new(Some(("reading".into(), Instant::now()))));
        let started = Instant::now();
        let ticker = tty.then(|| {
            let state = state.clone();
            std::thread::spawn(move || {
                loop {
                    // Cloned out so the lock is not held while sleeping.
                    let Some((label, since)) =
                        state.lock().unwrap_or_else(|p| p.into_inner()).clone()
                    else {
                        break;
                    };
                    eprint!(
                        "\r\x1b[K[{:6.1}s] {label} ({:.1}s)",
                        started.elapsed().as_secs_f64(),
                        since.elapsed().as_secs_f64()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            })
        });
        Self {
            started,
            tty,
            state,
            ticker,
        }
    }

    fn update(&mut self, p: &Progress) {
        let label = match p {
            Progress::Backtest { model, fold, folds } => {
                format!("backtesting {model}: fold {fold}/{folds}")
            }
            Progress::Final { model } => format!("fitting {model} on the whole history"),
        };
        if !self.tty {
            eprintln!("[{:6.1}s] {label}", self.started.elapsed().as_secs_f64());
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some((label, Instant::now()));
    }

    fn finish(mut self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
            eprint!("\r\x1b[K");
        }
        eprintln!("[{:6.1}s] done", self.started.elapsed().as_secs_f64());
    }
}
