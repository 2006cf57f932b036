//! What the parser refuses, and the reason each refusal is counted under.

use super::*;
use crate::metrics::reason::Drop;

#[test]
fn malformed_requests_are_rejected_with_reasons() {
    let cases: [(&[u8], &str); 9] = [
        (b"GET /\r\n\r\n", "malformed_request"),
        (b"G@T / HTTP/1.1\r\n\r\n", "malformed_request"),
        (b"GET / HTTP/2.0\r\n\r\n", "malformed_request"),
        (
            b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "unsupported_transfer_encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "conflicting_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "bad_content_length",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "unsupported_transfer_encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
            "bad_chunk",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc",
            "bad_chunk",
        ),
    ];
    for (bytes, reason) in cases {
        let err = conv().on_request_bytes(bytes, 1).unwrap_err();
        assert_eq!(
            Drop::from(&err).as_str(),
            reason,
            "{}: {err}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn conflicting_content_length_is_an_error_but_repeats_are_not() {
    let mut c = conv();
    let err = c.on_request_bytes(
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        1,
    );
    let want = HttpError::ConflictingContentLength {
        direction: Direction::Request,
        first: 5,
        second: 6,
    };
    assert_eq!(err, Err(want.clone()));
    // The error is sticky: the stream is out of sync from here on.
    assert_eq!(
        c.on_response_bytes(b"HTTP/1.1 200 OK\r\n\r\n", 2),
        Err(want)
    );
    let mut c = conv();
    req(
        &mut c,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc",
    );
    resp(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(one(&mut c).0.body, "abc");
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_body: 10,
        max_header_bytes: 64,
        max_headers: 2,
        max_pipeline: 2,
        stream_body_over: None,
    };
    let request_err = |bytes: &[u8]| {
        Conversation::new(limits)
            .on_request_bytes(bytes, 1)
            .unwrap_err()
    };
    let too_large = HttpError::BodyTooLarge {
        direction: Direction::Request,
        limit: 10,
    };
    assert_eq!(
        request_err(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"),
        too_large
    );
    assert_eq!(
        request_err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"),
        too_large
    );
    assert_eq!(
        Drop::from(&request_err(&[b'a'; 65])).as_str(),
        "headers_too_large"
    );
    assert_eq!(
        Drop::from(&request_err(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
        ))
        .as_str(),
        "too_many_headers"
    );
    let pipeline = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        request_err(pipeline),
        HttpError::PipelineTooDeep { limit: 2 }
    );
    let mut c = Conversation::new(limits);
    req(&mut c, b"GET / HTTP/1.1\r\n\r\n");
    let err = c
        .on_response_bytes(b"HTTP/1.1 200 OK\r\n\r\n0123456789x", 2)
        .unwrap_err();
    assert_eq!(
        err,
        HttpError::BodyTooLarge {
            direction: Direction::Response,
            limit: 10
        }
    );
}

#[test]
fn unexpected_response_is_an_error() {
    let mut c = conv();
    let err = c.on_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1);
    assert_eq!(err, Err(HttpError::UnexpectedResponse { status: 200 }));
    assert_eq!(
        c.error().map(|e| Drop::from(e).as_str()),
        Some("unexpected_response")
    );
    let mut c = conv();
    req(&mut c, b"GET / HTTP/1.1\r\n\r\n");
    let err = c.on_response_bytes(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 X\r\n\r\n",
        2,
    );
    assert_eq!(err, Err(HttpError::UnexpectedResponse { status: 500 }));
    assert_eq!(
        c.take_exchanges().len(),
        1,
        "exchanges before the error survive"
    );
}

#[test]
fn upgrades_and_tunnels_stop_parsing() {
    let mut c = conv();
    req(
        &mut c,
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    let err = c.on_response_bytes(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello", 2);
    assert_eq!(err, Err(HttpError::Upgrade { status: 101 }));
    let mut c = conv();
    // TLS bytes right after CONNECT must wait for the verdict instead of failing as a request.
    req(
        &mut c,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x02\x00",
    );
    let err = c.on_response_bytes(b"HTTP/1.1 200 Connection Established\r\n\r\n", 2);
    assert_eq!(err, Err(HttpError::Upgrade { status: 200 }));
    let mut c = conv();
    req(
        &mut c,
        b"CONNECT example.com:443 HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    );
    assert_eq!(c.pending(), 1);
    resp(
        &mut c,
        b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(c.pending(), 1, "refused CONNECT releases the held request");
    resp(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let targets: Vec<_> = c
        .take_exchanges()
        .into_iter()
        .map(|e| e.request.target)
        .collect();
    assert_eq!(targets, ["example.com:443", "/next"]);
}
