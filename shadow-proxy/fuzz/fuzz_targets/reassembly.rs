#![no_main]
//! Feeds arbitrary packets of a few flow keys into `FlowTable` and checks the
//! per-flow event contract and the buffer caps.
//!
//! Input: records of a 12-byte header followed by up to 63 payload bytes.
//! Header: [0] flow (bits 0-1), direction (bit 2), expire after (bit 3);
//! [1..5] seq; [5..9] ack; [9] flags; [10] payload length; [11] time step.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shadow_proxy::capture::reassembly::*;

const HEADER: usize = 12;

const CFG: ReassemblyConfig = ReassemblyConfig {
    max_flow_buffer: 1 << 10,
    max_total_buffer: 3 << 10,
    max_flows: 3,
    idle_timeout_ns: 5_000,
};

fuzz_target!(|data: &[u8]| {
    let mut table = FlowTable::new(CFG);
    let mut open = HashMap::new();
    let mut out = Vec::new();
    let (mut rest, mut ts) = (data, 0u64);
    while rest.len() >= HEADER {
        let (h, tail) = rest.split_at(HEADER);
        let (payload, tail) = tail.split_at(usize::from(h[10] % 64).min(tail.len()));
        rest = tail;
        ts += u64::from(h[11]) * 50;
        table.push(packet(h, payload, ts), &mut out);
        if h[0] & 8 != 0 {
            table.expire(ts, &mut out);
        }
        check(&mut open, &out);
        out.clear();
        assert!(table.buffered_bytes() <= CFG.max_total_buffer);
        assert!(table.flows() <= CFG.max_flows);
    }
    table.expire(u64::MAX, &mut out);
    check(&mut open, &out);
    assert_eq!((table.flows(), table.buffered_bytes()), (0, 0));
    assert!(open.values().all(|&is_open| !is_open));
});

fn packet(h: &[u8], payload: &[u8], ts_ns: u64) -> Packet {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let client = SocketAddr::from(([10, 0, 0, 1], 40_000 + u16::from(h[0] & 3)));
    let server = SocketAddr::from(([10, 0, 0, 2], 80));
    let dir = if h[0] & 4 == 0 { Direction::ToServer } else { Direction::ToClient };
    Packet {
        key: FlowKey { client, server },
        dir,
        // A narrow sequence space makes overlaps and in-order hits likely.
        seq: word(1) % 4096,
        ack: word(5) % 4096,
        flags: h[9],
        payload: Bytes::copy_from_slice(payload),
        ts_ns,
    }
}

/// `Opened` starts a flow, `Data` only inside one, and exactly one end closes it.
fn check(open: &mut HashMap<FlowKey, bool>, events: &[FlowEvent]) {
    for ev in events {
        match ev {
            FlowEvent::Opened { key } => assert_ne!(open.insert(*key, true), Some(true)),
            FlowEvent::Data { key, bytes, .. } => {
                assert_eq!(open.get(key), Some(&true));
                assert!(!bytes.is_empty());
            }
            FlowEvent::Closed { key, .. } => assert_eq!(open.insert(*key, false), Some(true)),
            FlowEvent::Dropped { key, reason } => {
                let was_open = open.insert(*key, false) == Some(true);
                // Only these reasons apply to flows that never opened.
                let before_open = matches!(reason, DropReason::MidStream | DropReason::TooManyFlows);
                assert!(was_open || before_open, "{reason:?} for a flow never opened");
            }
        }
    }
}
