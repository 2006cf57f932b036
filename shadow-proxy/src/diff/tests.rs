//! The diff engine's core: comparisons, decoding and its cap, JSON by
//! structure, and properties over random documents.

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
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
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
