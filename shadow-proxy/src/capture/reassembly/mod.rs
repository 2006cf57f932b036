//! TCP stream reassembly and flow table for passively captured connections.
//!
//! The eBPF tc classifier samples connections and hands user space one
//! [`Packet`] per captured TCP segment (headers already parsed). Feeding them
//! to [`FlowTable::push`] yields [`FlowEvent`]s for the HTTP parser: `Opened`
//! when the client's SYN is seen, `Data` carrying newly contiguous bytes of one
//! direction (exactly once, in stream order, zero-copy slices of the captured
//! payloads), and one final `Closed` or `Dropped`. [`FlowTable::expire`] must be
//! called periodically (about once a second) to end idle flows.
//!
//! A flow that cannot be rebuilt exactly is dropped with a reason and counted,
//! never guessed at. Policies:
//! - Only a client SYN without ACK starts a flow; its sequence number + 1 is
//!   offset 0 of the client stream. Packets of flows never seen with a SYN are
//!   reported once as `Dropped { MidStream }`.
//! - The server stream needs the SYN-ACK for its ISN. Server segments seen
//!   before it are held (counted against the buffer caps) and replayed when it
//!   arrives; if it never does, the flow ends as `Dropped { MidStream }`.
//!   Inferring the ISN from client ACK numbers would be a guess.
//! - Overlaps: the first received copy of a byte wins. Bytes already delivered
//!   or already buffered are discarded and counted as `retransmitted_bytes`.
//! - A FIN ends its direction; `Closed { Fin }` follows once both directions
//!   are delivered up to their FINs. A hole that remains after the peer ACKed
//!   the FIN will never be retransmitted: once it has waited out a short
//!   grace period for late capture events, `expire` drops the flow as
//!   `GapAtClose`. Without that ACK a hole waits for the idle timeout
//!   (`IdleWithGap`).
//! - RST ends the flow at once: `Closed { Rst }`, or `GapAtClose` with holes.
//!   RSTs are not checked against the window. Data from another CPU's capture
//!   buffer that is read after the RST is lost; the caller should merge
//!   per-CPU batches by timestamp if that matters.
//! - A SYN with a new ISN for an open key (port reuse) ends the old flow as
//!   `Closed { Idle }`, or `GapAtClose` with holes, and opens a fresh one.
//! - Keys of ended or rejected flows are remembered (bounded by `max_flows`,
//!   expiring after the idle timeout) so their stragglers, like the last ACK,
//!   are ignored silently instead of being reported as mid-stream.
//!
//! Sequence numbers are mapped to u64 offsets relative to ISN + 1, choosing
//! the offset closest to the next expected byte, so both u32 wraparound and
//! streams longer than 4 GiB work.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

use tcp_flags::{ACK, FIN, RST, SYN};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// One captured TCP segment (payload only, headers already parsed).
#[derive(Clone, Debug)]
pub struct Packet {
    pub key: FlowKey,
    pub dir: Direction,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Bytes,
    pub ts_ns: u64,
}

impl Packet {
    /// Whether any of the given [`tcp_flags`] bits is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A new flow whose handshake (SYN from the client) was seen.
    Opened { key: FlowKey },
    /// Newly contiguous, in-order bytes of one direction (never re-delivered, never reordered).
    Data {
        key: FlowKey,
        dir: Direction,
        bytes: Bytes,
    },
    /// The flow ended normally (FIN both ways, or RST, or idle after FINs) and everything before the end was delivered.
    Closed { key: FlowKey, reason: CloseReason },
    /// The flow cannot be rebuilt; nothing more will be delivered for it.
    Dropped { key: FlowKey, reason: DropReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Fin,
    Rst,
    Idle,
}

impl CloseReason {
    /// Every reason, in the order used to index [`ReassemblyStats::closed_by_reason`].
    pub const ALL: [CloseReason; 3] = [Self::Fin, Self::Rst, Self::Idle];

    /// Snake-case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Idle => "idle",
        }
    }
}

/// Why a flow could not be rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("the handshake was not captured, so the stream start is unknown")]
    MidStream,
    #[error("the flow's out-of-order buffer exceeded its limit")]
    FlowBufferFull,
    #[error("the total out-of-order buffer exceeded its limit")]
    TotalBufferFull,
    #[error("the flow ended with bytes missing")]
    GapAtClose,
    #[error("the flow went idle with bytes missing")]
    IdleWithGap,
    #[error("the flow table is full")]
    TooManyFlows,
}

impl DropReason {
    /// Every reason, in the order used to index [`ReassemblyStats::dropped_by_reason`].
    pub const ALL: [DropReason; 6] = [
        Self::MidStream,
        Self::FlowBufferFull,
        Self::TotalBufferFull,
        Self::GapAtClose,
        Self::IdleWithGap,
        Self::TooManyFlows,
    ];

    /// Snake-case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MidStream => "mid_stream",
            Self::FlowBufferFull => "flow_buffer_full",
            Self::TotalBufferFull => "total_buffer_full",
            Self::GapAtClose => "gap_at_close",
            Self::IdleWithGap => "idle_with_gap",
            Self::TooManyFlows => "too_many_flows",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Out-of-order bytes one flow (both directions) may hold.
    pub max_flow_buffer: usize,
    /// Out-of-order bytes all flows together may hold.
    pub max_total_buffer: usize,
    /// Open flows; also bounds the memory of ended flow keys.
    pub max_flows: usize,
    pub idle_timeout_ns: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_flow_buffer: 8 << 20,
            max_total_buffer: 256 << 20,
            max_flows: 65_536,
            idle_timeout_ns: 60_000_000_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub packets: u64,
    /// `Opened` events.
    pub flows_opened: u64,
    /// `Closed` events.
    pub flows_closed: u64,
    /// `Dropped` events, including flows rejected before opening.
    pub flows_dropped: u64,
    pub bytes_delivered: u64,
    /// Payload bytes discarded because they were already delivered or buffered.
    pub retransmitted_bytes: u64,
    /// Segments that arrived ahead of the next expected byte.
    pub out_of_order_segments: u64,
    /// Flows dropped because their handshake was not captured.
    pub mid_stream_skipped: u64,
    /// Packets that belong to no open flow.
    pub ignored_packets: u64,
    /// `Closed` events indexed like [`CloseReason::ALL`].
    pub closed_by_reason: [u64; 3],
    /// `Dropped` events indexed like [`DropReason::ALL`].
    pub dropped_by_reason: [u64; 6],
}

