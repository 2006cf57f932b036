//! One direction of a connection: its unconsumed bytes, the message being
//! read and when its first byte arrived.

use super::body::{Body, Framing, Input, Step};
use super::head::HeadParser;
use super::{BodyEvent, Direction, HttpError, Limits, Request, Response};

/// Lets the stream reader fill in body and timing without knowing the message type.
pub(super) trait Message {
    fn complete(&mut self, body: Body, first_ns: u64, last_ns: u64);
    /// What announces a streamed body of this message (only requests
    /// stream), `length` bytes long when the head declared it.
    fn begin_stream(&self, _length: Option<u64>) -> Option<BodyEvent> {
        None
    }
}

impl Message for Request {
    fn complete(&mut self, body: Body, first_ns: u64, last_ns: u64) {
        self.streamed = body.streaming;
        (self.body, self.chunked, self.trailers) =
            (body.data.freeze(), body.chunked, body.trailers);
        (self.first_byte_ns, self.last_byte_ns) = (first_ns, last_ns);
    }

    fn begin_stream(&self, length: Option<u64>) -> Option<BodyEvent> {
        Some(BodyEvent::Begin {
            request: self.clone(),
            length,
        })
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
pub(super) struct InFlight<M> {
    head: M,
    pub(super) body: Body,
    first_ns: u64,
    /// Its streamed body was announced with [`BodyEvent::Begin`].
    announced: bool,
}

/// Parsing state of one direction of the connection.
pub(super) struct Reader<M> {
    direction: Direction,
    pub(super) input: Input,
    /// Arrival time of the first byte of the message not yet started.
    pub(super) first_ns: Option<u64>,
    pub(super) current: Option<InFlight<M>>,
    /// Streamed bodies, as they were read, for the caller to take.
    pub(super) streamed: Vec<BodyEvent>,
}

impl<M: Message> Reader<M> {
    pub(super) fn new(direction: Direction) -> Self {
        Self {
            direction,
            input: Input::default(),
            first_ns: None,
            current: None,
            streamed: Vec::new(),
        }
    }

    pub(super) fn mark_start(&mut self, now: u64) {
        if self.first_ns.is_none() && !self.input.buf.is_empty() {
            self.first_ns = Some(now);
        }
    }

    pub(super) fn parse_head(
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

    pub(super) fn begin(&mut self, head: M, framing: Framing, limits: Limits, now: u64) {
        let first_ns = self.first_ns.take().unwrap_or(now);
        self.current = Some(InFlight {
            head,
            body: Body::new(framing, limits, self.direction),
            first_ns,
            announced: false,
        });
    }

    /// Reads body bytes; returns the message once it is complete.
    pub(super) fn advance(&mut self, now: u64) -> Result<Option<M>, HttpError> {
        let Some(flight) = self.current.as_mut() else {
            return Ok(None);
        };
        loop {
            let step = flight.body.step(&mut self.input)?;
            if flight.body.streaming {
                if !std::mem::replace(&mut flight.announced, true) {
                    let mut begin = flight.head.begin_stream(flight.body.declared);
                    if let Some(BodyEvent::Begin { request, .. }) = begin.as_mut() {
                        request.first_byte_ns = flight.first_ns;
                    }
                    self.streamed.extend(begin);
                }
                let pieces = flight.body.pieces.drain(..).map(BodyEvent::Data);
                self.streamed.extend(pieces);
            }
            match step {
                Step::Again => {}
                Step::NeedMore => return Ok(None),
                Step::Done => {
                    if flight.body.streaming {
                        self.streamed.push(BodyEvent::End);
                    }
                    return Ok(self.finish(now));
                }
            }
        }
    }

    pub(super) fn finish(&mut self, last_ns: u64) -> Option<M> {
        let InFlight {
            mut head,
            body,
            first_ns,
            ..
        } = self.current.take()?;
        head.complete(body, first_ns, last_ns);
        Some(head)
    }
}
