//! HTTP/1.1 conversation parsing and request/response pairing for passively captured connections.
//!
//! The capture layer reassembles each TCP connection into two ordered byte streams and feeds them
//! here: client bytes through [`Conversation::on_request_bytes`], server bytes through
//! [`Conversation::on_response_bytes`] and the end of the connection through
//! [`Conversation::on_close`]. The streams may be split anywhere and interleaved in any order, as
//! long as a response's bytes are not fed before the head of the request it answers. Completed
//! [`Exchange`]s (a request plus the live response it got) leave through
//! [`Conversation::take_exchanges`], in request order, to be replayed against the shadow fleet.
//!
//! Parsing never guesses: whatever cannot be framed with certainty (malformed heads, ambiguous
//! lengths, protocol switches, exceeded limits) becomes an [`HttpError`] whose
//! [`HttpError::reason`] is a metric label. An error poisons the conversation, because the streams
//! are out of sync from then on; the caller drops the connection, and exchanges completed before
//! the error stay available.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};
use httparse::Status;

/// A header field as seen on the wire: the name keeps its case, the value its raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Bytes,
}

/// First value of the field `name`, compared case-insensitively as field names are (RFC 9110 §5.1).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a Bytes> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| &h.value)
}

/// A complete request as the client sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
    /// The payload with any chunked framing removed.
    pub body: Bytes,
    pub chunked: bool,
    /// Trailer fields of a chunked body; kept apart because RFC 9110 §6.5.1 forbids blind merging.
    pub trailers: Vec<Header>,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
}

/// A complete final (non-1xx) response as the live server sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub headers: Vec<Header>,
    pub body: Bytes,
    pub chunked: bool,
    pub trailers: Vec<Header>,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
}

/// A request paired with the live response it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub request: Request,
    /// `None` when the connection ended before the live response completed.
    pub response: Option<Response>,
}

/// Resource bounds, so a hostile or broken peer cannot make the sidecar buffer without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line and fields); also bounds chunk-size lines and trailer sections.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: usize,
    /// Most requests allowed to wait for their responses at once.
    pub max_pipeline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 128,
            max_body: 128 * 1024 * 1024,
            max_pipeline: 64,
        }
    }
}

/// Which byte stream of the connection an error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::Response => "response",
        })
    }
}

/// Why a conversation could not be followed; every variant ends parsing of the connection.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed request head: {detail}")]
    MalformedRequest { detail: String },
    #[error("malformed response head: {detail}")]
    MalformedResponse { detail: String },
    #[error("{direction} head larger than {limit} bytes")]
    HeadersTooLarge { direction: Direction, limit: usize },
    #[error("{direction} has more than {limit} header fields")]
    TooManyHeaders { direction: Direction, limit: usize },
    #[error("{direction} body larger than {limit} bytes")]
    BodyTooLarge { direction: Direction, limit: usize },
    #[error("bad chunked {direction} body: {detail}")]
    BadChunk {
        direction: Direction,
        detail: String,
    },
    #[error("invalid Content-Length in {direction}: {value:?}")]
    BadContentLength { direction: Direction, value: String },
    #[error("conflicting Content-Length values in {direction}: {first} and {second}")]
    ConflictingContentLength {
        direction: Direction,
        first: u64,
        second: u64,
    },
    #[error("request Transfer-Encoding {value:?} does not end in exactly one chunked coding")]
    UnsupportedTransferEncoding { value: String },
    #[error("response {status} arrived with no outstanding request")]
    UnexpectedResponse { status: u16 },
    #[error("more than {limit} pipelined requests awaiting responses")]
    PipelineTooDeep { limit: usize },
    #[error("connection left HTTP/1.1 after status {status}")]
    Upgrade { status: u16 },
    #[error("{direction} bytes arrived after the connection closed")]
    AfterClose { direction: Direction },
}

