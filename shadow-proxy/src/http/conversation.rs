//! One captured HTTP/1.1 connection, turned into request/response pairs.
//!
//! The reassembler hands over the client's bytes ([`Conversation::on_request_bytes`])
//! and the server's bytes ([`Conversation::on_response_bytes`]) in stream
//! order, split anywhere. Requests are parsed with `httparse` (keep-alive and
//! pipelining, `Content-Length` and chunked bodies); responses are paired with
//! requests first in, first out, skipping interim 1xx answers (such as
//! `100 Continue`). Finished pairs come out of [`Conversation::take_exchanges`]
//! in request order. Anything the parser cannot follow is an [`HttpError`]
//! with a reason; the caller drops the connection rather than guess.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
    /// The payload, de-chunked.
    pub body: Bytes,
    pub chunked: bool,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub headers: Vec<Header>,
    pub body: Bytes,
    pub chunked: bool,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
}

/// A request and the live response it got (`None` when the connection
/// ended first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    pub response: Option<Response>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: usize,
    /// Requests parsed but not yet answered.
    pub max_pipeline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 10,
            max_headers: 128,
            max_body: 128 << 20,
            max_pipeline: 64,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed {side} head: {detail}")]
    Malformed { side: &'static str, detail: String },
    #[error("{side} head larger than {limit} bytes")]
    HeadersTooLarge { side: &'static str, limit: usize },
    #[error("{side} body larger than {limit} bytes")]
    BodyTooLarge { side: &'static str, limit: usize },
    #[error("bad chunk in {side} body: {detail}")]
    BadChunk { side: &'static str, detail: String },
    #[error("bad Content-Length in {side}: {detail}")]
    BadContentLength { side: &'static str, detail: String },
    #[error("response {status} with no request waiting for it")]
    UnexpectedResponse { status: u16 },
    #[error("more than {limit} requests waiting for responses")]
    PipelineTooDeep { limit: usize },
    #[error("connection switched protocols (status {status})")]
    Upgrade { status: u16 },
}

impl HttpError {
    /// A metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "http_malformed",
            Self::HeadersTooLarge { .. } => "http_headers_too_large",
            Self::BodyTooLarge { .. } => "http_body_too_large",
            Self::BadChunk { .. } => "http_bad_chunk",
            Self::BadContentLength { .. } => "http_bad_content_length",
            Self::UnexpectedResponse { .. } => "http_unexpected_response",
            Self::PipelineTooDeep { .. } => "http_pipeline_too_deep",
            Self::Upgrade { .. } => "http_upgrade",
        }
    }
}

/// A header's value by case-insensitive name.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| &h.value)
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(headers: &[Header], side: &'static str) -> Result<Framing, HttpError> {
    let te_chunked = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
    // RFC 9112 6.3: chunked wins over Content-Length.
    if te_chunked {
        return Ok(Framing::Chunked);
    }
    let mut len: Option<u64> = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let bad = |detail: String| HttpError::BadContentLength { side, detail };
        let text = std::str::from_utf8(&h.value).map_err(|e| bad(e.to_string()))?;
        for part in text.split(',') {
            let v: u64 = part
                .trim()
                .parse()
                .map_err(|_| bad(format!("{text:?} is not a number")))?;
            if len.is_some_and(|l| l != v) {
                return Err(bad(format!("conflicting values {len:?} and {v}")));
            }
            len = Some(v);
        }
    }
    Ok(len.map_or(Framing::None, Framing::Length))
}

fn to_headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: Bytes::copy_from_slice(h.value),
        })
        .collect()
}

/// Incremental body reader (fixed length or chunked).
#[derive(Debug)]
struct Body {
    framing: Framing,
    remaining: u64,
    chunk: ChunkState,
    data: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data,
    DataEnd,
    Trailers,
}

impl Body {
    fn new(framing: Framing) -> Self {
        Self {
            framing,
            remaining: if let Framing::Length(n) = framing {
                n
            } else {
                0
            },
            chunk: ChunkState::Size,
            data: BytesMut::new(),
        }
    }

