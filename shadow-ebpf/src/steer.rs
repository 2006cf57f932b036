//! Kernel-level cutover: an `sk_lookup` program. For a new TCP connection
//! to a steered port it assigns the shadow's listening socket (from
//! `STEER_SOCKS`) to a share of lookups; every other lookup, and any
//! assignment the kernel refuses, goes on to the usual listener, and so do
//! connections from the port's bypass source port (the agent's checks of
//! the primary). It always
//! returns SK_PASS: it never drops a connection.
//!
//! `shadow_resets`, on `tcp:tcp_send_reset`, counts the resets this host
//! sends from a watched port: a connection refused (no listener: the
//! primary is down) or aborted. The agent counts the ones that come during
//! a transition as failed requests.

use aya_ebpf::{
    Global,
    bindings::sk_action::SK_PASS,
    helpers::bpf_get_prandom_u32,
    macros::{map, sk_lookup, tracepoint},
    maps::{HashMap, PerCpuArray, SockMap},
    programs::{SkLookupContext, TracePointContext},
};
use shadow_common::{
    IPPROTO_TCP,
    steer::{MAX_STEERED, MAX_WATCHED, ResetOffsets, STEER_SCALE, Steer, SteerCounters},
};

use crate::shared::atomic_add;

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

/// Resets sent per watched local port.
#[map]
static STEER_RESETS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Remote ports whose resets are not counted: the agent's own checks.
#[map]
static STEER_RESET_IGNORE: HashMap<u32, u8> = HashMap::with_max_entries(MAX_WATCHED, 0);

/// Overridden before load from tracefs.
#[unsafe(no_mangle)]
static RESET_OFFSETS: Global<ResetOffsets> = Global::new(ResetOffsets { saddr: 0, daddr: 0 });

#[tracepoint]
pub fn shadow_resets(ctx: TracePointContext) -> u32 {
    let off = RESET_OFFSETS.load();
    if off.saddr == 0 {
        return 0;
    }
    // SAFETY: probe_read of the record copes with any offset.
    let ports = unsafe {
        (
            ctx.read_at::<u16>(off.saddr as usize + 2),
            ctx.read_at::<u16>(off.daddr as usize + 2),
        )
    };
    let (Ok(local), Ok(remote)) = ports else {
        return 0;
    };
    let (local, remote) = (
        u32::from(u16::from_be(local)),
        u32::from(u16::from_be(remote)),
    );
    // SAFETY: a plain value read from a hash map this program owns.
    if unsafe { STEER_RESET_IGNORE.get(remote) }.is_some() {
        return 0;
    }
    if let Some(c) = STEER_RESETS.get_ptr_mut(local) {
        atomic_add(c, 1);
    }
    0
}
