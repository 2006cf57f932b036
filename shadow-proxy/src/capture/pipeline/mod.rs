//! The capture thread: perf buffers -> packets -> TCP streams -> HTTP
//! exchanges -> the bounded replay queue.
//!
//! It runs on its own OS thread so that nothing here can hold up the tokio
//! runtime, and it never blocks on the replayer: a full queue drops the
//! exchange and counts it.

use std::{
    collections::{HashMap, VecDeque},
    os::fd::{AsFd, AsRawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::MapData;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use shadow_common::capture::kind;

use super::{
    packet::{self, DecodeError},
    reassembly::{Direction, FlowEvent, FlowKey, FlowTable, ReassemblyConfig},
    ring::{PerfRing, RingEvent},
};
use crate::{
    http::conversation::{BodyEvent, Conversation, Exchange, Limits},
    metrics::service::ServiceStats,
    metrics::{names, reason::Drop},
};

pub mod stream;

/// A finished exchange of a sampled connection, on its way to the replayer.
/// A request whose body streams ([`Limits::stream_body_over`]) leaves
/// earlier, once its head is read: `exchange` has no response yet, and
/// `stream` carries its body and, later, the live exchange.
#[derive(Debug, Clone)]
pub struct CapturedExchange {
    /// Unique within this agent's life.
    pub id: u64,
    pub service_port: u16,
    pub flow: FlowKey,
    pub exchange: Exchange,
    pub stream: Option<Arc<stream::BodyStream>>,
}

/// A request body over this many bytes streams to the shadow as it is
/// captured instead of being held whole.
pub const STREAM_BODY_OVER: usize = 1 << 20;

pub struct PipelineConfig {
    pub reassembly: ReassemblyConfig,
    pub limits: Limits,
    /// Pages per CPU of the perf ring (a power of two).
    pub perf_pages: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            reassembly: ReassemblyConfig::default(),
            limits: Limits {
                stream_body_over: Some(STREAM_BODY_OVER),
                ..Limits::default()
            },
            perf_pages: super::config::host_ring_mib() * 256,
        }
    }
}

/// Counters the capture thread shares with the agent.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub samples: AtomicU64,
    pub lost: AtomicU64,
    pub truncated: AtomicU64,
    /// Copied from the flow table after each batch.
    pub out_of_order_segments: AtomicU64,
    pub retransmitted_bytes: AtomicU64,
    pub flows: AtomicU64,
    pub buffered_bytes: AtomicU64,
}

/// A serialisable copy of [`PipelineCounters`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PipelineView {
    pub samples: u64,
    pub lost: u64,
    pub truncated: u64,
    pub out_of_order_segments: u64,
    pub retransmitted_bytes: u64,
    pub flows: u64,
    pub buffered_bytes: u64,
}

impl PipelineCounters {
    pub fn view(&self) -> PipelineView {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PipelineView {
            samples: l(&self.samples),
            lost: l(&self.lost),
            truncated: l(&self.truncated),
            out_of_order_segments: l(&self.out_of_order_segments),
            retransmitted_bytes: l(&self.retransmitted_bytes),
            flows: l(&self.flows),
            buffered_bytes: l(&self.buffered_bytes),
        }
    }
}

/// Per-flow HTTP state.
struct FlowConv {
    conv: Conversation,
    stats: Arc<ServiceStats>,
    /// The request body streaming now, while the replayer reads it.
    feed: Option<stream::BodyFeed>,
    /// Streamed requests in order, waiting for their live exchange (`None`
    /// for one the queue refused).
    waiting: VecDeque<Option<oneshot::Sender<Exchange>>>,
}

