//! Classical baselines behind the same [`Model`] interface: seasonal naive,
//! ETS (augurs' AutoETS), a damped-trend ETS, MSTL (augurs' MSTL with an
//! AutoETS trend) and a robust last level.
//!
//! The last three follow the level rather than the season: after a regime
//! change (a level shift, a pinned CPU) they are what is right, and the
//! selection can see that on a fold.
//!
//! ETS here is non-seasonal, as statsforecast's and R's AutoETS are for a
//! season longer than 24 steps (a day of 5-minute points is 288): the
//! seasonal state would need 288 parameters. MSTL takes the daily season
//! out by LOESS first, which is the classical answer to long seasons.
//! The augurs models are cheap, so they are refitted on the history they
//! forecast from; `fit` only checks that they can be.

use augurs_core::{Fit, Predict};
use augurs_ets::{AutoETS, trend::AutoETSTrendModel};
use augurs_mstl::MSTLModel;

use crate::{
    error::ForecastError,
    model::{Forecast, Input, Model, quantile},
};

/// The P10-P90 interval is an 80 % prediction interval.
pub(crate) const LEVEL: f64 = 0.8;

/// Repeats the last season; the interval comes from the in-sample seasonal
/// differences, widened by the square root of how many seasons ahead.
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    pub season: usize,
    /// P10 and P90 of `y[t] - y[t - season]` in the training data.
    pub spread: (f64, f64),
}

impl SeasonalNaive {
    pub fn new(season: usize) -> Self {
        Self {
            season: season.max(1),
            spread: (0.0, 0.0),
        }
    }

    /// The season actually used for a history of `n` points: one needs two
    /// whole seasons to tell a season from noise, else it is plain naive.
    fn season_for(&self, n: usize) -> usize {
        if n >= 2 * self.season { self.season } else { 1 }
    }
}

impl Model for SeasonalNaive {
    fn name(&self) -> &'static str {
        "seasonal_naive"
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        input.validate(self.min_history())?;
        let s = self.season_for(input.len());
        let y = input.values;
        let diffs: Vec<f64> = (s..y.len())
            .filter(|&t| input.weights.is_none_or(|w| w[t] >= 0.5 && w[t - s] >= 0.5))
            .map(|t| y[t] - y[t - s])
            .collect();
        self.spread = (quantile(&diffs, 0.1), quantile(&diffs, 0.9));
        if diffs.is_empty() {
            self.spread = (0.0, 0.0);
        }
        Ok(())
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        let n = input.len();
        let s = self.season_for(n);
        let (lo, hi) = self.spread;
        let mut f = Forecast {
            start: input.time(n),
            step: input.step,
            p10: Vec::with_capacity(horizon),
            p50: Vec::with_capacity(horizon),
            p90: Vec::with_capacity(horizon),
        };
        for h in 0..horizon {
            let m = input.values[n - s + h % s];
            let k = ((h / s) + 1) as f64;
            f.p50.push(m);
            f.p10.push(m + lo * k.sqrt());
            f.p90.push(m + hi * k.sqrt());
        }
        Ok(f.sorted())
    }
}

/// Exponential smoothing with automatic error/trend/damping selection (AICc).
#[derive(Debug, Clone, Default)]
pub struct Ets {
    /// The points it refits on; older history is dropped.
    pub max_history: Option<usize>,
}

impl Model for Ets {
    fn name(&self) -> &'static str {
        "ets"
    }

    fn min_history(&self) -> usize {
        10
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        self.forecast(input, 1).map(drop)
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        let cleaned = clean(input, 1);
        let y = tail(&cleaned, self.max_history);
        let fitted = AutoETS::non_seasonal()
            .fit(y)
            .map_err(|e| model_err("ets", e))?;
        let out = fitted
            .predict(horizon, LEVEL)
            .map_err(|e| model_err("ets", e))?;
        from_augurs(input, out)
    }
}

/// Holt's linear trend with damping (AutoETS `ZAN`, damped), so a trend
/// flattens out instead of running away over a long horizon.
#[derive(Debug, Clone, Default)]
pub struct Damped {
    pub max_history: Option<usize>,
}

