//! Pairing and framing: keep-alive, pipelining, bodies of every framing, interim responses.

use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

use bytes::Bytes;

mod errors;
mod proptests;

fn conv() -> Conversation {
    Conversation::new(Limits::default())
}

fn req(c: &mut Conversation, bytes: &[u8]) {
    c.on_request_bytes(bytes, 1).expect("request bytes parse");
}

fn resp(c: &mut Conversation, bytes: &[u8]) {
    c.on_response_bytes(bytes, 2).expect("response bytes parse");
}

fn one(c: &mut Conversation) -> (Request, Response) {
    let mut ex = c.take_exchanges();
    assert_eq!(ex.len(), 1, "{ex:?}");
    let ex = ex.remove(0);
    (ex.request, ex.response.expect("response present"))
}

#[test]
fn keep_alive_sequence_byte_by_byte() {
    let (mut c, mut now) = (conv(), 0);
    for i in 0..3 {
        let request =
            format!("POST /item/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nbody{i}");
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nr{i}!");
        let start = now + 1;
        for b in request.as_bytes() {
            now += 1;
            c.on_request_bytes(&[*b], now).unwrap();
        }
        let request_end = now;
        assert_eq!(c.pending(), 1);
        for b in response.as_bytes() {
            now += 1;
            c.on_response_bytes(&[*b], now).unwrap();
        }
        let (rq, rs) = one(&mut c);
        assert_eq!(
            (rq.method.as_str(), rq.target.clone(), rq.version),
            ("POST", format!("/item/{i}"), 1)
        );
        assert_eq!(rq.body, format!("body{i}").as_bytes());
        assert_eq!(header(&rq.headers, "HOST"), Some(&Bytes::from_static(b"a")));
        assert_eq!((rq.first_byte_ns, rq.last_byte_ns), (start, request_end));
        assert_eq!((rs.status, rs.reason.as_str()), (200, "OK"));
        assert_eq!(rs.body, format!("r{i}!").as_bytes());
        assert_eq!((rs.first_byte_ns, rs.last_byte_ns), (request_end + 1, now));
        assert_eq!(c.pending(), 0);
    }
}