impl FlowConv {
    /// Hands streamed bodies on: a head goes to the replayer at once, its
    /// pieces to the shadow request as they come. Never waits.
    fn stream(&mut self, key: &FlowKey, tx: &mpsc::Sender<CapturedExchange>, next_id: &mut u64) {
        for event in self.conv.take_streamed() {
            match event {
                BodyEvent::Begin { request, length } => {
                    let (feed, live, body) = stream::channel(length);
                    *next_id += 1;
                    let item = CapturedExchange {
                        id: *next_id,
                        service_port: key.server.port(),
                        flow: *key,
                        exchange: Exchange {
                            request,
                            response: None,
                        },
                        stream: Some(Arc::new(body)),
                    };
                    self.feed = None;
                    match tx.try_send(item) {
                        Ok(()) => {
                            self.feed = Some(feed);
                            self.waiting.push_back(Some(live));
                        }
                        Err(e) => {
                            self.stats.not_replayed(match e {
                                mpsc::error::TrySendError::Full(_) => Drop::QueueFull,
                                mpsc::error::TrySendError::Closed(_) => Drop::ShuttingDown,
                            });
                            self.waiting.push_back(None);
                        }
                    }
                }
                BodyEvent::Data(piece) => {
                    let pushed = self.feed.as_ref().map(|f| f.push(piece));
                    if matches!(pushed, Some(stream::Push::Overrun | stream::Push::Closed)) {
                        // An overrun is counted by the replayer, which
                        // sees the shadow request fail.
                        self.feed = None;
                    }
                }
                BodyEvent::End => {
                    if let Some(feed) = self.feed.take() {
                        feed.end();
                    }
                }
            }
        }
    }
}

struct Pipeline {
    table: FlowTable,
    convs: HashMap<FlowKey, FlowConv>,
    services: HashMap<u16, Arc<ServiceStats>>,
    limits: Limits,
    tx: mpsc::Sender<CapturedExchange>,
    next_id: u64,
    counters: Arc<PipelineCounters>,
    events: Vec<FlowEvent>,
    /// `SHADOW_CAPTURE_DUMP=FILE` writes every raw sample there (debugging).
    dump: Option<std::fs::File>,
    /// A packet's head waiting for its tail record.
    partial: Option<(shadow_common::capture::PacketMeta, Vec<u8>)>,
    /// Flows whose request body is streaming now.
    streaming: std::collections::HashSet<FlowKey>,
}

