//! What a captured request becomes before it goes to a shadow target, and
//! whether it goes at all. Pure functions over the service's rules, so each
//! rule is tested on its own.

use std::net::IpAddr;

use bytes::Bytes;
use hyper::{Request, Uri, header::HeaderName, header::HeaderValue};
use sha2::{Digest, Sha256};

use super::config::{Rewrite, SampleKey, ServiceConfig};
use crate::{
    http::conversation::{self, Request as Captured},
    metrics::reason::Drop,
};

/// Methods that change state: replayed only where a rule allows them.
pub const UNSAFE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Headers that describe one hop, not the request: never forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
    "expect",
];

/// Why a request is not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    MethodFiltered,
    PathFiltered,
    UnsafeMethod,
    KeySampledOut,
}

/// Counted under the agent's one drop enum.
impl From<Skip> for Drop {
    fn from(s: Skip) -> Self {
        match s {
            Skip::MethodFiltered => Drop::MethodFiltered,
            Skip::PathFiltered => Drop::PathFiltered,
            Skip::UnsafeMethod => Drop::UnsafeMethod,
            Skip::KeySampledOut => Drop::KeySampledOut,
        }
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

/// The service's static rules (the rate cap is applied by the caller).
pub fn decide(req: &Captured, svc: &ServiceConfig) -> Result<(), Skip> {
    let method = req.method.as_str();
    let path = path_of(&req.target);
    if !svc.methods.is_empty() && !svc.methods.iter().any(|m| m == method) {
        return Err(Skip::MethodFiltered);
    }
    if !svc.path_prefixes.is_empty() && !svc.path_prefixes.iter().any(|p| path.starts_with(p)) {
        return Err(Skip::PathFiltered);
    }
    if UNSAFE_METHODS.contains(&method) {
        let allowed = svc.allow_methods.iter().any(|m| m == method)
            || svc.routes.iter().any(|r| {
                path.starts_with(&r.path_prefix) && r.allow_methods.iter().any(|m| m == method)
            });
        if !allowed {
            return Err(Skip::UnsafeMethod);
        }
    }
    if let Some((key, per_ten_thousand)) = &svc.sample_key
        && let Some(value) = sample_key_value(req, key)
        && !key_sampled(&value, *per_ten_thousand)
    {
        return Err(Skip::KeySampledOut);
    }
    Ok(())
}

/// The value a key-consistent sampler hashes; requests without it pass.
fn sample_key_value(req: &Captured, key: &SampleKey) -> Option<Vec<u8>> {
    match key {
        SampleKey::Header(name) => conversation::header(&req.headers, name).map(|v| v.to_vec()),
        SampleKey::Query(name) => req.target.split_once('?').and_then(|(_, q)| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| v.as_bytes().to_vec())
            })
        }),
    }
}

/// Same key, same answer, on every agent and every run.
pub fn key_sampled(value: &[u8], per_ten_thousand: u32) -> bool {
    let d = Sha256::digest(value);
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    h % shadow_common::capture::SAMPLE_SCALE < per_ten_thousand
}

/// A secret header's value replaced by a stable digest: equal secrets stay
/// equal (so diffs still work), the secret itself never leaves the host.
pub fn redact(value: &[u8]) -> String {
    let d = Sha256::digest(value);
    let hex: String = d.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("redacted-sha256:{hex}")
}

/// `api.local:8080` -> `api.local-shadow:8080`.
pub fn shadow_host(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            format!("{host}-shadow:{port}")
        }
        _ => format!("{authority}-shadow"),
    }
}

fn rewrite_target(target: &str, rewrites: &[Rewrite]) -> String {
    let mut t = target.to_owned();
    for r in rewrites {
        if let Rewrite::PathPrefix { from, to } = r
            && t.starts_with(from.as_str())
        {
            t = format!("{to}{}", &t[from.len()..]);
        }
    }
    t
}

/// Why a captured request could not be rebuilt for the shadow.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot build the shadow request: the target has no authority")]
    NoAuthority,
    #[error("cannot build the shadow request: header {name:?}: {source}")]
    Header {
        name: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("cannot build the shadow request: {0}")]
    Request(#[source] hyper::http::Error),
}

