//! Flow lifecycle and bounds: mid-stream packets, SYN-ACK waits, buffer caps,
//! idle expiry, port reuse, the flow limit and the tombstones' memory.

use super::*;

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
    let drops: Vec<_> = DropReason::ALL
        .iter()
        .map(|r| crate::metrics::reason::Drop::from(*r).as_str())
        .collect();
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