/// How long a hole behind an acknowledged FIN may wait before the flow is
/// dropped. The hole is permanent unless the capture delivered the filling
/// segment late, which happens because per-CPU perf buffers are drained one
/// after another.
const ACKED_GAP_GRACE_NS: u64 = 1_000_000_000;

/// How a flow ends.
#[derive(Clone, Copy, Debug)]
enum End {
    Close(CloseReason),
    Drop(DropReason),
}

/// Where a stream hands its delivered bytes.
struct Sink<'a> {
    key: FlowKey,
    dir: Direction,
    out: &'a mut Vec<FlowEvent>,
    stats: &'a mut ReassemblyStats,
}

impl Sink<'_> {
    fn deliver(&mut self, bytes: Bytes) {
        self.stats.bytes_delivered += bytes.len() as u64;
        let (key, dir) = (self.key, self.dir);
        self.out.push(FlowEvent::Data { key, dir, bytes });
    }
}

/// One direction of a flow. Offsets count from ISN + 1.
struct Stream {
    isn: u32,
    /// Offset of the next byte to deliver.
    next: u64,
    /// Non-overlapping segments, all starting after `next`.
    pending: BTreeMap<u64, Bytes>,
    pending_bytes: usize,
    /// Offset of the FIN, i.e. the stream length.
    fin: Option<u64>,
    /// The peer acknowledged the FIN, so nothing before it will be resent.
    fin_acked: bool,
}

impl Stream {
    fn new(isn: u32) -> Self {
        Self {
            isn,
            next: 0,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            fin: None,
            fin_acked: false,
        }
    }

    /// The offset of `seq` nearest to `next`; negative before the stream start.
    fn offset(&self, seq: u32) -> i64 {
        let rel = seq.wrapping_sub(self.isn.wrapping_add(1));
        let delta = rel.wrapping_sub(self.next as u32) as i32;
        self.next as i64 + i64::from(delta)
    }

    fn complete(&self) -> bool {
        self.fin == Some(self.next)
    }

    fn has_gap(&self) -> bool {
        !self.pending.is_empty() || self.fin.is_some_and(|fin| fin > self.next)
    }

    fn accept(&mut self, seg: Segment, sink: &mut Sink) {
        let start = self.offset(seg.seq);
        if seg.fin {
            self.set_fin(start + seg.payload.len() as i64);
        }
        self.insert(start, seg.payload, sink);
    }

    fn note_ack(&mut self, ack: u32) {
        if let Some(fin) = self.fin {
            // The FIN itself takes one sequence number.
            self.fin_acked |= self.offset(ack) > fin as i64;
        }
    }

    /// Records the first plausible FIN; bytes buffered beyond it are bogus.
    fn set_fin(&mut self, at: i64) {
        let Ok(at) = u64::try_from(at) else { return };
        if self.fin.is_some() || at < self.next {
            return;
        }
        self.fin = Some(at);
        let beyond = self.pending.split_off(&at);
        self.pending_bytes -= beyond.values().map(Bytes::len).sum::<usize>();
        if let Some(mut last) = self.pending.last_entry() {
            let keep = (at - *last.key()) as usize;
            self.pending_bytes -= last.get().len().saturating_sub(keep);
            last.get_mut().truncate(keep);
        }
    }

    fn insert(&mut self, start: i64, mut payload: Bytes, sink: &mut Sink) {
        let next = self.next as i64;
        if start < next {
            let stale =
                usize::try_from(next - start).map_or(payload.len(), |n| n.min(payload.len()));
            sink.stats.retransmitted_bytes += stale as u64;
            payload = payload.slice(stale..);
        }
        let start = start.max(next) as u64;
        if let Some(fin) = self.fin {
            payload.truncate(usize::try_from(fin.saturating_sub(start)).unwrap_or(usize::MAX));
        }
        if payload.is_empty() {
            return;
        }
        if start == self.next && self.pending.is_empty() {
            // Fast path: hand the captured buffer straight through.
            self.next += payload.len() as u64;
            sink.deliver(payload);
            return;
        }
        if start > self.next {
            sink.stats.out_of_order_segments += 1;
        }
        self.fill(start, payload, sink.stats);
        self.drain(sink);
    }

    /// Buffers only the parts of `payload` not buffered yet, so the first
    /// received copy of every byte wins and segments never overlap.
    fn fill(&mut self, start: u64, payload: Bytes, stats: &mut ReassemblyStats) {
        let end = start + payload.len() as u64;
        let before = self.pending.range(..start).next_back();
        let mut cursor = before.map_or(start, |(&k, b)| (k + b.len() as u64).max(start));
        let mut fresh = 0;
        while cursor < end {
            let seg = self.pending.range(cursor..end).next();
            let seg = seg.map(|(&k, b)| (k, k + b.len() as u64));
            let gap_end = seg.map_or(end, |(k, _)| k);
            if gap_end > cursor {
                let piece = payload.slice((cursor - start) as usize..(gap_end - start) as usize);
                fresh += piece.len();
                self.pending.insert(cursor, piece);
            }
            cursor = seg.map_or(end, |(_, seg_end)| seg_end);
        }
        self.pending_bytes += fresh;
        stats.retransmitted_bytes += (payload.len() - fresh) as u64;
    }

    fn drain(&mut self, sink: &mut Sink) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let bytes = entry.remove();
            self.pending_bytes -= bytes.len();
            self.next += bytes.len() as u64;
            sink.deliver(bytes);
        }
    }
}

/// What a segment contributes to its stream.
struct Segment {
    seq: u32,
    payload: Bytes,
    fin: bool,
}

struct Flow {
    to_server: Stream,
    /// Unknown until the SYN-ACK is seen.
    to_client: Option<Stream>,
    /// Server segments waiting for the SYN-ACK, which per-CPU capture
    /// buffers may deliver late.
    early: Vec<Segment>,
    early_bytes: usize,
    last_ts: u64,
    /// When a peer first acknowledged a FIN with bytes before it missing.
    stuck_since: Option<u64>,
}

