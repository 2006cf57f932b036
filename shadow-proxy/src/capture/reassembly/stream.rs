//! One direction of a flow: maps sequence numbers to offsets, buffers
//! out-of-order segments (first copy wins) and delivers contiguous bytes.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Direction, FlowEvent, FlowKey, ReassemblyStats};

/// Where a stream hands its delivered bytes.
pub(super) struct Sink<'a> {
    pub(super) key: FlowKey,
    pub(super) dir: Direction,
    pub(super) out: &'a mut Vec<FlowEvent>,
    pub(super) stats: &'a mut ReassemblyStats,
}

impl Sink<'_> {
    pub(super) fn deliver(&mut self, bytes: Bytes) {
        self.stats.bytes_delivered += bytes.len() as u64;
        let (key, dir) = (self.key, self.dir);
        self.out.push(FlowEvent::Data { key, dir, bytes });
    }
}

/// One direction of a flow. Offsets count from ISN + 1.
pub(super) struct Stream {
    pub(super) isn: u32,
    /// Offset of the next byte to deliver.
    pub(super) next: u64,
    /// Non-overlapping segments, all starting after `next`.
    pub(super) pending: BTreeMap<u64, Bytes>,
    pub(super) pending_bytes: usize,
    /// Offset of the FIN, i.e. the stream length.
    pub(super) fin: Option<u64>,
    /// The peer acknowledged the FIN, so nothing before it will be resent.
    pub(super) fin_acked: bool,
}

impl Stream {
    pub(super) fn new(isn: u32) -> Self {
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
    pub(super) fn offset(&self, seq: u32) -> i64 {
        let rel = seq.wrapping_sub(self.isn.wrapping_add(1));
        let delta = rel.wrapping_sub(self.next as u32) as i32;
        self.next as i64 + i64::from(delta)
    }

    pub(super) fn complete(&self) -> bool {
        self.fin == Some(self.next)
    }

    pub(super) fn has_gap(&self) -> bool {
        !self.pending.is_empty() || self.fin.is_some_and(|fin| fin > self.next)
    }

    pub(super) fn accept(&mut self, seg: Segment, sink: &mut Sink) {
        let start = self.offset(seg.seq);
        if seg.fin {
            self.set_fin(start + seg.payload.len() as i64);
        }
        self.insert(start, seg.payload, sink);
    }

    pub(super) fn note_ack(&mut self, ack: u32) {
        if let Some(fin) = self.fin {
            // The FIN itself takes one sequence number.
            self.fin_acked |= self.offset(ack) > fin as i64;
        }
    }

    /// Records the first plausible FIN; bytes buffered beyond it are bogus.
    pub(super) fn set_fin(&mut self, at: i64) {
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

    pub(super) fn insert(&mut self, start: i64, mut payload: Bytes, sink: &mut Sink) {
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
    pub(super) fn fill(&mut self, start: u64, payload: Bytes, stats: &mut ReassemblyStats) {
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

    pub(super) fn drain(&mut self, sink: &mut Sink) {
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
pub(super) struct Segment {
    pub(super) seq: u32,
    pub(super) payload: Bytes,
    pub(super) fin: bool,
}
