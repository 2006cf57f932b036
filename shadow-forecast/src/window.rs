//! Windowing and normalisation for the LSTM: which points feed the encoder
//! and the per-horizon decoder for a forecast origin, and the scaling that
//! is fitted on training data only.
//!
//! An origin `o` is the count of known points: the encoder sees
//! `z[o - window .. o]`, the decoder predicts `z[o + h]` for `h < horizon`.

use serde::{Deserialize, Serialize};

/// Standardisation fitted on the training points (weighted; anomalous
/// points carry less). Forecast-time data never refits it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: f64,
    pub std: f64,
}

impl Scaler {
    pub fn fit(values: &[f64], weights: Option<&[f64]>) -> Self {
        let w = |i: usize| weights.map_or(1.0, |w| w[i].max(0.0));
        let total: f64 = (0..values.len()).map(w).sum::<f64>().max(f64::MIN_POSITIVE);
        let mean = values
            .iter()
            .enumerate()
            .map(|(i, v)| w(i) * v)
            .sum::<f64>()
            / total;
        let var = values
            .iter()
            .enumerate()
            .map(|(i, v)| w(i) * (v - mean).powi(2))
            .sum::<f64>()
            / total;
        // A constant series must not divide by zero.
        let floor = 1e-6 * mean.abs().max(1.0);
        Self {
            mean,
            std: var.sqrt().max(floor),
        }
    }

    pub fn norm(&self, v: f64) -> f32 {
        ((v - self.mean) / self.std) as f32
    }

    pub fn denorm(&self, z: f32) -> f64 {
        f64::from(z) * self.std + self.mean
    }

    pub fn norm_all(&self, values: &[f64]) -> Vec<f32> {
        values.iter().map(|&v| self.norm(v)).collect()
    }
}

/// Hour of day and day of week as points on circles (UTC).
pub fn calendar(t: i64) -> [f32; 4] {
    use std::f64::consts::TAU;
    let day = t.rem_euclid(86_400) as f64 / 86_400.0;
    // 1970-01-01 was a Thursday; 0 = Monday.
    let week = ((t.div_euclid(86_400) + 3).rem_euclid(7) as f64 + day) / 7.0;
    [
        (TAU * day).sin() as f32,
        (TAU * day).cos() as f32,
        (TAU * week).sin() as f32,
        (TAU * week).cos() as f32,
    ]
}

/// The shape of the LSTM's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub window: usize,
    pub horizon: usize,
    /// Steps per season (a day); 1 means none.
    pub season: usize,
    pub related: bool,
}

/// Half-width of the smoothing of the seasonal lag fed to the decoder.
const LAG_SMOOTH: usize = 2;

impl Layout {
    /// Target, related (if any), calendar.
    pub fn encoder_features(&self) -> usize {
        1 + usize::from(self.related) + 4
    }

    /// Smoothed seasonal lag, last value, horizon fraction, calendar.
    pub fn decoder_features(&self) -> usize {
        3 + 4
    }

    /// The first origin with a full window and a full season behind it.
    pub fn first_origin(&self) -> usize {
        let lag = if self.season > 1 {
            self.season + LAG_SMOOTH
        } else {
            1
        };
        self.window.max(lag)
    }

    /// Origins whose whole horizon lies inside `n` points.
    pub fn train_origins(&self, n: usize) -> std::ops::Range<usize> {
        self.first_origin()
            ..(n + 1)
                .saturating_sub(self.horizon)
                .max(self.first_origin())
    }

    /// Appends the encoder input for origin `o`: `[window, encoder_features]`.
    pub fn encoder(
        &self,
        z: &[f32],
        zr: Option<&[f32]>,
        start: i64,
        step: i64,
        o: usize,
        out: &mut Vec<f32>,
    ) {
        for t in o - self.window..o {
            out.push(z[t]);
            if self.related {
                out.push(zr.map_or(0.0, |r| r[t]));
            }
            out.extend(calendar(start + t as i64 * step));
        }
    }

    /// Appends the decoder input for origin `o`: `[horizon, decoder_features]`.
    pub fn decoder(
        &self,
        z: &[f32],
        start: i64,
        step: i64,
        o: usize,
        horizon: usize,
        out: &mut Vec<f32>,
    ) {
        let s = self.season.max(1);
        for h in 0..horizon {
            // The same phase in the newest season that is already known.
            let j = o + h - s * (h / s + 1);
            let (a, b) = (j.saturating_sub(LAG_SMOOTH), (j + LAG_SMOOTH + 1).min(o));
            let lag = z[a..b].iter().sum::<f32>() / (b - a) as f32;
            out.push(lag);
            out.push(z[o - 1]);
            out.push(h as f32 / self.horizon.max(1) as f32);
            out.extend(calendar(start + (o + h) as i64 * step));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_is_fitted_on_what_it_is_given_only() {
        let train = [1.0, 2.0, 3.0, 4.0];
        let s = Scaler::fit(&train, None);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
        // A huge later value does not move the fitted scaling.
        assert_eq!(s.norm(1000.0), ((1000.0 - 2.5) / s.std) as f32);
        assert!((s.denorm(s.norm(3.7)) - 3.7).abs() < 1e-6);
        // Zero-weight (anomalous) points do not count.
        let w = Scaler::fit(&[1.0, 2.0, 3.0, 4.0, 1e9], Some(&[1.0, 1.0, 1.0, 1.0, 0.0]));
        assert!((w.mean - 2.5).abs() < 1e-9);
        // Constant input: finite, not a division by zero.
        assert!(Scaler::fit(&[5.0; 10], None).norm(5.0).abs() < 1e-6);
    }

    #[test]
    fn windows_line_up_with_origins_and_seasons() {
        let l = Layout {
            window: 3,
            horizon: 4,
            season: 5,
            related: true,
        };
        assert_eq!(l.first_origin(), 7);
        assert_eq!(l.train_origins(20), 7..17);
        let z: Vec<f32> = (0..20).map(|i| i as f32).collect();
        let zr: Vec<f32> = (0..20).map(|i| -(i as f32)).collect();
        let mut enc = Vec::new();
        l.encoder(&z, Some(&zr), 0, 3600, 10, &mut enc);
        assert_eq!(enc.len(), 3 * l.encoder_features());
        let f = l.encoder_features();
        assert_eq!([enc[0], enc[1], enc[f], enc[2 * f]], [7.0, -7.0, 8.0, 9.0]);
        let mut dec = Vec::new();
        l.decoder(&z, 0, 3600, 10, 4, &mut dec);
        let d = l.decoder_features();
        assert_eq!(dec.len(), 4 * d);
        // h = 0 targets index 10; one season back is 5, smoothed over 3..=7.
        assert_eq!(dec[0], 5.0);
        // h = 3 targets 13, lag 8, smoothed over 6..=9 (10 is not known yet).
        assert_eq!(dec[3 * d], 7.5);
        assert_eq!(dec[1], 9.0, "last known value");
        assert_eq!(dec[3 * d + 2], 0.75, "horizon fraction");
    }

    #[test]
    fn calendar_features_know_the_hour_and_the_weekday() {
        // 2014-02-14 (a Friday) 06:00 UTC: a quarter of the way round the day.
        let c = calendar(1_392_357_600);
        assert!((c[0] - 1.0).abs() < 1e-6 && c[1].abs() < 1e-6, "{c:?}");
        let monday = calendar(1_392_595_200); // 2014-02-17 00:00
        assert!(
            monday[2].abs() < 1e-6 && (monday[3] - 1.0).abs() < 1e-6,
            "{monday:?}"
        );
    }
}
