//! The inline proxy (`[service.inline]`): for hosts without eBPF,
//! containers without CAP_BPF and shadowing across hosts, the agent sits
//! in front of the live service as a hyper reverse proxy instead of
//! watching it from the kernel.
//!
//! Every live request goes to the upstream as it arrives and its response
//! streams back frame by frame. A sampled request (`percent` of requests,
//! systematic with a random phase, [`super::sample`]) is also copied as it
//! passes ([`tee`]); once both its bodies have ended the copy enters the
//! same bounded queue the kernel capture feeds, and from there the same
//! replay, diff and noise learning. The live response never waits on the
//! shadow, on the queue or on the copy: a full queue drops the copy, and
//! counts it.
//!
//! [`upstream`] is the cutover switch for shadowing across hosts: a
//! failover steers a share of new requests to the shadow, and in-flight
//! ones drain where they went.

pub mod tee;
pub mod upstream;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{
    HeaderMap, Request, Response, StatusCode, Uri, Version,
    body::Incoming,
    header::{self, HeaderName},
    service::service_fn,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::sync::{mpsc, watch};

use super::{ServiceReplay, config::InlineSettings, sample::RequestSampler};
use crate::{
    capture::{pipeline::CapturedExchange, reassembly::FlowKey},
    http::conversation::{self as conv, Header},
    metrics::reason::Drop,
};
use shadow_api::mirror::InlineStatus;
use shadow_common::capture::SAMPLE_SCALE;
use tee::{BodyCopy, BodySide, Pending, Tee};
use upstream::{Side, Upstream};

/// What the live client gets back: the upstream's body, or the proxy's own
/// answer when the upstream gave none.
pub type ProxyBody = Either<Tee, Full<Bytes>>;

/// The inline side of one service: its settings, upstream choice and
/// counters (kept on the service, for its status).
#[derive(Debug)]
pub struct Inline {
    pub settings: InlineSettings,
    pub upstream: Arc<Upstream>,
    requests: AtomicU64,
    teed: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Inline {
    pub fn new(settings: InlineSettings) -> Self {
        Self {
            upstream: Arc::new(Upstream::new(settings.upstream)),
            settings,
            requests: AtomicU64::new(0),
            teed: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
        }
    }

    pub fn status(&self) -> InlineStatus {
        let up = &self.upstream;
        InlineStatus {
            listen: self.settings.listen.to_string(),
            upstream: up.primary.to_string(),
            alternate: up.alternate().map(|a| a.to_string()),
            alternate_percent: f64::from(up.share()) / 100.0,
            requests: self.requests.load(Ordering::Relaxed),
            teed: self.teed.load(Ordering::Relaxed),
            upstream_errors: self.upstream_errors.load(Ordering::Relaxed),
            in_flight: up.in_flight(Side::Primary),
            in_flight_alternate: up.in_flight(Side::Alternate),
        }
    }
}

/// Ids of inline exchanges: apart from the capture pipeline's, which
/// count up from 1.
const ID_BASE: u64 = 1 << 62;

/// One service's proxy.
pub struct Proxy {
    svc: Arc<ServiceReplay>,
    inline: Arc<Inline>,
    port: u16,
    client: Client<HttpConnector, Tee>,
    tx: mpsc::Sender<CapturedExchange>,
    sampler: Mutex<RequestSampler>,
    ids: AtomicU64,
    primary_authority: hyper::http::uri::Authority,
}

impl Proxy {
    /// `None` when the service is not proxied inline. `tx` is the queue the
    /// replayer reads.
    pub fn new(svc: Arc<ServiceReplay>, tx: mpsc::Sender<CapturedExchange>) -> Option<Self> {
        let inline = svc.inline.clone()?;
        let port = svc.cfg.read().unwrap_or_else(|p| p.into_inner()).port;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let primary_authority = inline
            .upstream
            .primary
            .to_string()
            .parse()
            .expect("a socket address is an authority");
        Some(Self {
            sampler: Mutex::new(RequestSampler::new(
                crate::util::unix_ms() ^ u64::from(port) << 17,
            )),
            svc,
            inline,
            port,
            client,
            tx,
            ids: AtomicU64::new(ID_BASE),
            primary_authority,
        })
    }