impl Pipeline {
    /// Takes the sample: its payload goes on as a slice of it, uncopied.
    fn on_sample(&mut self, sample: Vec<u8>) {
        self.counters.samples.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = self.dump.as_mut() {
            use std::io::Write as _;
            let _ = f.write_all(&(sample.len() as u32).to_le_bytes());
            let _ = f.write_all(&sample);
        }
        let meta_len = std::mem::size_of::<shadow_common::capture::PacketMeta>();
        let meta = match packet::split(&sample) {
            Ok((meta, _)) => meta,
            Err(error) => return tracing::warn!(%error, "Undecodable capture sample"),
        };
        let captured = |meta: &shadow_common::capture::PacketMeta, len: usize| {
            meta_len + (meta.captured_len as usize).min(len - meta_len)
        };
        let decoded = if meta.kind == kind::PACKET && meta.tail_len > 0 {
            // A packet larger than one sample: wait for its tail record,
            // which the same CPU wrote right after it.
            if self.partial.is_some() {
                self.counters.truncated.fetch_add(1, Ordering::Relaxed);
            }
            let mut head = sample;
            head.truncate(captured(&meta, head.len()));
            self.partial = Some((meta, head));
            return;
        } else if meta.kind == kind::TAIL {
            match self.partial.take() {
                Some((head_meta, mut head)) if head_meta.ts_ns == meta.ts_ns => {
                    head.extend_from_slice(&sample[meta_len..captured(&meta, sample.len())]);
                    packet::decode_parts(head_meta, Bytes::from(head).slice(meta_len..))
                }
                _ => {
                    self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        } else {
            packet::decode_parts(meta, Bytes::from(sample).slice(meta_len..))
        };
        match decoded {
            Ok((_, pkt)) => self.table.push(pkt, &mut self.events),
            Err(DecodeError::Truncated { .. }) => {
                // The flow's stream now has a hole; reassembly drops it
                // with a reason when it closes or expires.
                self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::CAPTURE_TRUNCATED).increment(1);
            }
            Err(error) => tracing::warn!(%error, "Undecodable capture sample"),
        }
        self.drain_events();
    }

    /// Whether a streamed body's queue is nearly full: its shadow request
    /// is behind, so reading on would overrun it.
    fn crowded(&self) -> bool {
        self.streaming.iter().any(|k| {
            self.convs
                .get(k)
                .and_then(|fc| fc.feed.as_ref())
                .is_some_and(stream::BodyFeed::crowded)
        })
    }

    fn drain_events(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        let now = crate::util::monotonic_ns();
        for ev in events.drain(..) {
            self.on_event(ev, now);
        }
        self.events = events;
    }

    fn on_event(&mut self, ev: FlowEvent, now: u64) {
        match ev {
            FlowEvent::Opened { key } => {
                if let Some(stats) = self.services.get(&key.server.port()) {
                    self.convs.insert(
                        key,
                        FlowConv {
                            conv: Conversation::new(self.limits),
                            stats: stats.clone(),
                            feed: None,
                            waiting: VecDeque::new(),
                        },
                    );
                }
            }
            FlowEvent::Data { key, dir, bytes } => {
                let Some(fc) = self.convs.get_mut(&key) else {
                    return;
                };
                let res = match dir {
                    Direction::ToServer => fc.conv.on_request(bytes, now),
                    Direction::ToClient => fc.conv.on_response(bytes, now),
                };
                fc.stream(&key, &self.tx, &mut self.next_id);
                if fc.feed.is_some() {
                    self.streaming.insert(key);
                } else {
                    self.streaming.remove(&key);
                }
                if let Err(error) = res {
                    tracing::debug!(%error, flow = ?key, "HTTP parse failed; dropping flow");
                    fc.stats.flow_dropped(&error);
                    self.finish(&key, false);
                    return;
                }
                self.emit(&key);
            }
            FlowEvent::Closed { key, .. } => {
                if let Some(fc) = self.convs.get_mut(&key) {
                    fc.conv.on_close(now);
                    fc.stats.flow_reassembled();
                }
                self.finish(&key, true);
            }
            FlowEvent::Dropped { key, reason } => {
                if let Some(fc) = self.convs.get(&key) {
                    fc.stats.flow_dropped(reason);
                } else if let Some(stats) = self.services.get(&key.server.port()) {
                    stats.flow_dropped(reason);
                }
                self.finish(&key, false);
            }
        }
    }

    /// Emits what completed and forgets the flow. Requests still waiting
    /// for their live response when a flow is dropped are counted.
    fn finish(&mut self, key: &FlowKey, closed_cleanly: bool) {
        self.emit(key);
        self.streaming.remove(key);
        if let Some(fc) = self.convs.remove(key) {
            for _ in 0..fc.conv.pending() {
                fc.stats.not_replayed(if closed_cleanly {
                    Drop::NoLiveResponse
                } else {
                    Drop::FlowDropped
                });
            }
        }
    }

    fn emit(&mut self, key: &FlowKey) {
        let Some(fc) = self.convs.get_mut(key) else {
            return;
        };
        for exchange in fc.conv.take_exchanges() {
            fc.stats.request_parsed();
            if exchange.request.streamed {
                // Already with the replayer, which waits for this.
                if let Some(Some(live)) = fc.waiting.pop_front() {
                    let _ = live.send(exchange);
                }
                continue;
            }
            self.next_id += 1;
            let item = CapturedExchange {
                id: self.next_id,
                service_port: key.server.port(),
                flow: *key,
                exchange,
                stream: None,
            };
            match self.tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => fc.stats.not_replayed(Drop::QueueFull),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    fc.stats.not_replayed(Drop::ShuttingDown)
                }
            }
        }
    }
}

/// How often the capture thread reads the rings; a ring an eighth full
/// wakes it sooner.
const READ_INTERVAL_MS: i32 = 4;

/// At most this much is read from one ring before what was read is
/// processed: bounds the batch in memory, and lets a streamed body's
/// reader keep up with a ring that filled in a burst.
const READ_BATCH_BYTES: usize = 1 << 20;