impl HttpError {
    /// Stable snake_case label for drop metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedRequest { .. } => "malformed_request",
            Self::MalformedResponse { .. } => "malformed_response",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::TooManyHeaders { .. } => "too_many_headers",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BadChunk { .. } => "bad_chunk",
            Self::BadContentLength { .. } => "bad_content_length",
            Self::ConflictingContentLength { .. } => "conflicting_content_length",
            Self::UnsupportedTransferEncoding { .. } => "unsupported_transfer_encoding",
            Self::UnexpectedResponse { .. } => "unexpected_response",
            Self::PipelineTooDeep { .. } => "pipeline_too_deep",
            Self::Upgrade { .. } => "upgrade",
            Self::AfterClose { .. } => "after_close",
        }
    }
}

/// How the body being read is delimited, and how far reading it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
}

enum Step {
    Again,
    NeedMore,
    Done,
}

/// Unconsumed bytes of one stream.
#[derive(Default)]
struct Input {
    buf: BytesMut,
    /// Prefix of `buf` already searched for a line end, so incomplete heads are re-parsed only
    /// when a new line arrived instead of on every byte (which would be quadratic).
    scanned: usize,
}

impl Input {
    /// Whether re-parsing a line-based element can make progress (or must fail on size).
    fn line_ready(&mut self, limit: usize) -> bool {
        let fresh = self
            .buf
            .get(self.scanned..)
            .is_some_and(|new| new.contains(&b'\n'));
        self.scanned = self.buf.len();
        fresh || self.buf.len() > limit
    }

    fn take(&mut self, n: usize) -> BytesMut {
        self.scanned = 0;
        self.buf.split_to(n.min(self.buf.len()))
    }
}

/// Body of the message being read: framing state plus the de-chunked payload so far.
struct Body {
    framing: Framing,
    limits: Limits,
    dir: Direction,
    chunked: bool,
    data: BytesMut,
    trailers: Vec<Header>,
}

impl Body {
    fn new(framing: Framing, limits: Limits, dir: Direction) -> Self {
        Self {
            framing,
            limits,
            dir,
            chunked: framing == Framing::ChunkSize,
            data: BytesMut::new(),
            trailers: Vec::new(),
        }
    }

    fn step(&mut self, input: &mut Input) -> Result<Step, HttpError> {
        match self.framing {
            Framing::Length(left) => {
                let left = self.copy(input, left);
                self.framing = Framing::Length(left);
                Ok(if left == 0 {
                    Step::Done
                } else {
                    Step::NeedMore
                })
            }
            Framing::ChunkData(left) => {
                let left = self.copy(input, left);
                self.framing = if left == 0 {
                    Framing::ChunkEnd
                } else {
                    Framing::ChunkData(left)
                };
                Ok(if left == 0 {
                    Step::Again
                } else {
                    Step::NeedMore
                })
            }
            Framing::UntilClose => {
                let n = input.buf.len() as u64;
                self.check_room(n)?;
                self.copy(input, n);
                Ok(Step::NeedMore)
            }
            Framing::ChunkSize => self.chunk_size(input),
            Framing::ChunkEnd => self.chunk_end(input),
            Framing::Trailers => self.trailers(input),
        }
    }

    /// Moves up to `left` bytes into the payload and returns how many are still owed.
    fn copy(&mut self, input: &mut Input, left: u64) -> u64 {
        let n = usize::try_from(left).map_or(input.buf.len(), |l| l.min(input.buf.len()));
        self.data.extend_from_slice(&input.take(n));
        left - n as u64
    }

    fn check_room(&self, extra: u64) -> Result<(), HttpError> {
        let (direction, limit) = (self.dir, self.limits.max_body);
        if (self.data.len() as u64).saturating_add(extra) > limit as u64 {
            return Err(HttpError::BodyTooLarge { direction, limit });
        }
        Ok(())
    }

    fn bad_chunk(&self, detail: &str) -> HttpError {
        HttpError::BadChunk {
            direction: self.dir,
            detail: detail.to_owned(),
        }
    }

