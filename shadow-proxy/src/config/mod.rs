//! The agent's configuration file (TOML): parsed, validated and turned into
//! typed values before any program is attached or any socket bound. Each
//! box owns its typed settings (`capture::config`, `replay::config`); this
//! module parses the file and assembles them. A flag given on the command
//! line overrides the key of the same name (`[agent] interval` is
//! `--interval`, `[forecast] horizon` is `--forecast-horizon`).
//!
//! ```toml
//! [agent]                 # all optional: admin, interval, pid_file, ready_file,
//! interval = "1s"         # control_socket, server_id, history_len,
//!                         # history_max_metrics, history_stale
//! [telemetry]
//! tcp_bytes = true        # false is --no-tcp-bytes; max_endpoint_series = 64
//!
//! [forecast]
//! enabled = true          # false is --no-forecast; dir, metrics = [..], every,
//! horizon = 60            # step, models = ["ets", "lstm", ..]
//!
//! [capture]
//! interface = "lo"        # where the tc classifier attaches
//! attach = "auto"         # auto (ingress on lo, both elsewhere) | ingress | egress | both
//! ring_mib = 32           # perf ring per CPU (power of two; default 64 MiB shared out, 4-32 per CPU); overflow is counted as lost
//!
//! [[service]]
//! name = "web"
//! port = 8080
//! percent = 10.0          # connections mirrored, 0.01 % resolution
//! targets = ["http://127.0.0.1:9001"]
//! timeout = "5s"
//! # allow_methods = ["POST"]          # non-idempotent methods replayed on every route
//! # redact_headers = ["x-api-key"]    # in addition to authorization, cookie, proxy-authorization
//! # rps_limit = 100
//! # [[service.route]]
//! # path_prefix = "/api/orders"
//! # allow_methods = ["POST", "PUT"]
//! # [service.inline]                  # proxy live traffic instead of capturing it:
//! # listen = "0.0.0.0:8000"           # clients connect here; upstream defaults to
//! # upstream = "127.0.0.1:8080"       # 127.0.0.1:port; percent is then of requests
//! ```

use std::path::Path;

use hyper::Uri;
use serde::Deserialize;

mod agent;

use crate::util::duration;

pub use agent::{AgentFile, ForecastFile, TelemetryFile};

pub use crate::capture::config::{AttachMode, CaptureConfig, host_ring_mib};
pub use crate::replay::config::{
    DEFAULT_REDACT, DiffSettings, RawRoute, RawRules, RawSampleKey, Rewrite, Route, SampleKey,
    ServiceConfig, apply_rules, percent_to_hundredths,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: String,
        reason: String,
    },
}

/// A bad configuration is the operator's to fix, inside the agent.
impl crate::util::Sourced for ConfigError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: agent::RawAgent,
    #[serde(default)]
    telemetry: agent::RawTelemetry,
    #[serde(default)]
    forecast: agent::RawForecast,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    provision: crate::provision::config::RawProvision,
    #[serde(default)]
    failover: crate::failover::config::RawFailover,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    interface: Option<String>,
    attach: Option<String>,
    queue: Option<usize>,
    ring_mib: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    port: u16,
    #[serde(default)]
    percent: f64,
    /// `connection` (default) or `request`.
    sample: Option<String>,
    targets: Vec<String>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    #[serde(default = "yes")]
    rewrite_host: bool,
    #[serde(default = "yes")]
    forward_client: bool,
    shadow_header: Option<String>,
    #[serde(default)]
    redact_headers: Vec<String>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    path_prefixes: Vec<String>,
    sample_key: Option<RawSampleKey>,
    rps_limit: Option<f64>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    rewrite: Vec<RawRewrite>,
    #[serde(default)]
    diff: RawDiff,
    inline: Option<RawInline>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInline {
    listen: String,
    upstream: Option<String>,
    tee_body_bytes: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDiff {
    #[serde(default)]
    ignore_headers: Vec<String>,
    number_tolerance: Option<f64>,
    #[serde(default)]
    array_keys: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    route_templates: Vec<String>,
    noise_fraction: Option<f64>,
    baseline: Option<String>,
    min_samples: Option<u64>,
    relative_threshold: Option<f64>,
    absolute_threshold: Option<f64>,
    max_decoded_bytes: Option<usize>,
    max_routes: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    path_prefix: Option<String>,
    replace_with: Option<String>,
    set_header: Option<String>,
    value: Option<String>,
    remove_header: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub agent: AgentFile,
    pub telemetry: TelemetryFile,
    pub forecast: ForecastFile,
    pub capture: CaptureConfig,
    pub services: Vec<ServiceConfig>,
    pub provision: crate::provision::ProvisionSettings,
    /// Migration profiles, when `[[failover.service]]` gives any.
    pub failover: Option<crate::failover::FailoverSettings>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        validate(path, raw)
    }
}