impl Flow {
    fn new(client_isn: u32, ts: u64) -> Self {
        Self {
            to_server: Stream::new(client_isn),
            to_client: None,
            early: Vec::new(),
            early_bytes: 0,
            last_ts: ts,
            stuck_since: None,
        }
    }

    fn streams(&self) -> impl Iterator<Item = &Stream> {
        std::iter::once(&self.to_server).chain(&self.to_client)
    }

    fn buffered(&self) -> usize {
        self.early_bytes + self.streams().map(|s| s.pending_bytes).sum::<usize>()
    }

    fn end_with(&self, clean: CloseReason, gap: DropReason) -> End {
        if !self.early.is_empty() {
            End::Drop(DropReason::MidStream)
        } else if self.streams().any(Stream::has_gap) {
            End::Drop(gap)
        } else {
            End::Close(clean)
        }
    }

    /// How `expire` at `now` ends this flow, if it does.
    fn expiry(&self, now: u64, timeout: u64, grace: u64) -> Option<End> {
        if self
            .stuck_since
            .is_some_and(|t| now.saturating_sub(t) > grace)
        {
            return Some(End::Drop(DropReason::GapAtClose));
        }
        let idle = now.saturating_sub(self.last_ts) > timeout;
        idle.then(|| self.end_with(CloseReason::Idle, DropReason::IdleWithGap))
    }

    fn on_packet(&mut self, pkt: Packet, sink: &mut Sink) -> Option<End> {
        self.last_ts = self.last_ts.max(pkt.ts_ns);
        if pkt.has(RST) {
            return Some(self.end_with(CloseReason::Rst, DropReason::GapAtClose));
        }
        let peer = match pkt.dir {
            Direction::ToServer => self.to_client.as_mut(),
            Direction::ToClient => Some(&mut self.to_server),
        };
        if let Some(peer) = peer.filter(|_| pkt.has(ACK)) {
            peer.note_ack(pkt.ack);
        }
        // A SYN takes one sequence number; TCP Fast Open data follows it.
        let syn = pkt.has(SYN);
        let seq = pkt.seq.wrapping_add(u32::from(syn));
        let seg = Segment {
            seq,
            payload: pkt.payload,
            fin: pkt.flags & FIN != 0,
        };
        match pkt.dir {
            Direction::ToServer => self.to_server.accept(seg, sink),
            Direction::ToClient if syn && pkt.flags & ACK != 0 => self.syn_ack(pkt.seq, seg, sink),
            Direction::ToClient => self.server_segment(seg, sink),
        }
        self.settled(pkt.ts_ns)
    }

    fn syn_ack(&mut self, isn: u32, seg: Segment, sink: &mut Sink) {
        if self.to_client.is_none() {
            let mut stream = Stream::new(isn);
            for early in self.early.drain(..) {
                stream.accept(early, sink);
            }
            self.early_bytes = 0;
            self.to_client = Some(stream);
        }
        self.server_segment(seg, sink);
    }

    fn server_segment(&mut self, seg: Segment, sink: &mut Sink) {
        match &mut self.to_client {
            Some(stream) => stream.accept(seg, sink),
            None if seg.fin || !seg.payload.is_empty() => {
                self.early_bytes += seg.payload.len();
                self.early.push(seg);
            }
            None => {}
        }
    }

    /// Whether both FINs are delivered; notes when a gap became permanent.
    fn settled(&mut self, ts: u64) -> Option<End> {
        let to_client = self.to_client.as_ref();
        if self.to_server.complete() && to_client.is_some_and(Stream::complete) {
            return Some(End::Close(CloseReason::Fin));
        }
        let stuck = |s: &Stream| s.fin_acked && !s.complete();
        if stuck(&self.to_server) || to_client.is_some_and(stuck) {
            self.stuck_since.get_or_insert(ts);
        } else {
            self.stuck_since = None;
        }
        None
    }
}

/// Memory of a key whose packets are ignored.
#[derive(Clone, Copy, Debug)]
struct Tomb {
    last_ts: u64,
    /// Client ISN of the ended flow, to recognise its late SYN duplicates.
    isn: Option<u32>,
}

/// Keys of ended, rejected or mid-stream flows. Two generations bound the
/// memory with O(1) amortised eviction while keeping recently active keys.
struct Tombstones {
    young: HashMap<FlowKey, Tomb>,
    old: HashMap<FlowKey, Tomb>,
    per_generation: usize,
}