    fn chunk_size(&mut self, input: &mut Input) -> Result<Step, HttpError> {
        let limit = self.limits.max_header_bytes;
        if !input.line_ready(limit) {
            return Ok(Step::NeedMore);
        }
        // httparse reads an empty size as 0, which would silently end the body early.
        if input.buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
            return Err(self.bad_chunk("chunk size is not hexadecimal"));
        }
        match httparse::parse_chunk_size(&input.buf) {
            Ok(Status::Complete((n, size))) => {
                input.take(n);
                self.check_room(size)?;
                self.framing = if size == 0 {
                    Framing::Trailers
                } else {
                    Framing::ChunkData(size)
                };
                Ok(Step::Again)
            }
            Ok(Status::Partial) if input.buf.len() > limit => {
                Err(self.bad_chunk("chunk-size line too long"))
            }
            Ok(Status::Partial) => Ok(Step::NeedMore),
            Err(_) => Err(self.bad_chunk("invalid chunk-size line")),
        }
    }

    fn chunk_end(&mut self, input: &mut Input) -> Result<Step, HttpError> {
        match input.buf.as_ref() {
            [] | [b'\r'] => Ok(Step::NeedMore),
            [b'\r', b'\n', ..] => {
                input.take(2);
                self.framing = Framing::ChunkSize;
                Ok(Step::Again)
            }
            _ => Err(self.bad_chunk("chunk data not followed by CRLF")),
        }
    }

    fn trailers(&mut self, input: &mut Input) -> Result<Step, HttpError> {
        let (direction, limit) = (self.dir, self.limits.max_header_bytes);
        if !input.line_ready(limit) {
            return Ok(Step::NeedMore);
        }
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        match httparse::parse_headers(&input.buf, &mut slots) {
            Ok(Status::Complete((n, _))) if n > limit => {
                Err(HttpError::HeadersTooLarge { direction, limit })
            }
            Ok(Status::Complete((n, fields))) => {
                self.trailers = owned_headers(fields);
                input.take(n);
                Ok(Step::Done)
            }
            Ok(Status::Partial) if input.buf.len() > limit => {
                Err(HttpError::HeadersTooLarge { direction, limit })
            }
            Ok(Status::Partial) => Ok(Step::NeedMore),
            Err(e) => Err(head_error(e, direction, &self.limits)),
        }
    }
}

fn owned_headers(fields: &[httparse::Header<'_>]) -> Vec<Header> {
    fields
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: Bytes::copy_from_slice(h.value),
        })
        .collect()
}

fn head_error(e: httparse::Error, direction: Direction, limits: &Limits) -> HttpError {
    let detail = e.to_string();
    match (e, direction) {
        (httparse::Error::TooManyHeaders, _) => HttpError::TooManyHeaders {
            direction,
            limit: limits.max_headers,
        },
        (_, Direction::Request) => HttpError::MalformedRequest { detail },
        (_, Direction::Response) => HttpError::MalformedResponse { detail },
    }
}

type HeadParser<M> = fn(&[u8], &Limits) -> Result<Option<(usize, M)>, HttpError>;

fn parse_request_head(buf: &[u8], limits: &Limits) -> Result<Option<(usize, Request)>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf) {
        Ok(Status::Complete(n)) => Ok(Some((
            n,
            Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version: req.version.unwrap_or_default(),
                headers: owned_headers(req.headers),
                ..Request::default()
            },
        ))),
        Ok(Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, Direction::Request, limits)),
    }
}

fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, Response)>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut res = httparse::Response::new(&mut slots);
    match res.parse(buf) {
        Ok(Status::Complete(n)) => Ok(Some((
            n,
            Response {
                status: res.code.unwrap_or_default(),
                reason: res.reason.unwrap_or_default().to_owned(),
                version: res.version.unwrap_or_default(),
                headers: owned_headers(res.headers),
                ..Response::default()
            },
        ))),
        Ok(Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, Direction::Response, limits)),
    }
}

/// Transfer-Encoding as it matters for framing.
enum Coding {
    Absent,
    /// `chunked` is the final coding and appears once.
    Chunked,
    Other(String),
}

