//! Per-metric model selection by rolling-origin cross-validation, an
//! ensemble when it wins, conformal calibration of the interval, and
//! persistence of the result.
//!
//! [`train`] backtests every candidate on the last `folds` horizons of the
//! history (each fitted only on what came before its origin), scores them by
//! MASE, keeps the best single model or the mean of the best two or three
//! when that scores better, and scales the chosen interval so that it
//! covered the target share of the backtest actuals (split conformal
//! prediction on the folds). The chosen members are then refitted on the
//! whole history. [`Forecaster`] serves forecasts from that and never trains.

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    arima::Arima,
    baseline::{Damped, Ets, LastLevel, Mstl, SeasonalNaive},
    error::ForecastError,
    lstm::{LstmConfig, LstmModel},
    metrics,
    model::{Forecast, Input, Model, quantile},
    prophet::Prophet,
    regime::{self, Shift},
};

/// A model family the selection can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    SeasonalNaive,
    Ets,
    Damped,
    Mstl,
    LastLevel,
    Arima,
    Prophet,
    Lstm,
}

impl Candidate {
    pub const ALL: [Candidate; 8] = [
        Self::SeasonalNaive,
        Self::Ets,
        Self::Damped,
        Self::Mstl,
        Self::LastLevel,
        Self::Arima,
        Self::Prophet,
        Self::Lstm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::SeasonalNaive => "seasonal_naive",
            Self::Ets => "ets",
            Self::Damped => "damped",
            Self::Mstl => "mstl",
            Self::LastLevel => "last_level",
            Self::Arima => "arima",
            Self::Prophet => "prophet",
            Self::Lstm => "lstm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    pub fn build(self, cfg: &ForecasterConfig, season: usize) -> Fitted {
        match self {
            Self::SeasonalNaive => Fitted::SeasonalNaive(SeasonalNaive::new(season)),
            Self::Ets => Fitted::Ets(Ets {
                max_history: cfg.classical_history,
            }),
            Self::Damped => Fitted::Damped(Damped {
                max_history: cfg.classical_history,
            }),
            Self::LastLevel => Fitted::LastLevel(LastLevel::new(season)),
            Self::Mstl => Fitted::Mstl(Mstl {
                max_history: cfg.classical_history,
                ..Mstl::new(season)
            }),
            Self::Arima => Fitted::Arima(Arima {
                max_history: cfg.classical_history,
                ..Arima::new(season)
            }),
            Self::Prophet => Fitted::Prophet(Prophet {
                max_history: cfg.classical_history,
                ..Prophet::new(season)
            }),
            Self::Lstm => Fitted::Lstm(Box::new(LstmModel::new(LstmConfig {
                horizon: cfg.horizon,
                season,
                ..cfg.lstm.clone()
            }))),
        }
    }
}

/// One fitted member.
#[derive(Debug)]
pub enum Fitted {
    SeasonalNaive(SeasonalNaive),
    Ets(Ets),
    Damped(Damped),
    LastLevel(LastLevel),
    Mstl(Mstl),
    Arima(Arima),
    Prophet(Prophet),
    Lstm(Box<LstmModel>),
}

impl Fitted {
    pub fn model(&self) -> &dyn Model {
        match self {
            Self::SeasonalNaive(m) => m,
            Self::Ets(m) => m,
            Self::Damped(m) => m,
            Self::LastLevel(m) => m,
            Self::Mstl(m) => m,
            Self::Arima(m) => m,
            Self::Prophet(m) => m,
            Self::Lstm(m) => m.as_ref(),
        }
    }

