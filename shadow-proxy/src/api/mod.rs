//! The agent's HTTP servers: the admin port ([`admin`], read-only, TCP) and
//! the control API ([`control`], unix socket 0600), with the forecast
//! routes ([`forecast`]) on both.
//!
//! Both run on [`serve`]: one accept loop with backoff on accept errors and
//! a graceful stop on the shutdown watch, one JSON responder, one query
//! parser and one bounded body read.

pub mod admin;
pub mod control;
pub mod failover;
pub mod forecast;
pub mod predict;
pub mod provision;
pub mod regress;
pub mod state;

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};

/// A server's answer.
pub type Answer = Response<Full<Bytes>>;

/// A listener the accept loop can serve: TCP (admin) or unix (control).
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `listener` with `route` until `shutdown` turns true (or its
/// sender is dropped). A failed accept (out of file descriptors, say) is
/// logged and retried after a backoff that grows to 1 s, never spun on.
pub async fn serve<L, S, F, Fut>(
    name: &'static str,
    listener: L,
    state: Arc<S>,
    route: F,
    mut shutdown: watch::Receiver<bool>,
) where
    L: Listener,
    S: Send + Sync + 'static,
    F: Fn(Request<Incoming>, Arc<S>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let mut backoff = Duration::from_millis(10);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match stream {
            Ok(s) => {
                backoff = Duration::from_millis(10);
                s
            }
            Err(error) => {
                tracing::warn!(%error, server = name, ?backoff, "Accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, state).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%error, server = name, "Connection ended");
            }
        });
    }
    tracing::debug!(server = name, "Stopped accepting");
}

/// `value` as JSON with `status`.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: String) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

pub fn text(status: StatusCode, body: &str) -> Answer {
    respond(status, "text/plain", body.to_owned())
}

pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// Reads a JSON body of at most `limit` bytes; the error is the 400 answer
/// (`what` names the expected shape).
pub async fn read_json<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
    what: &str,
) -> Result<T, Answer> {
    let body = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

/// The decoded value of `key` in a query string.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` and `+` in a URL component.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("host.cpu%5B1%5D+x"), "host.cpu[1] x");
    }

    #[test]
    fn query_params_are_decoded_and_matched_whole() {
        let q = "xmetric=a&metric=host.cpu%5B1%5D&limit=5";
        assert_eq!(query_param(q, "metric").as_deref(), Some("host.cpu[1]"));
        assert_eq!(query_param(q, "limit").as_deref(), Some("5"));
        assert_eq!(query_param(q, "horizon"), None);
    }
}
