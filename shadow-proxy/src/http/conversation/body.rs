//! Reading one message body: the framing state (length, until close,
//! chunked with extensions and trailers) over a stream's unconsumed bytes.

use bytes::{Bytes, BytesMut};
use httparse::Status;

use super::head::{head_error, owned_headers};
use super::{Direction, Header, HttpError, Limits};

/// How the body being read is delimited, and how far reading it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    UntilClose,
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
}

pub(super) enum Step {
    Again,
    NeedMore,
    Done,
}

/// Unconsumed bytes of one stream.
#[derive(Default)]
pub(super) struct Input {
    pub(super) buf: BytesMut,
    /// Prefix of `buf` already searched for a line end, so incomplete heads are re-parsed only
    /// when a new line arrived instead of on every byte (which would be quadratic).
    scanned: usize,
}

impl Input {
    /// Whether re-parsing a line-based element can make progress (or must fail on size).
    pub(super) fn line_ready(&mut self, limit: usize) -> bool {
        let fresh = self
            .buf
            .get(self.scanned..)
            .is_some_and(|new| new.contains(&b'\n'));
        self.scanned = self.buf.len();
        fresh || self.buf.len() > limit
    }

    /// Appends `data`; takes it as the buffer when nothing is left
    /// unconsumed (no copy if `data` is its allocation's only handle).
    pub(super) fn push(&mut self, data: Bytes) {
        if self.buf.is_empty() {
            self.buf = BytesMut::from(data);
            self.scanned = 0;
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    pub(super) fn take(&mut self, n: usize) -> BytesMut {
        self.scanned = 0;
        self.buf.split_to(n.min(self.buf.len()))
    }
}

/// Body of the message being read: framing state plus the de-chunked payload so far.
pub(super) struct Body {
    pub(super) framing: Framing,
    limits: Limits,
    dir: Direction,
    pub(super) chunked: bool,
    pub(super) data: BytesMut,
    pub(super) trailers: Vec<Header>,
    /// Payload bytes read so far, held or streamed.
    total: u64,
    /// Past [`Limits::stream_body_over`]: the payload goes to `pieces`
    /// as it is read, never into `data`.
    pub(super) streaming: bool,
    /// Payload read since the reader last took it (while streaming).
    pub(super) pieces: Vec<Bytes>,
    /// The Content-Length the head declared, if the body is framed by one.
    pub(super) declared: Option<u64>,
}

impl Body {
    pub(super) fn new(framing: Framing, limits: Limits, dir: Direction) -> Self {
        let mut limits = limits;
        if dir == Direction::Response {
            limits.stream_body_over = None;
        }
        // A length known to be over the bound streams from its first byte.
        let streaming = matches!(
            (framing, limits.stream_body_over),
            (Framing::Length(n), Some(over)) if n > over as u64
        );
        Self {
            framing,
            limits,
            dir,
            chunked: framing == Framing::ChunkSize,
            declared: match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            data: BytesMut::new(),
            trailers: Vec::new(),
            total: 0,
            streaming,
            pieces: Vec::new(),
        }
    }

    pub(super) fn step(&mut self, input: &mut Input) -> Result<Step, HttpError> {
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
    /// While streaming the bytes are not copied: they leave as pieces of
    /// the input buffer.
    fn copy(&mut self, input: &mut Input, left: u64) -> u64 {
        let n = usize::try_from(left).map_or(input.buf.len(), |l| l.min(input.buf.len()));
        if n == 0 {
            return left;
        }
        let piece = input.take(n);
        self.total += n as u64;
        if self.streaming {
            self.pieces.push(piece.freeze());
        } else {
            self.data.extend_from_slice(&piece);
            if self
                .limits
                .stream_body_over
                .is_some_and(|over| self.data.len() > over)
            {
                self.streaming = true;
                self.pieces.push(self.data.split().freeze());
            }
        }
        left - n as u64
    }

    fn check_room(&self, extra: u64) -> Result<(), HttpError> {
        let (direction, limit) = (self.dir, self.limits.max_body);
        if self.total.saturating_add(extra) > limit as u64 {
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
