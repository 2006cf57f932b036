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
//!
//! A request body over [`Limits::stream_body_over`] is not held: its bytes leave as
//! [`BodyEvent`]s through [`Conversation::take_streamed`] as they are read, so a 64 MiB upload
//! can go on to the shadow while it is still arriving.

mod body;
mod head;
mod message;
mod reader;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::Bytes;

pub use message::{
    BodyEvent, Direction, Exchange, Header, HttpError, Limits, Request, Response, header,
};

use body::Framing;
use head::{parse_request_head, parse_response_head, request_framing, response_framing};
use reader::Reader;

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
        self.on_request(Bytes::copy_from_slice(data), now_ns)
    }

    /// Bytes the server sent.
    pub fn on_response_bytes(&mut self, data: &[u8], now_ns: u64) -> Result<(), HttpError> {
        self.on_response(Bytes::copy_from_slice(data), now_ns)
    }

    /// [`Self::on_request_bytes`] without a copy when nothing is left
    /// unparsed and `data` is its buffer's only handle.
    pub fn on_request(&mut self, data: Bytes, now_ns: u64) -> Result<(), HttpError> {
        self.guard(Direction::Request)?;
        self.requests.input.push(data);
        let result = self.pump_requests(now_ns);
        self.poison(result)
    }

    /// [`Self::on_response_bytes`], taking `data`.
    pub fn on_response(&mut self, data: Bytes, now_ns: u64) -> Result<(), HttpError> {
        self.guard(Direction::Response)?;
        self.responses.input.push(data);
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

    /// Streamed request bodies read so far, in order (takes them out). A
    /// streamed request's exchange still completes, with `streamed` set and
    /// an empty body.
    pub fn take_streamed(&mut self) -> Vec<BodyEvent> {
        std::mem::take(&mut self.requests.streamed)
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