/// How long the capture thread leaves the rings unread while a streamed
/// body's shadow request catches up (the rings hold the burst meanwhile;
/// live is never waited on). Past this the stream overruns instead, so
/// that other flows' packets are not lost to a full ring.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// Starts the capture thread over the classifier's perf event array
/// `perf`, one ring per CPU. It stops when `stop` is set.
pub fn spawn(
    perf: MapData,
    services: HashMap<u16, Arc<ServiceStats>>,
    tx: mpsc::Sender<CapturedExchange>,
    stop: Arc<AtomicBool>,
    cfg: PipelineConfig,
    counters: Arc<PipelineCounters>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let cpus = aya::util::online_cpus().map_err(|(_, e)| e)?;
    let ring_bytes = cfg.perf_pages * crate::util::page_size();
    let watermark = u32::try_from(ring_bytes / 8).unwrap_or(u32::MAX);
    let mut rings = Vec::new();
    for cpu in cpus {
        let ring = PerfRing::open(cpu, cfg.perf_pages, watermark)?;
        ring.attach(perf.fd().as_fd(), cpu)?;
        rings.push(ring);
    }
    let mut pipeline = Pipeline {
        table: FlowTable::new(cfg.reassembly),
        convs: HashMap::new(),
        services,
        limits: cfg.limits,
        tx,
        next_id: 0,
        counters,
        events: Vec::new(),
        dump: std::env::var_os("SHADOW_CAPTURE_DUMP").and_then(|p| std::fs::File::create(p).ok()),
        partial: None,
        streaming: std::collections::HashSet::new(),
    };
    let handle = std::thread::Builder::new()
        .name("shadow-capture".into())
        .spawn(move || {
            // The array must outlive the rings it points at.
            let _perf = perf;
            run(&mut pipeline, &mut rings, &stop);
        })?;
    Ok(handle)
}

/// The capture timestamp: `PacketMeta::ts_ns`, the first field.
fn sample_ts(s: &[u8]) -> u64 {
    s.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn run(p: &mut Pipeline, buffers: &mut [PerfRing], stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = buffers
        .iter()
        .map(|b| libc::pollfd {
            fd: b.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut last_expire = Instant::now();
    let mut behind = false;
    let mut crowded_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if p.crowded() {
            let since = *crowded_since.get_or_insert_with(Instant::now);
            if since.elapsed() < MAX_CATCH_UP {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        } else {
            crowded_since = None;
        }
        // Sleeps unless a batch left records unread.
        let wait = if behind { 0 } else { READ_INTERVAL_MS };
        // SAFETY: `fds` is a valid array of pollfd for its length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        // A ring left with records unread bounds what may be processed:
        // nothing later than the last record read from it (a k-way merge
        // by capture time; the rest waits in `held`).
        let mut horizon = u64::MAX;
        for buf in buffers.iter_mut() {
            if !buf.readable() {
                continue;
            }
            let mut lost = 0u64;
            let mut last_ts = 0;
            buf.for_each(READ_BATCH_BYTES, |ev| match ev {
                RingEvent::Sample { head, tail } => {
                    // The one copy of a sample: out of the ring.
                    let mut v = Vec::with_capacity(head.len() + tail.len());
                    v.extend_from_slice(head);
                    v.extend_from_slice(tail);
                    // A packet's head is read with its tail record, which
                    // follows it in the same ring.
                    let whole = packet::split(&v)
                        .map_or(true, |(m, _)| m.kind != kind::PACKET || m.tail_len == 0);
                    last_ts = sample_ts(&v);
                    batch.push(v);
                    whole
                }
                RingEvent::Lost { count } => {
                    lost += count;
                    true
                }
            });
            if buf.readable() {
                horizon = horizon.min(last_ts);
            }
            if lost > 0 {
                p.counters.lost.fetch_add(lost, Ordering::Relaxed);
                metrics::counter!(names::CAPTURE_LOST).increment(lost);
            }
        }
        // Each CPU has its own buffer: merge them in capture order, so a
        // response is not seen before the request it answers.
        batch.sort_by_key(|s| sample_ts(s));
        let ready = batch.partition_point(|s| sample_ts(s) <= horizon);
        for s in batch.drain(..ready) {
            p.on_sample(s);
        }
        behind = buffers.iter().any(PerfRing::readable);
        let st = p.table.stats();
        let c = &p.counters;
        c.out_of_order_segments
            .store(st.out_of_order_segments, Ordering::Relaxed);
        c.retransmitted_bytes
            .store(st.retransmitted_bytes, Ordering::Relaxed);
        c.flows.store(p.table.flows() as u64, Ordering::Relaxed);
        c.buffered_bytes
            .store(p.table.buffered_bytes() as u64, Ordering::Relaxed);
        if last_expire.elapsed() >= Duration::from_millis(500) {
            last_expire = Instant::now();
            p.table.expire(crate::util::monotonic_ns(), &mut p.events);
            p.drain_events();
        }
    }
}

#[cfg(test)]
mod dump_replay;
