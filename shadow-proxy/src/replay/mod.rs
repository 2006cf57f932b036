//! Replaying captured requests to the shadow fleet: fire-and-forget, bounded
//! and timed out, so the live path never waits on a shadow.
//!
//! Exchanges arrive from the capture thread over a bounded queue. For each
//! one the service's rules decide whether it is replayed ([`rewrite`]), a
//! token bucket applies the rate cap, a permit bounds the requests in
//! flight, and a pooled hyper client sends the rewritten request to the next
//! target (round robin). The shadow's answer is kept with the live pair in
//! a bounded ring of [`ReplayRecord`]s for the diff engine.

pub mod config;
pub mod control;
pub mod record;
pub mod rewrite;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    capture::pipeline::CapturedExchange, kernel::context::ContextSource,
    metrics::service::ServiceStats,
};

use config::ServiceConfig;

/// Shadow response bodies beyond this are cut (and the replay counted as
/// incomplete).
pub const MAX_SHADOW_BODY: usize = 128 << 20;
/// Bodies kept per record in the ring (the diff engine's input).
pub const RECORD_BODY_BYTES: usize = 64 << 10;
/// Records kept.
pub const RECORDS: usize = 1024;

/// A live exchange and what the shadow answered.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRecord {
    pub id: u64,
    pub service: String,
    pub target: String,
    pub method: String,
    pub path: String,
    pub live_status: Option<u16>,
    pub live_latency_ms: Option<f64>,
    pub live_body: Bytes,
    pub shadow_status: Option<u16>,
    pub shadow_latency_ms: Option<f64>,
    pub shadow_headers: Vec<(String, String)>,
    pub shadow_body: Bytes,
    pub error: Option<String>,
    /// Method and path template the diff statistics group by.
    pub route: String,
    /// Live response headers (secrets redacted).
    pub live_headers: Vec<(String, String)>,
    /// Live vs shadow differences (noise included; the verdict filters it).
    pub diffs: Vec<crate::diff::FieldDiff>,
    /// Kernel activity on this host around a differing exchange.
    pub kernel: Option<crate::diff::KernelContext>,
}

/// Diff statistics of one service: an engine (and so a verdict) per shadow
/// target, the fields users marked as noise, and the service's routes.
pub struct DiffState {
    thresholds: crate::diff::noise::Thresholds,
    bounds: crate::diff::noise::Bounds,
    pub targets: std::collections::BTreeMap<String, crate::diff::noise::Engine>,
    pub marked: std::collections::BTreeSet<(String, String)>,
    pub routes: crate::diff::route::RouteSet,
}

impl DiffState {
    pub fn new(settings: &config::DiffSettings) -> Self {
        let bounds = crate::diff::noise::Bounds {
            // The service's routes plus the overflow route.
            max_routes: settings.max_routes + 1,
            ..Default::default()
        };
        Self {
            thresholds: settings.thresholds,
            bounds,
            targets: std::collections::BTreeMap::new(),
            marked: std::collections::BTreeSet::new(),
            routes: crate::diff::route::RouteSet::new(settings.max_routes),
        }
    }

    pub fn engine(&mut self, target: &str) -> &mut crate::diff::noise::Engine {
        let (thresholds, bounds, marked) = (self.thresholds, self.bounds, &self.marked);
        self.targets.entry(target.to_owned()).or_insert_with(|| {
            let mut e = crate::diff::noise::Engine::with_bounds(thresholds, bounds);
            e.marked = marked.clone();
            e
        })
    }

    /// The route `method target` is counted under (templates applied,
    /// ids collapsed, capped per service).
    pub fn route(&mut self, cfg: &ServiceConfig, method: &str, target: &str) -> String {
        let r = crate::diff::route::route(method, target, &cfg.diff.route_templates);
        self.routes.bound(&cfg.name, r)
    }

    /// Noise seen on the live side applies to every target.
    pub fn record_noise_all(&mut self, route: &str, diffs: &[crate::diff::FieldDiff]) {
        for e in self.targets.values_mut() {
            e.record_noise(route, diffs);
        }
    }