fn validate(path: &str, raw: RawConfig) -> Result<Config, ConfigError> {
    let invalid = |key: String, reason: String| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        reason,
    };
    let table_invalid = |key: &str, reason: String| invalid(key.to_owned(), reason);
    let agent_file = agent::agent(raw.agent, &table_invalid)?;
    let telemetry_file = agent::telemetry(raw.telemetry, &table_invalid)?;
    let forecast_file = agent::forecast(raw.forecast, &table_invalid)?;
    let provision = crate::provision::config::settings(raw.provision, &table_invalid)?;
    let failover = crate::failover::config::settings(raw.failover, &table_invalid)?;
    let interface = raw.capture.interface.unwrap_or_else(|| "lo".into());
    let attach = match raw.capture.attach.as_deref().unwrap_or("auto") {
        "auto" if interface == "lo" => AttachMode::Ingress,
        "auto" | "both" => AttachMode::Both,
        "ingress" => AttachMode::Ingress,
        "egress" => AttachMode::Egress,
        other => {
            return Err(invalid(
                "capture.attach".into(),
                format!("{other:?} is not one of auto, ingress, egress, both"),
            ));
        }
    };
    let ring_mib = raw.capture.ring_mib.unwrap_or_else(host_ring_mib);
    if !(1..=1024).contains(&ring_mib) || !ring_mib.is_power_of_two() {
        return Err(invalid(
            "capture.ring_mib".into(),
            format!("{ring_mib} is not a power of two from 1 to 1024"),
        ));
    }
    let mut services = Vec::new();
    for (i, s) in raw.service.into_iter().enumerate() {
        let key = |k: &str| format!("service[{i}].{k}");
        if s.name.is_empty() || services.iter().any(|o: &ServiceConfig| o.name == s.name) {
            return Err(invalid(
                key("name"),
                format!("{:?} is empty or repeated", s.name),
            ));
        }
        if s.port == 0 || services.iter().any(|o: &ServiceConfig| o.port == s.port) {
            return Err(invalid(
                key("port"),
                format!("{} is zero or repeated", s.port),
            ));
        }
        let per_ten_thousand =
            percent_to_hundredths(s.percent).map_err(|r| invalid(key("percent"), r))?;
        let inline = match &s.inline {
            None => None,
            Some(i) => Some(inline_settings(i, s.port, &services, &|k, r| {
                invalid(key(&format!("inline.{k}")), r)
            })?),
        };
        let per_request = match s.sample.as_deref() {
            // The inline proxy sees every request and samples requests.
            _ if inline.is_some() => false,
            None | Some("connection") => false,
            Some("request") => true,
            Some(other) => {
                return Err(invalid(
                    key("sample"),
                    format!("{other:?} is neither \"connection\" nor \"request\""),
                ));
            }
        };
        if s.targets.is_empty() {
            return Err(invalid(
                key("targets"),
                "at least one shadow target is needed".into(),
            ));
        }
        let mut targets = Vec::new();
        for t in &s.targets {
            let uri: Uri = t
                .parse()
                .map_err(|e| invalid(key("targets"), format!("{t:?}: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(invalid(
                    key("targets"),
                    format!("{t:?} must be http://host:port"),
                ));
            }
            targets.push(uri);
        }
        let timeout = duration::parse(s.timeout.as_deref().unwrap_or("5s"))
            .map_err(|r| invalid(key("timeout"), r))?;
        let mut redact: Vec<String> = DEFAULT_REDACT.iter().map(|s| (*s).to_owned()).collect();
        redact.extend(s.redact_headers.iter().map(|h| h.to_ascii_lowercase()));
        let mut rewrites = Vec::new();
        for r in s.rewrite {
            rewrites.push(match r {
                RawRewrite {
                    path_prefix: Some(from),
                    replace_with: Some(to),
                    set_header: None,
                    value: None,
                    remove_header: None,
                } => Rewrite::PathPrefix { from, to },
                RawRewrite {
                    set_header: Some(name),
                    value: Some(value),
                    path_prefix: None,
                    replace_with: None,
                    remove_header: None,
                } => Rewrite::SetHeader { name, value },
                RawRewrite {
                    remove_header: Some(name),
                    path_prefix: None,
                    replace_with: None,
                    set_header: None,
                    value: None,
                } => Rewrite::RemoveHeader(name),
                _ => {
                    return Err(invalid(
                        key("rewrite"),
                        "use path_prefix + replace_with, set_header + value, or remove_header"
                            .into(),
                    ));
                }
            });
        }
        let d = s.diff;
        let mut options = crate::diff::DiffOptions::default();
        options
            .ignore_headers
            .extend(d.ignore_headers.iter().map(|h| h.to_ascii_lowercase()));
        options.json.number_tolerance = d.number_tolerance.unwrap_or(0.0);
        options.json.array_keys = d.array_keys;
        if let Some(v) = d.max_decoded_bytes {
            if v == 0 {
                return Err(invalid(
                    key("diff.max_decoded_bytes"),
                    "must be at least 1".into(),
                ));
            }
            options.max_decoded_bytes = v;
        }
        let mut thresholds = crate::diff::noise::Thresholds::default();
        if let Some(v) = d.min_samples {
            thresholds.min_samples = v;
        }
        if let Some(v) = d.relative_threshold {
            thresholds.relative = v;
        }
        if let Some(v) = d.absolute_threshold {
            thresholds.absolute = v;
        }
        let noise_fraction = d.noise_fraction.unwrap_or(0.05);
        if !(0.0..=1.0).contains(&noise_fraction) {
            return Err(invalid(
                key("diff.noise_fraction"),
                format!("{noise_fraction} is outside 0-1"),
            ));
        }
        let baseline = match d.baseline {
            None => None,
            Some(b) => {
                let uri: Uri = b
                    .parse()
                    .map_err(|e| invalid(key("diff.baseline"), format!("{b:?}: {e}")))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(invalid(
                        key("diff.baseline"),
                        format!("{b:?} must be http://host:port"),
                    ));
                }
                Some(uri)
            }
        };
        let diff = DiffSettings {
            options,
            route_templates: d.route_templates,
            noise_fraction,
            baseline,
            thresholds,
            max_routes: d
                .max_routes
                .unwrap_or(crate::diff::route::DEFAULT_MAX_ROUTES)
                .max(1),
        };
        let rules = RawRules {
            methods: s.methods,
            path_prefixes: s.path_prefixes,
            allow_methods: s.allow_methods,
            routes: s.route,
            sample_key: s.sample_key,
            rps_limit: s.rps_limit,
        };
        let mut svc = ServiceConfig {
            name: s.name,
            port: s.port,
            per_ten_thousand,
            per_request,
            targets,
            timeout,
            max_in_flight: s.max_in_flight.unwrap_or(256).max(1),
            rewrite_host: s.rewrite_host,
            forward_client: s.forward_client,
            shadow_header: s.shadow_header.unwrap_or_else(|| "X-Shadow-Request".into()),
            redact_headers: redact,
            allow_methods: Vec::new(),
            methods: Vec::new(),
            path_prefixes: Vec::new(),
            sample_key: None,
            rps_limit: None,
            routes: Vec::new(),
            rewrites,
            diff,
            inline,
        };
        apply_rules(&mut svc, rules).map_err(|e| invalid(key(&e.key), e.reason))?;
        services.push(svc);
    }
    if services.len() > shadow_common::capture::MAX_SERVICES as usize {
        return Err(invalid("service".into(), "too many services".into()));
    }
    Ok(Config {
        agent: agent_file,
        telemetry: telemetry_file,
        forecast: forecast_file,
        capture: CaptureConfig {
            interface,
            attach,
            queue: raw.capture.queue.unwrap_or(10_000).max(1),
            ring_mib,
        },
        services,
        provision,
        failover,
    })
}

