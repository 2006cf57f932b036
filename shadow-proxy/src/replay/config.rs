//! The replay box's settings: one [`ServiceConfig`] per shadowed service,
//! its mirroring rules (also replaced at run time through the control API)
//! and how its answers are diffed. Parsed from `[[service]]` by
//! [`crate::config`].

use std::time::Duration;

use hyper::Uri;
use serde::Deserialize;

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

/// A rule that does not hold: the key (relative to the rules) and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct RuleError {
    pub key: String,
    pub reason: String,
}

/// Rules come from the operator.
impl crate::util::Sourced for RuleError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

fn rule_error(key: &str, reason: String) -> RuleError {
    RuleError {
        key: key.to_owned(),
        reason,
    }
}

/// Validates `raw` and installs it in `svc`; on error `svc` is unchanged
/// and the error names the key.
pub fn apply_rules(svc: &mut ServiceConfig, raw: RawRules) -> Result<(), RuleError> {
    let methods = |v: Vec<String>, k: &str| -> Result<Vec<String>, RuleError> {
        v.into_iter()
            .map(|m| {
                let m = m.to_ascii_uppercase();
                if METHODS.contains(&m.as_str()) {
                    Ok(m)
                } else {
                    Err(rule_error(k, format!("{m:?} is not an HTTP method")))
                }
            })
            .collect()
    };
    let sample_key = match raw.sample_key {
        None => None,
        Some(k) => {
            let pct = percent_to_hundredths(k.percent)
                .map_err(|r| rule_error("sample_key.percent", r))?;
            let which = match (k.header, k.query) {
                (Some(h), None) => SampleKey::Header(h.to_ascii_lowercase()),
                (None, Some(q)) => SampleKey::Query(q),
                _ => {
                    return Err(rule_error(
                        "sample_key",
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
        return Err(rule_error("rps_limit", format!("{r} must be positive")));
    }
    let mut routes = Vec::new();
    for r in raw.routes {
        if !r.path_prefix.starts_with('/') {
            return Err(rule_error(
                "route.path_prefix",
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
    /// `sample = "request"`: `per_ten_thousand` is a share of requests, kept
    /// from connections the kernel captures at a higher rate
    /// ([`super::sample`]).
    pub per_request: bool,
    pub targets: Vec<Uri>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub rewrite_host: bool,
    /// The live client's address is appended to `X-Forwarded-For` and
    /// `Forwarded` (the shadow sees who asked, not the agent).
    pub forward_client: bool,
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
    /// `[service.inline]`: the agent proxies live traffic itself instead of
    /// capturing it in the kernel.
    pub inline: Option<InlineSettings>,
}

impl ServiceConfig {
    /// The share of connections the kernel classifier captures for a
    /// service captured at `captured`: none behind the inline proxy, which
    /// sees every request itself.
    pub fn kernel_rate(&self, captured: u32) -> u32 {
        if self.inline.is_some() { 0 } else { captured }
    }
}

/// The inline proxy's settings for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineSettings {
    /// Where live clients connect.
    pub listen: std::net::SocketAddr,
    /// The live service.
    pub upstream: std::net::SocketAddr,
    /// A sampled request's or response's body is copied for the shadow up
    /// to this size; a larger one goes to live whole and is counted as
    /// `body_too_large` for the shadow.
    pub tee_body_bytes: usize,
}

/// Headers redacted unless the user says otherwise.
pub const DEFAULT_REDACT: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
pub(crate) const METHODS: [&str; 9] = [
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