/// The captured request came from live, but rebuilding it is the agent's job.
impl crate::util::Sourced for BuildError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// `X-Forwarded-For` and `Forwarded` with `client` appended to what the
/// request already carried (its proxies' hops stay first).
fn forwarded(req: &Captured, client: IpAddr) -> [(&'static str, String); 2] {
    let prior = |name: &str| -> Option<String> {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(&h.value).trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let node = match client {
        IpAddr::V4(v4) => v4.to_string(),
        // RFC 7239: an IPv6 node is bracketed and quoted.
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let join = |prior: Option<String>, hop: String| match prior {
        Some(p) => format!("{p}, {hop}"),
        None => hop,
    };
    [
        (
            "x-forwarded-for",
            join(prior("x-forwarded-for"), client.to_string()),
        ),
        ("forwarded", join(prior("forwarded"), format!("for={node}"))),
    ]
}

/// Builds the request sent to `target`. `client` is the live client's
/// address, forwarded unless the service says `forward_client = false`.
pub fn build(
    req: &Captured,
    svc: &ServiceConfig,
    target: &Uri,
    client: IpAddr,
) -> Result<Request<Bytes>, BuildError> {
    let client = svc.forward_client.then_some(client);
    let path = rewrite_target(&req.target, &svc.rewrites);
    let authority = target.authority().ok_or(BuildError::NoAuthority)?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path.as_str())
        .build()
        .map_err(BuildError::Request)?;
    let mut b = Request::builder().method(req.method.as_str()).uri(uri);
    let original_host =
        conversation::header(&req.headers, "host").map(|h| String::from_utf8_lossy(h).into_owned());
    let host = if svc.rewrite_host {
        shadow_host(authority.as_str())
    } else {
        original_host.unwrap_or_else(|| authority.to_string())
    };
    b = b.header(hyper::header::HOST, host);
    for h in &req.headers {
        let lower = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) {
            continue;
        }
        if client.is_some() && (lower == "x-forwarded-for" || lower == "forwarded") {
            continue;
        }
        if svc.rewrites.iter().any(|r| matches!(r, Rewrite::RemoveHeader(n) | Rewrite::SetHeader { name: n, .. } if n.eq_ignore_ascii_case(&lower))) {
            continue;
        }
        let header = |source: hyper::http::Error| BuildError::Header {
            name: h.name.clone(),
            source,
        };
        let value = if svc.redact_headers.contains(&lower) {
            HeaderValue::from_str(&redact(&h.value)).map_err(|e| header(e.into()))?
        } else {
            HeaderValue::from_bytes(&h.value).map_err(|e| header(e.into()))?
        };
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| header(e.into()))?;
        b = b.header(name, value);
    }
    if let Some(ip) = client {
        for (name, value) in forwarded(req, ip) {
            let value = HeaderValue::from_str(&value).map_err(|e| BuildError::Header {
                name: name.into(),
                source: e.into(),
            })?;
            b = b.header(name, value);
        }
    }
    for r in &svc.rewrites {
        if let Rewrite::SetHeader { name, value } = r {
            b = b.header(name.as_str(), value.as_str());
        }
    }
    b = b.header(svc.shadow_header.as_str(), "1");
    b.body(req.body.clone()).map_err(BuildError::Request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, http::conversation::Header};

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn svc(extra: &str) -> ServiceConfig {
        let text = format!(
            "[[service]]\nname = \"web\"\nport = 80\npercent = 100\ntargets = [\"http://127.0.0.1:9001\"]\n{extra}"
        );
        Config::parse("t.toml", &text).unwrap().services.remove(0)
    }

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Captured {
        Captured {
            method: method.into(),
            target: target.into(),
            version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            body: Bytes::from_static(b"{\"a\":1}"),
            ..Captured::default()
        }
    }

    #[test]
    fn unsafe_methods_are_blocked_by_default_and_allowed_per_route() {
        let s = svc("[[service.route]]\npath_prefix = \"/orders\"\nallow_methods = [\"POST\"]\n");
        assert_eq!(decide(&req("GET", "/x", &[]), &s), Ok(()));
        assert_eq!(
            decide(&req("DELETE", "/x", &[]), &s),
            Err(Skip::UnsafeMethod)
        );
        assert_eq!(decide(&req("POST", "/x", &[]), &s), Err(Skip::UnsafeMethod));
        assert_eq!(decide(&req("POST", "/orders/1?x=2", &[]), &s), Ok(()));
        assert_eq!(
            decide(&req("PUT", "/orders/1", &[]), &s),
            Err(Skip::UnsafeMethod)
        );
    }

    #[test]
    fn method_and_path_filters() {
        let s = svc("methods = [\"GET\"]\npath_prefixes = [\"/api\"]\n");
        assert_eq!(
            decide(&req("HEAD", "/api", &[]), &s),
            Err(Skip::MethodFiltered)
        );
        assert_eq!(
            decide(&req("GET", "/web?api", &[]), &s),
            Err(Skip::PathFiltered)
        );
        assert_eq!(decide(&req("GET", "/api/v1", &[]), &s), Ok(()));
    }

    #[test]
    fn key_consistent_sampling_keeps_a_user_in_or_out() {
        let s = svc("sample_key = { header = \"X-User\", percent = 50 }\n");
        let mut ins = 0;
        for u in 0..1000 {
            let user = format!("user-{u}");
            let first = decide(&req("GET", "/", &[("x-user", &user)]), &s);
            for _ in 0..3 {
                assert_eq!(
                    decide(&req("GET", "/", &[("X-User", &user)]), &s),
                    first,
                    "{user}"
                );
            }
            ins += usize::from(first.is_ok());
        }
        // 50% of 1000 users: binomial sd ~16, so 5 sd either side.
        assert!((420..=580).contains(&ins), "{ins} of 1000 users sampled");
        let q = svc("sample_key = { query = \"uid\", percent = 0 }\n");
        assert_eq!(
            decide(&req("GET", "/p?a=1&uid=7", &[]), &q),
            Err(Skip::KeySampledOut)
        );
        assert_eq!(
            decide(&req("GET", "/p?a=1", &[]), &q),
            Ok(()),
            "no key: not a user, mirrored"
        );
    }

    #[test]
    fn rewrites_host_marker_redaction_and_rules() {
        let s = svc(
            "redact_headers = [\"X-Api-Key\"]\n[[service.rewrite]]\npath_prefix = \"/v1/\"\nreplace_with = \"/v2/\"\n[[service.rewrite]]\nset_header = \"X-Env\"\nvalue = \"shadow\"\n[[service.rewrite]]\nremove_header = \"X-Drop\"\n",
        );
        let r = req(
            "GET",
            "/v1/items?id=3",
            &[
                ("Host", "api.example"),
                ("Authorization", "Bearer secret"),
                ("Cookie", "s=1"),
                ("X-Api-Key", "k"),
                ("X-Drop", "1"),
                ("X-Env", "live"),
                ("Connection", "keep-alive"),
                ("Accept", "*/*"),
            ],
        );
        let out = build(&r, &s, &"http://127.0.0.1:9001".parse().unwrap(), LOCAL).unwrap();
        assert_eq!(out.uri(), "http://127.0.0.1:9001/v2/items?id=3");
        let h = out.headers();
        assert_eq!(h["host"], "127.0.0.1-shadow:9001");
        assert_eq!(h["x-shadow-request"], "1");
        assert_eq!(h["authorization"], redact(b"Bearer secret").as_str());
        assert_ne!(h["authorization"], "Bearer secret");
        assert!(
            h["cookie"]
                .to_str()
                .unwrap()
                .starts_with("redacted-sha256:")
        );
        assert!(
            h["x-api-key"]
                .to_str()
                .unwrap()
                .starts_with("redacted-sha256:")
        );
        assert!(h.get("x-drop").is_none());
        assert_eq!(h["x-env"], "shadow");
        assert!(h.get("connection").is_none());
        assert_eq!(h["accept"], "*/*");
        assert_eq!(out.body().as_ref(), b"{\"a\":1}");
        assert_eq!(redact(b"Bearer secret"), redact(b"Bearer secret"), "stable");
    }

    #[test]
    fn host_rewrite_can_be_switched_off() {
        let s = svc("rewrite_host = false\nshadow_header = \"X-Mirror\"\n");
        let r = req("GET", "/", &[("Host", "api.example")]);
        let out = build(&r, &s, &"http://127.0.0.1:9001".parse().unwrap(), LOCAL).unwrap();
        assert_eq!(out.headers()["host"], "api.example");
        assert_eq!(out.headers()["x-mirror"], "1");
    }

    #[test]
    fn the_client_address_is_forwarded_and_its_characteristics_kept() {
        let target: Uri = "http://127.0.0.1:9001".parse().unwrap();
        let r = req(
            "GET",
            "/",
            &[
                ("User-Agent", "curl/8.5"),
                ("CF-IPCountry", "NZ"),
                ("X-Forwarded-For", "203.0.113.7"),
                ("Forwarded", "for=203.0.113.7"),
            ],
        );
        let client = "198.51.100.2".parse().unwrap();
        let out = build(&r, &svc(""), &target, client).unwrap();
        let h = out.headers();
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 198.51.100.2");
        assert_eq!(h["forwarded"], "for=203.0.113.7, for=198.51.100.2");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["user-agent"], "curl/8.5");
        assert_eq!(h["cf-ipcountry"], "NZ");
        // A first hop, over IPv6: quoted and bracketed (RFC 7239).
        let r = req("GET", "/", &[]);
        let out = build(&r, &svc(""), &target, "2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(out.headers()["x-forwarded-for"], "2001:db8::1");
        assert_eq!(out.headers()["forwarded"], "for=\"[2001:db8::1]\"");
        // Off: the request's own headers, as they were.
        let out = build(&r, &svc("forward_client = false\n"), &target, client).unwrap();
        assert!(out.headers().get("x-forwarded-for").is_none());
    }
}