fn transfer_coding(headers: &[Header]) -> Coding {
    let fields: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .collect();
    if fields.is_empty() {
        return Coding::Absent;
    }
    let joined = fields.join(", ");
    let chunked: Vec<bool> = joined
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.eq_ignore_ascii_case("chunked"))
        .collect();
    if chunked.last() == Some(&true) && chunked.iter().filter(|&&c| c).count() == 1 {
        return Coding::Chunked;
    }
    Coding::Other(joined)
}

/// The declared Content-Length; repeated identical values ("5, 5") are accepted as RFC 9110 §8.6
/// allows, anything else ambiguous is an error because guessing enables request smuggling.
fn content_length(
    headers: &[Header],
    direction: Direction,
    limits: &Limits,
) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for field in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for part in field.value.split(|b| *b == b',') {
            let n =
                parse_decimal(part.trim_ascii()).ok_or_else(|| HttpError::BadContentLength {
                    direction,
                    value: String::from_utf8_lossy(&field.value).into_owned(),
                })?;
            match found {
                Some(first) if first != n => {
                    return Err(HttpError::ConflictingContentLength {
                        direction,
                        first,
                        second: n,
                    });
                }
                _ => found = Some(n),
            }
        }
    }
    if found.is_some_and(|n| n > limits.max_body as u64) {
        return Err(HttpError::BodyTooLarge {
            direction,
            limit: limits.max_body,
        });
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let digit = char::from(d).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// RFC 9112 §6.3 for requests: chunked wins over Content-Length, otherwise no body.
fn request_framing(head: &Request, limits: &Limits) -> Result<Framing, HttpError> {
    let headers = &head.headers;
    match transfer_coding(headers) {
        // HTTP/1.0 has no chunked coding; RFC 9112 §6.1 calls such framing faulty.
        Coding::Chunked if head.version == 0 => Err(HttpError::UnsupportedTransferEncoding {
            value: "chunked (HTTP/1.0)".to_owned(),
        }),
        Coding::Chunked => Ok(Framing::ChunkSize),
        Coding::Other(value) => Err(HttpError::UnsupportedTransferEncoding { value }),
        Coding::Absent => Ok(Framing::Length(
            content_length(headers, Direction::Request, limits)?.unwrap_or(0),
        )),
    }
}

/// RFC 9112 §6.3 for responses; `None` marks an interim 1xx response that carries no body.
fn response_framing(
    head: &Response,
    method: &str,
    limits: &Limits,
) -> Result<Option<Framing>, HttpError> {
    let status = head.status;
    if status == 101 || (method == "CONNECT" && (200..300).contains(&status)) {
        return Err(HttpError::Upgrade { status });
    }
    if (100..200).contains(&status) {
        return Ok(None);
    }
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Some(Framing::Length(0)));
    }
    match transfer_coding(&head.headers) {
        Coding::Chunked => Ok(Some(Framing::ChunkSize)),
        // Without a final chunked coding only the close can delimit a response.
        Coding::Other(_) => Ok(Some(Framing::UntilClose)),
        Coding::Absent => Ok(Some(
            content_length(&head.headers, Direction::Response, limits)?
                .map_or(Framing::UntilClose, Framing::Length),
        )),
    }
}

/// Lets the stream reader fill in body and timing without knowing the message type.
trait Message {
    fn complete(&mut self, body: Body, first_ns: u64, last_ns: u64);
}

impl Message for Request {
    fn complete(&mut self, body: Body, first_ns: u64, last_ns: u64) {
        (self.body, self.chunked, self.trailers) =
            (body.data.freeze(), body.chunked, body.trailers);
        (self.first_byte_ns, self.last_byte_ns) = (first_ns, last_ns);
    }
}

impl Message for Response {
    fn complete(&mut self, body: Body, first_ns: u64, last_ns: u64) {
        (self.body, self.chunked, self.trailers) =
            (body.data.freeze(), body.chunked, body.trailers);
        (self.first_byte_ns, self.last_byte_ns) = (first_ns, last_ns);
    }
}

