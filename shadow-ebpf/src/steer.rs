//! Kernel-level cutover: an `sk_lookup` program. For a new TCP connection
//! to a steered port it assigns the shadow's listening socket (from
//! `STEER_SOCKS`) to a share of lookups; every other lookup, and any
//! assignment the kernel refuses, goes on to the usual listener, and so do
//! connections from the port's bypass source port (the agent's checks of
//! the primary). It always
//! returns SK_PASS: it never drops a connection.

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    helpers::bpf_get_prandom_u32,
    macros::{map, sk_lookup},
    maps::{HashMap, PerCpuArray, SockMap},
    programs::SkLookupContext,
};
use shadow_common::{
    IPPROTO_TCP,
    steer::{MAX_STEERED, STEER_SCALE, Steer, SteerCounters},
};

#[map]
static STEER: HashMap<u32, Steer> = HashMap::with_max_entries(MAX_STEERED, 0);

#[map]
static STEER_SOCKS: SockMap = SockMap::with_max_entries(MAX_STEERED, 0);

#[map]
static STEER_STATS: PerCpuArray<SteerCounters> = PerCpuArray::with_max_entries(MAX_STEERED, 0);

#[sk_lookup]
pub fn shadow_steer(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel passes a valid bpf_sk_lookup; fields are read
    // directly from it, as the verifier requires of a context.
    let (protocol, port, remote_port) = unsafe {
        (
            (*ctx.lookup).protocol,
            (*ctx.lookup).local_port,
            (*ctx.lookup).remote_port,
        )
    };
    if protocol != u32::from(IPPROTO_TCP) {
        return SK_PASS;
    }
    // SAFETY: a plain value read from a hash map this program owns.
    let Some(steer) = (unsafe { STEER.get(port) }).copied() else {
        return SK_PASS;
    };
    if steer.bypass_port != 0 && u32::from(u16::from_be(remote_port)) == steer.bypass_port {
        return SK_PASS;
    }
    let counters = STEER_STATS.get_ptr_mut(steer.slot);
    let count = |f: fn(&mut SteerCounters) -> &mut u64| {
        if let Some(c) = counters {
            // SAFETY: a per-CPU slot: no other program writes it now.
            *f(unsafe { &mut *c }) += 1;
        }
    };
    count(|c| &mut c.lookups);
    if steer.per_ten_thousand < STEER_SCALE
        // SAFETY: a helper with no preconditions.
        && unsafe { bpf_get_prandom_u32() } % STEER_SCALE >= steer.per_ten_thousand
    {
        return SK_PASS;
    }
    match STEER_SOCKS.redirect_sk_lookup(&ctx, steer.slot, 0) {
        Ok(()) => count(|c| &mut c.steered),
        Err(_) => count(|c| &mut c.failed),
    }
    SK_PASS
}
