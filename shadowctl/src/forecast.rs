//! `shadowctl forecast`: the agent's forecasts, and offline training and
//! forecasting (with the `offline` feature).

use shadow_api::{client::Control, routes};

#[cfg(not(feature = "offline"))]
use crate::Usage;
#[cfg(feature = "offline")]
use crate::offline;
use crate::{
    Result,
    cli::{ForecastAction, ForecastCmd, TrainFlags},
    table,
};

pub(crate) async fn forecast_cmd(control: &Control, f: ForecastCmd) -> Result<()> {
    let out = match (f.action, f.model, f.csv, f.metric) {
        (Some(ForecastAction::Train(t)), ..) => train(t)?,
        (Some(ForecastAction::Events { json }), ..) => {
            if json {
                let body = control.get_json(routes::FORECAST_EVENTS).await?;
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                table::render_events(&control.forecast_events().await?)
            }
        }
        (
            Some(ForecastAction::Regress {
                metric,
                on,
                at,
                json,
            }),
            ..,
        ) => {
            let r = control.regress(&metric, &on, &at).await?;
            if json {
                format!("{}\n", serde_json::to_string_pretty(&r)?)
            } else {
                table::render_regression(&r)
            }
        }
        (None, Some(model), Some(csv), _) => offline_forecast(
            &model,
            &csv,
            f.related.as_deref(),
            f.horizon.as_deref(),
            f.max_gap,
            f.json,
        )?,
        (None, _, _, Some(metric)) => {
            let a = control.forecast(&metric, f.horizon.as_deref()).await?;
            render_answer(&a, f.json)?
        }
        (None, ..) => {
            if f.json {
                let body = control.get_json(routes::FORECAST).await?;
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                table::render_status(&control.forecast_status().await?)
            }
        }
    };
    print!("{out}");
    Ok(())
}

#[cfg(feature = "offline")]
fn train(t: TrainFlags) -> Result<String> {
    Ok(format!("{}\n", offline::train(&t.args()?)?))
}

#[cfg(feature = "offline")]
fn offline_forecast(
    model: &std::path::Path,
    csv: &std::path::Path,
    related: Option<&std::path::Path>,
    horizon: Option<&str>,
    max_gap: usize,
    json: bool,
) -> Result<String> {
    let a = offline::forecast(model, csv, related, horizon, max_gap)?;
    render_answer(&a, json)
}

#[cfg(not(feature = "offline"))]
fn train(_: TrainFlags) -> Result<String> {
    Err(Usage(OFFLINE_MISSING.into()).into())
}

#[cfg(not(feature = "offline"))]
fn offline_forecast(
    _: &std::path::Path,
    _: &std::path::Path,
    _: Option<&std::path::Path>,
    _: Option<&str>,
    _: usize,
    _: bool,
) -> Result<String> {
    Err(Usage(OFFLINE_MISSING.into()).into())
}

#[cfg(not(feature = "offline"))]
const OFFLINE_MISSING: &str =
    "this shadowctl was built without offline forecasting (rebuild with the `offline` feature)";

fn render_answer(a: &shadow_api::forecast::ForecastAnswer, json: bool) -> Result<String> {
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(a)?)
    } else {
        table::render_forecast(a)
    })
}
