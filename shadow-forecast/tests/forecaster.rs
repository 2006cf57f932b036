//! The forecaster end to end on synthetic series with known structure:
//! trend, daily seasonality and noise, at an hourly step (season 24).

use shadow_forecast::{
    Candidate, Forecaster, ForecasterConfig, Input, Model,
    baseline::SeasonalNaive,
    forecaster::{self, Progress},
    lstm::{LstmConfig, LstmModel},
    metrics,
};

const DAY: usize = 24;

/// Trend + daily sine + a weekday bump + Gaussian-ish noise (seeded).
fn synthetic(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed | 1;
    let mut noise = || {
        // Sum of four uniforms: close enough to normal, deterministic.
        (0..4)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .sum::<f64>()
    };
    (0..n)
        .map(|t| {
            let day = (t as f64) * std::f64::consts::TAU / DAY as f64;
            50.0 + 0.02 * t as f64 + 10.0 * day.sin() + 3.0 * (2.0 * day).cos() + 4.0 * noise()
        })
        .collect()
}

fn input(values: &[f64]) -> Input<'_> {
    Input {
        name: "synthetic",
        values,
        start: 1_400_000_400,
        step: 3600,
        related: None,
        weights: None,
    }
}

fn small_lstm() -> LstmConfig {
    LstmConfig {
        window: 24,
        hidden: 16,
        horizon: DAY,
        season: DAY,
        epochs: 25,
        samples_per_epoch: 1024,
        ..LstmConfig::default()
    }
}

#[test]
fn lstm_beats_seasonal_naive_on_trend_season_and_noise() {
    let y = synthetic(DAY * 45, 7);
    let (mut lstm_mase, mut naive_mase) = (0.0, 0.0);
    let origins = [y.len() - 3 * DAY, y.len() - 2 * DAY, y.len() - DAY];
    let mut lstm = LstmModel::new(small_lstm());
    lstm.fit(&input(&y[..origins[0]])).expect("lstm trains");
    for &o in &origins {
        let history = input(&y[..o]);
        let actual = &y[o..o + DAY];
        let scale = metrics::naive_scale(history.values, DAY);
        let mut naive = SeasonalNaive::new(DAY);
        naive.fit(&history).unwrap();
        naive_mase += metrics::mase(actual, &naive.forecast(&history, DAY).unwrap().p50, scale);
        // The LSTM trained once serves later origins from newer history.
        let f = lstm.forecast(&history, DAY).unwrap();
        lstm_mase += metrics::mase(actual, &f.p50, scale);
        assert!(
            f.p10
                .iter()
                .zip(&f.p50)
                .zip(&f.p90)
                .all(|((a, b), c)| a <= b && b <= c),
            "quantiles ordered"
        );
    }
    let (lstm_mase, naive_mase) = (lstm_mase / 3.0, naive_mase / 3.0);
    assert!(
        lstm_mase < 0.9 * naive_mase,
        "LSTM MASE {lstm_mase:.3} should beat seasonal naive {naive_mase:.3} by 10 %"
    );
}

#[test]
fn selection_reports_its_choice_and_a_calibrated_interval() {
    let y = synthetic(DAY * 30, 11);
    let cfg = ForecasterConfig {
        horizon: DAY,
        season: Some(DAY),
        candidates: vec![Candidate::SeasonalNaive, Candidate::Ets, Candidate::Mstl],
        folds: 3,
        ..ForecasterConfig::default()
    };
    let mut seen = Vec::new();
    let f = forecaster::train(&input(&y), &cfg, &mut |p| seen.push(p)).expect("trains");
    assert_eq!(
        seen.iter()
            .filter(|p| matches!(p, Progress::Backtest { .. }))
            .count(),
        9,
        "3 models x 3 folds"
    );
    let s = &f.selection;
    assert_eq!(s.scores.len(), 3);
    assert!(s.reason.contains("rolling-origin"), "{}", s.reason);
    assert_ne!(
        s.members,
        vec![Candidate::SeasonalNaive],
        "naive should lose on smooth seasonality: {}",
        s.reason
    );
    assert!(
        (0.7..=0.9).contains(&s.coverage_calibrated),
        "backtest coverage {}",
        s.coverage_calibrated
    );
    let out = f.forecast(&input(&y), DAY).unwrap();
    assert_eq!(out.len(), DAY);
    assert_eq!(out.start, input(&y).time(y.len()));
    assert!(
        f.forecast(&input(&y), DAY + 1).is_err(),
        "beyond the trained horizon"
    );
}

