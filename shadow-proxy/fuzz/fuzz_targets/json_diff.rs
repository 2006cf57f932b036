//! Fuzzes the JSON diff and the body comparison around it on two arbitrary
//! JSON-ish inputs.
//!
//! Input: [0] options (bit 0: number tolerance, bits 1-2: which arrays are
//! matched by key "id"), then live and shadow bodies split at the first 0xff
//! (never in valid UTF-8, so never inside JSON text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shadow_proxy::diff::{DiffOptions, Side, compare, json};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (live, shadow) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };
    let mut opts = DiffOptions::default();
    if flags & 1 != 0 {
        opts.json.number_tolerance = 0.01;
    }
    match (flags >> 1) & 3 {
        1 => {
            opts.json.array_keys.insert("$".into(), "id".into());
        }
        2 => {
            opts.json.array_keys.insert("$.items".into(), "id".into());
            opts.json.array_keys.insert("$[*]".into(), "id".into());
        }
        _ => {}
    }
    let side = |body| Side {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body,
        latency_ms: 1.0,
    };
    // Whatever the bytes, comparing never panics and a body equals itself.
    let d = compare(&side(live), &side(shadow), &opts);
    assert!(compare(&side(live), &side(live), &opts).is_empty());
    if live == shadow {
        assert!(d.is_empty(), "identical bodies differ: {d:?}");
    }
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<Value>(live),
        serde_json::from_slice::<Value>(shadow),
    ) else {
        return;
    };
    let mut out = Vec::new();
    json::diff("$", &a, &a, &opts.json, &mut out);
    assert!(out.is_empty(), "a value differs from itself: {out:?}");
    json::diff("$", &a, &b, &opts.json, &mut out);
    assert!(out.iter().all(|f| f.path.starts_with('$')), "{out:?}");
    if out.is_empty() && opts.json.array_keys.is_empty() && opts.json.number_tolerance == 0.0 {
        // Exact positional diffs miss nothing but equal numbers written
        // differently (1 and 1.0).
        assert_eq!(as_f64(&a), as_f64(&b), "a difference went unreported");
    }
});

/// Every number as an f64, the form the diff compares numbers in.
fn as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
        Value::Array(a) => Value::Array(a.iter().map(as_f64).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), as_f64(v))).collect()),
        other => other.clone(),
    }
}
