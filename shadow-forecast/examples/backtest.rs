//! A quick rolling-origin backtest of every candidate on one CSV file:
//! `cargo run -p shadow-forecast --release --example backtest -- FILE.csv [FOLDS] [EPOCHS]`.
//! The full evaluation with reference baselines is `cargo xtask bench-forecast`.

use std::time::Instant;

use shadow_forecast::{
    Candidate, ForecasterConfig, GridPolicy, Input, Series, forecaster::backtest, lstm::LstmConfig,
    metrics,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: backtest FILE.csv [FOLDS] [EPOCHS]")?;
    let folds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let epochs: usize = args.next().map_or(Ok(40), |s| s.parse())?;
    let series = Series::read_csv(path.as_ref(), GridPolicy::default())?;
    let season = series.steps_per_day();
    let horizon = season.min(series.len() / 8);
    let cfg = ForecasterConfig {
        horizon,
        season: Some(season),
        lstm: LstmConfig {
            epochs,
            ..LstmConfig::default()
        },
        ..ForecasterConfig::default()
    };
    let input = Input::from_series(&series);
    println!(
        "{}: {} points, horizon {horizon}, season {season}",
        series.name,
        series.len()
    );
    for c in Candidate::ALL {
        let mut m = c.build(&cfg, season);
        let (mut mase, mut cov, t) = (0.0, 0.0, Instant::now());
        for k in (1..=folds).rev() {
            let f = backtest(
                m.model_mut(),
                &input,
                series.len() - k * horizon,
                horizon,
                season,
            )?;
            mase += f.mase();
            cov += metrics::coverage(&f.actual, &f.forecast.p10, &f.forecast.p90);
        }
        let n = folds as f64;
        println!(
            "{:<15} MASE {:.3}  coverage {:.1}%  {:.1} s",
            c.name(),
            mase / n,
            100.0 * cov / n,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
