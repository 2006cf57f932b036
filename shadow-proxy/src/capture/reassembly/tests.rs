//! Stream rebuilding: order, holes, overlaps, wraparound, FIN and RST.

use super::*;
use proptest::prelude::*;
use std::net::SocketAddr;

use bytes::Bytes;

use super::tcp_flags::{ACK, FIN, PSH, RST, SYN};

use super::flow::Flow;
use super::table::ACKED_GAP_GRACE_NS;

mod flows;
mod proptests;

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
    let is_end = |e: &&FlowEvent| matches!(e, FlowEvent::Closed { .. } | FlowEvent::Dropped { .. });
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
        let held: usize = f.held.iter().map(|(_, e)| e.payload.len()).sum();
        assert_eq!(f.held_bytes, held);
        total += early + held;
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
fn a_response_read_before_its_request_waits_for_the_bytes_it_acknowledges() {
    // Per-CPU buffers: the server's answer (which acknowledges 10 request
    // bytes) is read before the request itself.
    let (mut t, c) = (table(), Conn::new(1, 1000, 5000));
    c.open(&mut t);
    let (req, resp) = (b"GET / HTTP", b"HTTP/1.1 2");
    let answer = c.raw(
        S,
        c.sisn.wrapping_add(1),
        c.cisn.wrapping_add(1 + req.len() as u32),
        ACK | PSH,
        resp,
    );
    let ev = feed(&mut t, [answer]);
    assert!(stream(&ev, S).is_empty(), "held: {ev:?}");
    assert_eq!(t.buffered_bytes(), resp.len());
    check_accounting(&t);
    let ev = feed(&mut t, [c.data(C, 0, req)]);
    let dirs: Vec<Direction> = ev
        .iter()
        .filter_map(|e| match e {
            FlowEvent::Data { dir, .. } => Some(*dir),
            _ => None,
        })
        .collect();
    assert_eq!(dirs, [C, S], "the request first, then its answer");
    assert_eq!(
        (stream(&ev, C), stream(&ev, S)),
        (req.to_vec(), resp.to_vec())
    );
    assert_eq!(t.buffered_bytes(), 0);
    check_accounting(&t);
    // A FIN counts one: an answer acknowledging it waits for it too.
    let fin_ack = c.raw(
        S,
        c.sisn.wrapping_add(1 + resp.len() as u32),
        c.cisn.wrapping_add(2 + req.len() as u32),
        ACK | PSH,
        b"00",
    );
    assert!(stream(&feed(&mut t, [fin_ack]), S).is_empty());
    let ev = feed(&mut t, [c.fin(C, req.len())]);
    assert_eq!(stream(&ev, S), b"00");
}
