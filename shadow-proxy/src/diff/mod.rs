//! Comparing a live response with the shadow's answer (the #4 diff engine's
//! pure core; it is not yet wired to the replayer).
//!
//! [`compare`] turns one live/shadow pair into [`FieldDiff`]s: the status,
//! headers (minus an ignore list), the body (content encoding undone; JSON
//! structurally, text by line, anything else by length and hash) and the
//! latency. [`noise`] keeps per-route, per-field rates and decides whether a
//! field's live-vs-shadow difference rate exceeds its noise rate.

pub mod json;
pub mod noise;
pub mod route;

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use json::JsonOptions;

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

/// Decoded bodies are cut at this size unless a service sets
/// `diff.max_decoded_bytes`: a few kilobytes of gzip can expand to gigabytes.
pub const DEFAULT_MAX_DECODED: usize = 8 << 20;

/// A body with its `Content-Encoding` undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    /// The decoded body went on past the cap; `bytes` holds its first `cap` bytes.
    pub truncated: bool,
}

/// Undoes `Content-Encoding` (gzip, deflate, br), stopping after `cap`
/// decoded bytes. Unknown codings and corrupt payloads compare as raw bytes.
pub fn decode_body(encoding: Option<&str>, body: &[u8], cap: usize) -> Decoded {
    let decoded = match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        Some("gzip") | Some("x-gzip") => read_capped(flate2::read::GzDecoder::new(body), cap),
        Some("deflate") => read_capped(flate2::read::ZlibDecoder::new(body), cap)
            .or_else(|| read_capped(flate2::read::DeflateDecoder::new(body), cap)),
        Some("br") => read_capped(brotli_decompressor::Decompressor::new(body, 4096), cap),
        _ => None,
    };
    decoded.unwrap_or_else(|| Decoded {
        bytes: body.to_vec(),
        truncated: false,
    })
}

