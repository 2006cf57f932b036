//! The replay stack: the tower layers every shadow request passes, outermost
//! first, and [`Shadow`] at the bottom, which sends one request to one
//! target.
//!
//! ```text
//! LoadShed -> ConcurrencyLimit -> (LoadShed) RateLimit -> Balance (p2c)
//!     -> per target: Timeout -> Shadow (hyper, pooled)
//! ```
//!
//! [`submit`] offers a request without ever waiting: a refusal comes back at
//! once as a [`Failure`] and is counted under its [`Drop`] reason; an
//! accepted request comes back as a future for the caller to spawn.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::Uri;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;
use tower::{
    BoxError, Service, ServiceBuilder,
    balance::p2c::Balance,
    discover::ServiceList,
    limit::{GlobalConcurrencyLimitLayer, RateLimitLayer},
    load::{CompleteOnResponse, PendingRequests},
    load_shed::error::Overloaded,
    timeout::error::Elapsed,
    util::BoxService,
};

use super::{MAX_SHADOW_BODY, config::ServiceConfig, rewrite};
use crate::{
    capture::pipeline::{
        CapturedExchange,
        stream::{StreamError, StreamedBody, stream_error},
    },
    metrics::reason::Drop,
    util::{ErrorSource, Sourced},
};

/// A shadow request's body: held whole, or streamed from the capture.
pub type ShadowBody = Either<Full<Bytes>, StreamedBody>;

/// The pooled client every request to a service's shadows goes through.
pub type ShadowClient = Client<HttpConnector, ShadowBody>;

/// A client with short connects and a bounded idle pool.
pub fn client() -> ShadowClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

/// One captured exchange, under the rules in force when it was offered.
pub struct ShadowRequest {
    pub item: Arc<CapturedExchange>,
    pub cfg: Arc<ServiceConfig>,
}

/// What a shadow target answered.
pub struct ShadowAnswer {
    pub target: Uri,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub latency_ms: f64,
}

/// Why a request got no answer from the shadow.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("max_in_flight shadow requests are already in flight")]
    InFlightFull,
    #[error("over the service's rps_limit")]
    RateLimited,
    #[error("{target}: {source}")]
    Rewrite {
        target: String,
        #[source]
        source: rewrite::BuildError,
    },
    #[error("{target}: no answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("{target}: request failed: {source}")]
    Send {
        target: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{target}: {error}")]
    Stream { target: String, error: StreamError },
    #[error("{target}: reading the answer failed: {source}")]
    Body {
        target: String,
        #[source]
        source: BoxError,
    },
    #[error("replay stack: {0}")]
    Stack(#[source] BoxError),
}

impl Failure {
    /// What the stack's error means. Every error a layer or [`Shadow`]
    /// raises comes through here.
    pub fn classify(e: BoxError) -> Self {
        match e.downcast::<Failure>() {
            Ok(f) => *f,
            Err(e) if e.is::<Overloaded>() => Failure::InFlightFull,
            Err(e) => Failure::Stack(e),
        }
    }

    /// Whether `e` is a streamed body the capture lost mid-way.
    pub fn lost_body(e: &BoxError) -> bool {
        e.downcast_ref::<Failure>().is_some_and(|f| {
            matches!(
                f,
                Failure::Stream {
                    error: StreamError::Lost,
                    ..
                }
            )
        })
    }

    /// The reason the request is counted under.
    pub fn reason(&self) -> Drop {
        match self {
            Self::InFlightFull => Drop::InFlightFull,
            Self::RateLimited => Drop::RateLimited,
            Self::Rewrite { .. } => Drop::RewriteFailed,
            Self::Stack(_) => Drop::StackFailed,
            Self::Timeout { .. } => Drop::ShadowTimeout,
            Self::Send { .. } => Drop::ShadowError,
            Self::Stream {
                error: StreamError::Overrun,
                ..
            } => Drop::StreamOverrun,
            Self::Stream {
                error: StreamError::Lost,
                ..
            } => Drop::FlowDropped,
            Self::Body { .. } => Drop::ShadowBodyError,
        }
    }

    /// The target that was tried, when one was.
    pub fn target(&self) -> Option<&str> {
        match self {
            Self::Rewrite { target, .. }
            | Self::Timeout { target, .. }
            | Self::Send { target, .. }
            | Self::Stream { target, .. }
            | Self::Body { target, .. } => Some(target),
            Self::InFlightFull | Self::RateLimited | Self::Stack(_) => None,
        }
    }
}

/// Refusals are the agent's own bounds; the rest came from a shadow.
impl Sourced for Failure {
    fn error_source(&self) -> ErrorSource {
        match self {
            Self::InFlightFull | Self::RateLimited | Self::Rewrite { .. } | Self::Stack(_) => {
                ErrorSource::Internal
            }
            Self::Stream { .. } => ErrorSource::Internal,
            Self::Timeout { .. } | Self::Send { .. } | Self::Body { .. } => ErrorSource::Shadow,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The answer to an accepted request.
pub type Answer = BoxFuture<Result<ShadowAnswer, BoxError>>;

/// A service's whole stack.
pub type Stack = BoxService<ShadowRequest, ShadowAnswer, BoxError>;

/// Sends one request to one target and reads its answer (up to
/// [`MAX_SHADOW_BODY`]).
#[derive(Clone)]
pub struct Shadow {
    client: ShadowClient,
    target: Uri,
}

impl Service<ShadowRequest> for Shadow {
    type Response = ShadowAnswer;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // hyper's pool opens connections as needed; the bound is above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ShadowRequest) -> Answer {
        let (client, target) = (self.client.clone(), self.target.clone());
        Box::pin(async move {
            let name = || target.to_string();
            let built = rewrite::build(
                &req.item.exchange.request,
                &req.cfg,
                &target,
                req.item.flow.client.ip(),
            )
            .map_err(|source| Failure::Rewrite {
                target: name(),
                source,
            })?;
            // A streamed body goes as the capture delivers it.
            let streamed = req.item.stream.as_ref().and_then(|s| s.take_body());
            let built = match streamed {
                Some(body) => built.map(|_| Either::Right(body)),
                None => built.map(|b| Either::Left(Full::new(b))),
            };
            let started = Instant::now();
            let resp =
                client
                    .request(built)
                    .await
                    .map_err(|source| match stream_error(&source) {
                        Some(error) => Failure::Stream {
                            target: name(),
                            error,
                        },
                        None => Failure::Send {
                            target: name(),
                            source,
                        },
                    })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_SHADOW_BODY)
                .collect()
                .await
                .map_err(|source| Failure::Body {
                    target: name(),
                    source,
                })?
                .to_bytes();
            Ok(ShadowAnswer {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (k.to_string(), v)
                    })
                    .collect(),
                body,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
                target,
            })
        })
    }
}

