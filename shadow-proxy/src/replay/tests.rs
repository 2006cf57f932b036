//! The replay stack against real HTTP servers on 127.0.0.1: balance,
//! refusals by reason (and at once), slots freed, timeouts and failures
//! naming their target.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Semaphore};

use super::{
    config::ServiceConfig,
    stack::{self, Failure, ShadowRequest},
};
use crate::{
    capture::{pipeline::CapturedExchange, reassembly::FlowKey},
    config::Config,
    http::conversation::{Exchange, Request},
    metrics::reason::Drop,
    util::Sourced as _,
};

/// An HTTP/1.1 server that answers "ok" after `delay`, counting requests.
async fn server(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let hits = counted.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let hits = hits.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (url, hits)
}

fn service(targets: &[String], extra: &str) -> ServiceConfig {
    let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        "[[service]]\nname = \"web\"\nport = 80\npercent = 100\ntargets = [{}]\n{extra}",
        list.join(", ")
    );
    Config::parse("t.toml", &text).unwrap().services.remove(0)
}

fn request(id: u64, cfg: &Arc<ServiceConfig>) -> ShadowRequest {
    let addr = "127.0.0.1:80".parse().unwrap();
    let item = CapturedExchange {
        stream: None,
        id,
        service_port: 80,
        flow: FlowKey {
            client: addr,
            server: addr,
        },
        exchange: Exchange {
            request: Request {
                method: "GET".into(),
                target: format!("/item/{id}"),
                version: 1,
                headers: Vec::new(),
                body: Bytes::new(),
                chunked: false,
                trailers: Vec::new(),
                first_byte_ns: 0,
                last_byte_ns: 0,
                streamed: false,
            },
            response: None,
        },
    };
    ShadowRequest {
        item: Arc::new(item),
        cfg: cfg.clone(),
    }
}

#[tokio::test]
async fn answers_come_back_from_every_target() {
    let (a, hits_a) = server(Duration::ZERO).await;
    let (b, hits_b) = server(Duration::ZERO).await;
    let cfg = Arc::new(service(&[a, b], ""));
    let mut s = stack::build(&cfg, &[], &stack::client(), Arc::new(Semaphore::new(8)));
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..40 {
        let answer = stack::submit(&mut s, request(id, &cfg))
            .unwrap()
            .await
            .unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
        seen.insert(answer.target.to_string());
    }
    assert_eq!(seen.len(), 2, "both targets answered: {seen:?}");
    let (ha, hb) = (hits_a.load(Ordering::SeqCst), hits_b.load(Ordering::SeqCst));
    assert_eq!(ha + hb, 40);
    assert!(ha > 0 && hb > 0, "p2c used both targets: {ha} and {hb}");
}

#[tokio::test]
async fn full_slots_refuse_at_once_then_free_when_answers_time_out() {
    let (slow, _) = server(Duration::from_secs(30)).await;
    let cfg = Arc::new(service(
        std::slice::from_ref(&slow),
        "max_in_flight = 2\ntimeout = \"300ms\"\n",
    ));
    let slots = Arc::new(Semaphore::new(2));
    let mut s = stack::build(&cfg, &[], &stack::client(), slots.clone());
    let first = stack::submit(&mut s, request(1, &cfg)).expect("a slot");
    let second = stack::submit(&mut s, request(2, &cfg)).expect("a slot");
    let started = Instant::now();
    let refused = stack::submit(&mut s, request(3, &cfg))
        .err()
        .expect("no slot left");
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "refused without waiting"
    );
    assert_eq!(refused.reason(), Drop::InFlightFull);
    assert_eq!(refused.target(), None);
    for answer in [first, second] {
        let f = Failure::classify(answer.await.err().expect("the shadow never answers"));
        assert_eq!(f.reason(), Drop::ShadowTimeout);
        assert!(f.target().unwrap().starts_with(&slow), "{f}");
    }
    // Both slots are usable again (the stack may hold one it has already
    // reserved for the next request, as tower's ConcurrencyLimit does).
    let again: Vec<_> = (4..7)
        .map(|id| stack::submit(&mut s, request(id, &cfg)))
        .collect();
    assert!(
        again[0].is_ok() && again[1].is_ok(),
        "timed-out requests gave their slots back"
    );
    assert_eq!(
        again[2].as_ref().err().map(Failure::reason),
        Some(Drop::InFlightFull)
    );
}

#[tokio::test]
async fn the_rate_cap_refuses_by_its_own_reason_and_holds_no_slot() {
    let (fast, _) = server(Duration::ZERO).await;
    let cfg = Arc::new(service(&[fast], "rps_limit = 3\n"));
    let slots = Arc::new(Semaphore::new(16));
    let mut s = stack::build(&cfg, &[], &stack::client(), slots.clone());
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for id in 0..10 {
        match stack::submit(&mut s, request(id, &cfg)) {
            Ok(a) => accepted.push(a),
            Err(f) => refused.push(f.reason()),
        }
    }
    assert_eq!(accepted.len(), 3, "3 per second");
    assert_eq!(refused, vec![Drop::RateLimited; 7]);
    assert_eq!(slots.available_permits(), 16 - 3, "refusals hold no slot");
    for a in accepted {
        assert_eq!(a.await.unwrap().status, 200);
    }
    assert_eq!(slots.available_permits(), 16);
}

#[tokio::test]
async fn a_closed_port_is_a_shadow_error_naming_the_target() {
    // Bound and dropped: nothing listens there now.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cfg = Arc::new(service(std::slice::from_ref(&closed), ""));
    let mut s = stack::build(&cfg, &[], &stack::client(), Arc::new(Semaphore::new(4)));
    let answer = stack::submit(&mut s, request(1, &cfg)).expect("accepted");
    let f = Failure::classify(answer.await.err().expect("refused connection"));
    assert_eq!(f.reason(), Drop::ShadowError);
    assert!(f.target().unwrap().starts_with(&closed), "{f}");
    assert_eq!(f.error_source(), crate::util::ErrorSource::Shadow);
    assert!(
        std::error::Error::source(&f).is_some(),
        "hyper's error is kept"
    );
}