/// Reads at most `cap` bytes; `None` when the stream is corrupt before the cap.
fn read_capped(decoder: impl Read, cap: usize) -> Option<Decoded> {
    let mut limited = decoder.take(cap as u64);
    let mut bytes = Vec::new();
    limited.read_to_end(&mut bytes).ok()?;
    // One byte more tells a body of exactly `cap` bytes from a longer one;
    // an error past the cap is a body that goes on (corrupt or not).
    let truncated = bytes.len() == cap && !matches!(limited.into_inner().read(&mut [0u8]), Ok(0));
    Some(Decoded { bytes, truncated })
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

/// Routes per service that get their own metric labels; the rest are "other".
pub const MAX_ROUTE_LABELS: usize = 64;

/// The route label for metrics: the first `MAX_ROUTE_LABELS` routes of a
/// service by name, "other" after that.
fn route_label(service: &str, route: &str) -> String {
    use std::sync::{Mutex, OnceLock};
    static ROUTES: OnceLock<Mutex<std::collections::BTreeSet<(String, String)>>> = OnceLock::new();
    let known = ROUTES.get_or_init(Default::default);
    {
        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_owned(), route.to_owned());
        let per_service = k.iter().filter(|(s, _)| s == service).count();
        if k.contains(&key) || per_service < MAX_ROUTE_LABELS {
            k.insert(key);
            route.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// Counts one live-vs-shadow comparison (bounded labels).
pub fn publish(service: &str, route: &str, diffs: &[FieldDiff]) {
    let l = [
        ("service", service.to_owned()),
        ("route", route_label(service, route)),
    ];
    metrics::counter!(crate::metrics::names::DIFF_COMPARED, &l).increment(1);
    if !diffs.is_empty() {
        metrics::counter!(crate::metrics::names::DIFF_DIFFERING, &l).increment(1);
    }
}

/// Counts one noise comparison, and whether it differed.
pub fn publish_noise(service: &str, route: &str, diffs: &[FieldDiff]) {
    let l = [
        ("service", service.to_owned()),
        ("route", route_label(service, route)),
    ];
    metrics::counter!(crate::metrics::names::DIFF_NOISE_COMPARED, &l).increment(1);
    if !diffs.is_empty() {
        metrics::counter!(crate::metrics::names::DIFF_NOISE, &l).increment(1);
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
mod tests {
    use super::*;

    fn side(status: u16, headers: &[(&str, &str)], body: &'static [u8]) -> Side<'static> {
        Side {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body,
            latency_ms: 10.0,
        }
    }

    #[test]
    fn identical_responses_never_differ() {
        let a = side(
            200,
            &[("content-type", "application/json"), ("date", "x")],
            b"{\"a\":[1,2]}",
        );
        assert!(compare(&a, &a.clone(), &DiffOptions::default()).is_empty());
    }

    #[test]
    fn status_headers_text_binary_and_latency() {
        let o = DiffOptions::default();
        let live = side(200, &[("x-v", "1"), ("date", "a")], b"one\ntwo\n");
        let mut shadow = side(
            500,
            &[("x-v", "2"), ("date", "b"), ("x-new", "y")],
            b"one\nTWO\n",
        );
        shadow.latency_ms = 200.0;
        let paths: Vec<String> = compare(&live, &shadow, &o)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(
            paths,
            vec![
                "status",
                "header.x-v",
                "header.x-new",
                "body.line[2]",
                "latency"
            ]
        );
        let bin = compare(
            &side(200, &[], b"\x00\xff\x01"),
            &side(200, &[], b"\x00\xff\x02"),
            &o,
        );
        assert_eq!(bin[0].path, "body");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i32>().prop_map(serde_json::Value::from),
                "[a-z]{0,8}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4)
                        .prop_map(serde_json::Value::from),
                    proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn side_of(status: u16, body: &[u8], latency_ms: f64) -> Side<'_> {
            Side {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
                latency_ms,
            }
        }

        proptest! {
            #[test]
            fn identical_responses_never_differ(v in json_value(), status in 100u16..600) {
                let b = serde_json::to_vec(&v).unwrap();
                let a = side_of(status, &b, 10.0);
                prop_assert!(compare(&a, &a.clone(), &DiffOptions::default()).is_empty());
            }

            #[test]
            fn injected_changes_are_always_reported(key in "[a-z]{1,6}", n in any::<i32>(), which in 0u8..5) {
                let mut obj = serde_json::Map::new();
                obj.insert(key.clone(), serde_json::Value::from(n));
                obj.insert("keep".into(), serde_json::Value::from("x"));
                let live = serde_json::Value::Object(obj.clone());
                let mut shadow = obj;
                let (mut status, mut latency) = (200u16, 10.0);
                let want = match which {
                    0 => { shadow.insert(key.clone(), serde_json::Value::from(i64::from(n) + 1)); format!("$.{key}") }
                    1 => { shadow.remove(&key); format!("$.{key}") }
                    2 => { shadow.insert(key.clone(), serde_json::Value::from(n.to_string())); format!("$.{key}") }
                    3 => { status = 500; "status".to_owned() }
                    _ => { latency = 500.0; "latency".to_owned() }
                };
                let (lb, sb) = (serde_json::to_vec(&live).unwrap(), serde_json::to_vec(&serde_json::Value::Object(shadow)).unwrap());
                let d = compare(&side_of(200, &lb, 10.0), &side_of(status, &sb, latency), &DiffOptions::default());
                prop_assert!(d.iter().any(|f| f.path == want), "{want} not in {d:?}");
            }
        }
    }

    #[test]
    fn brotli_is_decoded() {
        // "hello" compressed with brotli (quality 11).
        let br: &'static [u8] = &[0x0b, 0x02, 0x80, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x03];
        let d = decode_body(Some("br"), br, DEFAULT_MAX_DECODED);
        assert_eq!((d.bytes.as_slice(), d.truncated), (&b"hello"[..], false));
    }

    /// 1 GiB of zeros, gzip-compressed a chunk at a time so the test never
    /// holds more than the ~1 MiB of compressed output.
    fn gzip_bomb() -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    }

    /// Peak resident memory of this process, from getrusage.
    fn max_rss_bytes() -> u64 {
        // SAFETY: getrusage only writes the struct we pass it.
        let usage = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut u), 0);
            u
        };
        usage.ru_maxrss as u64 * 1024
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_cap_in_bounded_memory() {
        let bomb = gzip_bomb();
        assert!(
            bomb.len() < 8 << 20,
            "the bomb is small: {} bytes",
            bomb.len()
        );
        let cap = 4 << 20;
        let d = decode_body(Some("gzip"), &bomb, cap);
        assert!(d.truncated, "a 1 GiB body must be reported as cut");
        assert_eq!(d.bytes.len(), cap, "the decoded body stops at the cap");
        assert!(d.bytes.iter().all(|&b| b == 0));
        assert!(
            d.bytes.capacity() <= 2 * cap,
            "the buffer grew to {} bytes",
            d.bytes.capacity()
        );
        // Decoding the whole bomb would have taken 1 GiB; other tests in
        // this binary stay far below that.
        let rss = max_rss_bytes();
        assert!(
            rss < 512 << 20,
            "peak RSS {rss} bytes: the bomb was expanded"
        );
    }

    #[test]
    fn body_of_exactly_the_cap_is_not_truncated_and_one_more_byte_is() {
        use std::io::Write;
        let gz = |n: usize| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&vec![b'x'; n]).unwrap();
            e.finish().unwrap()
        };
        let exact = decode_body(Some("gzip"), &gz(100), 100);
        assert_eq!((exact.bytes.len(), exact.truncated), (100, false));
        let over = decode_body(Some("gzip"), &gz(101), 100);
        assert_eq!((over.bytes.len(), over.truncated), (100, true));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&[7u8; 5000]).unwrap();
        let deflated = decode_body(Some("deflate"), &z.finish().unwrap(), 1000);
        assert_eq!((deflated.bytes.len(), deflated.truncated), (1000, true));
    }

    #[test]
    fn compare_counts_bodies_cut_at_the_cap() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let bomb: &'static [u8] = Box::leak(gzip_bomb().into_boxed_slice());
        let live = side(200, &[("content-encoding", "gzip")], bomb);
        let shadow = side(200, &[("content-encoding", "gzip")], bomb);
        let o = DiffOptions {
            max_decoded_bytes: 1 << 20,
            ..DiffOptions::default()
        };
        let diffs = metrics::with_local_recorder(&recorder, || compare(&live, &shadow, &o));
        assert!(diffs.is_empty(), "equal prefixes: {diffs:?}");
        let truncated: u64 = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == crate::metrics::names::DIFF_DECODE_TRUNCATED)
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => n,
                other => panic!("not a counter: {other:?}"),
            })
            .sum();
        assert_eq!(truncated, 2, "both sides were cut and counted");
    }

    #[test]
    fn gzip_is_decoded_before_comparing() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"{\"a\":1}").unwrap();
        let gz: &'static [u8] = Box::leak(e.finish().unwrap().into_boxed_slice());
        let live = side(
            200,
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/json"),
            ],
            gz,
        );
        let shadow = side(200, &[("content-type", "application/json")], b"{\"a\":2}");
        let mut o = DiffOptions::default();
        o.ignore_headers.push("content-encoding".into());
        let d = compare(&live, &shadow, &o);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "$.a");
    }
}
