//! The agent's forecasting: shadow-forecast's serving ([`shadow_forecast::serve`])
//! fed from the agent's [`History`](crate::host::history::History) (the
//! agent hands it over as a [`Source`]), exported to Prometheus
//! ([`export`]) and answered on both servers (`crate::api::forecast`).

pub mod export;
pub mod predict;

pub use shadow_forecast::serve::{
    Candidate, DEFAULT_METRICS, ForecastSettings, MAX_METRICS, Service, SettingsError, Source,
    answer, format_ahead, grid_points_for, parse_metrics, parse_models, resample, service, store,
    threads, trainer, watch, whole_seconds,
};