    fn push_data(
        &mut self,
        buf: &mut BytesMut,
        n: usize,
        max: usize,
        side: &'static str,
    ) -> Result<(), HttpError> {
        if self.data.len() + n > max {
            return Err(HttpError::BodyTooLarge { side, limit: max });
        }
        self.data.extend_from_slice(&buf[..n]);
        buf.advance(n);
        Ok(())
    }

    /// Consumes what it can from `buf`; `Ok(true)` once the body is complete.
    fn feed(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        side: &'static str,
    ) -> Result<bool, HttpError> {
        match self.framing {
            Framing::None => Ok(true),
            Framing::UntilClose => {
                let n = buf.len();
                self.push_data(buf, n, max, side)?;
                Ok(false)
            }
            Framing::Length(_) => {
                if self.remaining > max as u64 {
                    return Err(HttpError::BodyTooLarge { side, limit: max });
                }
                let n = (self.remaining as usize).min(buf.len());
                self.push_data(buf, n, max, side)?;
                self.remaining -= n as u64;
                Ok(self.remaining == 0)
            }
            Framing::Chunked => self.feed_chunked(buf, max, side),
        }
    }

    fn feed_chunked(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        side: &'static str,
    ) -> Result<bool, HttpError> {
        let bad = |detail: &str| HttpError::BadChunk {
            side,
            detail: detail.to_owned(),
        };
        loop {
            match self.chunk {
                ChunkState::Size | ChunkState::Trailers | ChunkState::DataEnd => {
                    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > 4096 {
                            return Err(bad("line longer than 4096 bytes"));
                        }
                        return Ok(false);
                    };
                    let line = buf.split_to(eol + 2);
                    let line = &line[..eol];
                    match self.chunk {
                        ChunkState::DataEnd if !line.is_empty() => {
                            return Err(bad("missing CRLF after chunk data"));
                        }
                        ChunkState::DataEnd => self.chunk = ChunkState::Size,
                        ChunkState::Trailers if line.is_empty() => return Ok(true),
                        ChunkState::Trailers => {}
                        _ => {
                            let text = std::str::from_utf8(line)
                                .map_err(|_| bad("size line is not text"))?;
                            let size = text.split(';').next().unwrap_or_default().trim();
                            let n = u64::from_str_radix(size, 16)
                                .map_err(|_| bad("size is not hex"))?;
                            if self.data.len() as u64 + n > max as u64 {
                                return Err(HttpError::BodyTooLarge { side, limit: max });
                            }
                            self.remaining = n;
                            self.chunk = if n == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data
                            };
                        }
                    }
                }
                ChunkState::Data => {
                    let n = (self.remaining as usize).min(buf.len());
                    self.push_data(buf, n, max, side)?;
                    self.remaining -= n as u64;
                    if self.remaining > 0 {
                        return Ok(false);
                    }
                    self.chunk = ChunkState::DataEnd;
                }
            }
        }
    }
}

/// A request whose head has been parsed, waiting for its body and response.
#[derive(Debug)]
struct Slot {
    request: Request,
    complete: bool,
    response: Option<Response>,
}

/// A message being read.
#[derive(Debug)]
struct InFlight<T> {
    head: T,
    body: Body,
}

#[derive(Debug)]
pub struct Conversation {
    limits: Limits,
    req_buf: BytesMut,
    resp_buf: BytesMut,
    req: Option<InFlight<Request>>,
    resp: Option<InFlight<Response>>,
    /// Requests in order; responses fill them first in, first out.
    slots: VecDeque<Slot>,
    done: Vec<Exchange>,
}

