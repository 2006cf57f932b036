//! The inline proxy against real HTTP servers on 127.0.0.1: live answers
//! pass unchanged, sampled exchanges reach the replay queue whole, a body
//! over the copy limit still reaches live, an absent upstream is a 502,
//! and the switch moves new requests and back.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, sync::mpsc};

use super::Proxy;
use crate::{
    capture::pipeline::CapturedExchange,
    config::Config,
    metrics::service::ServiceStats,
    replay::{ServiceReplay, config::ServiceConfig},
};

/// A live server answering `NAME METHOD PATH LEN SHA256` of what it read.
async fn live(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let digest: String = Sha256::digest(&body)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let text = format!(
                        "{name} {} {} {} {digest}",
                        parts.method,
                        parts.uri,
                        body.len()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    addr
}

fn service(upstream: SocketAddr, percent: f64, extra: &str) -> ServiceConfig {
    let text = format!(
        "[[service]]\nname = \"web\"\nport = {}\npercent = {percent}\n\
         targets = [\"http://127.0.0.1:9\"]\n[service.inline]\nlisten = \"127.0.0.1:0\"\n\
         upstream = \"{upstream}\"\n{extra}",
        upstream.port()
    );
    Config::parse("t.toml", &text).unwrap().services.remove(0)
}

struct Running {
    addr: SocketAddr,
    svc: Arc<ServiceReplay>,
    rx: mpsc::Receiver<CapturedExchange>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn proxy(cfg: ServiceConfig) -> Running {
    let stats = Arc::new(ServiceStats::new(&cfg.name));
    let svc = Arc::new(ServiceReplay::new(cfg, stats));
    let (tx, rx) = mpsc::channel(64);
    let p = Arc::new(Proxy::new(svc.clone(), tx).expect("inline"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(p.serve(listener, watch));
    Running {
        addr,
        svc,
        rx,
        _stop: stop,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: Bytes) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("user-agent", "inline-test/1")
        .body(Full::new(body))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn next(rx: &mut mpsc::Receiver<CapturedExchange>) -> CapturedExchange {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an exchange within 5 s")
        .expect("the queue is open")
}

#[tokio::test]
async fn live_answers_pass_unchanged_and_sampled_exchanges_reach_the_queue_whole() {
    let up = live("live").await;
    let mut p = proxy(service(up, 100.0, "")).await;
    let body = Bytes::from((0..3 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let (status, answer) = call(p.addr, "PUT", "/upload?x=1", body.clone()).await;
    assert_eq!(status, 200);
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(answer, format!("live PUT /upload?x=1 {} {digest}", 3 << 20));
    let ex = next(&mut p.rx).await;
    let q = &ex.exchange.request;
    assert_eq!(
        (q.method.as_str(), q.target.as_str()),
        ("PUT", "/upload?x=1")
    );
    assert_eq!(q.body, body, "the copy is the body live read");
    assert!(
        q.headers
            .iter()
            .any(|h| h.name == "user-agent" && &h.value[..] == b"inline-test/1")
    );
    let r = ex.exchange.response.as_ref().expect("the live response");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Bytes::from(answer));
    assert!(r.last_byte_ns >= q.last_byte_ns);
    assert_eq!(ex.service_port, up.port());
    let (_, get) = call(p.addr, "GET", "/a", Bytes::new()).await;
    assert_eq!(get, format!("live GET /a 0 {}", hex_empty()));
    assert_eq!(next(&mut p.rx).await.exchange.request.target, "/a");
    let st = p.svc.inline.as_ref().unwrap().status();
    assert_eq!((st.requests, st.teed, st.upstream_errors), (2, 2, 0));
}

fn hex_empty() -> String {
    Sha256::digest(b"")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn ten_percent_copies_one_request_in_ten_and_live_gets_all() {
    let up = live("live").await;
    let mut p = proxy(service(up, 10.0, "")).await;
    for i in 0..200 {
        let (s, _) = call(p.addr, "GET", &format!("/r/{i}"), Bytes::new()).await;
        assert_eq!(s, 200);
    }
    let mut copied = 0;
    while tokio::time::timeout(Duration::from_millis(300), p.rx.recv())
        .await
        .ok()
        .flatten()
        .is_some()
    {
        copied += 1;
    }
    assert!((19..=21).contains(&copied), "{copied} of 200 copied");
}

#[tokio::test]
async fn a_body_over_the_copy_limit_reaches_live_whole_and_is_counted() {
    let up = live("live").await;
    let mut p = proxy(service(up, 100.0, "tee_body_bytes = 1024\n")).await;
    let (status, answer) = call(p.addr, "PUT", "/big", Bytes::from(vec![7u8; 4096])).await;
    assert_eq!(status, 200);
    assert!(answer.starts_with("live PUT /big 4096 "), "{answer}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), p.rx.recv())
            .await
            .is_err(),
        "nothing copied"
    );
    let st = p.svc.stats.view();
    assert_eq!(st.not_replayed.get("body_too_large"), Some(&1), "{st:?}");
}

#[tokio::test]
async fn an_absent_upstream_is_a_502_and_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let p = proxy(service(addr, 100.0, "")).await;
    let (status, _) = call(p.addr, "GET", "/", Bytes::new()).await;
    assert_eq!(status, 502);
    assert_eq!(p.svc.inline.as_ref().unwrap().status().upstream_errors, 1);
    let st = p.svc.stats.view();
    assert_eq!(st.not_replayed.get("no_live_response"), Some(&1), "{st:?}");
}

#[tokio::test]
async fn the_switch_moves_new_requests_to_the_shadow_and_back() {
    use crate::failover::switch::{InlineSwitch, Switch as _};
    let (primary, shadow) = (live("primary").await, live("shadow").await);
    let p = proxy(service(primary, 0.0, "")).await;
    let mut switch = InlineSwitch {
        upstream: p.svc.inline.as_ref().unwrap().upstream.clone(),
        shadow,
    };
    let mut names = Vec::new();
    for share in [0, 5000, 10000] {
        switch.steer(share).unwrap();
        let mut to_shadow = 0;
        for i in 0..20 {
            let (_, a) = call(p.addr, "GET", &format!("/{i}"), Bytes::new()).await;
            to_shadow += usize::from(a.starts_with("shadow "));
        }
        names.push(to_shadow);
    }
    assert_eq!(
        names,
        [0, 10, 20],
        "new requests to the shadow at 0, 50 and 100 %"
    );
    assert_eq!(switch.share(), 10000);
    switch.release().unwrap();
    let (_, a) = call(p.addr, "GET", "/back", Bytes::new()).await;
    assert!(a.starts_with("primary "), "{a}");
    assert_eq!(
        p.svc.inline.as_ref().unwrap().status().alternate_percent,
        0.0
    );
}
