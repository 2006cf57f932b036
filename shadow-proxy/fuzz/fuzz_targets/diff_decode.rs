//! Fuzzes `decode_body`: arbitrary bytes under each content coding, with a
//! small cap, must never give more than the cap (or the raw body back); and
//! a real gzip stream of arbitrary data decodes exactly, cut at any cap.
//!
//! Input: [0] coding, [1..3] cap (little endian, 0-4095), the rest the body.
//! Coding 7 gzip-compresses the rest first, so the decoder's success path
//! and the cap boundary are reached on every such input.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use shadow_proxy::diff::decode_body;

const CODINGS: [Option<&str>; 7] = [
    None,
    Some("gzip"),
    Some("x-gzip"),
    Some("deflate"),
    Some(" DEFLATE "),
    Some("br"),
    Some("identity"),
];

fuzz_target!(|data: &[u8]| {
    let [coding, lo, hi, body @ ..] = data else {
        return;
    };
    let cap = usize::from(u16::from_le_bytes([*lo, *hi]) % 4096);
    if let Some(&encoding) = CODINGS.get(usize::from(*coding)) {
        let d = decode_body(encoding, body, cap);
        if d.truncated {
            assert_eq!(d.bytes.len(), cap, "a cut body is exactly the cap");
        } else {
            assert!(
                d.bytes.len() <= cap || d.bytes == body,
                "{} bytes from {encoding:?} past a cap of {cap}",
                d.bytes.len()
            );
        }
        return;
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    let gz = e.finish().unwrap();
    let d = decode_body(Some("gzip"), &gz, cap);
    let keep = body.len().min(cap);
    assert_eq!(
        d.bytes,
        &body[..keep],
        "the decoded prefix is the original's"
    );
    assert_eq!(
        d.truncated,
        body.len() > cap,
        "cut exactly when longer than the cap"
    );
    let whole = decode_body(Some("gzip"), &gz, body.len());
    assert_eq!((whole.bytes.as_slice(), whole.truncated), (body, false));
});