#[test]
fn save_and_reload_give_identical_forecasts() {
    let y = synthetic(DAY * 20, 3);
    let cfg = ForecasterConfig {
        horizon: DAY,
        season: Some(DAY),
        candidates: vec![Candidate::SeasonalNaive, Candidate::Lstm],
        folds: 1,
        lstm: LstmConfig {
            epochs: 2,
            ..small_lstm()
        },
        ..ForecasterConfig::default()
    };
    // Force the LSTM into the saved set so its weights are round-tripped.
    let mut f = forecaster::train(&input(&y), &cfg, &mut |_| {}).unwrap();
    if !f.selection.members.contains(&Candidate::Lstm) {
        let cfg = ForecasterConfig {
            candidates: vec![Candidate::Lstm],
            ..cfg
        };
        f = forecaster::train(&input(&y), &cfg, &mut |_| {}).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("shadow-forecast-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    f.save(&dir).expect("saves");
    let g = Forecaster::load(&dir).expect("loads");
    assert_eq!(g.selection, f.selection);
    let newer = &y[..y.len() - 5];
    assert_eq!(
        f.forecast(&input(newer), DAY).unwrap(),
        g.forecast(&input(newer), DAY).unwrap()
    );
    std::fs::write(dir.join("forecaster.json"), b"{").unwrap();
    let err = Forecaster::load(&dir).unwrap_err().to_string();
    assert!(err.contains("forecaster"), "names the file: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let y = synthetic(50, 1);
    let mut lstm = LstmModel::new(small_lstm());
    let err = lstm.fit(&input(&y)).unwrap_err().to_string();
    assert!(err.contains("too short a history"), "{err}");
    let mut bad = synthetic(DAY * 10, 1);
    bad[100] = f64::NAN;
    let err = lstm.fit(&input(&bad)).unwrap_err().to_string();
    assert!(
        err.contains("index 100") && err.contains("not a finite"),
        "{err}"
    );
    let related = vec![1.0; 10];
    let err = lstm
        .fit(&input(&synthetic(DAY * 10, 1)).with_related(&related))
        .unwrap_err()
        .to_string();
    assert!(err.contains("related series"), "{err}");
}

#[test]
fn a_related_series_is_accepted_and_then_required() {
    // The target follows the related series with no lag: knowing it helps.
    let r = synthetic(DAY * 25, 5);
    let y: Vec<f64> = r.iter().map(|v| 2.0 * v + 1.0).collect();
    let mut lstm = LstmModel::new(LstmConfig {
        epochs: 3,
        ..small_lstm()
    });
    lstm.fit(&input(&y).with_related(&r))
        .expect("trains with a related series");
    let f = lstm.forecast(&input(&y).with_related(&r), DAY).unwrap();
    assert_eq!(f.len(), DAY);
    assert!(
        lstm.forecast(&input(&y), DAY).is_err(),
        "trained with a related series, asked without"
    );
}

#[test]
fn the_plain_serving_path_matches_burn() {
    // Serving copies the weights out of burn (shadow_forecast::infer); both
    // must give the same forecast, with and without a related series.
    let r = synthetic(DAY * 20, 9);
    let y: Vec<f64> = r.iter().map(|v| 0.5 * v + 3.0).collect();
    for related in [false, true] {
        let inp = || {
            let i = input(&y);
            if related { i.with_related(&r) } else { i }
        };
        let mut lstm = LstmModel::new(LstmConfig {
            epochs: 2,
            ..small_lstm()
        });
        lstm.fit(&inp()).unwrap();
        let plain = lstm.forecast(&inp(), DAY).unwrap();
        let burn = lstm.forecast_with_burn(&inp(), DAY).unwrap();
        for (name, a, b) in [
            ("p10", &plain.p10, &burn.p10),
            ("p50", &plain.p50, &burn.p50),
            ("p90", &plain.p90, &burn.p90),
        ] {
            for (h, (a, b)) in a.iter().zip(b.iter()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "related={related} {name}[{h}]: plain {a} vs burn {b}"
                );
            }
        }
    }
}
