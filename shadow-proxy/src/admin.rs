//! The admin HTTP endpoint: Prometheus metrics and JSON views for `shadowctl`.
//!
//! | path | what |
//! |---|---|
//! | `/metrics` | Prometheus text: kernel histograms plus the agent's metrics |
//! | `/api/v1/snapshot` | JSON: latest kernel snapshot and host sample |
//! | `/api/v1/history` | JSON: metric names; `?metric=NAME` for its samples |
//! | `/api/v1/forecast...` | JSON: the control API's read-only forecast routes ([`crate::forecast::api`]) |
//! | `/healthz` | `ok` |

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::agent::Shared;

/// Serves until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "Admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%error, "Admin connection ended");
            }
        });
    }
}

fn route(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/api")
        && let Some((status, body)) = crate::forecast::api::route(
            shared.forecast.as_deref(),
            req.method(),
            rest,
            req.uri().query().unwrap_or_default(),
        )
    {
        return respond(status, "application/json", body);
    }
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.render_metrics(),
        ),
        "/api/v1/snapshot" => json(shared.view().as_ref()),
        "/api/v1/history" => {
            let metric = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("metric="))
                    .map(percent_decode)
            });
            let history = shared.history.lock().expect("history lock");
            match metric {
                Some(m) if history.len(&m) == 0 => text(
                    StatusCode::NOT_FOUND,
                    &format!("no history for metric {m:?}\n"),
                ),
                Some(m) => json(&history.get(&m)),
                None => json(&history.metrics().collect::<Vec<_>>()),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
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

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", body.to_owned())
}

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("host.cpu%5B1%5D+x"), "host.cpu[1] x");
    }
}