impl Conversation {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            req_buf: BytesMut::new(),
            resp_buf: BytesMut::new(),
            req: None,
            resp: None,
            slots: VecDeque::new(),
            done: Vec::new(),
        }
    }

    pub fn on_request_bytes(&mut self, data: &[u8], now_ns: u64) -> Result<(), HttpError> {
        self.req_buf.extend_from_slice(data);
        loop {
            if self.req.is_none() {
                if self.req_buf.is_empty() {
                    return Ok(());
                }
                let Some(inflight) = self.parse_request_head(now_ns)? else {
                    return Ok(());
                };
                if self.unanswered() >= self.limits.max_pipeline {
                    return Err(HttpError::PipelineTooDeep {
                        limit: self.limits.max_pipeline,
                    });
                }
                self.slots.push_back(Slot {
                    request: inflight.head.clone(),
                    complete: false,
                    response: None,
                });
                self.req = Some(inflight);
            }
            let Some(cur) = self.req.as_mut() else {
                return Ok(());
            };
            if !cur
                .body
                .feed(&mut self.req_buf, self.limits.max_body, "request")?
            {
                return Ok(());
            }
            let Some(mut cur) = self.req.take() else {
                return Ok(());
            };
            cur.head.body = std::mem::take(&mut cur.body.data).freeze();
            cur.head.last_byte_ns = now_ns;
            if let Some(slot) = self.slots.back_mut() {
                slot.request = cur.head;
                slot.complete = true;
            }
            self.emit();
        }
    }

    fn parse_request_head(&mut self, now_ns: u64) -> Result<Option<InFlight<Request>>, HttpError> {
        let mut raw = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut req = httparse::Request::new(&mut raw);
        let n = match req.parse(&self.req_buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.req_buf.len() > self.limits.max_header_bytes {
                    return Err(HttpError::HeadersTooLarge {
                        side: "request",
                        limit: self.limits.max_header_bytes,
                    });
                }
                return Ok(None);
            }
            Err(e) => {
                return Err(HttpError::Malformed {
                    side: "request",
                    detail: e.to_string(),
                });
            }
        };
        let headers = to_headers(req.headers);
        let framing = match framing(&headers, "request")? {
            // A request without length has no body (RFC 9112 6.3).
            Framing::UntilClose => Framing::None,
            f => f,
        };
        let head = Request {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version: req.version.unwrap_or(1),
            headers,
            body: Bytes::new(),
            chunked: framing == Framing::Chunked,
            first_byte_ns: now_ns,
            last_byte_ns: now_ns,
        };
        self.req_buf.advance(n);
        Ok(Some(InFlight {
            head,
            body: Body::new(framing),
        }))
    }

    pub fn on_response_bytes(&mut self, data: &[u8], now_ns: u64) -> Result<(), HttpError> {
        self.resp_buf.extend_from_slice(data);
        loop {
            if self.resp.is_none() {
                if self.resp_buf.is_empty() {
                    return Ok(());
                }
                if !self.parse_response_head(now_ns)? {
                    return Ok(());
                }
                continue;
            }
            let Some(cur) = self.resp.as_mut() else {
                return Ok(());
            };
            if !cur
                .body
                .feed(&mut self.resp_buf, self.limits.max_body, "response")?
            {
                return Ok(());
            }
            self.finish_response(now_ns);
        }
    }

    /// Parses a response head; `Ok(false)` when more bytes are needed.
    fn parse_response_head(&mut self, now_ns: u64) -> Result<bool, HttpError> {
        let mut raw = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut resp = httparse::Response::new(&mut raw);
        let n = match resp.parse(&self.resp_buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if self.resp_buf.len() > self.limits.max_header_bytes {
                    return Err(HttpError::HeadersTooLarge {
                        side: "response",
                        limit: self.limits.max_header_bytes,
                    });
                }
                return Ok(false);
            }
            Err(e) => {
                return Err(HttpError::Malformed {
                    side: "response",
                    detail: e.to_string(),
                });
            }
        };
        let status = resp.code.unwrap_or(0);
        let headers = to_headers(resp.headers);
        let reason = resp.reason.unwrap_or_default().to_owned();
        let version = resp.version.unwrap_or(1);
        self.resp_buf.advance(n);
        if status == 101 {
            return Err(HttpError::Upgrade { status });
        }
        if (100..200).contains(&status) {
            // Interim (100 Continue, 103): the final answer follows.
            return Ok(true);
        }
        let Some(slot) = self.slots.iter().find(|s| s.response.is_none()) else {
            return Err(HttpError::UnexpectedResponse { status });
        };
        let method = slot.request.method.as_str();
        if method == "CONNECT" && (200..300).contains(&status) {
            return Err(HttpError::Upgrade { status });
        }
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::None
        } else {
            match framing(&headers, "response")? {
                Framing::None => Framing::UntilClose,
                f => f,
            }
        };
        // A Content-Length of zero is a complete, empty body.
        let framing = if framing == Framing::Length(0) {
            Framing::None
        } else {
            framing
        };
        self.resp = Some(InFlight {
            head: Response {
                status,
                reason,
                version,
                headers,
                body: Bytes::new(),
                chunked: framing == Framing::Chunked,
                first_byte_ns: now_ns,
                last_byte_ns: now_ns,
            },
            body: Body::new(framing),
        });
        Ok(true)
    }

    fn finish_response(&mut self, now_ns: u64) {
        let Some(mut cur) = self.resp.take() else {
            return;
        };
        cur.head.body = std::mem::take(&mut cur.body.data).freeze();
        cur.head.last_byte_ns = now_ns;
        if let Some(slot) = self.slots.iter_mut().find(|s| s.response.is_none()) {
            slot.response = Some(cur.head);
        }
        self.emit();
    }

    /// Moves leading slots with a complete request and response to `done`.
    fn emit(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.complete && s.response.is_some())
        {
            if let Some(s) = self.slots.pop_front() {
                self.done.push(Exchange {
                    request: s.request,
                    response: s.response,
                });
            }
        }
    }

    fn unanswered(&self) -> usize {
        self.slots.iter().filter(|s| s.response.is_none()).count()
    }

    /// The connection ended: a response delimited by close is complete, and
    /// complete requests still waiting are emitted without a response.
    pub fn on_close(&mut self, now_ns: u64) {
        if self
            .resp
            .as_ref()
            .is_some_and(|r| r.body.framing == Framing::UntilClose)
        {
            self.finish_response(now_ns);
        }
        self.resp = None;
        while let Some(s) = self.slots.pop_front() {
            if s.complete {
                self.done.push(Exchange {
                    request: s.request,
                    response: s.response,
                });
            }
        }
    }

    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.done)
    }

    /// Requests parsed (or being parsed) whose exchange is not yet out.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Conversation {
        Conversation::new(Limits::default())
    }

    fn feed_bytewise(c: &mut Conversation, req: &[u8], resp: &[u8]) {
        for b in req {
            c.on_request_bytes(std::slice::from_ref(b), 1).unwrap();
        }
        for b in resp {
            c.on_response_bytes(std::slice::from_ref(b), 2).unwrap();
        }
    }

    #[test]
    fn keep_alive_byte_by_byte() {
        let mut c = conv();
        for i in 0..3 {
            let req = format!("GET /k/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr{i}");
            feed_bytewise(&mut c, req.as_bytes(), resp.as_bytes());
        }
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 3);
        assert_eq!(ex[2].request.target, "/k/2");
        assert_eq!(ex[2].response.as_ref().unwrap().body.as_ref(), b"r2");
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut c = conv();
        let reqs: String = (0..5)
            .map(|i| format!("GET /p/{i} HTTP/1.1\r\nHost: a\r\n\r\n"))
            .collect();
        c.on_request_bytes(reqs.as_bytes(), 1).unwrap();
        assert_eq!(c.pending(), 5);
        let resps: String = (0..5)
            .map(|i| format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{i}"))
            .collect();
        c.on_response_bytes(resps.as_bytes(), 2).unwrap();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 5);
        for (i, e) in ex.iter().enumerate() {
            assert_eq!(e.request.target, format!("/p/{i}"));
            assert_eq!(
                e.response.as_ref().unwrap().body,
                Bytes::from(i.to_string())
            );
        }
    }

    #[test]
    fn content_length_bodies_up_to_64_mib() {
        for size in [0usize, 1024, 1 << 20, 64 << 20] {
            let mut c = conv();
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let head = format!("PUT /u HTTP/1.1\r\nContent-Length: {size}\r\n\r\n");
            c.on_request_bytes(head.as_bytes(), 1).unwrap();
            for chunk in body.chunks(64 << 10) {
                c.on_request_bytes(chunk, 1).unwrap();
            }
            c.on_response_bytes(b"HTTP/1.1 204 No Content\r\n\r\n", 2)
                .unwrap();
            let ex = c.take_exchanges();
            assert_eq!(ex.len(), 1, "size {size}");
            assert_eq!(ex[0].request.body.len(), size);
            assert!(ex[0].request.body[..] == body[..], "size {size}");
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let mut c = conv();
        let req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let resp =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        feed_bytewise(&mut c, req, resp);
        let ex = c.take_exchanges();
        assert_eq!(ex[0].request.body.as_ref(), b"hello world");
        assert!(ex[0].request.chunked);
        assert_eq!(ex[0].response.as_ref().unwrap().body.as_ref(), b"abc");
    }

    #[test]
    fn expect_continue_interim_response_is_skipped() {
        let mut c = conv();
        c.on_request_bytes(
            b"PUT /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            1,
        )
        .unwrap();
        c.on_response_bytes(b"HTTP/1.1 100 Continue\r\n\r\n", 2)
            .unwrap();
        c.on_request_bytes(b"abc", 3).unwrap();
        c.on_response_bytes(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4)
            .unwrap();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].request.body.as_ref(), b"abc");
        assert_eq!(ex[0].response.as_ref().unwrap().status, 201);
    }

    #[test]
    fn head_204_304_have_no_body() {
        let mut c = conv();
        c.on_request_bytes(b"HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\nGET /m HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n", 1)
            .unwrap();
        c.on_response_bytes(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            2,
        )
        .unwrap();
        let ex = c.take_exchanges();
        let st: Vec<u16> = ex
            .iter()
            .map(|e| e.response.as_ref().unwrap().status)
            .collect();
        assert_eq!(st, vec![200, 204, 304, 200]);
        assert_eq!(ex[3].response.as_ref().unwrap().body.as_ref(), b"ok");
    }

    #[test]
    fn response_until_close_and_pending_request_at_close() {
        let mut c = conv();
        c.on_request_bytes(b"GET /a HTTP/1.0\r\n\r\n", 1).unwrap();
        c.on_response_bytes(b"HTTP/1.0 200 OK\r\n\r\nstream", 2)
            .unwrap();
        assert!(c.take_exchanges().is_empty());
        c.on_close(3);
        let ex = c.take_exchanges();
        assert_eq!(ex[0].response.as_ref().unwrap().body.as_ref(), b"stream");

        let mut c = conv();
        c.on_request_bytes(b"GET /b HTTP/1.1\r\n\r\n", 1).unwrap();
        c.on_close(2);
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert!(ex[0].response.is_none());
    }

    #[test]
    fn errors_carry_reasons() {
        let mut c = conv();
        let e = c
            .on_request_bytes(b"GET\x01/ HTTP/1.1\r\n\r\n", 1)
            .unwrap_err();
        assert_eq!(e.reason(), "http_malformed");
        let mut c = conv();
        let e = c
            .on_request_bytes(
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                1,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "http_bad_content_length");
        let mut c = Conversation::new(Limits {
            max_body: 10,
            ..Limits::default()
        });
        let e = c
            .on_request_bytes(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 1)
            .unwrap_err();
        assert_eq!(e.reason(), "http_body_too_large");
        let mut c = conv();
        let e = c
            .on_response_bytes(b"HTTP/1.1 200 OK\r\n\r\n", 1)
            .unwrap_err();
        assert_eq!(e, HttpError::UnexpectedResponse { status: 200 });
        let mut c = conv();
        c.on_request_bytes(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 1)
            .unwrap();
        let e = c
            .on_response_bytes(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 2)
            .unwrap_err();
        assert_eq!(e.reason(), "http_upgrade");
        let mut c = conv();
        let e = c
            .on_request_bytes(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                1,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "http_bad_chunk");
    }

    #[test]
    fn early_response_before_request_body_ends() {
        let mut c = conv();
        c.on_request_bytes(b"POST /big HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc", 1)
            .unwrap();
        c.on_response_bytes(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", 2)
            .unwrap();
        assert!(c.take_exchanges().is_empty(), "request not complete yet");
        c.on_request_bytes(b"def", 3).unwrap();
        let ex = c.take_exchanges();
        assert_eq!(ex[0].request.body.as_ref(), b"abcdef");
        assert_eq!(ex[0].response.as_ref().unwrap().status, 413);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        struct Msg {
            path: String,
            body: Vec<u8>,
            chunked: bool,
            resp_body: Vec<u8>,
        }

        fn msg() -> impl Strategy<Value = Msg> {
            (
                "[a-z0-9/]{1,12}",
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..300),
            )
                .prop_map(|(p, body, chunked, resp_body)| Msg {
                    path: format!("/{p}"),
                    body,
                    chunked,
                    resp_body,
                })
        }

        fn encode(body: &[u8], chunked: bool, split: usize) -> Vec<u8> {
            if !chunked {
                return body.to_vec();
            }
            let mut out = Vec::new();
            for c in body.chunks(split.max(1)) {
                out.extend(format!("{:x}\r\n", c.len()).into_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }

        proptest! {
            #[test]
            fn random_exchanges_split_anywhere(msgs in proptest::collection::vec(msg(), 1..6), split in 1usize..50, cut in 1usize..97) {
                let mut req = Vec::new();
                let mut resp = Vec::new();
                for m in &msgs {
                    let framing = if m.chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {}", m.body.len()) };
                    req.extend(format!("POST {} HTTP/1.1\r\nHost: h\r\n{framing}\r\n\r\n", m.path).into_bytes());
                    req.extend(encode(&m.body, m.chunked, split));
                    let rf = if m.chunked { "Transfer-Encoding: chunked".to_owned() } else { format!("Content-Length: {}", m.resp_body.len()) };
                    resp.extend(format!("HTTP/1.1 200 OK\r\n{rf}\r\n\r\n").into_bytes());
                    resp.extend(encode(&m.resp_body, m.chunked, split + 3));
                }
                let mut c = conv();
                // All requests first (pipelined), both streams cut into pieces.
                for piece in req.chunks(cut) {
                    c.on_request_bytes(piece, 1).unwrap();
                }
                for piece in resp.chunks(cut + 7) {
                    c.on_response_bytes(piece, 2).unwrap();
                }
                let ex = c.take_exchanges();
                prop_assert_eq!(ex.len(), msgs.len());
                for (e, m) in ex.iter().zip(&msgs) {
                    prop_assert_eq!(&e.request.target, &m.path);
                    prop_assert_eq!(e.request.body.as_ref(), &m.body[..]);
                    prop_assert_eq!(e.response.as_ref().unwrap().body.as_ref(), &m.resp_body[..]);
                }
            }
        }
    }
}

#[cfg(test)]
mod split_regression {
    use super::*;

    #[test]
    fn chunked_upload_split_at_capture_boundaries() {
        let body: Vec<u8> = (0..1_048_576usize).map(|i| (i * 31 % 251) as u8).collect();
        let mut req = b"PUT /upload/1048576/chunked HTTP/1.1\r\nHost: live.test\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in body.chunks(100_003) {
            req.extend(format!("{:x};ext=1\r\n", c.len()).into_bytes());
            req.extend_from_slice(c);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        for sizes in [
            vec![32741usize, 32741, 62491, 14875, 47616],
            vec![1, 2, 3, 4096, 65483],
            vec![7],
        ] {
            let mut c = Conversation::new(Limits::default());
            let mut off = 0;
            let mut i = 0;
            while off < req.len() {
                let n = sizes[i % sizes.len()].min(req.len() - off);
                c.on_request_bytes(&req[off..off + n], 1)
                    .unwrap_or_else(|e| panic!("at {off}: {e}"));
                off += n;
                i += 1;
            }
            c.on_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2)
                .unwrap();
            let ex = c.take_exchanges();
            assert_eq!(ex[0].request.body.len(), body.len());
            assert!(ex[0].request.body[..] == body[..]);
        }
    }
}
