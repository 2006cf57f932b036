//! Regime changes on a real series: NAB's AWS CloudWatch CPU of one EC2
//! instance (5-minute steps, two weeks), with a change spliced in at a
//! known point midway through the day before the test day, as in the
//! outage where a forecaster kept saying 34% while the host sat at 99%.
//!
//! The bound: after the shift, the forecast's MAE against the post-shift
//! truth must be below the in-sample seasonal naive MAE of the history
//! *before* the shift (MASE < 1 on that scale). That is, once the shift is
//! seen, the forecast is as good as a plain "same as yesterday" is on an
//! ordinary day. The models alone (no regime guard) are far off, which
//! the test also checks so that it cannot pass by accident.
//!
//! CI has `../shared/data` beside the checkout; without it this fails
//! rather than passes unseen.

use std::path::Path;

use shadow_forecast::{
    Candidate, ForecasterConfig, GridPolicy, Input, Series, forecaster, metrics,
};

const DAY: usize = 288;

fn nab_cpu() -> Series {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/nab/realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv");
    assert!(
        path.exists(),
        "{} is missing: this test needs the shared data set beside the checkout",
        path.display()
    );
    Series::read_csv(&path, GridPolicy::default()).expect("a clean NAB file")
}

/// The classical candidates (the LSTM would take minutes in a debug test
/// and is not what follows a level).
fn config() -> ForecasterConfig {
    ForecasterConfig {
        horizon: DAY,
        candidates: vec![
            Candidate::SeasonalNaive,
            Candidate::Ets,
            Candidate::Damped,
            Candidate::Mstl,
            Candidate::LastLevel,
        ],
        ..ForecasterConfig::default()
    }
}

struct Outcome {
    guarded: f64,
    models_only: f64,
    label: String,
}

/// Trains on everything before the test day, forecasts it, and scores
/// both the served forecast and the models' own against the truth.
fn run(values: &[f64], shift_at: usize) -> Outcome {
    let origin = values.len() - DAY;
    let input = Input {
        name: "cpu",
        values: &values[..origin],
        start: 1_392_000_000,
        step: 300,
        related: None,
        weights: None,
    };
    let model = forecaster::train(&input, &config(), &mut |_| {}).expect("trains");
    let truth = &values[origin..];
    let scale = metrics::naive_scale(&values[..shift_at], DAY);
    let (served, shift) = model.forecast_explained(&input, DAY).unwrap();
    let models = model.models_forecast(&input, DAY).unwrap();
    let label = match shift {
        Some(s) => format!("{} / {}", model.selection.label(), s.describe(&input)),
        None => model.selection.label(),
    };
    Outcome {
        guarded: metrics::mase(truth, &served.p50, scale),
        models_only: metrics::mase(truth, &models.p50, scale),
        label,
    }
}

/// The real series, pinned just under 100% from `shift_at` on, with its
/// own step-to-step jitter (scaled down) so it is not a constant.
fn pinned(shift_at_from_origin: usize) -> (Vec<f64>, usize) {
    let real = nab_cpu().values;
    let mut y = real.clone();
    let shift_at = y.len() - DAY - shift_at_from_origin;
    for t in shift_at..y.len() {
        y[t] = 98.8 + (real[t] - real[t - 1]).clamp(-2.0, 2.0) * 0.2;
    }
    (y, shift_at)
}

#[test]
fn a_pinned_cpu_is_forecast_pinned() {
    // Half a day before the test day: the newest fold saw it, so the
    // selection itself moves to a level-following model.
    let (y, at) = pinned(DAY / 2);
    let o = run(&y, at);
    eprintln!(
        "pinned 12 h before: served MASE {:.3}, models alone {:.3}: {}",
        o.guarded, o.models_only, o.label
    );
    assert!(o.guarded < 1.0, "served MASE {:.3}: {}", o.guarded, o.label);
    // An hour before: no fold saw it; the guard must follow it.
    let (y, at) = pinned(12);
    let o = run(&y, at);
    eprintln!(
        "pinned 1 h before: served MASE {:.3}, models alone {:.3}: {}",
        o.guarded, o.models_only, o.label
    );
    assert!(o.guarded < 1.0, "served MASE {:.3}: {}", o.guarded, o.label);
    assert!(
        o.label.contains("saturation"),
        "saturation is named: {}",
        o.label
    );
    assert!(
        o.models_only > 10.0 * o.guarded.max(0.1),
        "the guard should matter here: models {:.3}, served {:.3}",
        o.models_only,
        o.guarded
    );
}

#[test]
fn a_level_shift_keeps_the_daily_pattern_at_the_new_level() {
    let mut y = nab_cpu().values;
    let shift_at = y.len() - DAY - DAY / 2;
    let lift = {
        let mut v = y[..shift_at].to_vec();
        v.sort_by(f64::total_cmp);
        3.0 * (v[v.len() * 9 / 10] - v[v.len() / 10])
    };
    for v in &mut y[shift_at..] {
        *v += lift;
    }
    let o = run(&y, shift_at);
    assert!(
        o.guarded < 1.0,
        "served MASE {:.3} (models alone {:.3}): {}",
        o.guarded,
        o.models_only,
        o.label
    );
}

#[test]
fn an_ordinary_day_is_left_to_the_models() {
    let y = nab_cpu().values;
    let o = run(&y, y.len() - DAY);
    assert_eq!(
        o.guarded, o.models_only,
        "no shift on the real series: {}",
        o.label
    );
}
