//! Learning what differs between two answers that should be equal, so the
//! diff can tell noise (timestamps, ids) from regressions: repeated live
//! GETs, and a sampled second request (the noise probe).

use std::{
    collections::{HashMap, VecDeque},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};

use super::{
    MAX_SHADOW_BODY, ServiceReplay, config::ServiceConfig, redacted_headers, rewrite,
    stack::ShadowClient,
};
use crate::{capture::pipeline::CapturedExchange, diff, metrics::reason::Drop};

/// GET targets remembered for noise learning, and the largest body kept.
const LIVE_GETS: usize = 1024;
const LIVE_GET_BODY: usize = 64 << 10;

/// A live answer kept for comparison: status, headers, body.
type LiveAnswer = (u16, Vec<(String, String)>, Bytes);

/// Previous live answers to GETs, bounded (oldest forgotten first).
#[derive(Default)]
pub struct LiveGets {
    map: HashMap<(u16, String), LiveAnswer>,
    order: VecDeque<(u16, String)>,
}

impl LiveGets {
    /// Two live answers to the same GET that differ show noise, not a
    /// regression: diff them against each other.
    pub fn learn(&mut self, item: &CapturedExchange, cfg: &ServiceConfig, svc: &ServiceReplay) {
        let req = &item.exchange.request;
        let Some(resp) = item.exchange.response.as_ref() else {
            return;
        };
        if req.method != "GET" || resp.body.len() > LIVE_GET_BODY {
            return;
        }
        let key = (item.service_port, req.target.clone());
        let headers = redacted_headers(&resp.headers, cfg);
        if let Some((status, prev_headers, prev_body)) = self.map.get(&key) {
            let a = diff::Side {
                status: *status,
                headers: prev_headers.clone(),
                body: prev_body,
                latency_ms: 0.0,
            };
            let b = diff::Side {
                status: resp.status,
                headers: headers.clone(),
                body: &resp.body,
                latency_ms: 0.0,
            };
            let diffs = diff::compare(&a, &b, &cfg.diff.options);
            let mut state = svc.diff.lock().unwrap_or_else(|p| p.into_inner());
            let route = state.route(cfg, &req.method, &req.target);
            state.record_noise_all(&route, &diffs);
        } else {
            self.order.push_back(key.clone());
            if self.order.len() > LIVE_GETS
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
        self.map
            .insert(key, (resp.status, headers, resp.body.clone()));
    }
}

/// Deterministic by exchange id, so reruns pick the same requests.
pub fn sampled(id: u64, fraction: f64) -> bool {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (h as f64 / (1u64 << 53) as f64) < fraction
}

/// Where a noise probe goes and what its answer is compared with.
pub struct Probe<'a> {
    /// The target asked again (the shadow, or the baseline).
    pub to: &'a hyper::Uri,
    /// The engine the noise is recorded for.
    pub target: &'a hyper::Uri,
    /// The answer the probe's should equal.
    pub reference: &'a diff::Side<'a>,
    pub route: &'a str,
}

/// Sends the request a second time and records what differs between the
/// two answers as noise (the third fleet Diffy needs, without a third
/// fleet). Bounded by the service's timeout; outside the replay stack's
/// slots, as it was sampled from requests that already had one.
pub async fn probe(
    client: &ShadowClient,
    item: &CapturedExchange,
    cfg: &ServiceConfig,
    svc: &ServiceReplay,
    p: Probe<'_>,
) {
    let Ok(mut req) = rewrite::build(&item.exchange.request, cfg, p.to, item.flow.client.ip())
    else {
        return;
    };
    // Lets the shadow's owners tell the second copy from the first.
    req.headers_mut().insert(
        "x-shadow-noise-probe",
        hyper::header::HeaderValue::from_static("1"),
    );
    let started = Instant::now();
    let fut = async {
        let resp = client
            .request(req.map(|b| Either::Left(Full::new(b))))
            .await
            .ok()?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_SHADOW_BODY)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some((parts, body))
    };
    let Ok(Some((parts, body))) = tokio::time::timeout(cfg.timeout, fut).await else {
        svc.stats.not_replayed(Drop::NoiseProbeFailed);
        return;
    };
    let second = diff::Side {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: &body,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    let diffs = diff::compare(p.reference, &second, &cfg.diff.options);
    diff::publish_noise(&cfg.name, p.route, &diffs);
    svc.diff
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .engine(&p.target.to_string())
        .record_noise(p.route, &diffs);
}