impl Model for Damped {
    fn name(&self) -> &'static str {
        "damped"
    }

    fn min_history(&self) -> usize {
        10
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        self.forecast(input, 1).map(drop)
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        let cleaned = clean(input, 1);
        let y = tail(&cleaned, self.max_history);
        let fitted = AutoETS::new(1, "ZAN")
            .and_then(|m| m.damped(true))
            .map_err(|e| model_err("damped", e))?
            .fit(y)
            .map_err(|e| model_err("damped", e))?;
        let out = fitted
            .predict(horizon, LEVEL)
            .map_err(|e| model_err("damped", e))?;
        from_augurs(input, out)
    }
}

/// The robust last level: the median of the newest `window` points,
/// carried forward. Its interval is empirical: the P10 and P90 of how far
/// the series moved `h` steps after such a median, over the recent
/// history, for each `h`. It ignores the season, which is its point: it is
/// right exactly when the season is not (after a shift, at saturation).
#[derive(Debug, Clone)]
pub struct LastLevel {
    pub window: usize,
    /// The history the interval is learnt from (points).
    pub history: usize,
}

impl LastLevel {
    pub fn new(season: usize) -> Self {
        Self {
            window: (season / 48).clamp(3, 12),
            history: (4 * season).max(200),
        }
    }
}

impl Model for LastLevel {
    fn name(&self) -> &'static str {
        "last_level"
    }

    fn min_history(&self) -> usize {
        self.window + 2
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        input.validate(self.min_history())
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        let y = tail(input.values, Some(self.history));
        let weights = input.weights.map(|w| tail(w, Some(self.history)));
        let kept = |t: usize| weights.is_none_or(|w| w[t] >= 0.5);
        let w = self.window.min(y.len());
        let median_at = |t: usize| {
            let win: Vec<f64> = (t + 1 - w..=t).filter(|&i| kept(i)).map(|i| y[i]).collect();
            if win.is_empty() {
                y[t]
            } else {
                quantile(&win, 0.5)
            }
        };
        let n = y.len();
        let level = median_at(n - 1);
        let medians: Vec<f64> = (0..n)
            .map(|t| if t + 1 >= w { median_at(t) } else { f64::NAN })
            .collect();
        let mut f = Forecast {
            start: input.time(input.len()),
            step: input.step,
            p10: Vec::with_capacity(horizon),
            p50: Vec::with_capacity(horizon),
            p90: Vec::with_capacity(horizon),
        };
        let (mut lo, mut hi) = (0.0, 0.0);
        for h in 1..=horizon {
            let moves: Vec<f64> = (w - 1..n.saturating_sub(h))
                .filter(|&t| kept(t + h))
                .map(|t| y[t + h] - medians[t])
                .collect();
            // Past the history's reach, the widest seen so far, grown as a random walk.
            if moves.len() >= 10 {
                (lo, hi) = (quantile(&moves, 0.1), quantile(&moves, 0.9));
            } else {
                let k = (h as f64 / (h - 1).max(1) as f64).sqrt();
                (lo, hi) = (lo * k, hi * k);
            }
            f.p50.push(level);
            f.p10.push(level + lo.min(0.0));
            f.p90.push(level + hi.max(0.0));
        }
        Ok(f.sorted())
    }
}

/// MSTL: LOESS removes the daily season, AutoETS forecasts the rest.
#[derive(Debug, Clone)]
pub struct Mstl {
    pub season: usize,
    pub max_history: Option<usize>,
}

impl Mstl {
    pub fn new(season: usize) -> Self {
        Self {
            season: season.max(2),
            max_history: None,
        }
    }
}

impl Model for Mstl {
    fn name(&self) -> &'static str {
        "mstl"
    }

    fn min_history(&self) -> usize {
        2 * self.season + 1
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        self.forecast(input, 1).map(drop)
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        let trend: AutoETSTrendModel = AutoETS::non_seasonal().into_trend_model();
        mstl_forecast("mstl", trend, input, self.season, self.max_history, horizon)
    }
}

/// MSTL with `trend` forecasting the seasonally adjusted series (ETS for
/// `mstl`, auto-ARIMA for `arima`), on the cleaned newest `max_history`
/// points of `input`.
pub(crate) fn mstl_forecast<T>(
    model: &str,
    trend: T,
    input: &Input<'_>,
    season: usize,
    max_history: Option<usize>,
    horizon: usize,
) -> Result<Forecast, ForecastError>
where
    T: augurs_mstl::TrendModel + Sync + Send,
{
    let cleaned = clean(input, season);
    let y = tail(&cleaned, max_history);
    let fitted = MSTLModel::new(vec![season], trend)
        .fit(y)
        .map_err(|e| model_err(model, e))?;
    let out = fitted
        .predict(horizon, LEVEL)
        .map_err(|e| model_err(model, e))?;
    from_augurs(input, out)
}

