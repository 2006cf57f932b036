//! Fuzzes the HTTP/1.1 conversation parser with arbitrary request/response stream splits.
//!
//! Input format: a sequence of `[len: u8][len bytes]` records; records alternate between the
//! client stream (even) and the server stream (odd), so the fuzzer controls both the content and
//! where each stream is split. Small limits keep the interesting edges (limits hit) reachable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadow_proxy::http::conversation::*;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 1024,
        max_headers: 16,
        max_body: 4096,
        max_pipeline: 8,
    };
    let mut conv = Conversation::new(limits);
    let mut rest = data;
    let mut now = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        now += 1;
        let result = if now % 2 == 1 {
            conv.on_request_bytes(chunk, now)
        } else {
            conv.on_response_bytes(chunk, now)
        };
        if let Err(err) = result {
            assert!(!shadow_proxy::metrics::reason::Drop::from(&err).as_str().is_empty());
            // Errors are sticky: a poisoned conversation must keep refusing input.
            assert_eq!(
                conv.on_request_bytes(b"GET / HTTP/1.1\r\n\r\n", now),
                Err(err)
            );
            break;
        }
        assert!(conv.pending() <= limits.max_pipeline);
    }
    conv.on_close(now + 1);
    for exchange in conv.take_exchanges() {
        let request = &exchange.request;
        assert!(request.body.len() <= limits.max_body);
        assert!(request.first_byte_ns <= request.last_byte_ns);
        if let Some(response) = &exchange.response {
            assert!(response.body.len() <= limits.max_body);
            assert!(response.first_byte_ns <= response.last_byte_ns);
            assert!(
                !(100..200).contains(&response.status),
                "interim responses are never paired"
            );
        }
    }
    assert!(conv.take_exchanges().is_empty());
});