/// `[service.inline]`: the listen address must be free of every other
/// service's, and differ from the upstream it proxies to.
fn inline_settings(
    raw: &RawInline,
    port: u16,
    others: &[ServiceConfig],
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<crate::replay::config::InlineSettings, ConfigError> {
    let addr = |k: &str, v: &str| -> Result<std::net::SocketAddr, ConfigError> {
        v.parse().map_err(|e| {
            invalid(
                k,
                format!("{v:?} is not an address like 127.0.0.1:8080: {e}"),
            )
        })
    };
    let listen = addr("listen", &raw.listen)?;
    let upstream = match &raw.upstream {
        Some(u) => addr("upstream", u)?,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    };
    if listen == upstream || (listen.port() == upstream.port() && listen.ip().is_unspecified()) {
        return Err(invalid(
            "listen",
            format!("{listen} is the upstream it would proxy to"),
        ));
    }
    if let Some(o) = others.iter().find(|o| {
        o.inline
            .as_ref()
            .is_some_and(|i| i.listen.port() == listen.port())
    }) {
        return Err(invalid(
            "listen",
            format!("port {} is already service {:?}'s", listen.port(), o.name),
        ));
    }
    let tee_body_bytes = raw.tee_body_bytes.unwrap_or(8 << 20);
    if tee_body_bytes == 0 {
        return Err(invalid("tee_body_bytes", "must be at least 1".into()));
    }
    Ok(crate::replay::config::InlineSettings {
        listen,
        upstream,
        tee_body_bytes,
    })
}

#[cfg(test)]
mod tests;