/// One target's branch under the balance.
fn target(
    client: ShadowClient,
    target: Uri,
    timeout: Duration,
) -> impl Service<ShadowRequest, Response = ShadowAnswer, Error = BoxError, Future: Send> + Send {
    let name = target.to_string();
    ServiceBuilder::new()
        .map_err(move |e: BoxError| -> BoxError {
            if e.is::<Elapsed>() {
                Box::new(Failure::Timeout {
                    target: name.clone(),
                    timeout,
                })
            } else {
                e
            }
        })
        // Under the balance, one per target rather than above it, so that a
        // timeout names the target that was slow (the record and the drop
        // say which), and p2c counts its load until the timeout fires.
        .timeout(timeout)
        .service(Shadow { client, target })
}

/// A refusal by the inner load shed is the rate cap's.
fn rate_limited(e: BoxError) -> BoxError {
    if e.is::<Overloaded>() {
        Box::new(Failure::RateLimited)
    } else {
        e
    }
}

/// `rps` as tower's fixed windows: `n` requests per `per`.
fn rate_window(rps: f64) -> (u64, Duration) {
    if rps >= 1.0 {
        (rps.round() as u64, Duration::from_secs(1))
    } else {
        (1, Duration::from_secs_f64(1.0 / rps))
    }
}

/// Builds a service's stack over its configured targets and those
/// `discovered` at run time (local replicas). `in_flight` is the service's
/// own semaphore, kept across rule and target changes so that replacing
/// the stack never lets more than `max_in_flight` through.
pub fn build(
    cfg: &ServiceConfig,
    discovered: &[Uri],
    client: &ShadowClient,
    in_flight: Arc<Semaphore>,
) -> Stack {
    let mut uris: Vec<&Uri> = cfg.targets.iter().collect();
    for d in discovered {
        if !uris.contains(&d) {
            uris.push(d);
        }
    }
    let targets: Vec<_> = uris
        .into_iter()
        .map(|t| {
            let branch = target(client.clone(), t.clone(), cfg.timeout);
            PendingRequests::new(branch, CompleteOnResponse::default())
        })
        .collect();
    let stack = ServiceBuilder::new()
        // Outermost, so that offering a request never waits: when no slot
        // below is free the request is refused at once (in_flight_full),
        // never queued in front of the capture loop.
        .load_shed()
        // Bounds the shadow requests in flight (their memory, the shadow
        // fleet's load); a slot is held until the answer is read or fails.
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight))
        // The rate cap sheds on its own, below the slot, so that its
        // refusals are told apart (rate_limited) and free the slot at once.
        .map_err(rate_limited)
        .load_shed()
        // The service's rps_limit: only requests that got a slot use up the
        // rate, so one that is refused for room costs no rate.
        .option_layer(cfg.rps_limit.map(|r| {
            let (n, per) = rate_window(r);
            RateLimitLayer::new(n, per)
        }))
        // Power of two choices over the targets by requests in flight: a
        // slow or stuck target is picked less, unlike round robin.
        .service(Balance::new(ServiceList::new(targets)));
    BoxService::new(stack)
}

/// Offers `req` to the stack without waiting. A refusal (and any answer
/// ready at once) is `Err`; otherwise the answer's future, to be spawned.
pub fn submit(stack: &mut Stack, req: ShadowRequest) -> Result<Answer, Failure> {
    let mut cx = Context::from_waker(Waker::noop());
    // LoadShed at the top is always ready; it only fails on a broken stack.
    match stack.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(Failure::classify(e)),
        Poll::Pending => return Err(Failure::InFlightFull),
    }
    let mut answer = stack.call(req);
    // Refusals resolve on the first poll; a real request stays pending and
    // is polled again, with a real waker, by the task it is spawned on.
    match answer.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => Err(Failure::classify(e)),
        Poll::Ready(Ok(a)) => Ok(Box::pin(std::future::ready(Ok(a)))),
        Poll::Pending => Ok(answer),
    }
}
