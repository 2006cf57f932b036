//! shadow's forecaster: predicts each metric's demand with its P10-P90
//! interval, so capacity can arrive before the demand does.
//!
//! Data enters as a [`Series`] (a `timestamp,value` CSV file, or the agent's
//! history) and leaves as a [`Forecast`]. [`forecaster::train`] backtests
//! the candidates ([`baseline`]'s seasonal naive, ETS, damped trend,
//! MSTL and last level, [`arima`]'s auto-ARIMA, [`prophet`]'s
//! changepoint-and-Fourier regression, and [`lstm`]'s burn LSTM), chooses per metric and calibrates the interval;
//! [`anomaly`] flags where the actuals leave it and feeds that back into
//! training. Nothing here depends on the agent, so it runs offline too;
//! [`serve`] keeps forecasts fresh from any [`serve::Source`] of samples
//! (the agent's history, later a fleet's Prometheus).

pub mod anomaly;
pub mod arima;
pub mod baseline;
pub mod detect;
pub mod error;
pub mod failure;
pub mod forecaster;
mod infer;
pub mod lstm;
pub mod metrics;
pub mod model;
pub mod prediction;
pub mod prophet;
pub mod provision;
pub mod regime;
pub mod regress;
pub mod series;
pub mod serve;
pub mod window;

pub use error::ForecastError;
pub use forecaster::{Candidate, Forecaster, ForecasterConfig, Selection};
pub use model::{Forecast, Input, Model};
pub use prediction::PredictionData;
pub use series::{GridPolicy, Series};
