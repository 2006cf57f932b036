//! One tracked connection: its two streams, the SYN-ACK that gives the server
//! stream its ISN, and the rules that decide when and how the flow ends.

use super::stream::{Segment, Sink, Stream};
use super::tcp_flags::{ACK, FIN, RST, SYN};
use super::{CloseReason, Direction, DropReason, Packet};

/// How a flow ends.
#[derive(Clone, Copy, Debug)]
pub(super) enum End {
    Close(CloseReason),
    Drop(DropReason),
}

pub(super) struct Flow {
    pub(super) to_server: Stream,
    /// Unknown until the SYN-ACK is seen.
    pub(super) to_client: Option<Stream>,
    /// Server segments waiting for the SYN-ACK, which per-CPU capture
    /// buffers may deliver late.
    pub(super) early: Vec<Segment>,
    pub(super) early_bytes: usize,
    /// Server segments that acknowledge client bytes not delivered yet,
    /// with the client offset each needs: per-CPU capture buffers may hand
    /// over a response before the request it answers, and the HTTP pairing
    /// must see them in the order the server did.
    pub(super) held: std::collections::VecDeque<(u64, Segment)>,
    pub(super) held_bytes: usize,
    pub(super) last_ts: u64,
    /// When a peer first acknowledged a FIN with bytes before it missing.
    pub(super) stuck_since: Option<u64>,
}

impl Flow {
    pub(super) fn new(client_isn: u32, ts: u64) -> Self {
        Self {
            to_server: Stream::new(client_isn),
            to_client: None,
            early: Vec::new(),
            early_bytes: 0,
            held: std::collections::VecDeque::new(),
            held_bytes: 0,
            last_ts: ts,
            stuck_since: None,
        }
    }

    pub(super) fn streams(&self) -> impl Iterator<Item = &Stream> {
        std::iter::once(&self.to_server).chain(&self.to_client)
    }

    pub(super) fn buffered(&self) -> usize {
        self.early_bytes + self.held_bytes + self.streams().map(|s| s.pending_bytes).sum::<usize>()
    }

    pub(super) fn end_with(&self, clean: CloseReason, gap: DropReason) -> End {
        if !self.early.is_empty() {
            End::Drop(DropReason::MidStream)
        } else if !self.held.is_empty() || self.streams().any(Stream::has_gap) {
            End::Drop(gap)
        } else {
            End::Close(clean)
        }
    }

    /// How `expire` at `now` ends this flow, if it does.
    pub(super) fn expiry(&self, now: u64, timeout: u64, grace: u64) -> Option<End> {
        if self
            .stuck_since
            .is_some_and(|t| now.saturating_sub(t) > grace)
        {
            return Some(End::Drop(DropReason::GapAtClose));
        }
        let idle = now.saturating_sub(self.last_ts) > timeout;
        idle.then(|| self.end_with(CloseReason::Idle, DropReason::IdleWithGap))
    }

    pub(super) fn on_packet(&mut self, pkt: Packet, sink: &mut Sink) -> Option<End> {
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
        let acks = pkt.has(ACK);
        let seq = pkt.seq.wrapping_add(u32::from(syn));
        let seg = Segment {
            seq,
            payload: pkt.payload,
            fin: pkt.flags & FIN != 0,
        };
        match pkt.dir {
            Direction::ToServer => {
                self.to_server.accept(seg, sink);
                self.release(sink);
            }
            Direction::ToClient if syn && pkt.flags & ACK != 0 => self.syn_ack(pkt.seq, seg, sink),
            Direction::ToClient => {
                // The client bytes this segment's ACK says the server had.
                let needs = self.to_server.offset(pkt.ack);
                let carries = seg.fin || !seg.payload.is_empty();
                if carries && acks && (!self.held.is_empty() || needs > self.client_delivered()) {
                    self.held_bytes += seg.payload.len();
                    self.held
                        .push_back((u64::try_from(needs).unwrap_or(0), seg));
                } else {
                    self.server_segment(seg, sink);
                }
            }
        }
        self.settled(pkt.ts_ns)
    }

    /// The client's sequence space delivered so far (its FIN counts one).
    fn client_delivered(&self) -> i64 {
        self.to_server.next as i64 + i64::from(self.to_server.complete())
    }

    /// Hands over the held server segments whose client bytes have arrived,
    /// in the order they came.
    fn release(&mut self, sink: &mut Sink) {
        let dir = std::mem::replace(&mut sink.dir, Direction::ToClient);
        while let Some((needs, _)) = self.held.front() {
            if *needs as i64 > self.client_delivered() {
                break;
            }
            let (_, seg) = self.held.pop_front().expect("a front");
            self.held_bytes -= seg.payload.len();
            self.server_segment(seg, sink);
        }
        sink.dir = dir;
    }

    pub(super) fn syn_ack(&mut self, isn: u32, seg: Segment, sink: &mut Sink) {
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

    pub(super) fn server_segment(&mut self, seg: Segment, sink: &mut Sink) {
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
    pub(super) fn settled(&mut self, ts: u64) -> Option<End> {
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