    pub fn model_mut(&mut self) -> &mut dyn Model {
        match self {
            Self::SeasonalNaive(m) => m,
            Self::Ets(m) => m,
            Self::Damped(m) => m,
            Self::LastLevel(m) => m,
            Self::Mstl(m) => m,
            Self::Arima(m) => m,
            Self::Prophet(m) => m,
            Self::Lstm(m) => m.as_mut(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecasterConfig {
    /// Steps forecast (and backtested per fold).
    pub horizon: usize,
    /// Steps per season; `None` is one day at the series' step.
    pub season: Option<usize>,
    pub candidates: Vec<Candidate>,
    /// Rolling-origin folds for the selection.
    pub folds: usize,
    pub ensemble: bool,
    /// The P10-P90 interval's target coverage after calibration.
    pub coverage: f64,
    /// Points the classical models refit on at most.
    pub classical_history: Option<usize>,
    pub lstm: LstmConfig,
    /// Level-shift and saturation detection at forecast time.
    pub regime: regime::Settings,
    /// Follow a detected shift instead of the models (see [`regime`]).
    pub follow_shifts: bool,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        Self {
            horizon: 288,
            season: None,
            candidates: Candidate::ALL.to_vec(),
            folds: 2,
            ensemble: true,
            coverage: 0.8,
            classical_history: Some(4032),
            lstm: LstmConfig::default(),
            regime: regime::Settings::default(),
            follow_shifts: true,
        }
    }
}

impl ForecasterConfig {
    pub fn season_for(&self, step: i64) -> usize {
        self.season
            .unwrap_or((86_400 / step.max(1)).max(1) as usize)
    }
}

/// One backtest fold of one model.
#[derive(Debug, Clone)]
pub struct Fold {
    pub forecast: Forecast,
    pub actual: Vec<f64>,
    /// In-sample seasonal naive MAE of the fold's training part.
    pub scale: f64,
}

impl Fold {
    pub fn mase(&self) -> f64 {
        metrics::mase(&self.actual, &self.forecast.p50, self.scale)
    }
}

/// Fits `model` on the history before `origin` and forecasts `horizon`.
pub fn backtest(
    model: &mut dyn Model,
    input: &Input<'_>,
    origin: usize,
    horizon: usize,
    season: usize,
) -> Result<Fold, ForecastError> {
    let head = input.head(origin);
    model.fit(&head)?;
    let forecast = model.forecast(&head, horizon)?;
    let end = (origin + horizon).min(input.len());
    Ok(Fold {
        forecast: forecast.truncated(end - origin),
        actual: input.values[origin..end].to_vec(),
        scale: metrics::naive_scale(head.values, season),
    })
}

/// What the selection chose, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// One member, or the ensemble's members (their quantiles are averaged).
    pub members: Vec<Candidate>,
    /// Mean backtest MASE per single model, and of the chosen combination.
    pub scores: Vec<(String, f64)>,
    pub score: f64,
    /// Multiplies the P10-P90 half-widths (conformal calibration).
    pub interval_scale: f64,
    /// Backtest coverage before and after calibration.
    pub coverage_raw: f64,
    pub coverage_calibrated: f64,
    pub folds: usize,
    pub reason: String,
}

impl Selection {
    pub fn label(&self) -> String {
        match self.members.as_slice() {
            [one] => one.name().to_owned(),
            many => format!(
                "ensemble({})",
                many.iter().map(|c| c.name()).collect::<Vec<_>>().join("+")
            ),
        }
    }
}

/// The mean of members' quantiles (Vincentisation), then the calibration.
pub fn combine(forecasts: &[&Forecast], scale: f64) -> Forecast {
    let n = forecasts.len() as f64;
    let h = forecasts.iter().map(|f| f.len()).min().unwrap_or(0);
    let avg = |get: fn(&Forecast) -> &Vec<f64>| {
        (0..h)
            .map(|i| forecasts.iter().map(|f| get(f)[i]).sum::<f64>() / n)
            .collect()
    };
    Forecast {
        start: forecasts[0].start,
        step: forecasts[0].step,
        p10: avg(|f| &f.p10),
        p50: avg(|f| &f.p50),
        p90: avg(|f| &f.p90),
    }
    .scaled(scale)
}

/// Fold `k` of `n` (oldest first) counts `k + 1` times: the newest fold
/// is the most like tomorrow, above all after a change of regime.
fn fold_weight(k: usize, n: usize) -> f64 {
    (k + 1) as f64 / (n * (n + 1) / 2) as f64
}

/// The recency-weighted mean MASE of some folds.
pub fn weighted_mase(folds: &[Fold]) -> f64 {
    folds
        .iter()
        .enumerate()
        .map(|(k, f)| fold_weight(k, folds.len()) * f.mase())
        .sum()
}

/// A model whose error on some fold is this many times the best model's
/// there (and above 1, worse than seasonal naive) has exploded on it and
/// may not join an ensemble, however good its other folds.
const EXPLODED: f64 = 2.0;

/// Picks from backtests: `results[i]` are candidate `i`'s folds, all at the
/// same origins. Candidates with an error on any fold are left out. Scores
/// are recency-weighted mean MASE ([`weighted_mase`]); a candidate that
/// exploded on a fold ([`EXPLODED`]) is never an ensemble member.
pub fn select(results: &[(Candidate, Vec<Fold>)], cfg: &ForecasterConfig) -> Option<Selection> {
    let mut ranked: Vec<(Candidate, f64)> = results
        .iter()
        .filter(|(_, folds)| !folds.is_empty())
        .map(|(c, folds)| (*c, weighted_mase(folds)))
        .filter(|(_, s)| s.is_finite())
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (best, best_score) = *ranked.first()?;
    let folds_of = |c: Candidate| {
        &results
            .iter()
            .find(|(k, _)| *k == c)
            .expect("ranked from results")
            .1
    };
    let nfolds = folds_of(best).len();
    let best_on: Vec<f64> = (0..nfolds)
        .map(|k| {
            ranked
                .iter()
                .map(|(c, _)| folds_of(*c)[k].mase())
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    let exploded: Vec<Candidate> = ranked
        .iter()
        .map(|r| r.0)
        .filter(|&c| {
            folds_of(c)
                .iter()
                .zip(&best_on)
                .any(|(f, &b)| f.mase() > 1.0 && f.mase() > EXPLODED * b)
        })
        .collect();
    let combined = |members: &[Candidate]| -> Vec<Fold> {
        (0..nfolds)
            .map(|k| {
                let fs: Vec<&Forecast> =
                    members.iter().map(|&c| &folds_of(c)[k].forecast).collect();
                Fold {
                    forecast: combine(&fs, 1.0),
                    ..folds_of(best)[k].clone()
                }
            })
            .collect()
    };
    let mut choice = (vec![best], best_score);
    if cfg.ensemble {
        let steady: Vec<Candidate> = ranked
            .iter()
            .map(|r| r.0)
            .filter(|c| !exploded.contains(c))
            .collect();
        for k in 2..=steady.len().min(3) {
            let members = steady[..k].to_vec();
            let s = weighted_mase(&combined(&members));
            if s < choice.1 {
                choice = (members, s);
            }
        }
    }
    let folds = combined(&choice.0);
    let (scale, raw, calibrated) = calibrate(&folds, cfg.coverage);
    let mut reason = String::new();
    let _ = write!(
        reason,
        "lowest recency-weighted MASE over {nfolds} rolling-origin folds of {} steps: {:.3}",
        cfg.horizon, choice.1
    );
    if choice.0.len() > 1 {
        let _ = write!(
            reason,
            " (ensemble beats best single {} at {best_score:.3})",
            best.name()
        );
    }
    let others: Vec<String> = ranked
        .iter()
        .map(|(c, s)| format!("{} {s:.3}", c.name()))
        .collect();
    let _ = write!(reason, "; singles: {}", others.join(", "));
    if !exploded.is_empty() {
        let names: Vec<&str> = exploded.iter().map(|c| c.name()).collect();
        let _ = write!(
            reason,
            "; kept out of ensembles (over {EXPLODED}x the best on a fold): {}",
            names.join(", ")
        );
    }
    let _ = write!(
        reason,
        "; interval x{scale:.2} for {:.0}% backtest coverage",
        cfg.coverage * 100.0
    );
    Some(Selection {
        members: choice.0,
        scores: ranked
            .iter()
            .map(|(c, s)| (c.name().to_owned(), *s))
            .collect(),
        score: choice.1,
        interval_scale: scale,
        coverage_raw: raw,
        coverage_calibrated: calibrated,
        folds: nfolds,
        reason,
    })
}

/// The interval scale whose P10-P90 band covers `target` of the folds'
/// actuals: each point needs `|y - P50| / half-width` on its side.
fn calibrate(folds: &[Fold], target: f64) -> (f64, f64, f64) {
    let mut need = Vec::new();
    let cov = |s: f64| {
        let (mut inside, mut n) = (0usize, 0usize);
        for f in folds {
            let g = f.forecast.clone().scaled(s);
            inside += (metrics::coverage(&f.actual, &g.p10, &g.p90) * f.actual.len() as f64).round()
                as usize;
            n += f.actual.len();
        }
        inside as f64 / n.max(1) as f64
    };
    for f in folds {
        for (i, &y) in f.actual.iter().enumerate() {
            let (lo, m, hi) = (f.forecast.p10[i], f.forecast.p50[i], f.forecast.p90[i]);
            let width = if y >= m { hi - m } else { m - lo };
            let dist = (y - m).abs();
            need.push(if dist == 0.0 {
                0.0
            } else if width <= 0.0 {
                f64::INFINITY
            } else {
                dist / width
            });
        }
    }
    let finite: Vec<f64> = need.iter().map(|v| v.min(1e6)).collect();
    let scale = quantile(&finite, target).clamp(0.25, 4.0);
    (scale, cov(1.0), cov(scale))
}

/// A trained, servable forecaster for one metric.
#[derive(Debug)]
pub struct Forecaster {
    pub config: ForecasterConfig,
    pub selection: Selection,
    pub season: usize,
    pub step: i64,
    /// Unix seconds of the newest training point.
    pub trained_until: i64,
    members: Vec<Fitted>,
}

/// Training progress, for a CLI's display.
#[derive(Debug, Clone)]
pub enum Progress {
    Backtest {
        model: &'static str,
        fold: usize,
        folds: usize,
    },
    Final {
        model: &'static str,
    },
}

/// Backtests, selects and fits; see the module docs.
pub fn train(
    input: &Input<'_>,
    cfg: &ForecasterConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Forecaster, ForecastError> {
    let season = cfg.season_for(input.step);
    let h = cfg.horizon.max(1);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for &c in &cfg.candidates {
        let mut m = c.build(cfg, season);
        let mut folds = Vec::new();
        for k in (1..=cfg.folds).rev() {
            let Some(origin) = input.len().checked_sub(k * h) else {
                break;
            };
            if origin < m.model().min_history() {
                continue;
            }
            progress(Progress::Backtest {
                model: c.name(),
                fold: cfg.folds - k + 1,
                folds: cfg.folds,
            });
            match backtest(m.model_mut(), input, origin, h, season) {
                Ok(f) => folds.push(f),
                Err(e) => {
                    errors.push(format!("{}: {e}", c.name()));
                    folds.clear();
                    break;
                }
            }
        }
        if folds.len() == cfg.folds {
            results.push((c, folds));
        }
    }
    let selection = select(&results, cfg).ok_or_else(|| ForecastError::Model {
        model: "selection".into(),
        reason: format!(
            "no candidate could be backtested on {} points with {} folds of {h}{}",
            input.len(),
            cfg.folds,
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        ),
    })?;
    let mut selection = selection;
    let mut members = Vec::new();
    let mut refused = Vec::new();
    for &c in &selection.members {
        progress(Progress::Final { model: c.name() });
        let mut m = c.build(cfg, season);
        // A member that backtested but cannot fit the whole history is
        // left out (and said), rather than failing the whole training.
        match m
            .model_mut()
            .fit(input)
            .and_then(|()| m.model().forecast(input, cfg.horizon.max(1)).map(drop))
        {
            Ok(()) => members.push((c, m)),
            Err(e) => refused.push(format!("{}: {e}", c.name())),
        }
    }
    if members.is_empty() {
        return Err(ForecastError::Model {
            model: selection.label(),
            reason: format!("no member fits the whole history ({})", refused.join("; ")),
        });
    }
    if !refused.is_empty() {
        selection.members = members.iter().map(|m| m.0).collect();
        let _ = write!(
            selection.reason,
            "; left out after failing on the whole history: {}",
            refused.join("; ")
        );
    }
    let members: Vec<Fitted> = members.into_iter().map(|m| m.1).collect();
    Ok(Forecaster {
        config: cfg.clone(),
        selection,
        season,
        step: input.step,
        trained_until: input.time(input.len().saturating_sub(1)),
        members,
    })
}

impl Forecaster {
    /// Forecasts `horizon` steps past the end of `input` (any history on
    /// the trained grid; it need not be the training history).
    pub fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        self.forecast_explained(input, horizon).map(|f| f.0)
    }

    /// [`Forecaster::forecast`], and the level shift it followed instead
    /// of the models, if there was a fresh one in `input` (see [`regime`]).
    pub fn forecast_explained(
        &self,
        input: &Input<'_>,
        horizon: usize,
    ) -> Result<(Forecast, Option<Shift>), ForecastError> {
        let models = self.models_forecast(input, horizon)?;
        Ok(if self.config.follow_shifts {
            regime::guard(input, self.season, &self.config.regime, models)
        } else {
            (models, None)
        })
    }

    /// The chosen members' combined forecast, without the regime guard.
    pub fn models_forecast(
        &self,
        input: &Input<'_>,
        horizon: usize,
    ) -> Result<Forecast, ForecastError> {
        if horizon > self.config.horizon {
            return Err(ForecastError::Horizon {
                requested: horizon,
                max: self.config.horizon,
            });
        }
        let fs = self
            .members
            .iter()
            .map(|m| m.model().forecast(input, horizon))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(combine(
            &fs.iter().collect::<Vec<_>>(),
            self.selection.interval_scale,
        ))
    }

    pub fn members(&self) -> &[Fitted] {
        &self.members
    }

    /// Writes the forecaster into `dir` (created; replaced atomically
    /// enough: a new `forecaster.json` is renamed over the old one last).
    pub fn save(&self, dir: &Path) -> Result<(), ForecastError> {
        let err = |reason: String| ForecastError::Persist {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let mut saved = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            saved.push(match m {
                Fitted::SeasonalNaive(s) => SavedMember::SeasonalNaive {
                    season: s.season,
                    spread: s.spread,
                },
                Fitted::Ets(e) => SavedMember::Ets {
                    max_history: e.max_history,
                },
                Fitted::Damped(e) => SavedMember::Damped {
                    max_history: e.max_history,
                },
                Fitted::LastLevel(e) => SavedMember::LastLevel {
                    window: e.window,
                    history: e.history,
                },
                Fitted::Mstl(e) => SavedMember::Mstl {
                    season: e.season,
                    max_history: e.max_history,
                },
                Fitted::Arima(e) => SavedMember::Arima {
                    season: e.season,
                    max_history: e.max_history,
                },
                Fitted::Prophet(e) => SavedMember::Prophet {
                    season: e.season,
                    max_history: e.max_history,
                },
                Fitted::Lstm(l) => {
                    let sub = format!("lstm-{i}");
                    l.save(&dir.join(&sub))?;
                    SavedMember::Lstm { dir: sub }
                }
            });
        }
        let file = SavedForecaster {
            format: FORMAT.into(),
            config: self.config.clone(),
            selection: self.selection.clone(),
            season: self.season,
            step: self.step,
            trained_until: self.trained_until,
            members: saved,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        let tmp = dir.join("forecaster.json.tmp");
        std::fs::write(&tmp, json).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, dir.join("forecaster.json")).map_err(|e| err(e.to_string()))
    }

    pub fn load(dir: &Path) -> Result<Self, ForecastError> {
        let file = dir.join("forecaster.json");
        let err = |reason: String| ForecastError::Persist {
            path: file.display().to_string(),
            reason,
        };
        let json = std::fs::read(&file).map_err(|e| err(e.to_string()))?;
        let f: SavedForecaster = serde_json::from_slice(&json).map_err(|e| err(e.to_string()))?;
        if f.format != FORMAT {
            return Err(err(format!("format {:?}, expected {FORMAT:?}", f.format)));
        }
        let members = f
            .members
            .into_iter()
            .map(|m| {
                Ok(match m {
                    SavedMember::SeasonalNaive { season, spread } => {
                        Fitted::SeasonalNaive(SeasonalNaive { season, spread })
                    }
                    SavedMember::Ets { max_history } => Fitted::Ets(Ets { max_history }),
                    SavedMember::Damped { max_history } => Fitted::Damped(Damped { max_history }),
                    SavedMember::LastLevel { window, history } => {
                        Fitted::LastLevel(LastLevel { window, history })
                    }
                    SavedMember::Mstl {
                        season,
                        max_history,
                    } => Fitted::Mstl(Mstl {
                        season,
                        max_history,
                    }),
                    SavedMember::Arima {
                        season,
                        max_history,
                    } => Fitted::Arima(Arima {
                        season,
                        max_history,
                    }),
                    SavedMember::Prophet {
                        season,
                        max_history,
                    } => Fitted::Prophet(Prophet {
                        season,
                        max_history,
                    }),
                    SavedMember::Lstm { dir: sub } => {
                        Fitted::Lstm(Box::new(LstmModel::load(&dir.join(sub))?))
                    }
                })
            })
            .collect::<Result<Vec<_>, ForecastError>>()?;
        Ok(Self {
            config: f.config,
            selection: f.selection,
            season: f.season,
            step: f.step,
            trained_until: f.trained_until,
            members,
        })
    }
}

const FORMAT: &str = "shadow-forecaster/1";

#[derive(Serialize, Deserialize)]
struct SavedForecaster {
    format: String,
    config: ForecasterConfig,
    selection: Selection,
    season: usize,
    step: i64,
    trained_until: i64,
    members: Vec<SavedMember>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
enum SavedMember {
    SeasonalNaive {
        season: usize,
        spread: (f64, f64),
    },
    Ets {
        max_history: Option<usize>,
    },
    Damped {
        max_history: Option<usize>,
    },
    LastLevel {
        window: usize,
        history: usize,
    },
    Mstl {
        season: usize,
        max_history: Option<usize>,
    },
    Arima {
        season: usize,
        max_history: Option<usize>,
    },
    Prophet {
        season: usize,
        max_history: Option<usize>,
    },
    Lstm {
        dir: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fold whose forecast is off by `err` everywhere (MASE = err).
    fn fold(err: f64) -> Fold {
        let actual = vec![10.0; 4];
        let p50: Vec<f64> = actual.iter().map(|a| a + err).collect();
        Fold {
            forecast: Forecast {
                start: 0,
                step: 60,
                p10: p50.iter().map(|v| v - 1.0).collect(),
                p50: p50.clone(),
                p90: p50.iter().map(|v| v + 1.0).collect(),
            },
            actual,
            scale: 1.0,
        }
    }

    #[test]
    fn the_newest_fold_weighs_most() {
        // Mean MASE ties at 1.0; the model better on the newest fold wins.
        let results = vec![
            (Candidate::SeasonalNaive, vec![fold(0.5), fold(1.5)]),
            (Candidate::Ets, vec![fold(1.5), fold(0.5)]),
        ];
        let cfg = ForecasterConfig {
            ensemble: false,
            ..ForecasterConfig::default()
        };
        let s = select(&results, &cfg).unwrap();
        assert_eq!(s.members, vec![Candidate::Ets], "{}", s.reason);
        assert!((s.score - (0.5 * 2.0 + 1.5) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_model_that_exploded_on_a_fold_never_joins_an_ensemble() {
        // Ets errs the other way from the others, so an ensemble of all
        // three would score best (0.06 against 0.73), but it exploded on
        // the older fold (2.5x the best there).
        let results = vec![
            (Candidate::SeasonalNaive, vec![fold(1.0), fold(0.6)]),
            (Candidate::Mstl, vec![fold(1.0), fold(0.6)]),
            (Candidate::Ets, vec![fold(-2.5), fold(-1.2)]),
        ];
        let s = select(&results, &ForecasterConfig::default()).unwrap();
        assert!(
            !s.members.contains(&Candidate::Ets),
            "{:?}: {}",
            s.members,
            s.reason
        );
        assert!(s.reason.contains("kept out of ensembles"), "{}", s.reason);
        assert_eq!(s.members, vec![Candidate::SeasonalNaive], "{}", s.reason);
    }
}
