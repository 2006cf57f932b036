//! Comparing a live response with the shadow's answer: the diff engine's
//! pure core, which the replayer calls on every answer.
//!
//! [`compare`] turns one live/shadow pair into [`FieldDiff`]s: the status,
//! headers (minus an ignore list), the body (content encoding undone; JSON
//! structurally, text by line, anything else by length and hash) and the
//! latency. [`noise`] keeps per-route, per-field rates and decides whether a
//! field's live-vs-shadow difference rate exceeds its noise rate.

pub mod decode;
pub mod json;
pub mod noise;
mod publish;
pub mod route;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use decode::{DEFAULT_MAX_DECODED, Decoded, decode_body};
pub use json::JsonOptions;
pub use publish::{MAX_ROUTE_LABELS, publish, publish_noise};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DiffKind {
    Changed,
    Missing,
    Extra,
    TypeChanged,
    Slower,
}

/// One difference, at a path such as `status`, `header.etag`, `$.items[3].price`
/// or `body.line[12]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub path: String,
    pub kind: DiffKind,
    pub live: Option<String>,
    pub shadow: Option<String>,
}

impl FieldDiff {
    pub fn new(
        path: String,
        kind: DiffKind,
        live: Option<&serde_json::Value>,
        shadow: Option<&serde_json::Value>,
    ) -> Self {
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Self {
            path,
            kind,
            live: live.map(show),
            shadow: shadow.map(show),
        }
    }
}

pub use crate::kernel::context::{BlockContext, KernelContext, RttContext};

/// One side of an exchange, as the diff engine sees it.
#[derive(Debug, Clone, Default)]
pub struct Side<'a> {
    pub status: u16,
    /// (lower-case name, value).
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    pub latency_ms: f64,
}

impl Side<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Lower-case header names never compared.
    pub ignore_headers: Vec<String>,
    pub json: JsonOptions,
    /// A latency difference is reported when shadow/live exceeds this ratio
    /// and shadow - live exceeds `latency_min_ms`.
    pub latency_ratio: f64,
    pub latency_min_ms: f64,
    /// Decoded bodies are compared up to this many bytes.
    pub max_decoded_bytes: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            ignore_headers: [
                "date",
                "server",
                "set-cookie",
                "x-request-id",
                "x-correlation-id",
                "request-id",
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
                "age",
                "etag",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            json: JsonOptions::default(),
            latency_ratio: 2.0,
            latency_min_ms: 50.0,
            max_decoded_bytes: DEFAULT_MAX_DECODED,
        }
    }
}

fn is_json(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|c| c.contains("json"))
        || matches!(
            body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        )
}

/// All differences between `live` and `shadow`.
pub fn compare(live: &Side, shadow: &Side, opts: &DiffOptions) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    if live.status != shadow.status {
        out.push(FieldDiff {
            path: "status".into(),
            kind: DiffKind::Changed,
            live: Some(live.status.to_string()),
            shadow: Some(shadow.status.to_string()),
        });
    }
    diff_headers(live, shadow, opts, &mut out);
    let lb = decode_counted(live, opts.max_decoded_bytes);
    let sb = decode_counted(shadow, opts.max_decoded_bytes);
    diff_body(live.header("content-type"), &lb, &sb, opts, &mut out);
    if shadow.latency_ms > live.latency_ms * opts.latency_ratio
        && shadow.latency_ms - live.latency_ms > opts.latency_min_ms
    {
        out.push(FieldDiff {
            path: "latency".into(),
            kind: DiffKind::Slower,
            live: Some(format!("{:.1}ms", live.latency_ms)),
            shadow: Some(format!("{:.1}ms", shadow.latency_ms)),
        });
    }
    out
}

/// Decodes one side's body, counting bodies cut at the cap (by coding, a
/// bounded label: only the three codings decode at all).
fn decode_counted(side: &Side, cap: usize) -> Vec<u8> {
    let encoding = side.header("content-encoding");
    let decoded = decode_body(encoding, side.body, cap);
    if decoded.truncated {
        let coding = encoding.unwrap_or_default().trim().to_ascii_lowercase();
        metrics::counter!(crate::metrics::names::DIFF_DECODE_TRUNCATED, "encoding" => coding)
            .increment(1);
    }
    decoded.bytes
}

fn diff_headers(live: &Side, shadow: &Side, opts: &DiffOptions, out: &mut Vec<FieldDiff>) {
    let ignored = |k: &str| {
        opts.ignore_headers
            .iter()
            .any(|i| i.eq_ignore_ascii_case(k))
    };
    for (k, v) in live.headers.iter().filter(|(k, _)| !ignored(k)) {
        let path = format!("header.{}", k.to_ascii_lowercase());
        match shadow.header(k) {
            Some(s) if s == v => {}
            Some(s) => out.push(FieldDiff {
                path,
                kind: DiffKind::Changed,
                live: Some(v.clone()),
                shadow: Some(s.to_owned()),
            }),
            None => out.push(FieldDiff {
                path,
                kind: DiffKind::Missing,
                live: Some(v.clone()),
                shadow: None,
            }),
        }
    }
    for (k, v) in shadow.headers.iter().filter(|(k, _)| !ignored(k)) {
        if live.header(k).is_none() {
            out.push(FieldDiff {
                path: format!("header.{}", k.to_ascii_lowercase()),
                kind: DiffKind::Extra,
                live: None,
                shadow: Some(v.clone()),
            });
        }
    }
}

fn diff_body(
    ctype: Option<&str>,
    l: &[u8],
    s: &[u8],
    opts: &DiffOptions,
    out: &mut Vec<FieldDiff>,
) {
    if l == s {
        return;
    }
    if is_json(ctype, l)
        && let (Ok(a), Ok(b)) = (serde_json::from_slice(l), serde_json::from_slice(s))
    {
        json::diff("$", &a, &b, &opts.json, out);
        return;
    }
    match (std::str::from_utf8(l), std::str::from_utf8(s)) {
        (Ok(a), Ok(b)) => {
            let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
            for i in 0..la.len().max(lb.len()) {
                let (x, y) = (la.get(i), lb.get(i));
                if x != y {
                    out.push(FieldDiff {
                        path: format!("body.line[{}]", i + 1),
                        kind: DiffKind::Changed,
                        live: x.map(|v| (*v).to_owned()),
                        shadow: y.map(|v| (*v).to_owned()),
                    });
                }
            }
        }
        _ => out.push(FieldDiff {
            path: "body".into(),
            kind: DiffKind::Changed,
            live: Some(format!("{} bytes sha256:{}", l.len(), short_hash(l))),
            shadow: Some(format!("{} bytes sha256:{}", s.len(), short_hash(s))),
        }),
    }
}

fn short_hash(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .take(8)
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