    /// Accepts live connections until `shutdown` fires. Connections open
    /// then are served to their end.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, client) = match accepted {
                Ok(s) => {
                    backoff = Duration::from_millis(5);
                    s
                }
                Err(error) => {
                    // Out of descriptors, usually: live clients wait in
                    // the backlog meanwhile.
                    tracing::warn!(%error, ?backoff, "Inline proxy: accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| this.clone().handle(client, req));
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(%error, %client, "Inline proxy: connection ended");
                }
            });
        }
        tracing::debug!(listen = %self.inline.settings.listen, "Inline proxy stopped accepting");
    }

    fn sampled(&self) -> bool {
        let rate = self.svc.captured.load(Ordering::Relaxed);
        rate > 0
            && self
                .sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keep(rate, SAMPLE_SCALE)
    }

    async fn handle(
        self: Arc<Self>,
        client: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        self.inline.requests.fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = req.into_parts();
        let pending = self.sampled().then(|| {
            self.svc.stats.request_parsed();
            Arc::new(Mutex::new(Sampled::new(self.clone(), client, &parts)))
        });
        let (to, side) = self.inline.upstream.pick();
        let authority = match side {
            Side::Primary => self.primary_authority.clone(),
            Side::Alternate => match to.to_string().parse() {
                Ok(a) => a,
                Err(_) => self.primary_authority.clone(),
            },
        };
        let mut uri = hyper::http::uri::Parts::default();
        uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .or_else(|| Some(hyper::http::uri::PathAndQuery::from_static("/")));
        parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        strip_hop_by_hop(&mut parts.headers);
        let copy = |side| {
            pending.clone().map(|p| {
                let to: Arc<Mutex<dyn Pending>> = p;
                BodyCopy::new(side, self.inline.settings.tee_body_bytes, to)
            })
        };
        let body = Tee::new(body, copy(BodySide::Request));
        let answer = {
            let _in_flight = self.inline.upstream.enter(side);
            self.client.request(Request::from_parts(parts, body)).await
        };
        match answer {
            Ok(resp) => {
                let (mut rp, rb) = resp.into_parts();
                if let Some(p) = &pending {
                    p.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .response_head(&rp);
                }
                strip_hop_by_hop(&mut rp.headers);
                let body = Tee::new(rb, copy(BodySide::Response));
                Ok(Response::from_parts(rp, Either::Left(body)))
            }
            Err(error) => {
                self.inline.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, upstream = %to, "Inline proxy: the upstream gave no answer");
                if let Some(p) = &pending {
                    p.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .ended(BodySide::Response, Err(Drop::NoLiveResponse));
                }
                let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
                    b"shadow inline proxy: the upstream did not answer\n",
                ))));
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                Ok(r)
            }
        }
    }
}

/// A sampled exchange while its bodies pass.
struct Sampled {
    proxy: Arc<Proxy>,
    client: SocketAddr,
    request: conv::Request,
    response: Option<conv::Response>,
    ended: u8,
    failed: Option<Drop>,
}

impl Sampled {
    fn new(proxy: Arc<Proxy>, client: SocketAddr, parts: &hyper::http::request::Parts) -> Self {
        let now = crate::util::monotonic_ns();
        let request = conv::Request {
            method: parts.method.as_str().to_owned(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            version: u8::from(parts.version != Version::HTTP_10),
            chunked: is_chunked(&parts.headers),
            headers: headers(&parts.headers),
            body: Bytes::new(),
            trailers: Vec::new(),
            first_byte_ns: now,
            last_byte_ns: now,
            streamed: false,
        };
        Self {
            proxy,
            client,
            request,
            response: None,
            ended: 0,
            failed: None,
        }
    }

    fn response_head(&mut self, head: &hyper::http::response::Parts) {
        let now = crate::util::monotonic_ns();
        self.response = Some(conv::Response {
            status: head.status.as_u16(),
            reason: head.status.canonical_reason().unwrap_or("").to_owned(),
            version: u8::from(head.version != Version::HTTP_10),
            chunked: is_chunked(&head.headers),
            headers: headers(&head.headers),
            body: Bytes::new(),
            trailers: Vec::new(),
            first_byte_ns: now,
            last_byte_ns: now,
        });
    }

    /// Both bodies ended: the exchange goes to the replayer, or is counted.
    fn finish(&mut self) {
        let p = &self.proxy;
        let response = match (self.failed, self.response.take()) {
            (None, Some(r)) => r,
            (failed, _) => {
                p.svc
                    .stats
                    .not_replayed(failed.unwrap_or(Drop::NoLiveResponse));
                return;
            }
        };
        let item = CapturedExchange {
            stream: None,
            id: p.ids.fetch_add(1, Ordering::Relaxed),
            service_port: p.port,
            flow: FlowKey {
                client: self.client,
                server: p.inline.settings.listen,
            },
            exchange: conv::Exchange {
                request: std::mem::take(&mut self.request),
                response: Some(response),
            },
        };
        match p.tx.try_send(item) {
            Ok(()) => {
                p.inline.teed.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => p.svc.stats.not_replayed(Drop::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                p.svc.stats.not_replayed(Drop::ShuttingDown)
            }
        }
    }
}

/// A client that went away mid-request cancels the exchange before both
/// bodies end: counted, not lost.
impl std::ops::Drop for Sampled {
    fn drop(&mut self) {
        if self.ended < 2 {
            self.proxy.svc.stats.not_replayed(Drop::NoLiveResponse);
        }
    }
}

impl Pending for Sampled {
    fn ended(&mut self, side: BodySide, body: Result<Bytes, Drop>) {
        let now = crate::util::monotonic_ns();
        match (side, body) {
            (_, Err(reason)) => {
                self.failed.get_or_insert(reason);
            }
            (BodySide::Request, Ok(b)) => {
                // An empty body ends when the client drops it, which says
                // nothing of when the request was whole.
                if !b.is_empty() {
                    self.request.last_byte_ns = now;
                }
                self.request.body = b;
            }
            (BodySide::Response, Ok(b)) => {
                if let Some(r) = self.response.as_mut() {
                    r.body = b;
                    r.last_byte_ns = now;
                }
            }
        }
        self.ended += 1;
        if self.ended == 2 {
            self.finish();
        }
    }
}

fn headers(h: &HeaderMap) -> Vec<Header> {
    h.iter()
        .map(|(k, v)| Header {
            name: k.as_str().to_owned(),
            value: Bytes::copy_from_slice(v.as_bytes()),
        })
        .collect()
}

fn is_chunked(h: &HeaderMap) -> bool {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
}

/// Hop-by-hop fields are the connection's, not the message's (RFC 9110
/// §7.6.1): those named in `Connection` and the standard ones. hyper
/// frames the body again on each side.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

#[cfg(test)]
mod tests;
