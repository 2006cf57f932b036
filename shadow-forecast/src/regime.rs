//! Regime changes: a level shift, or a series pinned at a ceiling or floor,
//! detected within a few steps, and the forecast that follows the new
//! level until the models have seen enough of it.
//!
//! The models are fitted on history, and history says the old daily
//! pattern. When CPU jumps to 99% and stays there, a seasonal model goes
//! back to the old pattern and forecasts 34%; acting on that would scale
//! in during an outage. [`detect`] compares the newest points with the
//! same phase one season earlier (or, without a season, with the level
//! before them): a shift is a run of at least [`Settings::window`] points
//! almost all beyond `k` robust standard deviations of the usual
//! seasonal difference, on the same side. [`guard`] then follows the new
//! level: flat at the pinned value for a saturated series; otherwise the
//! models' forecast, moved by the gap between it and the new level, so it
//! keeps its shape. Models that already follow the level are left alone.
//! Once the shift is a season old, the seasonal difference no longer sees
//! it: by then the last season is the new regime and the models have been
//! retrained on it.

use serde::{Deserialize, Serialize};

use crate::model::{Forecast, Input, quantile};

/// How a shift is detected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Fewest points after the shift before it is believed: how fast the
    /// forecast adapts. `None` is a season / 48, at least 3, at most 12
    /// (30 minutes of 5-minute points).
    pub window: Option<usize>,
    /// How many robust standard deviations of the usual seasonal
    /// difference the new points must lie beyond.
    pub k: f64,
    /// The share of the points after the shift that must lie beyond.
    pub share: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: None,
            k: 4.0,
            share: 0.85,
        }
    }
}

impl Settings {
    pub fn window_for(&self, season: usize) -> usize {
        self.window.unwrap_or((season / 48).clamp(3, 12)).max(2)
    }
}

/// A detected regime change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shift {
    /// Index of the first point of the new regime.
    pub at: usize,
    /// The step at the shift: the median seasonal difference since it,
    /// less the median just before it (without a season: the level change).
    pub offset: f64,
    /// The median level since the shift.
    pub level: f64,
    /// The series is pinned: its spread since the shift is at most a third
    /// of its spread over the same hours a season earlier (a saturated
    /// CPU, a full disk).
    pub saturated: bool,
}

impl Shift {
    /// A short description for a forecast's reason.
    pub fn describe(&self, input: &Input<'_>) -> String {
        format!(
            "{} {} {:+.3} at {} ({} points ago); forecast follows the new level {:.3}",
            if self.saturated {
                "saturation:"
            } else {
                "level shift:"
            },
            if self.offset >= 0.0 { "up" } else { "down" },
            self.offset,
            crate::series::format_timestamp(input.time(self.at)),
            input.len() - self.at,
            self.level
        )
    }
}

/// The baseline each point is compared with: the same phase one season
/// earlier where there are two seasons, else the median level of the
/// `lookback` points before the newest `lookback`.
fn baseline(y: &[f64], season: usize, lookback: usize) -> Option<(Vec<f64>, usize)> {
    let n = y.len();
    if season > 1 && n >= 2 * season + lookback {
        // d[t] = y[t] - y[t - season] for t in (n - season)..n; scale from the season before.
        Some((
            (0..n).map(|t| y[t.saturating_sub(season)]).collect(),
            season,
        ))
    } else if n >= 3 * lookback {
        let old = &y[n - 3 * lookback..n - lookback];
        let m = quantile(old, 0.5);
        Some((vec![m; n], 0))
    } else {
        None
    }
}

