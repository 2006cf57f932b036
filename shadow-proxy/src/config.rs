//! The agent's configuration file (TOML): parsed, validated and turned into
//! typed values before any program is attached or any socket bound.
//!
//! ```toml
//! [capture]
//! interface = "lo"        # where the tc classifier attaches
//! attach = "auto"         # auto (ingress on lo, both elsewhere) | ingress | egress | both
//! ring_mib = 8            # perf ring per CPU (power of two); overflow is counted as lost
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
//! ```

use std::{path::Path, time::Duration};

use hyper::Uri;
use serde::Deserialize;

use crate::duration;

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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    service: Vec<RawService>,
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
    targets: Vec<String>,
    timeout: Option<String>,
    max_in_flight: Option<usize>,
    #[serde(default = "yes")]
    rewrite_host: bool,
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

/// How a service's live and shadow answers are compared.
#[derive(Debug, Clone)]
pub struct DiffSettings {
    pub options: crate::diff::DiffOptions,
    pub route_templates: Vec<String>,
    /// Share of replayed requests sent a second time to learn noise: to the
    /// same shadow (shadow vs shadow), or to `baseline` when set.
    pub noise_fraction: f64,
    /// A target running the live version. When set, noise probes go there
    /// and its answer is compared with live's: two copies of the old
    /// version, Diffy's primary vs secondary, without a third fleet of the
    /// new one.
    pub baseline: Option<Uri>,
    pub thresholds: crate::diff::noise::Thresholds,
    /// Distinct routes kept; requests on further routes are counted under
    /// one overflow route.
    pub max_routes: usize,
}

fn yes() -> bool {
    true
}

/// A service's mirroring rules, as `PUT /v1/mirror/{service}/rules` takes
/// them (JSON). Fields left out are cleared: the body replaces the rules.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub sample_key: Option<RawSampleKey>,
    pub rps_limit: Option<f64>,
}

