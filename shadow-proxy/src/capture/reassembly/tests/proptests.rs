//! Property tests (any segmentation, order and overlap rebuilds the stream) and
//! a captured reordered upload.

use super::*;

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