/// Finds a shift among the newest points (at most a season of them).
pub fn detect(y: &[f64], season: usize, settings: &Settings) -> Option<Shift> {
    let n = y.len();
    let w = settings.window_for(season);
    let lookback = if season > 1 { season } else { (4 * w).max(12) };
    let (base, lag) = baseline(y, season, lookback)?;
    let d: Vec<f64> = (0..n).map(|t| y[t] - base[t]).collect();
    // The usual difference: the season (or lookback) before the newest one.
    let reference: Vec<f64> = if lag > 0 {
        d[n - 2 * season..n - season].to_vec()
    } else {
        let old = &y[n - 3 * lookback..n - lookback];
        old.windows(2).map(|p| p[1] - p[0]).collect()
    };
    let med = quantile(&reference, 0.5);
    let dev: Vec<f64> = reference.iter().map(|v| (v - med).abs()).collect();
    let scale_floor = 1e-9 * (1.0 + quantile(y, 0.5).abs());
    let sigma = (1.4826 * quantile(&dev, 0.5)).max(scale_floor);
    let limit = settings.k * sigma;
    let side = |v: f64| {
        if v - med > limit {
            1
        } else if med - v > limit {
            -1
        } else {
            0
        }
    };
    // The newest point must itself be beyond, or nothing is shifting now.
    let sign = side(d[n - 1]);
    if sign == 0 {
        return None;
    }
    // The earliest start whose suffix is still mostly beyond on that side.
    let max_back = lookback.min(n - 1);
    let (mut beyond, mut at) = (0usize, None);
    for (len, t) in (n - max_back..n).rev().enumerate() {
        if side(d[t]) == sign {
            beyond += 1;
        }
        let len = len + 1;
        if len >= w && beyond as f64 >= settings.share * len as f64 && side(d[t]) == sign {
            at = Some(t);
        }
    }
    let at = at?;
    let after = &y[at..];
    // The step at the shift: against the points just before it, so a
    // day-over-day drift before the shift is not counted as part of it.
    let pre = &d[at.saturating_sub((lookback / 4).max(w))..at];
    let before_shift = if pre.len() >= w {
        quantile(pre, 0.5)
    } else {
        med
    };
    let offset = quantile(&d[at..], 0.5) - before_shift;
    let spread = |v: &[f64]| quantile(v, 0.9) - quantile(v, 0.1);
    // Pinned means flat compared with the same hours a season earlier
    // (not with a whole season, whose daily swing any few hours lack).
    let before = if lag > 0 {
        &y[at - lag..n - lag]
    } else {
        &y[at.saturating_sub(lookback)..at]
    };
    let usual = spread(before).max(sigma);
    Some(Shift {
        at,
        offset,
        level: quantile(after, 0.5),
        saturated: spread(after) <= 0.35 * usual,
    })
}

/// The forecast that follows a detected shift: flat at the pinned level
/// when saturated; else the last season with the offset added where it
/// is older than the shift (flat at the new level without a season). The
/// interval comes from the points since the shift, widened with the
/// square root of the horizon, and is at least as wide as the models'
/// own (which saw more history).
pub fn follow(input: &Input<'_>, season: usize, shift: &Shift, models: &Forecast) -> Forecast {
    let y = input.values;
    let n = y.len();
    let after = &y[shift.at..];
    let horizon = models.len();
    let seasonal = season > 1 && n >= 2 * season && !shift.saturated;
    let center = |h: usize| {
        if seasonal {
            let t = n - season + h % season;
            if t < shift.at {
                y[t] + shift.offset
            } else {
                y[t]
            }
        } else {
            shift.level
        }
    };
    // Residual spread since the shift, against the same rule one step back.
    let resid: Vec<f64> = if seasonal {
        (shift.at..n)
            .map(|t| y[t] - (y[t - season] + shift.offset))
            .collect()
    } else {
        after.iter().map(|v| v - shift.level).collect()
    };
    // Centred: a day-over-day drift is in the level, not the spread.
    let mid = quantile(&resid, 0.5);
    let (lo, hi) = (quantile(&resid, 0.1) - mid, quantile(&resid, 0.9) - mid);
    let steps: Vec<f64> = after.windows(2).map(|p| (p[1] - p[0]).abs()).collect();
    let drift = if steps.is_empty() {
        0.0
    } else {
        quantile(&steps, 0.8)
    };
    let mut f = Forecast {
        start: models.start,
        step: models.step,
        p10: Vec::with_capacity(horizon),
        p50: Vec::with_capacity(horizon),
        p90: Vec::with_capacity(horizon),
    };
    for h in 0..horizon {
        let m = center(h);
        let widen = drift * ((h + 1) as f64).sqrt();
        let model_half = (models.p90[h] - models.p10[h]).max(0.0) / 2.0;
        let half_lo = (m - (m + lo - widen)).max(if shift.saturated { 0.0 } else { model_half });
        let half_hi = ((m + hi + widen) - m).max(if shift.saturated { 0.0 } else { model_half });
        f.p50.push(m);
        f.p10.push(m - half_lo);
        f.p90.push(m + half_hi);
    }
    f.sorted()
}

