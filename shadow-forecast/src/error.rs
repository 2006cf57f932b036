//! The forecaster's errors: each names the series and what was wrong with it.

#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("{series}: too short a history: need at least {need} points, got {got}")]
    TooShort {
        series: String,
        need: usize,
        got: usize,
    },
    #[error("{series}: value at index {index} is not a finite number ({value})")]
    NotFinite {
        series: String,
        index: usize,
        value: f64,
    },
    #[error("{series}: timestamps must increase: index {index} has {timestamp}, after {previous}")]
    NonMonotonic {
        series: String,
        index: usize,
        previous: i64,
        timestamp: i64,
    },
    #[error("{series}: timestamp {timestamp} at index {index} is off the {step} s grid")]
    OffGrid {
        series: String,
        index: usize,
        timestamp: i64,
        step: i64,
    },
    #[error("{series}: cannot be used: {reason}")]
    Unusable { series: String, reason: String },
    #[error("{series}: step must be positive, got {step}")]
    BadStep { series: String, step: i64 },
    #[error("{series}: related series has {got} points, the target {need}")]
    RelatedLength {
        series: String,
        need: usize,
        got: usize,
    },
    #[error("{path}: line {line}: {reason}")]
    Csv {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{model}: {reason}")]
    Model { model: String, reason: String },
    #[error("model file {path}: {reason}")]
    Persist { path: String, reason: String },
    #[error("horizon {requested} is beyond the model's {max}")]
    Horizon { requested: usize, max: usize },
}