/// The augurs models take no weights, so points weighted out (anomalies)
/// are excluded by replacing them: with the value one season earlier where
/// there is one, else the last kept value.
pub(crate) fn clean(input: &Input<'_>, season: usize) -> Vec<f64> {
    let mut y = input.values.to_vec();
    if let Some(w) = input.weights {
        for t in 0..y.len() {
            if w.get(t).is_some_and(|&w| w < 0.5) {
                y[t] = if t >= season && season > 1 {
                    y[t - season]
                } else if t > 0 {
                    y[t - 1]
                } else {
                    y[t]
                };
            }
        }
    }
    y
}

pub(crate) fn tail(y: &[f64], max: Option<usize>) -> &[f64] {
    &y[y.len() - max.unwrap_or(y.len()).min(y.len())..]
}

pub(crate) fn model_err(model: &str, e: impl std::fmt::Display) -> ForecastError {
    ForecastError::Model {
        model: model.into(),
        reason: e.to_string(),
    }
}

pub(crate) fn from_augurs(
    input: &Input<'_>,
    out: augurs_core::Forecast,
) -> Result<Forecast, ForecastError> {
    let Some(iv) = out.intervals else {
        return Err(model_err("augurs", "no prediction intervals returned"));
    };
    let f = Forecast {
        start: input.time(input.len()),
        step: input.step,
        p10: iv.lower,
        p50: out.point,
        p90: iv.upper,
    };
    if f.p50
        .iter()
        .chain(&f.p10)
        .chain(&f.p90)
        .any(|v| !v.is_finite())
    {
        return Err(model_err("augurs", "non-finite forecast"));
    }
    Ok(f.sorted())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test series on a grid of 60 s steps.
    fn input(values: &[f64]) -> Input<'_> {
        Input::new("t", values, 0, 60)
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        let y: Vec<f64> = (0..40)
            .map(|i| (i % 4) as f64 + if i % 7 == 0 { 0.5 } else { 0.0 })
            .collect();
        let mut m = SeasonalNaive::new(4);
        m.fit(&input(&y)).unwrap();
        let f = m.forecast(&input(&y), 6).unwrap();
        assert_eq!(f.p50, vec![y[36], y[37], y[38], y[39], y[36], y[37]]);
        assert!(f.p10.iter().zip(&f.p90).all(|(a, b)| a <= b));
        assert_eq!(f.start, 40 * 60);
    }

    #[test]
    fn last_level_and_damped_follow_a_new_level() {
        let mut y: Vec<f64> = (0..400)
            .map(|i| 20.0 + ((i * 7919) % 11) as f64 * 0.3)
            .collect();
        for v in &mut y[380..] {
            *v = 95.0 + ((*v * 10.0) as usize % 3) as f64 * 0.1;
        }
        for m in [
            &mut LastLevel::new(288) as &mut dyn Model,
            &mut Damped::default(),
        ] {
            m.fit(&input(&y)).unwrap();
            let f = m.forecast(&input(&y), 48).unwrap();
            assert_eq!(f.len(), 48, "{}", m.name());
            assert!(
                f.p50.iter().all(|v| (85.0..105.0).contains(v)),
                "{}: {:?}",
                m.name(),
                &f.p50[..4]
            );
            assert!(f.p10.iter().zip(&f.p90).all(|(a, b)| a <= b));
        }
    }

    #[test]
    fn ets_and_mstl_forecast_a_seasonal_series() {
        let y: Vec<f64> = (0..200)
            .map(|i| 10.0 + (i as f64 * std::f64::consts::TAU / 24.0).sin() + 0.01 * i as f64)
            .collect();
        for m in [&mut Ets::default() as &mut dyn Model, &mut Mstl::new(24)] {
            m.fit(&input(&y)).unwrap();
            let f = m.forecast(&input(&y), 24).unwrap();
            assert_eq!(f.len(), 24, "{}", m.name());
            assert!(
                f.p50.iter().all(|v| (7.0..14.0).contains(v)),
                "{}: {:?}",
                m.name(),
                f.p50
            );
        }
    }
}
