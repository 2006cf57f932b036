//! A capture dump replayed through reassembly and HTTP parsing, by hand.

use super::*;

/// Replays a `SHADOW_CAPTURE_DUMP` file through reassembly and HTTP
/// parsing: `SHADOW_REPLAY_DUMP=/tmp/cap.bin cargo test dump_replay -- --ignored --nocapture`.
#[test]
#[ignore = "needs a capture dump"]
fn replay_a_capture_dump() {
    let Some(path) = std::env::var_os("SHADOW_REPLAY_DUMP") else {
        return;
    };
    let data = std::fs::read(path).unwrap();
    let mut table = FlowTable::new(ReassemblyConfig::default());
    let mut convs: HashMap<FlowKey, Conversation> = HashMap::new();
    let mut i = 0;
    let mut ev = Vec::new();
    while i < data.len() {
        let n = u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
        let sample = &data[i + 4..i + 4 + n];
        i += 4 + n;
        let Ok((_, pkt)) = packet::decode(sample) else {
            continue;
        };
        table.push(pkt, &mut ev);
        for e in ev.drain(..) {
            match e {
                FlowEvent::Opened { key } => {
                    convs.insert(key, Conversation::new(Limits::default()));
                }
                FlowEvent::Data { key, dir, bytes } => {
                    let c = convs.get_mut(&key).unwrap();
                    let r = match dir {
                        Direction::ToServer => c.on_request_bytes(&bytes, 0),
                        Direction::ToClient => c.on_response_bytes(&bytes, 0),
                    };
                    println!("{dir:?} {} bytes -> {r:?}", bytes.len());
                }
                other => println!("{other:?}"),
            }
        }
    }
}
