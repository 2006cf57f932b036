//! What the parser produces and how it fails: headers, requests, responses,
//! their pairing, the limits that bound them and the errors that end a conversation.

use std::fmt;

use bytes::Bytes;

use crate::metrics::reason::Drop;

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
    /// The payload with any chunked framing removed; empty when `streamed`.
    pub body: Bytes,
    pub chunked: bool,
    /// Trailer fields of a chunked body; kept apart because RFC 9110 §6.5.1 forbids blind merging.
    pub trailers: Vec<Header>,
    pub first_byte_ns: u64,
    pub last_byte_ns: u64,
    /// The body was over [`Limits::stream_body_over`]: it left in pieces as
    /// it was read ([`BodyEvent`]s) and was never held whole.
    pub streamed: bool,
}

/// A request body over [`Limits::stream_body_over`], handed out as it is
/// read: `Begin` with the head, its payload in order, then `End` once the
/// body is complete. No `End` means it never completed (the conversation
/// failed or the connection ended first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyEvent {
    /// The head, and the body's length when Content-Length declared it
    /// (`None` when chunked).
    Begin {
        request: Request,
        length: Option<u64>,
    },
    Data(Bytes),
    End,
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
    /// A request body over this many bytes is streamed rather than held;
    /// `None` holds every body whole.
    pub stream_body_over: Option<usize>,
    /// Most requests allowed to wait for their responses at once.
    pub max_pipeline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 128,
            max_body: 128 * 1024 * 1024,
            stream_body_over: None,
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

/// Live traffic that is not HTTP/1.1 as the parser follows it.
impl crate::util::Sourced for HttpError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Live
    }
}

/// Counted under the agent's one drop enum.
impl From<&HttpError> for Drop {
    fn from(e: &HttpError) -> Self {
        match e {
            HttpError::MalformedRequest { .. } => Drop::MalformedRequest,
            HttpError::MalformedResponse { .. } => Drop::MalformedResponse,
            HttpError::HeadersTooLarge { .. } => Drop::HeadersTooLarge,
            HttpError::TooManyHeaders { .. } => Drop::TooManyHeaders,
            HttpError::BodyTooLarge { .. } => Drop::BodyTooLarge,
            HttpError::BadChunk { .. } => Drop::BadChunk,
            HttpError::BadContentLength { .. } => Drop::BadContentLength,
            HttpError::ConflictingContentLength { .. } => Drop::ConflictingContentLength,
            HttpError::UnsupportedTransferEncoding { .. } => Drop::UnsupportedTransferEncoding,
            HttpError::UnexpectedResponse { .. } => Drop::UnexpectedResponse,
            HttpError::PipelineTooDeep { .. } => Drop::PipelineTooDeep,
            HttpError::Upgrade { .. } => Drop::Upgrade,
            HttpError::AfterClose { .. } => Drop::AfterClose,
        }
    }
}