/// Validates `raw` and installs it in `svc`; on error `svc` is unchanged
/// and the error names the key.
pub fn apply_rules(svc: &mut ServiceConfig, raw: RawRules) -> Result<(), (String, String)> {
    let methods = |v: Vec<String>, k: &str| -> Result<Vec<String>, (String, String)> {
        v.into_iter()
            .map(|m| {
                let m = m.to_ascii_uppercase();
                if METHODS.contains(&m.as_str()) {
                    Ok(m)
                } else {
                    Err((k.to_owned(), format!("{m:?} is not an HTTP method")))
                }
            })
            .collect()
    };
    let sample_key = match raw.sample_key {
        None => None,
        Some(k) => {
            let pct = percent_to_hundredths(k.percent)
                .map_err(|r| ("sample_key.percent".to_owned(), r))?;
            let which = match (k.header, k.query) {
                (Some(h), None) => SampleKey::Header(h.to_ascii_lowercase()),
                (None, Some(q)) => SampleKey::Query(q),
                _ => {
                    return Err((
                        "sample_key".into(),
                        "set exactly one of header or query".into(),
                    ));
                }
            };
            Some((which, pct))
        }
    };
    if let Some(r) = raw.rps_limit
        && !(r > 0.0 && r.is_finite())
    {
        return Err(("rps_limit".into(), format!("{r} must be positive")));
    }
    let mut routes = Vec::new();
    for r in raw.routes {
        if !r.path_prefix.starts_with('/') {
            return Err((
                "route.path_prefix".into(),
                format!("{:?} must start with /", r.path_prefix),
            ));
        }
        routes.push(Route {
            path_prefix: r.path_prefix,
            allow_methods: methods(r.allow_methods, "route.allow_methods")?,
        });
    }
    let new_methods = methods(raw.methods, "methods")?;
    let new_allow = methods(raw.allow_methods, "allow_methods")?;
    svc.methods = new_methods;
    svc.allow_methods = new_allow;
    svc.path_prefixes = raw.path_prefixes;
    svc.sample_key = sample_key;
    svc.rps_limit = raw.rps_limit;
    svc.routes = routes;
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path_prefix: String,
    #[serde(default)]
    pub allow_methods: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampleKey {
    pub header: Option<String>,
    pub query: Option<String>,
    pub percent: f64,
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

/// Where and how the classifier attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Ingress,
    Egress,
    Both,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: String,
    pub attach: AttachMode,
    /// Exchanges waiting for replay; beyond this they are dropped and counted.
    pub queue: usize,
    /// Size of the perf ring per CPU in MiB (a power of two). A burst larger
    /// than this that the capture thread cannot drain in time is lost (and
    /// counted as `lost`), never slowed down.
    pub ring_mib: usize,
}

/// The default perf ring per CPU: a loopback burst of a few MiB fits while
/// the capture thread is descheduled for tens of milliseconds.
pub const DEFAULT_RING_MIB: usize = 8;

/// Which requests a key-consistent sampler looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleKey {
    Header(String),
    Query(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Replace a leading path prefix.
    PathPrefix {
        from: String,
        to: String,
    },
    SetHeader {
        name: String,
        value: String,
    },
    RemoveHeader(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path_prefix: String,
    pub allow_methods: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub port: u16,
    /// Hundredths of a percent of connections (0..=10000).
    pub per_ten_thousand: u32,
    pub targets: Vec<Uri>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub rewrite_host: bool,
    pub shadow_header: String,
    /// Lower-case names of headers whose values are replaced by a stable hash.
    pub redact_headers: Vec<String>,
    /// Non-idempotent methods replayed on every route.
    pub allow_methods: Vec<String>,
    /// Only these methods are mirrored (empty: all).
    pub methods: Vec<String>,
    /// Only paths with one of these prefixes are mirrored (empty: all).
    pub path_prefixes: Vec<String>,
    pub sample_key: Option<(SampleKey, u32)>,
    pub rps_limit: Option<f64>,
    pub routes: Vec<Route>,
    pub rewrites: Vec<Rewrite>,
    pub diff: DiffSettings,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub capture: CaptureConfig,
    pub services: Vec<ServiceConfig>,
}

/// Headers redacted unless the user says otherwise.
pub const DEFAULT_REDACT: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Converts a percentage to hundredths, rejecting values outside 0..=100 or
/// finer than 0.01.
pub fn percent_to_hundredths(p: f64) -> Result<u32, String> {
    if !(0.0..=100.0).contains(&p) || p.is_nan() {
        return Err(format!("{p} is outside 0-100"));
    }
    let h = (p * 100.0).round();
    if (h - p * 100.0).abs() > 1e-6 {
        return Err(format!("{p} has more precision than 0.01"));
    }
    Ok(h as u32)
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
    let ring_mib = raw.capture.ring_mib.unwrap_or(DEFAULT_RING_MIB);
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
            targets,
            timeout,
            max_in_flight: s.max_in_flight.unwrap_or(256).max(1),
            rewrite_host: s.rewrite_host,
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
        };
        apply_rules(&mut svc, rules).map_err(|(k, reason)| invalid(key(&k), reason))?;
        services.push(svc);
    }
    if services.len() > shadow_common::capture::MAX_SERVICES as usize {
        return Err(invalid("service".into(), "too many services".into()));
    }
    Ok(Config {
        capture: CaptureConfig {
            interface,
            attach,
            queue: raw.capture.queue.unwrap_or(10_000).max(1),
            ring_mib,
        },
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[capture]
interface = "veth0"

[[service]]
name = "web"
port = 8080
percent = 12.5
targets = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
allow_methods = ["post"]
sample_key = { header = "X-User", percent = 50 }

[[service.route]]
path_prefix = "/orders"
allow_methods = ["PUT"]

[[service.rewrite]]
path_prefix = "/v1/"
replace_with = "/v2/"
"#;

    #[test]
    fn parses_a_full_service() {
        let c = Config::parse("shadow.toml", GOOD).unwrap();
        assert_eq!(c.capture.attach, AttachMode::Both);
        let s = &c.services[0];
        assert_eq!(s.per_ten_thousand, 1250);
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.allow_methods, vec!["POST"]);
        assert_eq!(
            s.sample_key,
            Some((SampleKey::Header("x-user".into()), 5000))
        );
        assert!(s.redact_headers.contains(&"authorization".to_owned()));
        assert_eq!(s.shadow_header, "X-Shadow-Request");
        assert!(s.rewrite_host);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let bad = GOOD.replace("percent = 12.5", "percent = 120");
        let e = Config::parse("shadow.toml", &bad).unwrap_err().to_string();
        assert_eq!(e, "shadow.toml: service[0].percent: 120 is outside 0-100");
        let bad = GOOD.replace("http://127.0.0.1:9002", "ftp://x");
        let e = Config::parse("shadow.toml", &bad).unwrap_err().to_string();
        assert!(e.contains("service[0].targets"), "{e}");
        let e = Config::parse("s.toml", "[capture]\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = Config::parse("s.toml", "[capture]\nring_mib = 3\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.toml: capture.ring_mib: 3 is not a power of two from 1 to 1024"
        );
        let c = Config::parse("s.toml", "[capture]\nring_mib = 32\n").unwrap();
        assert_eq!(c.capture.ring_mib, 32);
    }

    #[test]
    fn decoded_body_cap_defaults_to_8_mib_and_is_settable() {
        let c = Config::parse("s.toml", GOOD).unwrap();
        assert_eq!(
            c.services[0].diff.options.max_decoded_bytes,
            crate::diff::DEFAULT_MAX_DECODED
        );
        let set = format!("{GOOD}\n[service.diff]\nmax_decoded_bytes = 65536\n");
        let c = Config::parse("s.toml", &set).unwrap();
        assert_eq!(c.services[0].diff.options.max_decoded_bytes, 65536);
        let zero = format!("{GOOD}\n[service.diff]\nmax_decoded_bytes = 0\n");
        let e = Config::parse("s.toml", &zero).unwrap_err().to_string();
        assert_eq!(
            e,
            "s.toml: service[0].diff.max_decoded_bytes: must be at least 1"
        );
    }

    #[test]
    fn route_cap_defaults_and_is_settable() {
        let c = Config::parse("s.toml", GOOD).unwrap();
        assert_eq!(
            c.services[0].diff.max_routes,
            crate::diff::route::DEFAULT_MAX_ROUTES
        );
        let set = format!("{GOOD}\n[service.diff]\nmax_routes = 10\n");
        let c = Config::parse("s.toml", &set).unwrap();
        assert_eq!(c.services[0].diff.max_routes, 10);
    }

    #[test]
    fn percent_resolution_is_a_hundredth() {
        assert_eq!(percent_to_hundredths(0.01), Ok(1));
        assert_eq!(percent_to_hundredths(100.0), Ok(10_000));
        assert!(percent_to_hundredths(0.001).is_err());
        assert!(percent_to_hundredths(-1.0).is_err());
        assert!(percent_to_hundredths(f64::NAN).is_err());
    }
}
