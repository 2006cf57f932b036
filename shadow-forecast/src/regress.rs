//! Resource per request: a least-squares line of one series (CPU) on
//! another (request rate), fitted on samples taken at the same moments,
//! with the standard errors and prediction interval a what-if needs
//! ([`shadow_api::forecast::Regression`]).

pub use shadow_api::forecast::{Regression, RegressionPoint};

/// Why no line could be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegressError {
    #[error(
        "only {pairs} samples of {y:?} and {on:?} were taken together; a line needs at least {need}"
    )]
    TooFewPairs {
        y: String,
        on: String,
        pairs: usize,
        need: usize,
    },
    #[error(
        "{on:?} did not change over the {pairs} samples, so nothing can be said about {y:?} per unit of it"
    )]
    ConstantLoad { y: String, on: String, pairs: usize },
}

/// The fewest pairs fitted.
pub const MIN_PAIRS: usize = 10;

/// Pairs each `y` sample with the `on` sample nearest in time, when they
/// are within half `on`'s median step (the agent samples every series at
/// the same instant, so there they coincide). Both oldest first, unix ms.
pub fn pairs(y: &[(u64, f64)], on: &[(u64, f64)]) -> Vec<(f64, f64)> {
    if on.is_empty() {
        return Vec::new();
    }
    let mut steps: Vec<u64> = on
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .collect();
    steps.sort_unstable();
    let tolerance = steps.get(steps.len() / 2).map_or(0, |s| s / 2);
    y.iter()
        .filter(|(_, v)| v.is_finite())
        .filter_map(|&(t, v)| {
            let i = on.partition_point(|&(u, _)| u < t);
            let near = [i.checked_sub(1), (i < on.len()).then_some(i)]
                .into_iter()
                .flatten()
                .min_by_key(|&j| on[j].0.abs_diff(t))?;
            let (u, x) = on[near];
            (u.abs_diff(t) <= tolerance && x.is_finite()).then_some((x, v))
        })
        .collect()
}

/// Fits `y = intercept + slope * on` and predicts at `at` (default: the
/// mean load, the largest seen and twice that).
pub fn fit(
    y_name: &str,
    on_name: &str,
    y: &[(u64, f64)],
    on: &[(u64, f64)],
    at: &[f64],
) -> Result<Regression, RegressError> {
    let xy = pairs(y, on);
    let n = xy.len();
    if n < MIN_PAIRS {
        return Err(RegressError::TooFewPairs {
            y: y_name.into(),
            on: on_name.into(),
            pairs: n,
            need: MIN_PAIRS,
        });
    }
    let nf = n as f64;
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = xy.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= f64::EPSILON * nf * mx.abs().max(1.0) {
        return Err(RegressError::ConstantLoad {
            y: y_name.into(),
            on: on_name.into(),
            pairs: n,
        });
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let sse: f64 = xy
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let s2 = sse / (nf - 2.0);
    let (lo, hi) = xy
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let mut r = Regression {
        y: y_name.into(),
        on: on_name.into(),
        n,
        slope,
        intercept,
        slope_se: (s2 / sxx).sqrt(),
        intercept_se: (s2 * (1.0 / nf + mx * mx / sxx)).sqrt(),
        r_squared: if syy > 0.0 { 1.0 - sse / syy } else { 1.0 },
        residual_sd: s2.sqrt(),
        on_min: lo,
        on_max: hi,
        on_mean: mx,
        on_sxx: sxx,
        at: Vec::new(),
    };
    let defaults = [mx, hi, 2.0 * hi];
    let at = if at.is_empty() { &defaults[..] } else { at };
    r.at = at.iter().map(|&x| r.at(x)).collect();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU = 5 % idle + 0.02 % per request/s, with noise; the rate swings
    /// between 100 and 1,100 requests a second.
    type Samples = Vec<(u64, f64)>;

    fn load() -> (Samples, Samples) {
        let mut state = 7_u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            ((state >> 33) % 1000) as f64 / 1000.0 - 0.5
        };
        let rate: Vec<(u64, f64)> = (0..500u64)
            .map(|i| (i * 5_000, 600.0 + 500.0 * (i as f64 / 40.0).sin()))
            .collect();
        let cpu = rate
            .iter()
            .map(|&(t, r)| (t, 5.0 + 0.02 * r + 2.0 * noise()))
            .collect();
        (cpu, rate)
    }

    #[test]
    fn recovers_the_cost_per_request_and_its_uncertainty() {
        let (cpu, rate) = load();
        let r = fit("host.cpu_utilisation", "web.rate", &cpu, &rate, &[]).unwrap();
        assert_eq!(r.n, 500);
        assert!((r.slope - 0.02).abs() < 3.0 * r.slope_se, "{r:?}");
        assert!((r.intercept - 5.0).abs() < 3.0 * r.intercept_se, "{r:?}");
        assert!(r.slope_se < 0.001 && r.r_squared > 0.95, "{r:?}");
        // Uniform noise of width 2 has sd 0.577.
        assert!((r.residual_sd - 0.577).abs() < 0.06, "{r:?}");
        // Twice the busiest load is an extrapolation with a wider interval.
        let [mean, max, twice] = [r.at[0], r.at[1], r.at[2]];
        assert!(!mean.extrapolated && !max.extrapolated && twice.extrapolated);
        assert!(twice.p90 - twice.p10 > mean.p90 - mean.p10);
        assert!((twice.p50 - (5.0 + 0.02 * 2.0 * r.on_max)).abs() < 0.5);
    }

    #[test]
    fn samples_are_paired_by_time_and_bad_input_is_named() {
        let (cpu, rate) = load();
        // Shifted by a millisecond: still paired; off the whole span: not.
        let near: Vec<_> = rate.iter().map(|&(t, v)| (t + 1, v)).collect();
        assert_eq!(pairs(&cpu, &near).len(), 500);
        let far: Vec<_> = rate.iter().map(|&(t, v)| (t + 10_000_000, v)).collect();
        assert_eq!(pairs(&cpu, &far).len(), 0);
        let e = fit("cpu", "web.rate", &cpu, &far, &[]).unwrap_err();
        assert!(e.to_string().contains("only 0 samples"), "{e}");
        let flat: Vec<_> = rate.iter().map(|&(t, _)| (t, 3.0)).collect();
        let e = fit("cpu", "web.rate", &cpu, &flat, &[]).unwrap_err();
        assert!(matches!(e, RegressError::ConstantLoad { .. }), "{e}");
    }
}
