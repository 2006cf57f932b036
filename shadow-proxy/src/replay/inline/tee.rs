//! A body that passes every frame on unchanged and, for a sampled request,
//! keeps a copy for the shadow. The copy is bounded: past its limit it is
//! given up and the frames still flow. Live never waits on it.
//!
//! The request body and the live response body of one exchange end at
//! their own times (a server may answer before it has read the request);
//! each reports to the exchange's [`Pending`], and the second to end hands
//! the whole exchange to the replayer.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::metrics::reason::Drop;

/// Which body of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySide {
    Request,
    Response,
}

/// Receives each body's end: the copied bytes, or why there is no copy.
pub trait Pending: Send {
    fn ended(&mut self, side: BodySide, body: Result<Bytes, Drop>);
}

/// The copy being made of one body.
pub struct BodyCopy {
    buf: BytesMut,
    limit: usize,
    over: bool,
    side: BodySide,
    to: Arc<Mutex<dyn Pending>>,
}

impl BodyCopy {
    pub fn new(side: BodySide, limit: usize, to: Arc<Mutex<dyn Pending>>) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
            over: false,
            side,
            to,
        }
    }

    fn push(&mut self, data: &Bytes) {
        if self.over {
            return;
        }
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            self.buf = BytesMut::new();
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn end(self, whole: bool) {
        let body = match (whole, self.over) {
            (_, true) => Err(Drop::BodyTooLarge),
            (false, false) => Err(Drop::NoLiveResponse),
            (true, false) => Ok(self.buf.freeze()),
        };
        self.to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ended(self.side, body);
    }
}

/// `inner`, copied when `copy` is set.
pub struct Tee {
    inner: Incoming,
    copy: Option<BodyCopy>,
}

impl Tee {
    pub fn new(inner: Incoming, copy: Option<BodyCopy>) -> Self {
        Self { inner, copy }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.copy.is_some() {
            let ended = match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(data), Some(c)) = (frame.data_ref(), this.copy.as_mut()) {
                        c.push(data);
                    }
                    // The reader may stop at the last frame without asking
                    // for the end.
                    this.inner.is_end_stream().then_some(true)
                }
                Poll::Ready(Some(Err(_))) => Some(false),
                Poll::Ready(None) => Some(true),
                Poll::Pending => None,
            };
            if let Some(whole) = ended
                && let Some(c) = this.copy.take()
            {
                c.end(whole);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::ops::Drop for Tee {
    fn drop(&mut self) {
        // An empty body is never polled; a cut one ends here unfinished.
        if let Some(c) = self.copy.take() {
            c.end(self.inner.is_end_stream());
        }
    }
}