/// A message whose head is parsed and whose body is still being read.
struct InFlight<M> {
    head: M,
    body: Body,
    first_ns: u64,
}

/// Parsing state of one direction of the connection.
struct Reader<M> {
    direction: Direction,
    input: Input,
    /// Arrival time of the first byte of the message not yet started.
    first_ns: Option<u64>,
    current: Option<InFlight<M>>,
}

impl<M: Message> Reader<M> {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            input: Input::default(),
            first_ns: None,
            current: None,
        }
    }

    fn mark_start(&mut self, now: u64) {
        if self.first_ns.is_none() && !self.input.buf.is_empty() {
            self.first_ns = Some(now);
        }
    }

    fn parse_head(
        &mut self,
        limits: &Limits,
        parse: HeadParser<M>,
    ) -> Result<Option<M>, HttpError> {
        if !self.input.line_ready(limits.max_header_bytes) {
            return Ok(None);
        }
        let too_large = HttpError::HeadersTooLarge {
            direction: self.direction,
            limit: limits.max_header_bytes,
        };
        match parse(&self.input.buf, limits)? {
            Some((n, _)) if n > limits.max_header_bytes => Err(too_large),
            Some((n, head)) => {
                self.input.take(n);
                Ok(Some(head))
            }
            None if self.input.buf.len() > limits.max_header_bytes => Err(too_large),
            None => Ok(None),
        }
    }

    fn begin(&mut self, head: M, framing: Framing, limits: Limits, now: u64) {
        let first_ns = self.first_ns.take().unwrap_or(now);
        self.current = Some(InFlight {
            head,
            body: Body::new(framing, limits, self.direction),
            first_ns,
        });
    }

    /// Reads body bytes; returns the message once it is complete.
    fn advance(&mut self, now: u64) -> Result<Option<M>, HttpError> {
        let Some(flight) = self.current.as_mut() else {
            return Ok(None);
        };
        loop {
            match flight.body.step(&mut self.input)? {
                Step::Again => {}
                Step::NeedMore => return Ok(None),
                Step::Done => return Ok(self.finish(now)),
            }
        }
    }

    fn finish(&mut self, last_ns: u64) -> Option<M> {
        let InFlight {
            mut head,
            body,
            first_ns,
        } = self.current.take()?;
        head.complete(body, first_ns, last_ns);
        Some(head)
    }
}

/// A request whose head was parsed, waiting for its own completion and for its response.
struct Slot {
    method: String,
    request: Option<Request>,
    response: Option<Response>,
}

/// One captured connection: parses both streams and pairs responses with requests FIFO.
pub struct Conversation {
    limits: Limits,
    requests: Reader<Request>,
    responses: Reader<Response>,
    /// Slots in request order; the first `answered` have their final response.
    slots: VecDeque<Slot>,
    answered: usize,
    done: Vec<Exchange>,
    failed: Option<HttpError>,
    closed: bool,
    /// A CONNECT awaits its response: client bytes after it are tunnel payload if the server
    /// accepts and the next request if it refuses, so they wait unparsed.
    tunnel_pending: bool,
}

