//! Arbitrary bytes, cut into request and response pieces, fed alternately
//! into one `Conversation`: it must never panic, and every exchange it
//! emits must carry a body within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadow_proxy::http::conversation::{Conversation, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_body: 1 << 16,
        ..Limits::default()
    };
    let mut c = Conversation::new(limits.clone());
    // The first byte picks the piece size; pieces alternate sides.
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    for (i, piece) in rest.chunks(step).enumerate() {
        let r = if i % 2 == 0 {
            c.on_request_bytes(piece, i as u64)
        } else {
            c.on_response_bytes(piece, i as u64)
        };
        if r.is_err() {
            return;
        }
    }
    c.on_close(u64::MAX);
    for ex in c.take_exchanges() {
        assert!(ex.request.body.len() <= limits.max_body);
        if let Some(resp) = ex.response {
            assert!(resp.body.len() <= limits.max_body);
        }
    }
});