impl Tombstones {
    fn new(capacity: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            per_generation: (capacity / 2).max(1),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Looks up `key`, marking it active at `ts`.
    fn refresh(&mut self, key: &FlowKey, ts: u64) -> Option<Tomb> {
        if let Some(tomb) = self.young.get_mut(key) {
            tomb.last_ts = tomb.last_ts.max(ts);
            return Some(*tomb);
        }
        let mut tomb = self.old.remove(key)?;
        tomb.last_ts = tomb.last_ts.max(ts);
        self.insert(*key, tomb);
        Some(tomb)
    }

    fn insert(&mut self, key: FlowKey, tomb: Tomb) {
        self.old.remove(&key);
        if self.young.len() >= self.per_generation && !self.young.contains_key(&key) {
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
        self.young.insert(key, tomb);
    }

    fn remove(&mut self, key: &FlowKey) {
        self.young.remove(key);
        self.old.remove(key);
    }

    fn prune(&mut self, now_ns: u64, timeout_ns: u64) {
        let live = |_: &FlowKey, t: &mut Tomb| now_ns.saturating_sub(t.last_ts) <= timeout_ns;
        self.young.retain(live);
        self.old.retain(live);
    }
}

/// All tracked flows; see the module docs for the policies.
pub struct FlowTable {
    cfg: ReassemblyConfig,
    flows: HashMap<FlowKey, Flow>,
    ended: Tombstones,
    buffered: usize,
    stats: ReassemblyStats,
}

impl FlowTable {
    pub fn new(cfg: ReassemblyConfig) -> Self {
        Self {
            cfg,
            flows: HashMap::new(),
            ended: Tombstones::new(cfg.max_flows),
            buffered: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// Feeds one packet; appends resulting events to `out`.
    pub fn push(&mut self, pkt: Packet, out: &mut Vec<FlowEvent>) {
        self.stats.packets += 1;
        if pkt.dir == Direction::ToServer && pkt.has(SYN) && !pkt.has(ACK) {
            self.on_syn(pkt, out);
        } else {
            self.on_flow_packet(pkt, out);
        }
    }

    /// Ends flows idle for longer than the timeout at time `now_ns`.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<FlowEvent>) {
        let timeout = self.cfg.idle_timeout_ns;
        let grace = ACKED_GAP_GRACE_NS.min(timeout);
        self.ended.prune(now_ns, timeout);
        let due = self.flows.iter().filter_map(|(key, flow)| {
            let end = flow.expiry(now_ns, timeout, grace)?;
            Some((*key, end))
        });
        for (key, end) in due.collect::<Vec<_>>() {
            if let Some(flow) = self.flows.remove(&key) {
                self.finish(key, flow, end, now_ns, out);
            }
        }
    }

    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Out-of-order bytes held by all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn on_syn(&mut self, pkt: Packet, out: &mut Vec<FlowEvent>) {
        let key = pkt.key;
        match self.flows.get(&key) {
            Some(flow) if flow.to_server.isn == pkt.seq => return self.on_flow_packet(pkt, out),
            Some(_) => self.supersede(key, pkt.ts_ns, out),
            None => {}
        }
        let tomb = self.ended.refresh(&key, pkt.ts_ns);
        if tomb.is_some_and(|t| t.isn == Some(pkt.seq)) {
            // A late duplicate SYN of a flow that already ended or was rejected.
            self.stats.ignored_packets += 1;
            return;
        }
        if self.flows.len() >= self.cfg.max_flows {
            let tomb = Tomb {
                last_ts: pkt.ts_ns,
                isn: Some(pkt.seq),
            };
            self.ended.insert(key, tomb);
            return self.report_drop(key, DropReason::TooManyFlows, out);
        }
        self.ended.remove(&key);
        self.flows.insert(key, Flow::new(pkt.seq, pkt.ts_ns));
        self.stats.flows_opened += 1;
        out.push(FlowEvent::Opened { key });
        self.on_flow_packet(pkt, out);
    }

    /// Port reuse: the old connection is gone although we never saw it end.
    fn supersede(&mut self, key: FlowKey, now_ns: u64, out: &mut Vec<FlowEvent>) {
        if let Some(old) = self.flows.remove(&key) {
            let end = old.end_with(CloseReason::Idle, DropReason::GapAtClose);
            self.finish(key, old, end, now_ns, out);
        }
    }

    fn on_flow_packet(&mut self, pkt: Packet, out: &mut Vec<FlowEvent>) {
        let (key, ts) = (pkt.key, pkt.ts_ns);
        let Some(flow) = self.flows.get_mut(&key) else {
            self.on_stray(pkt, out);
            return;
        };
        let before = flow.buffered();
        let mut sink = Sink {
            key,
            dir: pkt.dir,
            out: &mut *out,
            stats: &mut self.stats,
        };
        let end = flow.on_packet(pkt, &mut sink);
        let after = flow.buffered();
        self.buffered = self.buffered - before + after;
        let end = end.or_else(|| self.over_limit(after));
        if let Some(end) = end
            && let Some(flow) = self.flows.remove(&key)
        {
            self.finish(key, flow, end, ts, out);
        }
    }

    fn over_limit(&self, flow_bytes: usize) -> Option<End> {
        if flow_bytes > self.cfg.max_flow_buffer {
            Some(End::Drop(DropReason::FlowBufferFull))
        } else if self.buffered > self.cfg.max_total_buffer {
            Some(End::Drop(DropReason::TotalBufferFull))
        } else {
            None
        }
    }

    /// A packet of no open flow.
    fn on_stray(&mut self, pkt: Packet, out: &mut Vec<FlowEvent>) {
        self.stats.ignored_packets += 1;
        // Stragglers of known keys, and RSTs, carry nothing worth reporting.
        if self.ended.refresh(&pkt.key, pkt.ts_ns).is_some() || pkt.has(RST) {
            return;
        }
        self.ended.insert(
            pkt.key,
            Tomb {
                last_ts: pkt.ts_ns,
                isn: None,
            },
        );
        self.report_drop(pkt.key, DropReason::MidStream, out);
    }

    fn finish(
        &mut self,
        key: FlowKey,
        flow: Flow,
        end: End,
        now_ns: u64,
        out: &mut Vec<FlowEvent>,
    ) {
        self.buffered -= flow.buffered();
        let last_ts = now_ns.max(flow.last_ts);
        self.ended.insert(
            key,
            Tomb {
                last_ts,
                isn: Some(flow.to_server.isn),
            },
        );
        match end {
            End::Close(reason) => {
                self.stats.flows_closed += 1;
                self.stats.closed_by_reason[reason as usize] += 1;
                out.push(FlowEvent::Closed { key, reason });
            }
            End::Drop(reason) => self.report_drop(key, reason, out),
        }
    }

    fn report_drop(&mut self, key: FlowKey, reason: DropReason, out: &mut Vec<FlowEvent>) {
        self.stats.flows_dropped += 1;
        self.stats.dropped_by_reason[reason as usize] += 1;
        if reason == DropReason::MidStream {
            self.stats.mid_stream_skipped += 1;
        }
        out.push(FlowEvent::Dropped { key, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tcp_flags::PSH;

    const C: Direction = Direction::ToServer;
    const S: Direction = Direction::ToClient;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            client: SocketAddr::from(([10, 0, 0, 1], port)),
            server: SocketAddr::from(([10, 0, 0, 2], 80)),
        }
    }

    fn table() -> FlowTable {
        FlowTable::new(ReassemblyConfig::default())
    }

    /// Builds the packets of one connection.
    struct Conn {
        key: FlowKey,
        cisn: u32,
        sisn: u32,
        ts: u64,
    }

    impl Conn {
        fn new(port: u16, cisn: u32, sisn: u32) -> Self {
            Self {
                key: key(port),
                cisn,
                sisn,
                ts: 0,
            }
        }

        fn raw(&self, dir: Direction, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Packet {
            let payload = Bytes::copy_from_slice(payload);
            Packet {
                key: self.key,
                dir,
                seq,
                ack,
                flags,
                payload,
                ts_ns: self.ts,
            }
        }

        fn isns(&self, dir: Direction) -> (u32, u32) {
            match dir {
                C => (self.cisn, self.sisn),
                S => (self.sisn, self.cisn),
            }
        }

        /// A segment at stream offset `off` that acknowledges nothing of the peer's data.
        fn seg(&self, dir: Direction, off: usize, flags: u8, payload: &[u8]) -> Packet {
            let (own, peer) = self.isns(dir);
            let seq = own.wrapping_add(1).wrapping_add(off as u32);
            self.raw(dir, seq, peer.wrapping_add(1), flags | ACK, payload)
        }

        fn data(&self, dir: Direction, off: usize, payload: &[u8]) -> Packet {
            self.seg(dir, off, PSH, payload)
        }

        fn fin(&self, dir: Direction, off: usize) -> Packet {
            self.seg(dir, off, FIN, b"")
        }

        fn syn(&self) -> Packet {
            self.raw(C, self.cisn, 0, SYN, b"")
        }

        fn syn_ack(&self) -> Packet {
            self.raw(S, self.sisn, self.cisn.wrapping_add(1), SYN | ACK, b"")
        }

        fn open(&self, t: &mut FlowTable) -> Vec<FlowEvent> {
            feed(t, [self.syn(), self.syn_ack()])
        }
    }

    fn feed(t: &mut FlowTable, pkts: impl IntoIterator<Item = Packet>) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        pkts.into_iter().for_each(|p| t.push(p, &mut out));
        out
    }

    fn stream(events: &[FlowEvent], want: Direction) -> Vec<u8> {
        let mut bytes = Vec::new();
        for ev in events {
            if let FlowEvent::Data { dir, bytes: b, .. } = ev
                && *dir == want
            {
                bytes.extend_from_slice(b);
            }
        }
        bytes
    }

    fn ends(events: &[FlowEvent]) -> Vec<FlowEvent> {
        let is_end =
            |e: &&FlowEvent| matches!(e, FlowEvent::Closed { .. } | FlowEvent::Dropped { .. });
        events.iter().filter(is_end).cloned().collect()
    }

    fn closed(c: &Conn, reason: CloseReason) -> FlowEvent {
        FlowEvent::Closed { key: c.key, reason }
    }

    fn dropped(c: &Conn, reason: DropReason) -> FlowEvent {
        FlowEvent::Dropped { key: c.key, reason }
    }

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// buffered_bytes() must equal what the streams actually hold.
    fn check_accounting(t: &FlowTable) {
        let mut total = 0;
        for f in t.flows.values() {
            let early: usize = f.early.iter().map(|e| e.payload.len()).sum();
            assert_eq!(f.early_bytes, early);
            total += early;
        }
        for s in t.flows.values().flat_map(Flow::streams) {
            assert_eq!(
                s.pending_bytes,
                s.pending.values().map(Bytes::len).sum::<usize>()
            );
            total += s.pending_bytes;
        }
        assert_eq!(t.buffered_bytes(), total);
    }

    #[test]
    fn in_order_segments_are_delivered_at_once_without_copying() {
        let (mut t, c) = (table(), Conn::new(1, 1000, 5000));
        assert_eq!(c.open(&mut t), vec![FlowEvent::Opened { key: c.key }]);
        let req = body(700);
        for (i, chunk) in req.chunks(7).enumerate() {
            let pkt = c.data(C, i * 7, chunk);
            let ptr = pkt.payload.as_ptr();
            let ev = feed(&mut t, [pkt]);
            let [FlowEvent::Data { dir: C, bytes, .. }] = ev.as_slice() else {
                panic!("{ev:?}")
            };
            assert_eq!((bytes.as_ptr(), bytes.as_ref()), (ptr, chunk));
        }
        let resp = body(300);
        let ev = feed(
            &mut t,
            resp.chunks(100)
                .enumerate()
                .map(|(i, b)| c.data(S, i * 100, b)),
        );
        assert_eq!(stream(&ev, S), resp);
        let st = t.stats();
        assert_eq!(
            (
                st.bytes_delivered,
                st.out_of_order_segments,
                st.retransmitted_bytes
            ),
            (1000, 0, 0)
        );
        assert_eq!(t.buffered_bytes(), 0);
    }

    #[test]
    fn reverse_order_delivers_identical_stream_when_hole_fills() {
        let (mut t, c) = (table(), Conn::new(1, 1000, 5000));
        c.open(&mut t);
        let req = body(100);
        let mut segs: Vec<_> = req
            .chunks(10)
            .enumerate()
            .map(|(i, b)| c.data(C, i * 10, b))
            .collect();
        segs.reverse();
        let first = segs.pop().expect("ten segments");
        assert_eq!(feed(&mut t, segs), vec![]);
        assert_eq!(t.buffered_bytes(), 90);
        let ev = feed(&mut t, [first]);
        assert_eq!(ev.len(), 10);
        assert_eq!(stream(&ev, C), req);
        assert_eq!(
            (t.buffered_bytes(), t.stats().out_of_order_segments),
            (0, 9)
        );
        check_accounting(&t);
    }

    #[test]
    fn retransmits_and_overlaps_are_trimmed_first_copy_wins() {
        let (mut t, c) = (table(), Conn::new(1, 1000, 5000));
        c.open(&mut t);
        let mut ev = feed(
            &mut t,
            [c.data(C, 0, b"0123456789"), c.data(C, 20, b"KLMNOPQRST")],
        );
        // Overlaps delivered 5..10, fills 10..20, disagrees with buffered 20..25.
        ev.extend(feed(&mut t, [c.data(C, 5, b"56789abcdefghijxxxxx")]));
        assert_eq!(stream(&ev, C), b"0123456789abcdefghijKLMNOPQRST");
        assert_eq!(t.stats().retransmitted_bytes, 10);
        assert_eq!(feed(&mut t, [c.data(C, 0, &stream(&ev, C))]), vec![]);
        assert_eq!(t.stats().retransmitted_bytes, 40);
        // Buffered segments overlapping each other, then one spanning both.
        ev = feed(
            &mut t,
            [c.data(C, 40, b"ABCDEFGHIJ"), c.data(C, 45, b"zzzzzKLMNO")],
        );
        assert_eq!((ev.len(), t.buffered_bytes()), (0, 15));
        let spanning = [b"--".as_slice(), &[b'y'; 24]].concat();
        ev = feed(&mut t, [c.data(C, 32, &spanning), c.data(C, 30, b"!!")]);
        assert_eq!(stream(&ev, C), b"!!--yyyyyyABCDEFGHIJKLMNOyyy");
        assert_eq!(t.stats().retransmitted_bytes, 40 + 5 + 15);
        check_accounting(&t);
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let (mut t, c) = (table(), Conn::new(1, u32::MAX - 3, u32::MAX));
        let mut ev = c.open(&mut t);
        let req = body(50);
        let mut segs: Vec<_> = req
            .chunks(5)
            .enumerate()
            .map(|(i, b)| c.data(C, i * 5, b))
            .collect();
        segs.swap(0, 1);
        segs.swap(4, 7);
        ev.extend(feed(&mut t, segs));
        ev.extend(feed(&mut t, [c.data(S, 3, b"defgh"), c.data(S, 0, b"abc")]));
        ev.extend(feed(&mut t, [c.fin(C, 50), c.fin(S, 8)]));
        assert_eq!(
            (stream(&ev, C), stream(&ev, S)),
            (req, b"abcdefgh".to_vec())
        );
        assert_eq!(ends(&ev), vec![closed(&c, CloseReason::Fin)]);
    }

    #[test]
    fn fin_both_ways_closes_once_and_stragglers_are_ignored() {
        let (mut t, c) = (table(), Conn::new(1, 7, 9));
        c.open(&mut t);
        let ev = feed(
            &mut t,
            [
                c.data(C, 0, b"GET"),
                c.fin(C, 3),
                c.data(S, 0, b"OK"),
                c.fin(S, 2),
            ],
        );
        assert_eq!(ev.last(), Some(&closed(&c, CloseReason::Fin)));
        assert_eq!(
            (stream(&ev, C), stream(&ev, S)),
            (b"GET".to_vec(), b"OK".to_vec())
        );
        assert_eq!(t.flows(), 0);
        assert_eq!(feed(&mut t, [c.seg(C, 4, 0, b""), c.fin(S, 2)]), vec![]);
        let st = t.stats();
        assert_eq!(
            (st.ignored_packets, st.mid_stream_skipped, st.flows_closed),
            (2, 0, 1)
        );
        assert_eq!(st.closed_by_reason, [1, 0, 0]);
    }

    #[test]
    fn fin_waits_for_the_hole_before_closing() {
        let (mut t, c) = (table(), Conn::new(1, 7, 9));
        c.open(&mut t);
        assert_eq!(
            feed(&mut t, [c.data(C, 5, b"world"), c.fin(C, 10), c.fin(S, 0)]),
            vec![]
        );
        let ev = feed(&mut t, [c.data(C, 0, b"hello")]);
        let data = |b: &'static [u8]| FlowEvent::Data {
            key: c.key,
            dir: C,
            bytes: Bytes::from_static(b),
        };
        assert_eq!(
            ev,
            vec![data(b"hello"), data(b"world"), closed(&c, CloseReason::Fin)]
        );
    }

    #[test]
    fn acknowledged_fin_with_a_hole_is_gap_at_close_after_grace() {
        let (mut t, a, b) = (table(), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        let mut out = a.open(&mut t);
        out.extend(b.open(&mut t));
        for c in [&a, &b] {
            // Data up to the FIN acknowledged, then the FIN itself.
            let acks = [
                c.raw(S, 10, 7 + 1 + 10, ACK, b""),
                c.raw(S, 10, 7 + 1 + 11, ACK, b""),
            ];
            out.extend(feed(
                &mut t,
                [c.seg(C, 5, FIN, b"world")].into_iter().chain(acks),
            ));
        }
        // A late capture event fills b's hole within the grace period.
        out.extend(feed(&mut t, [b.data(C, 0, b"hello")]));
        t.expire(ACKED_GAP_GRACE_NS, &mut out);
        assert_eq!(ends(&out), vec![]);
        t.expire(ACKED_GAP_GRACE_NS + 1, &mut out);
        assert_eq!(ends(&out), vec![dropped(&a, DropReason::GapAtClose)]);
        assert_eq!(stream(&out, C), b"helloworld");
        assert_eq!((t.flows(), t.buffered_bytes()), (1, 0));
    }

    #[test]
    fn rst_closes_or_drops_with_a_hole() {
        let (mut t, a, b) = (table(), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        let mut ev = a.open(&mut t);
        ev.extend(feed(&mut t, [a.data(C, 0, b"hi"), a.seg(S, 0, RST, b"")]));
        assert_eq!(ends(&ev), vec![closed(&a, CloseReason::Rst)]);
        b.open(&mut t);
        let ev = feed(&mut t, [b.data(C, 2, b"hi"), b.seg(C, 4, RST, b"")]);
        assert_eq!(ev, vec![dropped(&b, DropReason::GapAtClose)]);
        assert_eq!((t.flows(), t.buffered_bytes()), (0, 0));
    }

    #[test]
    fn mid_stream_is_reported_once_until_forgotten() {
        let (mut t, c) = (table(), Conn::new(1, 7, 9));
        let ev = feed(&mut t, (0..5).map(|i| c.data([C, S][i % 2], i, b"x")));
        assert_eq!(ev, vec![dropped(&c, DropReason::MidStream)]);
        assert_eq!(
            (
                t.stats().mid_stream_skipped,
                t.stats().ignored_packets,
                t.flows()
            ),
            (1, 5, 0)
        );
        let mut out = Vec::new();
        t.expire(ReassemblyConfig::default().idle_timeout_ns + 1, &mut out);
        assert_eq!((out, t.ended.len()), (vec![], 0));
        assert_eq!(
            feed(&mut t, [c.data(C, 9, b"x")]),
            vec![dropped(&c, DropReason::MidStream)]
        );
        assert_eq!(t.stats().dropped_by_reason, [2, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn server_segments_before_syn_ack_wait_for_it() {
        let (mut t, a, b) = (table(), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        let early = |c: &Conn| {
            [
                c.syn(),
                c.data(C, 0, b"GET"),
                c.fin(S, 8),
                c.data(S, 4, b"/1.1"),
            ]
        };
        let mut ev = feed(&mut t, early(&a).into_iter().chain([a.data(S, 0, b"HTTP")]));
        assert_eq!((stream(&ev, C), stream(&ev, S)), (b"GET".to_vec(), vec![]));
        assert_eq!(t.buffered_bytes(), 8);
        ev = feed(&mut t, [a.syn_ack()]);
        assert_eq!(stream(&ev, S), b"HTTP/1.1");
        assert_eq!((ends(&ev), t.buffered_bytes()), (vec![], 0));
        // Without a SYN-ACK the server bytes can never be placed.
        feed(&mut t, early(&b));
        let mut out = Vec::new();
        t.expire(ReassemblyConfig::default().idle_timeout_ns + 1, &mut out);
        assert!(out.contains(&dropped(&b, DropReason::MidStream)));
        assert_eq!(t.buffered_bytes(), 0);
    }

    #[test]
    fn per_flow_cap_drops_the_flow_and_frees_its_buffer() {
        let cfg = ReassemblyConfig {
            max_flow_buffer: 100,
            ..ReassemblyConfig::default()
        };
        let (mut t, c) = (FlowTable::new(cfg), Conn::new(1, 7, 9));
        c.open(&mut t);
        assert_eq!(
            feed(&mut t, [c.data(C, 10, &body(60)), c.data(S, 10, &body(40))]),
            vec![]
        );
        assert_eq!(t.buffered_bytes(), 100);
        assert_eq!(
            feed(&mut t, [c.data(S, 50, b"!")]),
            vec![dropped(&c, DropReason::FlowBufferFull)]
        );
        assert_eq!((t.flows(), t.buffered_bytes()), (0, 0));
        assert_eq!(feed(&mut t, [c.data(C, 0, &body(10))]), vec![]);
    }

    #[test]
    fn total_cap_drops_the_flow_that_exceeds_it() {
        let cfg = ReassemblyConfig {
            max_flow_buffer: 100,
            max_total_buffer: 150,
            ..ReassemblyConfig::default()
        };
        let (mut t, a, b) = (FlowTable::new(cfg), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        a.open(&mut t);
        b.open(&mut t);
        assert_eq!(feed(&mut t, [a.data(C, 10, &body(80))]), vec![]);
        assert_eq!(
            feed(&mut t, [b.data(C, 10, &body(80))]),
            vec![dropped(&b, DropReason::TotalBufferFull)]
        );
        assert_eq!((t.flows(), t.buffered_bytes()), (1, 80));
        let ev = feed(&mut t, [a.data(C, 0, &body(10))]);
        assert_eq!(stream(&ev, C).len(), 90);
        assert_eq!(t.buffered_bytes(), 0);
    }

    #[test]
    fn idle_expiry_closes_clean_flows_and_drops_flows_with_holes() {
        let cfg = ReassemblyConfig {
            idle_timeout_ns: 1_000,
            ..ReassemblyConfig::default()
        };
        let (mut t, mut a, mut b) = (FlowTable::new(cfg), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        (a.ts, b.ts) = (100, 500);
        a.open(&mut t);
        b.open(&mut t);
        feed(&mut t, [a.data(C, 0, b"GET"), b.data(C, 1, b"ET")]);
        let mut out = Vec::new();
        t.expire(1_100, &mut out);
        assert_eq!((out.len(), t.flows()), (0, 2));
        t.expire(1_101, &mut out);
        assert_eq!(out, vec![closed(&a, CloseReason::Idle)]);
        out.clear();
        t.expire(1_501, &mut out);
        assert_eq!(out, vec![dropped(&b, DropReason::IdleWithGap)]);
        assert_eq!((t.flows(), t.buffered_bytes()), (0, 0));
    }

    #[test]
    fn syn_with_a_new_isn_replaces_the_open_flow() {
        let (mut t, old) = (table(), Conn::new(1, 1000, 5000));
        old.open(&mut t);
        feed(&mut t, [old.data(C, 0, b"GET")]);
        assert_eq!(feed(&mut t, [old.syn()]), vec![], "retransmitted SYN");
        let new = Conn::new(1, 90_000, 70_000);
        let ev = feed(&mut t, [new.syn(), new.syn_ack(), new.data(C, 0, b"PUT")]);
        assert_eq!(
            ev[..2],
            [
                closed(&old, CloseReason::Idle),
                FlowEvent::Opened { key: new.key }
            ]
        );
        assert_eq!(stream(&ev, C), b"PUT");
        feed(&mut t, [new.data(C, 9, b"hole")]);
        let newer = Conn::new(1, 123, 456);
        let ev = feed(&mut t, [newer.syn()]);
        assert_eq!(
            ev,
            vec![
                dropped(&new, DropReason::GapAtClose),
                FlowEvent::Opened { key: newer.key }
            ]
        );
        assert_eq!(
            (t.flows(), t.buffered_bytes(), t.stats().flows_opened),
            (1, 0, 3)
        );
    }

    #[test]
    fn too_many_flows_rejects_new_syns_once() {
        let cfg = ReassemblyConfig {
            max_flows: 1,
            ..ReassemblyConfig::default()
        };
        let (mut t, a, b) = (FlowTable::new(cfg), Conn::new(1, 7, 9), Conn::new(2, 7, 9));
        a.open(&mut t);
        assert_eq!(
            feed(&mut t, [b.syn()]),
            vec![dropped(&b, DropReason::TooManyFlows)]
        );
        assert_eq!(
            feed(&mut t, [b.syn(), b.syn_ack(), b.data(C, 0, b"GET")]),
            vec![]
        );
        assert_eq!(t.stats().dropped_by_reason, [0, 0, 0, 0, 0, 1]);
        assert_eq!(t.flows(), 1);
    }

    #[test]
    fn memory_of_ignored_keys_stays_bounded() {
        let cfg = ReassemblyConfig {
            max_flows: 8,
            ..ReassemblyConfig::default()
        };
        let mut t = FlowTable::new(cfg);
        for port in 0..100 {
            feed(&mut t, [Conn::new(port, 1, 2).data(C, 0, b"x")]);
            assert!(t.ended.len() <= 8);
        }
        assert_eq!(t.stats().mid_stream_skipped, 100);
    }

    #[test]
    fn labels_are_snake_case() {
        let drops: Vec<_> = DropReason::ALL.iter().map(DropReason::as_str).collect();
        let want = [
            "mid_stream",
            "flow_buffer_full",
            "total_buffer_full",
            "gap_at_close",
            "idle_with_gap",
            "too_many_flows",
        ];
        assert_eq!(drops, want);
        let closes: Vec<_> = CloseReason::ALL.iter().map(CloseReason::as_str).collect();
        assert_eq!(closes, ["fin", "rst", "idle"]);
        // Stats arrays are indexed by discriminant, so ALL must follow it.
        assert!(
            DropReason::ALL
                .iter()
                .enumerate()
                .all(|(i, r)| *r as usize == i)
        );
        assert!(
            CloseReason::ALL
                .iter()
                .enumerate()
                .all(|(i, r)| *r as usize == i)
        );
    }

    type Plan = (Vec<u8>, Vec<usize>, Vec<(usize, usize)>);

    /// Stream bytes, segment sizes (cycled) and extra arbitrary overlapping ranges.
    fn plan() -> impl Strategy<Value = Plan> {
        let ranges = prop::collection::vec((any::<usize>(), 1usize..60), 0..8);
        (
            prop::collection::vec(any::<u8>(), 0..600),
            prop::collection::vec(1usize..80, 1..20),
            ranges,
        )
    }

    fn segments(c: &Conn, dir: Direction, (data, sizes, extra): &Plan) -> Vec<Packet> {
        let mut pkts = vec![c.fin(dir, data.len())];
        let (mut off, mut sizes) = (0, sizes.iter().cycle());
        while let Some(size) = sizes.next().filter(|_| off < data.len()) {
            let end = (off + size).min(data.len());
            pkts.push(c.data(dir, off, &data[off..end]));
            off = end;
        }
        for (pos, len) in extra {
            let start = pos % (data.len() + 1);
            let end = (start + len).min(data.len());
            pkts.push(c.data(dir, start, &data[start..end]));
        }
        pkts
    }

    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            items.swap(i, (seed >> 33) as usize % (i + 1));
        }
    }

    proptest! {
        #[test]
        fn shuffled_duplicated_segments_rebuild_both_streams(
            cisn in any::<u32>(), sisn in any::<u32>(), client in plan(), server in plan(), seed in any::<u64>()
        ) {
            let (mut t, c) = (table(), Conn::new(1, cisn, sisn));
            let mut ev = feed(&mut t, [c.syn()]);
            let mut pkts = segments(&c, C, &client);
            pkts.extend(segments(&c, S, &server));
            pkts.push(c.syn_ack());
            shuffle(&mut pkts, seed);
            let mut fed = 0;
            for pkt in pkts {
                fed += if t.flows() == 1 { pkt.payload.len() as u64 } else { 0 };
                t.push(pkt, &mut ev);
                check_accounting(&t);
            }
            prop_assert_eq!(&ev[0], &FlowEvent::Opened { key: c.key });
            prop_assert_eq!(stream(&ev, C), client.0);
            prop_assert_eq!(stream(&ev, S), server.0);
            prop_assert_eq!(ends(&ev), vec![closed(&c, CloseReason::Fin)]);
            prop_assert_eq!(ev.last(), Some(&closed(&c, CloseReason::Fin)));
            prop_assert_eq!((t.flows(), t.buffered_bytes()), (0, 0));
            let st = t.stats();
            prop_assert_eq!(st.bytes_delivered + st.retransmitted_bytes, fed);
        }
    }
}

#[cfg(test)]
mod capture_regression {
    use super::*;

    /// The segment pattern of a 1 MiB upload over a reordering qdisc on
    /// loopback (captured): out-of-order 64 KiB segments and a retransmit.
    #[test]
    fn captured_reordered_upload_is_rebuilt_exactly() {
        let segs: [(u64, usize); 23] = [
            (0, 32741),
            (32741, 32741),
            (65482, 62491),
            (127973, 47616),
            (113098, 14875),
            (175589, 47616),
            (223205, 65483),
            (288688, 38722),
            (327410, 65482),
            (392892, 65482),
            (458374, 65482),
            (523856, 65483),
            (589339, 32740),
            (753043, 65482),
            (622079, 65482),
            (753043, 65482),
            (687561, 65482),
            (818525, 65483),
            (884008, 32740),
            (916748, 65482),
            (982230, 65482),
            (1047712, 1158),
            (0, 0),
        ];
        let total = 1_048_870u64;
        let byte = |o: u64| (o.wrapping_mul(2654435761) >> 13) as u8;
        let key = FlowKey {
            client: "10.0.0.1:5000".parse().unwrap(),
            server: "10.0.0.2:80".parse().unwrap(),
        };
        let isn = 4_128_876_424u32;
        let mut t = FlowTable::new(ReassemblyConfig::default());
        let mut ev = Vec::new();
        let pkt = |seq: u32, flags: u8, payload: Vec<u8>, dir| Packet {
            key,
            dir,
            seq,
            ack: 0,
            flags,
            payload: Bytes::from(payload),
            ts_ns: 1,
        };
        t.push(
            pkt(isn, tcp_flags::SYN, vec![], Direction::ToServer),
            &mut ev,
        );
        t.push(
            pkt(
                7,
                tcp_flags::SYN | tcp_flags::ACK,
                vec![],
                Direction::ToClient,
            ),
            &mut ev,
        );
        for (off, len) in segs {
            let payload: Vec<u8> = (off..off + len as u64).map(byte).collect();
            let seq = isn.wrapping_add(1).wrapping_add(off as u32);
            t.push(
                pkt(seq, tcp_flags::ACK, payload, Direction::ToServer),
                &mut ev,
            );
        }
        let mut got = Vec::new();
        for e in &ev {
            if let FlowEvent::Data {
                dir: Direction::ToServer,
                bytes,
                ..
            } = e
            {
                got.extend_from_slice(bytes);
            }
        }
        assert_eq!(got.len() as u64, total);
        let want: Vec<u8> = (0..total).map(byte).collect();
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_bad, None);
    }
}
