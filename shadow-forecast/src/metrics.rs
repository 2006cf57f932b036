//! Forecast accuracy measures, as the evaluation harness and the model
//! selection compute them.

/// Mean absolute error.
pub fn mae(actual: &[f64], pred: &[f64]) -> f64 {
    mean(actual.iter().zip(pred).map(|(a, p)| (a - p).abs()))
}

/// Root mean squared error.
pub fn rmse(actual: &[f64], pred: &[f64]) -> f64 {
    mean(actual.iter().zip(pred).map(|(a, p)| (a - p).powi(2))).sqrt()
}

/// Symmetric MAPE in percent (0..200); a pair of zeros counts as no error.
pub fn smape(actual: &[f64], pred: &[f64]) -> f64 {
    100.0
        * mean(actual.iter().zip(pred).map(|(a, p)| {
            let d = a.abs() + p.abs();
            if d == 0.0 {
                0.0
            } else {
                2.0 * (a - p).abs() / d
            }
        }))
}

/// The in-sample MAE of the seasonal naive forecast: MASE's scale.
pub fn naive_scale(train: &[f64], season: usize) -> f64 {
    let s = if train.len() > season {
        season.max(1)
    } else {
        1
    };
    mean((s..train.len()).map(|t| (train[t] - train[t - s]).abs()))
}

/// Mean absolute scaled error (Hyndman and Koehler, 2006).
pub fn mase(actual: &[f64], pred: &[f64], scale: f64) -> f64 {
    mae(actual, pred) / scale.max(f64::MIN_POSITIVE)
}

/// Share of actual values inside `[lo, hi]`.
pub fn coverage(actual: &[f64], lo: &[f64], hi: &[f64]) -> f64 {
    mean(
        actual
            .iter()
            .zip(lo.iter().zip(hi))
            .map(|(a, (l, h))| f64::from(u8::from(l <= a && a <= h))),
    )
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_on_known_values() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let p = [1.0, 3.0, 3.0, 2.0];
        assert_eq!(mae(&a, &p), 0.75);
        assert!((rmse(&a, &p) - 1.25f64.sqrt()).abs() < 1e-12);
        assert!((smape(&[0.0, 2.0], &[0.0, 2.0])).abs() < 1e-12);
        assert_eq!(naive_scale(&[1.0, 3.0, 1.0, 3.0], 2), 0.0);
        assert_eq!(naive_scale(&[1.0, 2.0, 4.0], 1), 1.5);
        assert_eq!(mase(&a, &p, 1.5), 0.5);
        assert_eq!(
            coverage(&a, &[0.0, 2.5, 3.0, 0.0], &[2.0, 3.0, 3.0, 3.0]),
            0.5
        );
    }
}