impl Conversation {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            requests: Reader::new(Direction::Request),
            responses: Reader::new(Direction::Response),
            slots: VecDeque::new(),
            answered: 0,
            done: Vec::new(),
            failed: None,
            closed: false,
            tunnel_pending: false,
        }
    }

    /// Bytes the client sent (in order, as reassembled). `now_ns` stamps first/last byte times.
    pub fn on_request_bytes(&mut self, data: &[u8], now_ns: u64) -> Result<(), HttpError> {
        self.guard(Direction::Request)?;
        self.requests.input.buf.extend_from_slice(data);
        let result = self.pump_requests(now_ns);
        self.poison(result)
    }

    /// Bytes the server sent.
    pub fn on_response_bytes(&mut self, data: &[u8], now_ns: u64) -> Result<(), HttpError> {
        self.guard(Direction::Response)?;
        self.responses.input.buf.extend_from_slice(data);
        let result = self.pump_responses(now_ns);
        self.poison(result)
    }

    /// The connection ended (FIN/RST). Completes a response delimited by close; requests still
    /// waiting get `response: None`. Requests whose own bytes were incomplete are dropped, since
    /// they cannot be replayed. After an error nothing more is emitted.
    pub fn on_close(&mut self, now_ns: u64) {
        if std::mem::replace(&mut self.closed, true) || self.failed.is_some() {
            return;
        }
        let until_close = self
            .responses
            .current
            .as_ref()
            .is_some_and(|f| f.body.framing == Framing::UntilClose);
        if until_close && let Some(response) = self.responses.finish(now_ns) {
            self.attach_response(response);
        }
        for slot in self.slots.drain(..) {
            if let Some(request) = slot.request {
                self.done.push(Exchange {
                    request,
                    response: slot.response,
                });
            }
        }
        self.answered = 0;
    }

    /// Exchanges completed so far, in request order (takes them out).
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.done)
    }

    /// Requests fully parsed whose responses are not yet complete.
    pub fn pending(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.request.is_some() && s.response.is_none())
            .count()
    }

    /// The error that stopped parsing, if any.
    pub fn error(&self) -> Option<&HttpError> {
        self.failed.as_ref()
    }

    fn guard(&self, direction: Direction) -> Result<(), HttpError> {
        match (&self.failed, self.closed) {
            (Some(e), _) => Err(e.clone()),
            (None, true) => Err(HttpError::AfterClose { direction }),
            (None, false) => Ok(()),
        }
    }

    fn poison(&mut self, result: Result<(), HttpError>) -> Result<(), HttpError> {
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn pump_requests(&mut self, now: u64) -> Result<(), HttpError> {
        loop {
            if self.requests.current.is_none() && !self.start_request(now)? {
                return Ok(());
            }
            let Some(request) = self.requests.advance(now)? else {
                return Ok(());
            };
            let waits = self.slots.back().is_some_and(|s| s.response.is_none());
            self.tunnel_pending = request.method == "CONNECT" && waits;
            if let Some(slot) = self.slots.back_mut() {
                slot.request = Some(request);
            }
            self.drain();
        }
    }

    fn start_request(&mut self, now: u64) -> Result<bool, HttpError> {
        self.requests.mark_start(now);
        if self.tunnel_pending {
            // If the CONNECT is refused these bytes are the next head, so the head limit applies.
            if self.requests.input.buf.len() > self.limits.max_header_bytes {
                return Err(HttpError::HeadersTooLarge {
                    direction: Direction::Request,
                    limit: self.limits.max_header_bytes,
                });
            }
            return Ok(false);
        }
        let Some(head) = self.requests.parse_head(&self.limits, parse_request_head)? else {
            return Ok(false);
        };
        if self.slots.len() - self.answered >= self.limits.max_pipeline {
            return Err(HttpError::PipelineTooDeep {
                limit: self.limits.max_pipeline,
            });
        }
        let framing = request_framing(&head, &self.limits)?;
        self.slots.push_back(Slot {
            method: head.method.clone(),
            request: None,
            response: None,
        });
        self.requests.begin(head, framing, self.limits, now);
        Ok(true)
    }

    fn pump_responses(&mut self, now: u64) -> Result<(), HttpError> {
        loop {
            if self.responses.current.is_none() && !self.start_response(now)? {
                return Ok(());
            }
            let Some(response) = self.responses.advance(now)? else {
                return Ok(());
            };
            if self.attach_response(response) {
                self.pump_requests(now)?;
            }
        }
    }

    /// Parses response heads, skipping interim ones; true once a final response has begun.
    fn start_response(&mut self, now: u64) -> Result<bool, HttpError> {
        loop {
            self.responses.mark_start(now);
            let Some(head) = self
                .responses
                .parse_head(&self.limits, parse_response_head)?
            else {
                return Ok(false);
            };
            let Some(slot) = self.slots.get(self.answered) else {
                return Err(HttpError::UnexpectedResponse {
                    status: head.status,
                });
            };
            let Some(framing) = response_framing(&head, &slot.method, &self.limits)? else {
                // Interim responses leave the request waiting; the final one gets its own timing.
                self.responses.first_ns = None;
                continue;
            };
            self.responses.begin(head, framing, self.limits, now);
            return Ok(true);
        }
    }

    /// Pairs a final response with the oldest unanswered request; true if that released client
    /// bytes held back behind a refused CONNECT.
    fn attach_response(&mut self, response: Response) -> bool {
        let Some(slot) = self.slots.get_mut(self.answered) else {
            return false;
        };
        let released = slot.method == "CONNECT" && std::mem::take(&mut self.tunnel_pending);
        slot.response = Some(response);
        self.answered += 1;
        self.drain();
        released
    }

    fn drain(&mut self) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.request.is_some() && s.response.is_some())
        {
            if let Some(Slot {
                request: Some(request),
                response,
                ..
            }) = self.slots.pop_front()
            {
                self.answered -= 1;
                self.done.push(Exchange { request, response });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

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
        resp(&mut c, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;a=b\r\nabc\r\n0;last\r\n");
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
                err.reason(),
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
            request_err(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n"
            ),
            too_large
        );
        assert_eq!(request_err(&[b'a'; 65]).reason(), "headers_too_large");
        assert_eq!(
            request_err(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").reason(),
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
            c.error().map(HttpError::reason),
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
        req(&mut c, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x02\x00");
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

    #[derive(Clone, Debug)]
    struct Msg {
        start: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        /// Chunk sizes to cycle through, or `None` for Content-Length framing.
        chunks: Option<Vec<usize>>,
        interim: bool,
    }

    fn msg(start: impl Strategy<Value = String>) -> impl Strategy<Value = Msg> {
        let headers =
            prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..5);
        let chunks = prop::option::of(prop::collection::vec(1usize..50, 1..5));
        (
            start,
            headers,
            prop::collection::vec(any::<u8>(), 0..200),
            chunks,
            any::<bool>(),
        )
            .prop_map(|(start, headers, body, chunks, interim)| Msg {
                start,
                headers,
                body,
                chunks,
                interim,
            })
    }

    fn request_msg() -> impl Strategy<Value = Msg> {
        let methods = prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD",
        ]);
        msg((methods, "/[a-z0-9/._~-]{0,30}").prop_map(|(m, p)| format!("{m} {p} HTTP/1.1")))
    }

    fn response_msg() -> impl Strategy<Value = Msg> {
        let statuses = prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]);
        msg(statuses.prop_map(|s| format!("HTTP/1.1 {s} Some Reason")))
    }

    /// Serialises `m` onto `out`; returns the header fields sent and where the head ended.
    fn write(
        out: &mut Vec<u8>,
        m: &Msg,
        send_body: bool,
        interim: bool,
    ) -> (Vec<(String, String)>, usize) {
        if interim {
            out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut headers = m.headers.clone();
        match &m.chunks {
            None => headers.push(("Content-Length".into(), m.body.len().to_string())),
            Some(_) if send_body => headers.push(("Transfer-Encoding".into(), "chunked".into())),
            Some(_) => {}
        }
        out.extend_from_slice(format!("{}\r\n", m.start).as_bytes());
        headers
            .iter()
            .for_each(|(n, v)| out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes()));
        out.extend_from_slice(b"\r\n");
        let head_end = out.len();
        match (&m.chunks, send_body) {
            (_, false) => {}
            (None, true) => out.extend_from_slice(&m.body),
            (Some(sizes), true) => {
                let (mut rest, mut sizes) = (&m.body[..], sizes.iter().cycle().enumerate());
                while let (false, Some((i, size))) = (rest.is_empty(), sizes.next()) {
                    let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                    let ext = if i % 2 == 1 { ";ext=\"q\"" } else { "" };
                    out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                    rest = tail;
                }
                out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
            }
        }
        (headers, head_end)
    }

    fn cut(len: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
        let mut at = 0;
        sizes
            .iter()
            .cycle()
            .map_while(|size| {
                let piece = (at < len).then(|| (at, (at + size).min(len)));
                at = piece.map_or(at, |p| p.1);
                piece
            })
            .collect()
    }

    struct Streams {
        reqs: Vec<u8>,
        head_ends: Vec<usize>,
        resps: Vec<u8>,
        resp_starts: Vec<usize>,
    }

    /// Feeds both streams in pieces, never sending response bytes before their request's head.
    fn feed(
        c: &mut Conversation,
        s: &Streams,
        cuts: (&[usize], &[usize]),
        picks: &[bool],
    ) -> Result<(), HttpError> {
        let (rq, rs) = (cut(s.reqs.len(), cuts.0), cut(s.resps.len(), cuts.1));
        let (mut i, mut j, mut fed, mut now) = (0, 0, 0, 0u64);
        loop {
            now += 1;
            let ready = rs.get(j).is_some_and(|&(_, end)| {
                fed >= s.head_ends[s.resp_starts.partition_point(|&start| start < end) - 1]
            });
            if ready && (i == rq.len() || picks[now as usize % picks.len()]) {
                c.on_response_bytes(&s.resps[rs[j].0..rs[j].1], now)?;
                j += 1;
            } else if let Some(&(a, b)) = rq.get(i) {
                c.on_request_bytes(&s.reqs[a..b], now)?;
                (fed, i) = (b, i + 1);
            } else {
                return Ok(());
            }
        }
    }

    fn fields(headers: &[Header]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn interleaved_streams_rebuild_the_exchanges(
            pairs in prop::collection::vec((request_msg(), response_msg()), 1..6),
            req_cuts in prop::collection::vec(1usize..64, 1..20),
            resp_cuts in prop::collection::vec(1usize..64, 1..20),
            picks in prop::collection::vec(any::<bool>(), 1..40),
        ) {
            let mut s = Streams { reqs: Vec::new(), head_ends: Vec::new(), resps: Vec::new(), resp_starts: Vec::new() };
            let mut sent = Vec::new();
            for (rq, rs) in &pairs {
                let (req_headers, head_end) = write(&mut s.reqs, rq, true, false);
                s.head_ends.push(head_end);
                let body = !(rq.start.starts_with("HEAD ") || rs.start.contains(" 204 ") || rs.start.contains(" 304 "));
                s.resp_starts.push(s.resps.len());
                sent.push((req_headers, write(&mut s.resps, rs, body, rs.interim).0, body));
            }
            let mut c = conv();
            prop_assert_eq!(feed(&mut c, &s, (&req_cuts, &resp_cuts), &picks), Ok(()));
            prop_assert_eq!(c.pending(), 0);
            c.on_close(u64::MAX);
            let got = c.take_exchanges();
            prop_assert_eq!(got.len(), pairs.len());
            for (ex, ((rq, rs), (req_headers, resp_headers, body))) in got.iter().zip(pairs.iter().zip(&sent)) {
                let r = &ex.request;
                prop_assert_eq!(format!("{} {} HTTP/1.1", r.method, r.target), rq.start.clone());
                prop_assert_eq!(&fields(&r.headers), req_headers);
                prop_assert_eq!(&r.body[..], &rq.body[..]);
                prop_assert_eq!(r.chunked, rq.chunks.is_some());
                prop_assert!(r.first_byte_ns <= r.last_byte_ns);
                let p = ex.response.as_ref().expect("response");
                prop_assert_eq!(format!("HTTP/1.1 {} {}", p.status, p.reason), rs.start.clone());
                prop_assert_eq!(&fields(&p.headers), resp_headers);
                prop_assert_eq!(&p.body[..], if *body { &rs.body[..] } else { &[][..] });
                prop_assert_eq!(p.trailers.len(), usize::from(*body && rs.chunks.is_some()));
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