    pub fn mark(&mut self, route: String, path: String, noise: bool) {
        if noise {
            self.marked.insert((route, path));
        } else {
            self.marked.remove(&(route, path));
        }
        for e in self.targets.values_mut() {
            e.marked = self.marked.clone();
        }
    }
}

struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate.max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One service's replay state. Its rules can be replaced at run time.
pub struct ServiceReplay {
    pub cfg: RwLock<ServiceConfig>,
    pub stats: Arc<ServiceStats>,
    /// Per-target, per-route, per-field diff statistics and verdicts.
    pub diff: Mutex<DiffState>,
    next: AtomicUsize,
    in_flight: Arc<Semaphore>,
    limiter: Mutex<Option<TokenBucket>>,
}

impl ServiceReplay {
    pub fn new(cfg: ServiceConfig, stats: Arc<ServiceStats>) -> Self {
        Self {
            diff: Mutex::new(DiffState::new(&cfg.diff)),
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
            limiter: Mutex::new(cfg.rps_limit.map(TokenBucket::new)),
            cfg: RwLock::new(cfg),
            stats,
            next: AtomicUsize::new(0),
        }
    }

    /// Replaces the service's rules; nothing changes when they are invalid.
    pub fn set_rules(&self, raw: config::RawRules) -> Result<(), (String, String)> {
        let mut cfg = self.config();
        config::apply_rules(&mut cfg, raw)?;
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) =
            cfg.rps_limit.map(TokenBucket::new);
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(())
    }

    fn config(&self) -> ServiceConfig {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub struct Replayer {
    pub services: HashMap<u16, Arc<ServiceReplay>>,
    client: Client<HttpConnector, Full<Bytes>>,
    records: Mutex<VecDeque<ReplayRecord>>,
    /// An active `shadowctl record`.
    pub recorder: Mutex<Option<record::Recorder>>,
    /// The last live answer to each recent GET, to learn noise from live
    /// answers to repeated requests.
    live_gets: Mutex<LiveGets>,
    /// Kernel context for differing exchanges (the agent's views; `None`
    /// in tests that run without a kernel).
    kernel_context: Option<Arc<dyn ContextSource>>,
}

/// A live answer kept for comparison: status, headers, body.
type LiveAnswer = (u16, Vec<(String, String)>, Bytes);

/// Previous live answers, bounded (oldest forgotten first).
#[derive(Default)]
struct LiveGets {
    map: HashMap<(u16, String), LiveAnswer>,
    order: VecDeque<(u16, String)>,
}

/// GET targets remembered for noise learning, and the largest body kept.
const LIVE_GETS: usize = 1024;
const LIVE_GET_BODY: usize = 64 << 10;

impl Replayer {
    /// `kernel_context` annotates differing exchanges with what the kernel
    /// saw on this host (block I/O, RTT to the target).
    pub fn new(
        services: HashMap<u16, Arc<ServiceReplay>>,
        kernel_context: Option<Arc<dyn ContextSource>>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self {
            services,
            client,
            records: Mutex::new(VecDeque::with_capacity(RECORDS)),
            recorder: Mutex::new(None),
            live_gets: Mutex::new(LiveGets::default()),
            kernel_context,
        }
    }

    /// The most recent records, newest last.
    pub fn records(&self, limit: usize) -> Vec<ReplayRecord> {
        let r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.iter()
            .skip(r.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    fn keep(&self, rec: ReplayRecord) {
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECORDS {
            r.pop_front();
        }
        r.push_back(rec);
    }

    /// Consumes the capture queue until it closes.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<CapturedExchange>) {
        while let Some(item) = rx.recv().await {
            self.dispatch(item);
        }
    }

    /// Decides, then spawns the replay; never waits.
    pub fn dispatch(self: &Arc<Self>, item: CapturedExchange) {
        let Some(svc) = self.services.get(&item.service_port).cloned() else {
            return;
        };
        if let Some(r) = self
            .recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            r.offer(&item);
        }
        let cfg = svc.config();
        self.learn_from_repeated_get(&item, &cfg, &svc);
        if let Err(skip) = rewrite::decide(&item.exchange.request, &cfg) {
            svc.stats.not_replayed(skip.reason());
            return;
        }
        let limited = svc
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .is_some_and(|b| !b.take());
        if limited {
            svc.stats.not_replayed("rate_limited");
            return;
        }
        let Ok(permit) = svc.in_flight.clone().try_acquire_owned() else {
            svc.stats.not_replayed("in_flight_full");
            return;
        };
        let i = svc.next.fetch_add(1, Ordering::Relaxed);
        let target = cfg.targets[i % cfg.targets.len()].clone();
        let this = self.clone();
        tokio::spawn(async move {
            let rec = this.replay_one(&item, &cfg, &target, &svc).await;
            drop(permit);
            this.keep(rec);
        });
    }

    /// Two live answers to the same GET that differ show noise, not a
    /// regression: diff them against each other.
    fn learn_from_repeated_get(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
    ) {
        let req = &item.exchange.request;
        let Some(resp) = item.exchange.response.as_ref() else {
            return;
        };
        if req.method != "GET" || resp.body.len() > LIVE_GET_BODY {
            return;
        }
        let key = (item.service_port, req.target.clone());
        let headers = redacted_headers(&resp.headers, cfg);
        let mut seen = self.live_gets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((status, prev_headers, prev_body)) = seen.map.get(&key) {
            let a = crate::diff::Side {
                status: *status,
                headers: prev_headers.clone(),
                body: prev_body,
                latency_ms: 0.0,
            };
            let b = crate::diff::Side {
                status: resp.status,
                headers: headers.clone(),
                body: &resp.body,
                latency_ms: 0.0,
            };
            let diffs = crate::diff::compare(&a, &b, &cfg.diff.options);
            let mut state = svc.diff.lock().unwrap_or_else(|p| p.into_inner());
            let route = state.route(cfg, &req.method, &req.target);
            state.record_noise_all(&route, &diffs);
        } else {
            seen.order.push_back(key.clone());
            if seen.order.len() > LIVE_GETS
                && let Some(old) = seen.order.pop_front()
            {
                seen.map.remove(&old);
            }
        }
        seen.map
            .insert(key, (resp.status, headers, resp.body.clone()));
    }

    /// Sends the request to the shadow again and records what differs
    /// between the two shadow answers as noise (the third fleet Diffy needs,
    /// without a third fleet).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct would only rename them"
    )]
    async fn learn_noise(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        probe: &hyper::Uri,
        target: &hyper::Uri,
        svc: &ServiceReplay,
        first: &crate::diff::Side<'_>,
        route: &str,
    ) {
        let Ok(mut req) = rewrite::build(&item.exchange.request, cfg, probe) else {
            return;
        };
        // Lets the shadow's owners tell the second copy from the first.
        req.headers_mut().insert(
            "x-shadow-noise-probe",
            hyper::header::HeaderValue::from_static("1"),
        );
        let started = Instant::now();
        let fut = async {
            let resp = self.client.request(req.map(Full::new)).await.ok()?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_SHADOW_BODY)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((parts, body))
        };
        let Ok(Some((parts, body))) = tokio::time::timeout(cfg.timeout, fut).await else {
            svc.stats.not_replayed("noise_probe_failed");
            return;
        };
        let second = crate::diff::Side {
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
        let diffs = crate::diff::compare(first, &second, &cfg.diff.options);
        crate::diff::publish_noise(&cfg.name, route, &diffs);
        svc.diff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .engine(&target.to_string())
            .record_noise(route, &diffs);
    }

    async fn replay_one(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        target: &hyper::Uri,
        svc: &ServiceReplay,
    ) -> ReplayRecord {
        let ex = &item.exchange;
        let live = ex.response.as_ref();
        let live_latency_ms =
            live.map(|r| r.last_byte_ns.saturating_sub(ex.request.last_byte_ns) as f64 / 1e6);
        let route = svc.diff.lock().unwrap_or_else(|p| p.into_inner()).route(
            cfg,
            &ex.request.method,
            &ex.request.target,
        );
        let mut rec = ReplayRecord {
            id: item.id,
            service: cfg.name.clone(),
            target: target.to_string(),
            method: ex.request.method.clone(),
            path: ex.request.target.clone(),
            live_status: live.map(|r| r.status),
            live_latency_ms,
            live_body: live.map_or_else(Bytes::new, |r| cut(&r.body)),
            shadow_status: None,
            shadow_latency_ms: None,
            shadow_headers: Vec::new(),
            shadow_body: Bytes::new(),
            error: None,
            route,
            live_headers: live.map_or_else(Vec::new, |r| redacted_headers(&r.headers, cfg)),
            diffs: Vec::new(),
            kernel: None,
        };
        let req = match rewrite::build(&ex.request, cfg, target) {
            Ok(r) => r.map(Full::new),
            Err(e) => {
                svc.stats.not_replayed("rewrite_failed");
                rec.error = Some(e.to_string());
                return rec;
            }
        };
        let started = Instant::now();
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| ("shadow_error", e.to_string()))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_SHADOW_BODY)
                .collect()
                .await
                .map_err(|e| ("shadow_body_error", e.to_string()))?
                .to_bytes();
            Ok::<_, (&'static str, String)>((parts, body))
        };
        match tokio::time::timeout(cfg.timeout, fut).await {
            Ok(Ok((parts, body))) => {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                rec.shadow_status = Some(parts.status.as_u16());
                rec.shadow_latency_ms = Some(ms);
                rec.shadow_headers = parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                rec.shadow_body = cut(&body);
                svc.stats
                    .replayed(parts.status.as_u16(), live_latency_ms.map(|l| ms - l));
                if let Some(resp) = live {
                    let live_side = crate::diff::Side {
                        status: resp.status,
                        headers: rec.live_headers.clone(),
                        body: &resp.body,
                        latency_ms: live_latency_ms.unwrap_or(0.0),
                    };
                    let shadow_side = crate::diff::Side {
                        status: parts.status.as_u16(),
                        headers: rec.shadow_headers.clone(),
                        body: &body,
                        latency_ms: ms,
                    };
                    rec.diffs = crate::diff::compare(&live_side, &shadow_side, &cfg.diff.options);
                    svc.diff
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .engine(&rec.target)
                        .record(&rec.route, item.id, &rec.diffs);
                    crate::diff::publish(&cfg.name, &rec.route, &rec.diffs);
                    if !rec.diffs.is_empty() {
                        rec.kernel = self.kernel_context.as_ref().and_then(|k| k.context(target));
                    }
                    if noise_sample(item.id, cfg.diff.noise_fraction) {
                        // With a baseline (live version) the reference is
                        // live's answer; without one, the shadow's first.
                        let (probe, reference) = match &cfg.diff.baseline {
                            Some(b) => (b, &live_side),
                            None => (target, &shadow_side),
                        };
                        self.learn_noise(item, cfg, probe, target, svc, reference, &rec.route)
                            .await;
                    }
                }
            }
            Ok(Err((reason, error))) => {
                svc.stats.not_replayed(reason);
                rec.error = Some(error);
            }
            Err(_) => {
                svc.stats.not_replayed("shadow_timeout");
                rec.error = Some(format!("no answer within {:?}", cfg.timeout));
            }
        }
        rec
    }
}

/// Deterministic by exchange id, so reruns pick the same requests.
fn noise_sample(id: u64, fraction: f64) -> bool {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (h as f64 / (1u64 << 53) as f64) < fraction
}

fn redacted_headers(
    h: &[crate::http::conversation::Header],
    cfg: &ServiceConfig,
) -> Vec<(String, String)> {
    h.iter()
        .map(|h| {
            let lower = h.name.to_ascii_lowercase();
            let v = if cfg.redact_headers.contains(&lower) || lower == "set-cookie" {
                rewrite::redact(&h.value)
            } else {
                String::from_utf8_lossy(&h.value).into_owned()
            };
            (lower, v)
        })
        .collect()
}

fn cut(b: &Bytes) -> Bytes {
    b.slice(..b.len().min(RECORD_BODY_BYTES))
}
