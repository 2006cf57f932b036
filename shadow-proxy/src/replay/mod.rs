//! Replaying captured requests to the shadow fleet: fire-and-forget, bounded
//! and timed out, so the live path never waits on a shadow.
//!
//! Exchanges arrive from the capture thread over a bounded queue. For each
//! one the service's rules decide whether it is replayed ([`rewrite`]); the
//! service's tower [`stack`] then sheds, bounds, rate-limits, balances and
//! times out the rewritten request on its way to a target. The shadow's
//! answer is diffed against live's and kept with the live pair in a bounded
//! ring of [`ReplayRecord`]s.

pub mod budget;
pub mod config;
pub mod control;
pub mod diffs;
pub mod inline;
pub mod learn;
pub mod recent;
pub mod record;
pub mod rewrite;
pub mod sample;
pub mod stack;
#[cfg(test)]
mod tests;
pub mod traffic;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use bytes::Bytes;
use hyper::Uri;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::{
    capture::pipeline::CapturedExchange, diff, kernel::context::ContextSource,
    metrics::service::ServiceStats,
};

use crate::util::Sourced as _;
use config::ServiceConfig;
use diffs::DiffState;
use stack::{Failure, ShadowAnswer, ShadowClient, ShadowRequest, Stack};

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
    pub diffs: Vec<diff::FieldDiff>,
    /// Kernel activity on this host around a differing exchange.
    pub kernel: Option<diff::KernelContext>,
}

/// One service's replay state. Its rules can be replaced at run time.
pub struct ServiceReplay {
    pub cfg: RwLock<ServiceConfig>,
    pub stats: Arc<ServiceStats>,
    /// Per-target, per-route, per-field diff statistics and verdicts.
    pub diff: Mutex<DiffState>,
    client: ShadowClient,
    /// The stack's slots; they outlive rule changes.
    in_flight: Arc<Semaphore>,
    /// Targets registered at run time (the provisioner's local replicas),
    /// balanced beside the configured ones.
    discovered: Mutex<Vec<Uri>>,
    stack: Mutex<Stack>,
    /// Keeps `per_ten_thousand / captured` of the requests captured
    /// (`sample = "request"`).
    sampler: Mutex<sample::RequestSampler>,
    /// Hundredths of a percent of connections the kernel captures (of
    /// requests the inline proxy copies, for a service behind it).
    pub captured: std::sync::atomic::AtomicU32,
    /// The inline proxy's side, for a service behind it.
    pub inline: Option<Arc<inline::Inline>>,
}

