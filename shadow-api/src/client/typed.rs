//! Typed calls: each route of [`crate::routes`] with its wire type, and the
//! API's own error message when it refuses (`{"error": "..."}`).

use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode, body::Bytes};
use serde::de::DeserializeOwned;

use super::ClientError;
use crate::{
    forecast::{AnomalyEvent, ForecastAnswer, MetricStatus, Regression},
    history::PerformanceData,
    kernel::View,
    mirror::{DiffSummary, MarkNoise, MirrorStatus},
    predict::{LevelEvent, PredictAnswer},
    routes,
};

/// The admin port (read-only).
#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: String,
}

impl Admin {
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = super::get(&self.addr, path).await?;
        decode(&self.addr, path, &body)
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let body = super::get(&self.addr, routes::METRICS).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn snapshot(&self) -> Result<View, ClientError> {
        self.get(routes::SNAPSHOT).await
    }

    /// Metric names with history.
    pub async fn history_names(&self) -> Result<Vec<String>, ClientError> {
        self.get(routes::HISTORY).await
    }

    pub async fn history(&self, metric: &str) -> Result<Vec<PerformanceData>, ClientError> {
        self.get(&format!("{}?metric={}", routes::HISTORY, encode(metric)))
            .await
    }
}

/// The control socket (mode 0600: root or its owner).
#[derive(Debug, Clone)]
pub struct Control {
    pub socket: PathBuf,
}

impl Control {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, ClientError> {
        let (status, body) = super::control(&self.socket, method, path, body).await?;
        if !status.is_success() {
            return Err(refused(&self.socket, path, status, &body));
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.call(Method::GET, path, None).await?;
        decode(&self.socket.display().to_string(), path, &body)
    }

    /// The raw JSON of a GET (for `--json` output and the routes without a
    /// typed answer: capture counters, exchanges).
    pub async fn get_json(&self, path: &str) -> Result<Bytes, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn mirror(&self) -> Result<Vec<MirrorStatus>, ClientError> {
        self.get(routes::MIRROR).await
    }

    pub async fn set_percent(
        &self,
        service: &str,
        percent: f64,
    ) -> Result<MirrorStatus, ClientError> {
        let path = routes::mirror(&encode(service));
        let body = serde_json::json!({ "percent": percent }).to_string();
        let answer = self.call(Method::PUT, &path, Some(body)).await?;
        decode(&self.socket.display().to_string(), &path, &answer)
    }

    /// Replaces a service's rules with `rules` (JSON, as the config's keys).
    pub async fn set_rules(&self, service: &str, rules: String) -> Result<(), ClientError> {
        let path = routes::mirror_rules(&encode(service));
        self.call(Method::PUT, &path, Some(rules)).await.map(drop)
    }

    pub async fn diff(&self) -> Result<Vec<DiffSummary>, ClientError> {
        self.get(routes::DIFF).await
    }

    /// One exchange, live and shadow side by side (JSON).
    pub async fn exchange(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        self.get(&routes::diff(id)).await
    }

    pub async fn mark_noise(&self, mark: &MarkNoise) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::to_string(mark).expect("serialises");
        let answer = self
            .call(Method::PUT, routes::DIFF_NOISE, Some(body))
            .await?;
        decode(
            &self.socket.display().to_string(),
            routes::DIFF_NOISE,
            &answer,
        )
    }

    pub async fn start_recording(&self, path: &Path) -> Result<(), ClientError> {
        let body = serde_json::json!({ "path": path }).to_string();
        self.call(Method::POST, routes::RECORD, Some(body))
            .await
            .map(drop)
    }

    /// Stops the recording: (written, dropped).
    pub async fn stop_recording(&self) -> Result<(u64, u64), ClientError> {
        let answer = self.call(Method::DELETE, routes::RECORD, None).await?;
        let v: serde_json::Value =
            decode(&self.socket.display().to_string(), routes::RECORD, &answer)?;
        Ok((
            v["written"].as_u64().unwrap_or(0),
            v["dropped"].as_u64().unwrap_or(0),
        ))
    }

    pub async fn forecast_status(&self) -> Result<Vec<MetricStatus>, ClientError> {
        self.get(routes::FORECAST).await
    }

