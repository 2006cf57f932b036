//! ARIMA with automatically selected orders: anofox-forecast's port of R's
//! `auto.arima` (Hyndman-Khandakar stepwise search, KPSS for `d`, AICc),
//! fitted on the seasonally adjusted series.
//!
//! A seasonal ARIMA with a daily season of 288 five-minute steps needs a
//! lag-288 polynomial: R refuses periods above 350 and statsforecast's
//! fits take minutes. So, as statsforecast's `MSTL(trend_forecaster=
//! AutoARIMA)` and R's `stlf(method = "arima")` do, LOESS (augurs' MSTL)
//! takes the daily season out first and the ARIMA models what is left:
//! trend, level and short-range dependence. The season is added back to
//! the forecast and its interval.

use std::borrow::Cow;

use anofox_forecast::{
    core::TimeSeries,
    models::{Forecaster, arima::AutoARIMA},
};
use augurs_core::Fit;
use augurs_mstl::{FittedTrendModel, MSTLModel, TrendModel};

use crate::{
    baseline::{LEVEL, clean, model_err, mstl_forecast, tail},
    error::ForecastError,
    model::{Forecast, Input, Model},
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Seasonal decomposition plus a non-seasonal auto-ARIMA.
#[derive(Debug, Clone)]
pub struct Arima {
    pub season: usize,
    /// The points it refits on; older history is dropped.
    pub max_history: Option<usize>,
}

impl Arima {
    pub fn new(season: usize) -> Self {
        Self {
            season: season.max(2),
            max_history: None,
        }
    }

    /// The orders `auto.arima` picks for this history's seasonally
    /// adjusted series, as `(p, d, q)`.
    pub fn orders(&self, input: &Input<'_>) -> Result<(usize, usize, usize), ForecastError> {
        input.validate(self.min_history())?;
        let cleaned = clean(input, self.season);
        let y = tail(&cleaned, self.max_history);
        let mstl = MSTLModel::new(vec![self.season], AutoArimaTrend)
            .fit(y)
            .map_err(|e| model_err("arima", e))?;
        let fit = mstl.fit();
        let adjusted: Vec<f64> = fit
            .trend()
            .iter()
            .zip(fit.remainder())
            .map(|(t, r)| f64::from(t + r))
            .collect();
        let fitted = AutoArimaTrend
            .fit_arima(&adjusted)
            .map_err(|e| model_err("arima", e))?;
        fitted
            .selected_order()
            .ok_or_else(|| model_err("arima", "no order selected"))
    }
}

impl Model for Arima {
    fn name(&self) -> &'static str {
        "arima"
    }

    fn min_history(&self) -> usize {
        // Two seasons to decompose, ten points for the order search.
        (2 * self.season + 1).max(10)
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        self.forecast(input, 1).map(drop)
    }

    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        input.validate(self.min_history())?;
        mstl_forecast(
            "arima",
            AutoArimaTrend,
            input,
            self.season,
            self.max_history,
            horizon,
        )
    }
}

/// auto.arima as MSTL's trend model.
#[derive(Debug, Clone, Copy)]
struct AutoArimaTrend;

impl AutoArimaTrend {
    fn fit_arima(&self, y: &[f64]) -> Result<AutoARIMA, BoxError> {
        // anofox wants timestamps; the model only uses their order.
        let t0 = chrono::DateTime::UNIX_EPOCH;
        let stamps = (0..y.len())
            .map(|i| t0 + chrono::Duration::seconds(i as i64))
            .collect();
        let series = TimeSeries::univariate(stamps, y.to_vec())?;
        let mut model = AutoARIMA::new();
        model.fit(&series)?;
        Ok(model)
    }
}

impl TrendModel for AutoArimaTrend {
    fn name(&self) -> Cow<'_, str> {
        "auto_arima".into()
    }

    fn fit(&self, y: &[f64]) -> Result<Box<dyn FittedTrendModel + Sync + Send>, BoxError> {
        Ok(Box::new(FittedArima {
            n: y.len(),
            model: self.fit_arima(y)?,
        }))
    }
}

#[derive(Debug)]
struct FittedArima {
    model: AutoARIMA,
    n: usize,
}

impl FittedTrendModel for FittedArima {
    fn predict_inplace(
        &self,
        horizon: usize,
        level: Option<f64>,
        forecast: &mut augurs_core::Forecast,
    ) -> Result<(), BoxError> {
        let level = level.unwrap_or(LEVEL);
        let out = self.model.predict_with_intervals(horizon, level)?;
        forecast.point = out.primary().to_vec();
        forecast.intervals = Some(augurs_core::ForecastIntervals {
            level,
            lower: out.lower_series(0)?.to_vec(),
            upper: out.upper_series(0)?.to_vec(),
        });
        Ok(())
    }

    fn predict_in_sample_inplace(
        &self,
        _level: Option<f64>,
        forecast: &mut augurs_core::Forecast,
    ) -> Result<(), BoxError> {
        let fitted = self
            .model
            .fitted_values()
            .ok_or("auto.arima kept no fitted values")?;
        forecast.point = fitted.to_vec();
        Ok(())
    }

    fn training_data_size(&self) -> Option<usize> {
        Some(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test series on a grid of 3600 s steps.
    fn input(values: &[f64]) -> Input<'_> {
        Input::new("t", values, 0, 3600)
    }

    /// A simulated ARIMA(1,1,0) plus a daily season: the search must find
    /// the differencing and the AR term, and the forecast must carry the
    /// season on.
    #[test]
    fn finds_a_random_walk_with_ar_under_a_season() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f64 / 10_000.0 - 0.5
        };
        let (mut level, mut step) = (100.0, 0.0);
        let y: Vec<f64> = (0..24 * 20)
            .map(|i| {
                step = 0.6 * step + noise();
                level += step;
                level + 5.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin()
            })
            .collect();
        let m = Arima::new(24);
        let (p, d, _) = m.orders(&input(&y)).unwrap();
        assert_eq!(d, 1, "a random walk needs one difference");
        assert!(p >= 1, "the AR term is missed: p = {p}");
        let f = m.forecast(&input(&y), 24).unwrap();
        assert_eq!(f.len(), 24);
        let last = y[y.len() - 1];
        let swing = f.p50.iter().cloned().fold(f64::MIN, f64::max)
            - f.p50.iter().cloned().fold(f64::MAX, f64::min);
        assert!(swing > 6.0, "the season is lost: swing {swing}");
        assert!(f.p50.iter().all(|v| (v - last).abs() < 25.0), "{:?}", f.p50);
        assert!(f.p10.iter().zip(&f.p90).all(|(a, b)| a < b));
    }
}