/// The models' forecast, or one that follows a fresh shift in `input`.
///
/// A pinned series gets [`follow`]'s flat forecast. Otherwise the models'
/// forecast keeps its shape (it is smoother than a copy of the last
/// season) and is moved to the new level: by the median gap, over the
/// next few hours, between it and [`follow`]. Models that already follow
/// the level (chosen because the newest fold saw the shift) have no gap
/// and are left as they are.
pub fn guard(
    input: &Input<'_>,
    season: usize,
    settings: &Settings,
    models: Forecast,
) -> (Forecast, Option<Shift>) {
    let Some(shift) = detect(input.values, season, settings) else {
        return (models, None);
    };
    let followed = follow(input, season, &shift, &models);
    if shift.saturated {
        return (followed, Some(shift));
    }
    let k = models
        .len()
        .min((season / 12).max(settings.window_for(season)));
    if k == 0 {
        return (models, None);
    }
    let gaps: Vec<f64> = (0..k).map(|h| followed.p50[h] - models.p50[h]).collect();
    let gap = quantile(&gaps, 0.5);
    if gap.abs() <= 0.1 * shift.offset.abs() {
        return (models, None);
    }
    let mut moved = models;
    for v in moved
        .p10
        .iter_mut()
        .chain(moved.p50.iter_mut())
        .chain(moved.p90.iter_mut())
    {
        *v += gap;
    }
    (moved, Some(shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(n: usize, season: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let phase = (i % season) as f64 / season as f64 * std::f64::consts::TAU;
                // A little deterministic noise so the scale is not zero.
                30.0 + 10.0 * phase.sin() + ((i * 7919) % 13) as f64 * 0.1
            })
            .collect()
    }

    #[test]
    fn an_ordinary_day_is_no_shift() {
        let y = daily(288 * 5, 288);
        for end in (288 * 3..y.len()).step_by(17) {
            assert_eq!(detect(&y[..end], 288, &Settings::default()), None, "{end}");
        }
    }

    #[test]
    fn saturation_is_found_within_the_window_and_followed() {
        let mut y = daily(288 * 4, 288);
        let at = y.len() - 8;
        for v in &mut y[at..] {
            *v = 99.0;
        }
        let s = detect(&y, 288, &Settings::default()).expect("a shift");
        assert_eq!(s.at, at);
        assert!(s.saturated && s.offset > 50.0, "{s:?}");
        // Fewer points than the window: not yet believed.
        assert_eq!(detect(&y[..at + 4], 288, &Settings::default()), None);
        let input = Input {
            name: "cpu",
            values: &y,
            start: 0,
            step: 300,
            related: None,
            weights: None,
        };
        let old = Forecast {
            start: 0,
            step: 300,
            p10: vec![20.0; 24],
            p50: vec![30.0; 24],
            p90: vec![40.0; 24],
        };
        let (f, shift) = guard(&input, 288, &Settings::default(), old);
        assert!(shift.is_some());
        assert!(f.p50.iter().all(|&v| v == 99.0), "{:?}", f.p50);
    }

    #[test]
    fn a_level_shift_keeps_the_daily_shape() {
        let mut y = daily(288 * 4, 288);
        let at = y.len() - 40;
        for v in &mut y[at..] {
            *v += 25.0;
        }
        let s = detect(&y, 288, &Settings::default()).expect("a shift");
        assert_eq!(s.at, at);
        assert!(!s.saturated && (s.offset - 25.0).abs() < 1.0, "{s:?}");
        let input = Input {
            name: "cpu",
            values: &y,
            start: 0,
            step: 300,
            related: None,
            weights: None,
        };
        let flat = Forecast {
            start: 0,
            step: 300,
            p10: vec![0.0; 288],
            p50: vec![30.0; 288],
            p90: vec![60.0; 288],
        };
        let f = follow(&input, 288, &s, &flat);
        let truth: Vec<f64> = daily(288 * 5, 288)[288 * 4..]
            .iter()
            .map(|v| v + 25.0)
            .collect();
        let mae = crate::metrics::mae(&truth, &f.p50);
        assert!(mae < 1.0, "MAE {mae}");
    }
}