    /// `horizon`: steps (`12`) or a duration (`30m`); `None` is the model's.
    pub async fn forecast(
        &self,
        metric: &str,
        horizon: Option<&str>,
    ) -> Result<ForecastAnswer, ClientError> {
        let mut path = format!("{}/{}", routes::FORECAST, encode(metric));
        if let Some(h) = horizon {
            path.push_str(&format!("?horizon={}", encode(h)));
        }
        self.get(&path).await
    }

    /// `y` regressed on `on` over the agent's history, predicted at `at`
    /// (empty: the mean, the busiest and twice that).
    pub async fn regress(&self, y: &str, on: &str, at: &[f64]) -> Result<Regression, ClientError> {
        let mut path = format!("{}?y={}&on={}", routes::REGRESS, encode(y), encode(on));
        if !at.is_empty() {
            let at: Vec<String> = at.iter().map(f64::to_string).collect();
            path.push_str(&format!("&at={}", encode(&at.join(","))));
        }
        self.get(&path).await
    }

    pub async fn predict(&self) -> Result<PredictAnswer, ClientError> {
        self.get(routes::PREDICT).await
    }

    pub async fn predict_events(&self) -> Result<Vec<LevelEvent>, ClientError> {
        self.get(routes::PREDICT_EVENTS).await
    }

    pub async fn forecast_events(&self) -> Result<Vec<AnomalyEvent>, ClientError> {
        self.get(routes::FORECAST_EVENTS).await
    }

    pub async fn provision_plan(&self) -> Result<crate::provision::Plan, ClientError> {
        self.get(routes::PROVISION_PLAN).await
    }

    pub async fn provision_events(&self) -> Result<crate::provision::Events, ClientError> {
        self.get(routes::PROVISION_EVENTS).await
    }

    pub async fn provision_pool(&self) -> Result<crate::provision::Pool, ClientError> {
        self.get(routes::PROVISION_POOL).await
    }

    /// One decision round now: applied, or with `dry_run` only computed.
    pub async fn provision_apply(
        &self,
        dry_run: bool,
    ) -> Result<Vec<crate::provision::Decision>, ClientError> {
        let path = format!(
            "{}{}",
            routes::PROVISION_APPLY,
            if dry_run { "?dry_run=1" } else { "" }
        );
        let answer = self.call(Method::POST, &path, None).await?;
        decode(&self.socket.display().to_string(), &path, &answer)
    }

    pub async fn failover_status(
        &self,
    ) -> Result<Vec<crate::failover::FailoverStatus>, ClientError> {
        self.get(routes::FAILOVER).await
    }

    pub async fn failover_events(
        &self,
    ) -> Result<Vec<crate::failover::FailoverEvent>, ClientError> {
        self.get(routes::FAILOVER_EVENTS).await
    }

    /// `action`: one of [`routes::FAILOVER_CUTOVER`], `_ROLLBACK`, `_PROMOTE`.
    pub async fn failover_action(
        &self,
        action: &str,
        service: &str,
        dry_run: bool,
        force: bool,
    ) -> Result<crate::failover::FailoverEvent, ClientError> {
        let path = format!(
            "{action}?service={service}{}{}",
            if dry_run { "&dry_run=1" } else { "" },
            if force { "&force=1" } else { "" }
        );
        let answer = self.call(Method::POST, &path, None).await?;
        decode(&self.socket.display().to_string(), &path, &answer)
    }

    pub async fn what_if(
        &self,
        traffic: f64,
        scale: f64,
        service: Option<&str>,
    ) -> Result<crate::provision::WhatIf, ClientError> {
        let mut path = format!("{}?traffic={traffic}&scale={scale}", routes::WHATIF);
        if let Some(s) = service {
            path.push_str(&format!("&service={}", encode(s)));
        }
        self.get(&path).await
    }
}

fn decode<T: DeserializeOwned>(addr: &str, path: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        addr: addr.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// The API's `{"error": ...}` message, or the body as it came.
fn refused(socket: &Path, path: &str, status: StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    ClientError::Refused {
        addr: socket.display().to_string(),
        path: path.to_owned(),
        status,
        message,
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
