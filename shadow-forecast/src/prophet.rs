//! A Prophet-style model: a piecewise-linear trend with changepoints plus
//! Fourier seasonalities, fitted as one regularised regression, with
//! Prophet's way of widening the interval for changepoints still to come.
//!
//! Why not `augurs-prophet`: its offline backend (`wasmstan`) runs the Stan
//! model under wasmtime, which adds 217 crates and about 5 minutes to every
//! clean build, and 20 MB to every binary that forecasts; the agent and CI
//! pay for that on every build. Prophet's model is a linear one once the
//! changepoint locations are fixed, so this fits it with a MAP estimate in
//! closed form instead of Stan's L-BFGS: Gaussian priors with Prophet's
//! default scales (0.05 on the changepoint deltas, where Prophet's is a
//! Laplace, and 10 on the Fourier coefficients) make it a ridge
//! regression, its penalties scaled by the noise variance of a first fit. What differs from
//! Prophet: an L2 penalty, not L1, on the deltas (so changes are spread
//! over neighbouring changepoints rather than sparse), no holidays, no
//! logistic growth, and the future trend's variance computed in closed
//! form where Prophet simulates it.

use std::f64::consts::TAU;

use crate::{
    error::ForecastError,
    model::{Forecast, Input, Model, quantile},
};

/// Prophet's defaults.
const CHANGEPOINTS: usize = 25;
const CHANGEPOINT_RANGE: f64 = 0.8;
const CHANGEPOINT_PRIOR: f64 = 0.05;
const SEASONALITY_PRIOR: f64 = 10.0;
const DAILY_ORDER: usize = 4;
const WEEKLY_ORDER: usize = 3;
/// The normal's 90 % point: P10 and P90 of the trend's uncertainty.
const Z90: f64 = 1.281_551_565_545;

#[derive(Debug, Clone)]
pub struct Prophet {
    /// Steps per day; the weekly season is seven of them.
    pub season: usize,
    pub max_history: Option<usize>,
}

/// What the regression learnt, on the scaled axes (time 0..1 over the
/// history, values divided by the largest absolute value).
#[derive(Debug, Clone)]
struct Fit {
    /// Points fitted (the time axis' unit).
    n: usize,
    scale: f64,
    changepoints: Vec<f64>,
    periods: Vec<(f64, usize)>,
    beta: Vec<f64>,
    /// P10 and P90 of the in-sample residuals (scaled).
    residual: (f64, f64),
    /// Mean absolute changepoint delta: the Laplace scale of future ones.
    delta_scale: f64,
}

impl Prophet {
    pub fn new(season: usize) -> Self {
        Self {
            season: season.max(2),
            max_history: None,
        }
    }

    fn periods(&self, n: usize) -> Vec<(f64, usize)> {
        let mut p = vec![(self.season as f64, DAILY_ORDER)];
        // Prophet adds the weekly season once it has two weeks.
        if n >= 14 * self.season {
            p.push((7.0 * self.season as f64, WEEKLY_ORDER));
        }
        p
    }

    fn learn(&self, input: &Input<'_>) -> Result<Fit, ForecastError> {
        input.validate(self.min_history())?;
        let skip = input.len() - input.len().min(self.max_history.unwrap_or(usize::MAX));
        let y = &input.values[skip..];
        let w: Vec<f64> = (0..y.len())
            .map(|i| input.weights.map_or(1.0, |w| w[skip + i].clamp(0.0, 1.0)))
            .collect();
        let n = y.len();
        let scale = y.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(1e-9);
        let changepoints: Vec<f64> = (1..=CHANGEPOINTS)
            .map(|j| CHANGEPOINT_RANGE * j as f64 / (CHANGEPOINTS + 1) as f64)
            .collect();
        let periods = self.periods(n);
        let t = |i: usize| i as f64 / n as f64;
        let row = |i: usize| features(t(i), i as f64, &changepoints, &periods);
        let k = row(0).len();
        // Normal equations with the priors as ridge penalties: none on the
        // intercept and base slope, 1/prior^2 on the rest.
        let mut a = vec![0.0; k * k];
        let mut b = vec![0.0; k];
        for i in 0..n {
            let x = row(i);
            let yi = y[i] / scale;
            for r in 0..k {
                b[r] += w[i] * x[r] * yi;
                for c in 0..k {
                    a[r * k + c] += w[i] * x[r] * x[c];
                }
            }
        }
        // MAP with Gaussian priors: a coefficient with prior scale `tau`
        // costs `sigma^2 / tau^2` times its square, in units of squared
        // error, where `sigma^2` is the noise variance. It is not known
        // before the fit, so a first, nearly unpenalised fit estimates it.
        let penalised = |sigma2: f64| {
            let mut a = a.clone();
            for j in 2..k {
                let tau = if j < 2 + CHANGEPOINTS {
                    CHANGEPOINT_PRIOR
                } else {
                    SEASONALITY_PRIOR
                };
                a[j * k + j] += sigma2 / (tau * tau);
            }
            solve(a, b.clone(), k).ok_or_else(|| ForecastError::Model {
                model: "prophet".into(),
                reason: "the regression is singular".into(),
            })
        };
        let first = penalised(1e-6)?;
        let (sse, mass) = (0..n).fold((0.0, 0.0), |(s, m), i| {
            let e = y[i] / scale - dot(&row(i), &first);
            (s + w[i] * e * e, m + w[i])
        });
        let sigma2 = (sse / (mass - k as f64).max(1.0)).max(1e-10);
        let beta = penalised(sigma2)?;
        let residuals: Vec<f64> = (0..n)
            .filter(|&i| w[i] >= 0.5)
            .map(|i| y[i] / scale - dot(&row(i), &beta))
            .collect();
        let deltas = &beta[2..2 + CHANGEPOINTS];
        Ok(Fit {
            n,
            scale,
            residual: (quantile(&residuals, 0.1), quantile(&residuals, 0.9)),
            delta_scale: deltas.iter().map(|d| d.abs()).sum::<f64>() / CHANGEPOINTS as f64,
            changepoints,
            periods,
            beta,
        })
    }
}

