//! The flow table: starts flows on client SYNs, routes packets to them,
//! enforces the buffer caps and remembers ended keys (tombstones) so their
//! stragglers are ignored.

use std::collections::HashMap;

use super::flow::{End, Flow};
use super::stream::Sink;
use super::tcp_flags::{ACK, RST, SYN};
use super::{
    CloseReason, Direction, DropReason, FlowEvent, FlowKey, Packet, ReassemblyConfig,
    ReassemblyStats,
};

/// How long a hole behind an acknowledged FIN may wait before the flow is
/// dropped. The hole is permanent unless the capture delivered the filling
/// segment late, which happens because per-CPU perf buffers are drained one
/// after another.
pub(super) const ACKED_GAP_GRACE_NS: u64 = 1_000_000_000;

/// Memory of a key whose packets are ignored.
#[derive(Clone, Copy, Debug)]
struct Tomb {
    last_ts: u64,
    /// Client ISN of the ended flow, to recognise its late SYN duplicates.
    isn: Option<u32>,
}

/// Keys of ended, rejected or mid-stream flows. Two generations bound the
/// memory with O(1) amortised eviction while keeping recently active keys.
pub(super) struct Tombstones {
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
    pub(super) fn len(&self) -> usize {
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
    // `pub(super)`: the tests check the buffer accounting and the
    // tombstones' bound.
    pub(super) flows: HashMap<FlowKey, Flow>,
    pub(super) ended: Tombstones,
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
