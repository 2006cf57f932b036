//! A request body streamed from the capture thread to a shadow while the
//! live upload is still arriving, so a large body is never held whole.
//!
//! The capture thread holds the [`BodyFeed`] and pushes the body's pieces
//! as reassembly delivers them; the replayer sends the [`StreamedBody`] as
//! the shadow request's body. The queue between them is bounded: the
//! capture thread never waits, so a shadow that reads slower than live
//! sends loses the request (an overrun) rather than slowing anything.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use crate::http::conversation::Exchange;

/// Pieces (each at most one captured packet's payload, 64 KiB on
/// loopback) queued towards the shadow: at most ~16 MiB per stream.
pub const QUEUED_PIECES: usize = 256;

/// Why a streamed body did not reach its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error(
        "the shadow read the streamed body slower than live sent it ({QUEUED_PIECES} pieces queued)"
    )]
    Overrun,
    #[error("the capture lost the live request before its body ended")]
    Lost,
}

#[derive(Default)]
struct State {
    ended: AtomicBool,
    overrun: AtomicBool,
}

/// The capture thread's end.
pub struct BodyFeed {
    tx: mpsc::Sender<Bytes>,
    state: Arc<State>,
}

/// What a push found.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full: the stream is cut (the shadow sees an error).
    Overrun,
    /// Nobody reads it any more (not replayed, or the shadow failed).
    Closed,
}

impl BodyFeed {
    pub fn push(&self, piece: Bytes) -> Push {
        match self.tx.try_send(piece) {
            Ok(()) => Push::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.state.overrun.store(true, Ordering::Release);
                Push::Overrun
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Push::Closed,
        }
    }

    /// Three quarters of the queue are taken: the shadow request is behind.
    pub fn crowded(&self) -> bool {
        self.tx.capacity() < QUEUED_PIECES / 4
    }

    /// The body is complete: once the queue drains, the shadow's body ends.
    /// A feed dropped without this cuts the body with an error.
    pub fn end(self) {
        self.state.ended.store(true, Ordering::Release);
    }
}

/// The shadow request's body.
pub struct StreamedBody {
    rx: mpsc::Receiver<Bytes>,
    state: Arc<State>,
    /// Bytes still owed, when the request said its length.
    left: Option<u64>,
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(piece)) => {
                if let Some(left) = self.left.as_mut() {
                    *left = left.saturating_sub(piece.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(None) if self.state.ended.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) if self.state.overrun.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err(StreamError::Overrun)))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(StreamError::Lost))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.left
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl StreamedBody {
    /// Reads the whole body (tests).
    pub async fn collect_all(self) -> Result<Bytes, StreamError> {
        Ok(self.collect().await?.to_bytes())
    }
}

/// What travels with a streamed request to the replayer: its body, taken
/// once by the request sent to the shadow, and the live exchange, sent
/// when the live response completes (never, if the capture lost it).
pub struct BodyStream {
    body: Mutex<Option<StreamedBody>>,
    live: Mutex<Option<oneshot::Receiver<Exchange>>>,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyStream")
    }
}

impl BodyStream {
    pub fn take_body(&self) -> Option<StreamedBody> {
        self.body.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn take_live(&self) -> Option<oneshot::Receiver<Exchange>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A new stream of a body of `length` bytes, if the request said.
pub fn channel(length: Option<u64>) -> (BodyFeed, oneshot::Sender<Exchange>, BodyStream) {
    let (tx, rx) = mpsc::channel(QUEUED_PIECES);
    let (live_tx, live_rx) = oneshot::channel();
    let state = Arc::new(State::default());
    let feed = BodyFeed {
        tx,
        state: state.clone(),
    };
    let body = StreamedBody {
        rx,
        state,
        left: length,
    };
    let stream = BodyStream {
        body: Mutex::new(Some(body)),
        live: Mutex::new(Some(live_rx)),
    };
    (feed, live_tx, stream)
}

/// The [`StreamError`] somewhere in `e`'s chain of sources.
pub fn stream_error(e: &(dyn std::error::Error + 'static)) -> Option<StreamError> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<StreamError>() {
            return Some(*s);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_ends_only_when_the_feed_says_so() {
        let (feed, _live, stream) = channel(Some(6));
        let body = stream.take_body().unwrap();
        assert!(stream.take_body().is_none(), "taken once");
        assert_eq!(body.size_hint().exact(), Some(6));
        assert_eq!(feed.push(Bytes::from_static(b"abc")), Push::Queued);
        assert_eq!(feed.push(Bytes::from_static(b"def")), Push::Queued);
        feed.end();
        assert_eq!(body.collect_all().await.unwrap(), "abcdef");

        // Dropped without its end: the capture lost the flow.
        let (feed, _live, stream) = channel(None);
        feed.push(Bytes::from_static(b"abc"));
        drop(feed);
        let e = stream.take_body().unwrap().collect_all().await;
        assert_eq!(e, Err(StreamError::Lost));

        // A full queue cuts the stream instead of waiting.
        let (feed, _live, stream) = channel(None);
        for _ in 0..QUEUED_PIECES {
            assert_eq!(feed.push(Bytes::from_static(b"x")), Push::Queued);
        }
        assert!(feed.crowded());
        assert_eq!(feed.push(Bytes::from_static(b"x")), Push::Overrun);
        drop(feed);
        let e = stream.take_body().unwrap().collect_all().await;
        assert_eq!(e, Err(StreamError::Overrun));

        // A reader gone: the capture stops feeding.
        let (feed, _live, stream) = channel(None);
        drop(stream);
        assert_eq!(feed.push(Bytes::from_static(b"x")), Push::Closed);
    }

    #[test]
    fn the_error_is_found_under_the_client_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] StreamError);
        assert_eq!(
            stream_error(&Outer(StreamError::Overrun)),
            Some(StreamError::Overrun)
        );
        assert_eq!(stream_error(&std::io::Error::other("x")), None);
    }
}