/// One design row: intercept, slope, a hinge per changepoint, then a sine
/// and cosine per Fourier order per season. `t` is scaled time, `i` the
/// step index (the seasons' clock).
fn features(t: f64, i: f64, changepoints: &[f64], periods: &[(f64, usize)]) -> Vec<f64> {
    let mut x = vec![1.0, t];
    x.extend(changepoints.iter().map(|&c| (t - c).max(0.0)));
    for &(period, order) in periods {
        for o in 1..=order {
            let a = TAU * o as f64 * i / period;
            x.push(a.sin());
            x.push(a.cos());
        }
    }
    x
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves the symmetric positive definite `a x = b` (Cholesky).
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, k: usize) -> Option<Vec<f64>> {
    for j in 0..k {
        let d = a[j * k + j] - (0..j).map(|m| a[j * k + m].powi(2)).sum::<f64>();
        if d <= 1e-12 {
            return None;
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let s = a[i * k + j] - (0..j).map(|m| a[i * k + m] * a[j * k + m]).sum::<f64>();
            a[i * k + j] = s / d;
        }
    }
    for i in 0..k {
        b[i] = (b[i] - (0..i).map(|m| a[i * k + m] * b[m]).sum::<f64>()) / a[i * k + i];
    }
    for i in (0..k).rev() {
        b[i] = (b[i] - (i + 1..k).map(|m| a[m * k + i] * b[m]).sum::<f64>()) / a[i * k + i];
    }
    Some(b)
}

impl Model for Prophet {
    fn name(&self) -> &'static str {
        "prophet"
    }

    fn min_history(&self) -> usize {
        2 * self.season
    }

    fn fit(&mut self, input: &Input<'_>) -> Result<(), ForecastError> {
        self.learn(input).map(drop)
    }

    /// Refits on `input` (a regression of a few thousand rows is cheap, as
    /// the augurs models are) and extrapolates its trend and seasons.
    fn forecast(&self, input: &Input<'_>, horizon: usize) -> Result<Forecast, ForecastError> {
        let fit = self.learn(input)?;
        let origin = fit.n;
        let mut f = Forecast {
            start: input.time(input.len()),
            step: input.step,
            p10: Vec::with_capacity(horizon),
            p50: Vec::with_capacity(horizon),
            p90: Vec::with_capacity(horizon),
        };
        // Future changepoints arrive at the fitted rate with Laplace deltas
        // of the fitted mean size; the trend's variance after `h` (scaled
        // time) is rate * 2 b^2 * h^3 / 3.
        let rate = CHANGEPOINTS as f64 / CHANGEPOINT_RANGE;
        let (lo, hi) = fit.residual;
        for h in 1..=horizon {
            let i = origin + h - 1;
            let t = i as f64 / fit.n as f64;
            let m = dot(
                &features(t, i as f64, &fit.changepoints, &fit.periods),
                &fit.beta,
            );
            let ahead = (i + 1).saturating_sub(fit.n) as f64 / fit.n as f64;
            let trend_sd = fit.delta_scale * (rate * 2.0 * ahead.powi(3) / 3.0).sqrt();
            let spread = |r: f64| -(r.abs().hypot(Z90 * trend_sd));
            f.p50.push(m * fit.scale);
            f.p10.push((m + spread(lo)) * fit.scale);
            f.p90.push((m - spread(hi)) * fit.scale);
        }
        if f.p50
            .iter()
            .chain(&f.p10)
            .chain(&f.p90)
            .any(|v| !v.is_finite())
        {
            return Err(ForecastError::Model {
                model: "prophet".into(),
                reason: "non-finite forecast".into(),
            });
        }
        Ok(f.sorted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test series on a grid of 3600 s steps.
    fn input(values: &[f64]) -> Input<'_> {
        Input::new("t", values, 0, 3600)
    }

    #[test]
    fn follows_a_trend_change_and_the_daily_and_weekly_seasons() {
        // Three weeks hourly: flat, then rising from day 12; a daily swing
        // and a weekend dip.
        let y: Vec<f64> = (0..24 * 21)
            .map(|i| {
                let day = i / 24;
                let trend = 50.0
                    + if i > 24 * 12 {
                        0.1 * (i - 24 * 12) as f64
                    } else {
                        0.0
                    };
                let daily = 8.0 * (i as f64 * TAU / 24.0).sin();
                let weekend = if day % 7 >= 5 { -6.0 } else { 0.0 };
                trend + daily + weekend + ((i * 7919) % 13) as f64 * 0.1
            })
            .collect();
        let mut m = Prophet::new(24);
        m.fit(&input(&y)).unwrap();
        let f = m.forecast(&input(&y), 48).unwrap();
        // The truth over the next two days (days 21 and 22: weekdays).
        let truth = |i: usize| {
            50.0 + 0.1 * (i - 24 * 12) as f64 + 8.0 * (i as f64 * TAU / 24.0).sin() + 0.6
        };
        let mae = (0..48)
            .map(|h| (f.p50[h] - truth(24 * 21 + h)).abs())
            .sum::<f64>()
            / 48.0;
        assert!(mae < 2.5, "mae {mae}: {:?}", &f.p50[..6]);
        assert!(f.p10.iter().zip(&f.p90).all(|(a, b)| a < b));
        // The interval widens with the horizon (future changepoints).
        assert!(f.p90[47] - f.p10[47] > f.p90[0] - f.p10[0]);
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let x = solve(a, vec![2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }
}