impl ServiceReplay {
    /// Needs a tokio runtime (the rate limit's timer).
    pub fn new(cfg: ServiceConfig, stats: Arc<ServiceStats>) -> Self {
        let client = stack::client();
        let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight));
        Self {
            diff: Mutex::new(DiffState::new(&cfg.diff)),
            stack: Mutex::new(stack::build(&cfg, &[], &client, in_flight.clone())),
            discovered: Mutex::new(Vec::new()),
            client,
            in_flight,
            sampler: Mutex::new(sample::RequestSampler::new(
                crate::util::unix_ms() ^ u64::from(cfg.port),
            )),
            captured: std::sync::atomic::AtomicU32::new(sample::capture_rate(
                cfg.per_ten_thousand,
                cfg.per_request,
            )),
            inline: cfg.inline.clone().map(|s| Arc::new(inline::Inline::new(s))),
            cfg: RwLock::new(cfg),
            stats,
        }
    }

    /// Replaces the service's rules; nothing changes when they are invalid.
    pub fn set_rules(&self, raw: config::RawRules) -> Result<(), config::RuleError> {
        let mut cfg = self.config();
        config::apply_rules(&mut cfg, raw)?;
        // Held while the stack is rebuilt: a replica change cannot slip in
        // between (the lock order is discovered, then stack, everywhere).
        let discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        *self.stack.lock().unwrap_or_else(|p| p.into_inner()) =
            stack::build(&cfg, &discovered, &self.client, self.in_flight.clone());
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(())
    }

    /// Replaces the targets registered at run time (every ready local
    /// replica). Requests in flight finish on the targets they went to;
    /// new ones are balanced over the configured and discovered targets.
    /// Must run inside the tokio runtime (the rate limit's timer).
    pub fn set_discovered(&self, targets: Vec<Uri>) {
        let cfg = self.config();
        let mut discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        *self.stack.lock().unwrap_or_else(|p| p.into_inner()) =
            stack::build(&cfg, &targets, &self.client, self.in_flight.clone());
        *discovered = targets;
    }

    /// The targets registered at run time.
    pub fn discovered(&self) -> Vec<Uri> {
        self.discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The service's name.
    pub fn name(&self) -> String {
        self.cfg
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .name
            .clone()
    }

    fn config(&self) -> ServiceConfig {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub struct Replayer {
    pub services: HashMap<u16, Arc<ServiceReplay>>,
    records: Mutex<VecDeque<ReplayRecord>>,
    /// An active `shadowctl record`.
    pub recorder: Mutex<Option<record::Recorder>>,
    /// The last GETs and HEADs per service port (a failover `warm` step
    /// replays them to the shadow).
    pub recent: Mutex<recent::Recent>,
    /// The last live answer to each recent GET, to learn noise from live
    /// answers to repeated requests.
    live_gets: Mutex<learn::LiveGets>,
    /// Kernel context for differing exchanges (the agent's views; `None`
    /// in tests that run without a kernel).
    kernel_context: Option<Arc<dyn ContextSource>>,
    /// Live rate, latency, errors and bytes per service and route, for
    /// the history (drained by the poller).
    pub traffic: traffic::Traffic,
}

impl Replayer {
    /// `kernel_context` annotates differing exchanges with what the kernel
    /// saw on this host (block I/O, RTT to the target).
    pub fn new(
        services: HashMap<u16, Arc<ServiceReplay>>,
        kernel_context: Option<Arc<dyn ContextSource>>,
    ) -> Self {
        let configs: Vec<(ServiceConfig, u32)> = services
            .values()
            .map(|s| {
                (
                    s.config(),
                    s.captured.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect();
        let traffic = traffic::Traffic::new(
            configs
                .iter()
                .map(|(c, captured)| (c.name.as_str(), *captured)),
        );
        Self {
            services,
            traffic,
            records: Mutex::new(VecDeque::with_capacity(RECORDS)),
            recorder: Mutex::new(None),
            recent: Mutex::new(recent::Recent::default()),
            live_gets: Mutex::new(learn::LiveGets::default()),
            kernel_context,
        }
    }

    /// The inline proxies' upstream switches, by service port.
    pub fn inline_upstreams(&self) -> HashMap<u16, Arc<inline::upstream::Upstream>> {
        self.services
            .iter()
            .filter_map(|(port, s)| Some((*port, s.inline.as_ref()?.upstream.clone())))
            .collect()
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

    /// Decides, then offers the request to the service's stack; never
    /// waits. What the stack refuses is counted by reason. A streamed
    /// request comes at its head: its live side is waited for apart.
    pub fn dispatch(self: &Arc<Self>, item: CapturedExchange) {
        let Some(svc) = self.services.get(&item.service_port).cloned() else {
            return;
        };
        let live = item.stream.as_ref().and_then(|s| s.take_live());
        if item.stream.is_none()
            && let Some(r) = self
                .recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            // A streamed body was never held, so it cannot be recorded.
            r.offer(&item);
        }
        {
            let q = &item.exchange.request;
            self.recent.lock().unwrap_or_else(|p| p.into_inner()).push(
                item.service_port,
                crate::util::unix_ms(),
                &q.method,
                &q.target,
                &q.headers,
            );
        }
        let cfg = svc.config();
        let captured = svc.captured.load(std::sync::atomic::Ordering::Relaxed);
        if live.is_none() {
            self.observe_live(&item, &cfg, &svc, captured);
        }
        let head = (item.id, item.service_port, item.flow, item.stream.clone());
        let answer = self.offer(item, &cfg, &svc, captured);
        let Some(live) = live else {
            if let Some((item, cfg, answer)) = answer {
                let this = self.clone();
                tokio::spawn(async move { this.conclude(&item, &cfg, &svc, answer.await).await });
            }
            return;
        };
        // The live side of a streamed request completes after its body:
        // the series count it then, and the diff waits for it.
        let this = self.clone();
        tokio::spawn(async move {
            let shadow = match answer {
                Some((_, cfg, answer)) => Some((cfg, answer.await)),
                None => None,
            };
            let Ok(exchange) = live.await else {
                // The capture lost it and counted it (flow dropped).
                return;
            };
            let (id, service_port, flow, stream) = head;
            let item = CapturedExchange {
                id,
                service_port,
                flow,
                exchange,
                stream,
            };
            this.observe_live(&item, &cfg, &svc, captured);
            match shadow {
                // Counted by the capture, as the flow it dropped.
                Some((_, Err(e))) if Failure::lost_body(&e) => {}
                Some((cfg, result)) => this.conclude(&item, &cfg, &svc, result).await,
                None => {}
            }
        });
    }

    /// Counts a captured request in the live series, scaled by the rate it
    /// was captured at, and learns from live GETs.
    fn observe_live(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        captured: u32,
    ) {
        let route = svc.diff.lock().unwrap_or_else(|p| p.into_inner()).route(
            cfg,
            &item.exchange.request.method,
            &item.exchange.request.target,
        );
        self.traffic
            .observe(&cfg.name, &route, captured, item.id, &item.exchange);
        self.live_gets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .learn(item, cfg, svc);
    }

    /// Samples, applies the rules and offers the request to the stack:
    /// the answer to wait for, or `None` when it is not replayed (counted).
    fn offer(
        &self,
        item: CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        captured: u32,
    ) -> Option<Offered> {
        if cfg.per_request
            && !svc
                .sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keep(cfg.per_ten_thousand, captured)
        {
            svc.stats.sampled_out();
            return None;
        }
        if let Err(skip) = rewrite::decide(&item.exchange.request, cfg) {
            svc.stats.not_replayed(skip);
            return None;
        }
        let (item, cfg) = (Arc::new(item), Arc::new(cfg.clone()));
        let req = ShadowRequest {
            item: item.clone(),
            cfg: cfg.clone(),
        };
        let offered = stack::submit(
            &mut svc.stack.lock().unwrap_or_else(|p| p.into_inner()),
            req,
        );
        match offered {
            Err(failure) => {
                self.failed(&item, &cfg, svc, failure);
                None
            }
            Ok(answer) => Some((item, cfg, answer)),
        }
    }

    /// Diffs an answer, or counts why there was none.
    async fn conclude(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        result: Result<ShadowAnswer, tower::BoxError>,
    ) {
        match result {
            Ok(a) => self.answered(item, cfg, svc, a).await,
            Err(e) => self.failed(item, cfg, svc, Failure::classify(e)),
        }
    }

    /// A record of the live side, for `target`.
    fn record(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        target: String,
    ) -> ReplayRecord {
        let ex = &item.exchange;
        let live = ex.response.as_ref();
        let route = svc.diff.lock().unwrap_or_else(|p| p.into_inner()).route(
            cfg,
            &ex.request.method,
            &ex.request.target,
        );
        ReplayRecord {
            id: item.id,
            service: cfg.name.clone(),
            target,
            method: ex.request.method.clone(),
            path: ex.request.target.clone(),
            live_status: live.map(|r| r.status),
            live_latency_ms: live
                .map(|r| r.last_byte_ns.saturating_sub(ex.request.last_byte_ns) as f64 / 1e6),
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
        }
    }

    /// Counts a request the stack refused or the shadow lost; one that
    /// reached a target is also kept as a record with its error.
    fn failed(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        failure: Failure,
    ) {
        svc.stats.not_replayed(failure.reason());
        tracing::debug!(
            service = %cfg.name,
            error = %failure,
            source = ?failure.error_source(),
            "Not replayed"
        );
        if let Some(target) = failure.target() {
            let mut rec = self.record(item, cfg, svc, target.to_owned());
            rec.error = Some(failure.to_string());
            self.keep(rec);
        }
    }

    /// Diffs the shadow's answer against live's, learns noise from a
    /// sample, and keeps the record.
    async fn answered(
        &self,
        item: &CapturedExchange,
        cfg: &ServiceConfig,
        svc: &ServiceReplay,
        answer: ShadowAnswer,
    ) {
        let mut rec = self.record(item, cfg, svc, answer.target.to_string());
        let ms = answer.latency_ms;
        rec.shadow_status = Some(answer.status);
        rec.shadow_latency_ms = Some(ms);
        rec.shadow_headers = answer.headers;
        rec.shadow_body = cut(&answer.body);
        svc.stats
            .replayed(answer.status, rec.live_latency_ms.map(|l| ms - l));
        if let Some(resp) = item.exchange.response.as_ref() {
            let live_side = diff::Side {
                status: resp.status,
                headers: rec.live_headers.clone(),
                body: &resp.body,
                latency_ms: rec.live_latency_ms.unwrap_or(0.0),
            };
            let shadow_side = diff::Side {
                status: answer.status,
                headers: rec.shadow_headers.clone(),
                body: &answer.body,
                latency_ms: ms,
            };
            rec.diffs = diff::compare(&live_side, &shadow_side, &cfg.diff.options);
            svc.diff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .engine(&rec.target)
                .record(&rec.route, item.id, &rec.diffs);
            diff::publish(&cfg.name, &rec.route, &rec.diffs);
            if !rec.diffs.is_empty() {
                rec.kernel = self
                    .kernel_context
                    .as_ref()
                    .and_then(|k| k.context(&answer.target));
            }
            // A streamed body was not kept, so it cannot be sent again.
            if item.stream.is_none() && learn::sampled(item.id, cfg.diff.noise_fraction) {
                // With a baseline (live version) the reference is live's
                // answer; without one, the shadow's first.
                let (to, reference) = match &cfg.diff.baseline {
                    Some(b) => (b, &live_side),
                    None => (&answer.target, &shadow_side),
                };
                let probe = learn::Probe {
                    to,
                    target: &answer.target,
                    reference,
                    route: &rec.route,
                };
                learn::probe(&svc.client, item, cfg, svc, probe).await;
            }
        }
        self.keep(rec);
    }
}

/// A request the stack took: what it was, under which rules, and its answer.
type Offered = (Arc<CapturedExchange>, Arc<ServiceConfig>, stack::Answer);

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
