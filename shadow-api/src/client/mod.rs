//! A client for the agent's two servers (feature `client`): raw requests
//! ([`get`], [`control`]), typed calls ([`Admin`], [`Control`]) and
//! [`replay`] of a recording against a target.

mod typed;

pub use typed::{Admin, Control, encode};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {addr}: {source} (is shadow-proxy running?)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error talking to {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    /// The API refused (4xx/5xx); `message` is its own explanation.
    #[error("{message}")]
    Refused {
        addr: String,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("{addr}{path}: unexpected answer: {source}")]
    Decode {
        addr: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{addr}{path} answered {status}: {body}")]
    Status {
        addr: String,
        path: String,
        status: StatusCode,
        body: String,
    },
}

/// GETs `path` from `addr` and returns the body of a 200 answer.
pub async fn get(addr: &str, path: &str) -> Result<Bytes, ClientError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let http = |source| ClientError::Http {
        addr: addr.to_owned(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .expect("static request is valid");
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    if status != StatusCode::OK {
        return Err(ClientError::Status {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    Ok(body)
}

/// Sends `method path` with an optional JSON body over the control socket;
/// returns the status and body (error bodies are the API's own messages).
pub async fn control(
    socket: &std::path::Path,
    method: hyper::Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let addr = socket.display().to_string();
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let http = |source| ClientError::Http {
        addr: addr.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "shadow")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(
            body.unwrap_or_default(),
        )))
        .expect("static request is valid");
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    Ok((status, body))
}

/// Sends recorded requests to `target` at `speed` times the recorded pace
/// (0: as fast as possible, 256 in flight at most); returns a summary.
pub async fn replay(
    recs: &[crate::recording::Recorded],
    target: &str,
    speed: f64,
) -> Result<String, Box<dyn std::error::Error>> {
    use std::collections::BTreeMap;

    let base: hyper::Uri = target.parse()?;
    let authority = base
        .authority()
        .ok_or_else(|| format!("{target:?} has no host:port"))?
        .clone();
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for r in recs {
        if speed > 0.0 {
            let at = std::time::Duration::from_nanos((r.offset_ns as f64 / speed) as u64);
            tokio::time::sleep_until(start + at).await;
        }
        let uri = hyper::Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(r.target.as_str())
            .build()?;
        let mut b = Request::builder().method(r.method.as_str()).uri(uri);
        for (k, v) in &r.headers {
            let lower = k.to_ascii_lowercase();
            if ![
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "expect",
            ]
            .contains(&lower.as_str())
            {
                b = b.header(k.as_str(), v.as_str());
            }
        }
        let req = b.body(http_body_util::Full::new(Bytes::from(r.body())))?;
        let permit = limit.clone().acquire_owned().await?;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let res = client.request(req).await;
            drop(permit);
            match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().collect().await;
                    Ok(status)
                }
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => *statuses.entry(s).or_default() += 1,
            _ => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    Ok(format!(
        "replayed {} requests to {target} in {elapsed:.2?} (speed {speed}): statuses {statuses:?}, errors {errors}",
        recs.len()
    ))
}