#[test]
fn pipelined_five_requests_then_five_responses() {
    let mut c = conv();
    let requests: String = (0..5)
        .map(|i| format!("GET /p{i} HTTP/1.1\r\nHost: a\r\n\r\n"))
        .collect();
    req(&mut c, requests.as_bytes());
    assert_eq!(c.pending(), 5);
    let responses: String = (0..5)
        .map(|i| format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{i}{i}"))
        .collect();
    resp(&mut c, responses.as_bytes());
    let ex = c.take_exchanges();
    assert_eq!(ex.len(), 5);
    for (i, e) in ex.iter().enumerate() {
        assert_eq!(e.request.target, format!("/p{i}"));
        assert_eq!(
            e.response.as_ref().unwrap().body,
            format!("{i}{i}").as_bytes()
        );
    }
    assert_eq!(c.pending(), 0);
}

fn content_length_roundtrip(body: &[u8], piece: usize) {
    let mut c = conv();
    req(
        &mut c,
        format!("PUT /u HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    body.chunks(piece).for_each(|p| req(&mut c, p));
    resp(
        &mut c,
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    body.chunks(piece).for_each(|p| resp(&mut c, p));
    let (rq, rs) = one(&mut c);
    assert!(
        rq.body == body && rs.body == body,
        "body mismatch for {} bytes",
        body.len()
    );
    assert!(!rq.chunked && !rs.chunked);
}

#[test]
fn content_length_bodies_of_various_sizes() {
    for len in [0, 1024, 1 << 20] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        content_length_roundtrip(&body, 1000);
    }
}

#[test]
fn content_length_64_mib_is_linear() {
    let body = vec![0xA5; 64 << 20];
    let started = Instant::now();
    content_length_roundtrip(&body, 64 << 10);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let mut c = conv();
    // Chunked wins over Content-Length (RFC 9112 §6.3).
    let request = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n\
        4;name=\"v;x\"\r\nWiki\r\n5\r\npedia\r\nE ; ext\r\n in\r\n\r\nchunks.\r\n0\r\nX-Checksum: abc\r\n\r\n";
    request.iter().for_each(|b| req(&mut c, &[*b]));
    resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;a=b\r\nabc\r\n0;last\r\n",
    );
    resp(&mut c, b"X-T: 1\r\nX-U: 2\r\n\r\n");
    let (rq, rs) = one(&mut c);
    assert_eq!(rq.body, "Wikipedia in\r\n\r\nchunks.");
    assert!(rq.chunked && rs.chunked);
    let checksum = Header {
        name: "X-Checksum".into(),
        value: Bytes::from_static(b"abc"),
    };
    assert_eq!(rq.trailers, vec![checksum]);
    assert_eq!(rs.body, "abc");
    assert_eq!(header(&rs.trailers, "x-u"), Some(&Bytes::from_static(b"2")));
}

#[test]
fn expect_continue_and_interim_responses_are_skipped() {
    let mut c = conv();
    req(
        &mut c,
        b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    assert_eq!(c.pending(), 0, "body still missing");
    resp(&mut c, b"HTTP/1.1 100 Continue\r\n\r\n");
    req(&mut c, b"data");
    assert_eq!(c.pending(), 1);
    resp(
        &mut c,
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n",
    );
    c.on_response_bytes(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 7)
        .unwrap();
    let (rq, rs) = one(&mut c);
    assert_eq!(
        (rq.body.as_ref(), rs.status, rs.first_byte_ns),
        (&b"data"[..], 201, 7)
    );
}

#[test]
fn early_response_pairs_with_request_still_sending_body() {
    let mut c = conv();
    req(
        &mut c,
        b"POST /big HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc",
    );
    resp(
        &mut c,
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(c.take_exchanges().is_empty());
    req(&mut c, b"def");
    let (rq, rs) = one(&mut c);
    assert_eq!((rq.body.as_ref(), rs.status), (&b"abcdef"[..], 413));
}

#[test]
fn head_204_and_304_responses_have_no_body() {
    let mut c = conv();
    req(&mut c, b"HEAD /h HTTP/1.1\r\n\r\nDELETE /d HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\n");
    resp(
        &mut c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    );
    resp(
        &mut c,
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    );
    resp(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let ex = c.take_exchanges();
    let got: Vec<_> = ex
        .iter()
        .map(|e| e.response.as_ref().map(|r| (r.status, r.body.clone())))
        .collect();
    let want =
        [(200, ""), (204, ""), (304, ""), (200, "ok")].map(|(s, b)| Some((s, Bytes::from(b))));
    assert_eq!(got, want);
    assert_eq!(
        header(&ex[0].response.as_ref().unwrap().headers, "content-length").unwrap(),
        "10"
    );
}

#[test]
fn response_delimited_by_close() {
    let mut c = conv();
    req(&mut c, b"GET /old HTTP/1.0\r\n\r\n");
    c.on_response_bytes(b"HTTP/1.0 200 OK\r\n\r\nstream", 5)
        .unwrap();
    c.on_response_bytes(b"ed body", 6).unwrap();
    assert!(c.take_exchanges().is_empty());
    assert_eq!(c.pending(), 1);
    c.on_close(9);
    let (rq, rs) = one(&mut c);
    assert_eq!(
        (rq.version, rs.version, rs.body.as_ref()),
        (0, 0, &b"streamed body"[..])
    );
    assert_eq!((rs.first_byte_ns, rs.last_byte_ns), (5, 9));
    let after = c.on_request_bytes(b"x", 10);
    assert_eq!(
        after,
        Err(HttpError::AfterClose {
            direction: Direction::Request
        })
    );
}

#[test]
fn close_with_pending_request_yields_no_response() {
    let mut c = conv();
    req(&mut c, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
    resp(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nBB");
    assert_eq!(c.take_exchanges().len(), 1);
    assert_eq!(c.pending(), 1);
    c.on_close(3);
    let ex = c.take_exchanges();
    // The truncated POST cannot be replayed, so only /b comes out, unanswered.
    assert_eq!(ex.len(), 1);
    assert_eq!(
        (ex[0].request.target.as_str(), &ex[0].response),
        ("/b", &None)
    );
}

/// Feeds `request` in `step`-byte pieces to a conversation that streams
/// bodies over `over` bytes; returns what was streamed and the exchange.
fn streamed(request: &[u8], step: usize, over: usize) -> (Vec<BodyEvent>, Request) {
    let mut c = Conversation::new(Limits {
        stream_body_over: Some(over),
        ..Limits::default()
    });
    let mut events = Vec::new();
    for piece in request.chunks(step) {
        req(&mut c, piece);
        events.extend(c.take_streamed());
    }
    resp(&mut c, b"HTTP/1.1 204 No Content\r\n\r\n");
    let (rq, _) = one(&mut c);
    (events, rq)
}

fn streamed_body(events: &[BodyEvent]) -> Vec<u8> {
    assert!(
        matches!(events.first(), Some(BodyEvent::Begin { .. })),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&BodyEvent::End));
    let mut body = Vec::new();
    for e in &events[1..events.len() - 1] {
        match e {
            BodyEvent::Data(b) => body.extend_from_slice(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    body
}

#[test]
fn bodies_over_the_bound_stream_as_they_are_read_and_are_not_held() {
    let body: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    let fixed = [
        format!("PUT /f HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        body.clone(),
    ]
    .concat();
    let mut chunked = b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(70_001) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for (request, path) in [(&fixed, "/f"), (&chunked, "/c")] {
        for step in [1_000, 65_536, request.len()] {
            let (events, rq) = streamed(request, step, 100_000);
            match &events[0] {
                BodyEvent::Begin { request: head, .. } => {
                    assert_eq!((head.method.as_str(), head.target.as_str()), ("PUT", path));
                    assert!(head.body.is_empty());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(streamed_body(&events), body, "{path} in {step}-byte pieces");
            assert!(
                rq.streamed && rq.body.is_empty(),
                "{path}: held {}",
                rq.body.len()
            );
            assert_eq!(rq.chunked, path == "/c");
        }
    }
    // A fixed length over the bound streams from the first byte: nothing
    // is held even before the bound is reached.
    let mut c = Conversation::new(Limits {
        stream_body_over: Some(100_000),
        ..Limits::default()
    });
    req(&mut c, &fixed[..fixed.len() / 2]);
    let events = c.take_streamed();
    assert!(events.len() >= 2, "{events:?}");
    // Bodies under the bound, and responses, are held whole as before.
    let (events, rq) = streamed(&fixed, 4096, 1 << 20);
    assert!(events.is_empty());
    assert_eq!((rq.streamed, rq.body.len()), (false, body.len()));
    let mut c = Conversation::new(Limits {
        stream_body_over: Some(10),
        ..Limits::default()
    });
    req(&mut c, b"GET / HTTP/1.1\r\n\r\n");
    resp(&mut c, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    resp(&mut c, &[b'x'; 100]);
    let (_, rs) = one(&mut c);
    assert_eq!(rs.body.len(), 100);
    assert!(c.take_streamed().is_empty());
}

#[test]
fn a_streamed_body_cut_short_never_ends() {
    let mut c = Conversation::new(Limits {
        stream_body_over: Some(10),
        ..Limits::default()
    });
    req(
        &mut c,
        b"PUT /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789abc",
    );
    c.on_close(3);
    let events = c.take_streamed();
    assert!(matches!(events[0], BodyEvent::Begin { .. }));
    assert!(!events.contains(&BodyEvent::End), "{events:?}");
    assert!(
        c.take_exchanges().is_empty(),
        "an incomplete request is not replayed"
    );
}
