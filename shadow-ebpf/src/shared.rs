//! Maps and helpers used by more than one program.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
};
use shadow_common::{HIST_BUCKETS, Log2Hist, TracepointOffsets, log2_bucket, stat};

/// Field offsets, overridden by the agent before load.
#[unsafe(no_mangle)]
static TP_OFFSETS: Global<TracepointOffsets> = Global::new(TracepointOffsets {
    issue_dev: 0,
    issue_sector: 0,
    issue_bytes: 0,
    issue_rwbs: 0,
    complete_dev: 0,
    complete_sector: 0,
    complete_error: 0,
    probe_daddr: 0,
    probe_sport: 0,
    probe_dport: 0,
    probe_family: 0,
    probe_srtt: 0,
    state_skaddr: 0,
    state_oldstate: 0,
    state_newstate: 0,
    state_sport: 0,
    state_dport: 0,
    state_family: 0,
    state_protocol: 0,
    state_daddr: 0,
    state_daddr_v6: 0,
    retrans_sport: 0,
    retrans_dport: 0,
    retrans_family: 0,
    retrans_daddr: 0,
    retrans_daddr_v6: 0,
    len_sk: 0,
    len_protocol: 0,
    len_ret: 0,
});

#[inline(always)]
pub fn offsets() -> TracepointOffsets {
    TP_OFFSETS.load()
}

/// Drop and overflow counters, one slot per `shadow_common::stat` constant.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(p) = STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by this CPU, with preemption off.
        unsafe { *p += 1 };
    }
}

/// Counts an error a program's body returned (by program and kind).
#[inline(always)]
pub fn count_error(program: u32, code: i64) {
    count(shadow_common::prog_error::slot(program, code));
}

/// Reads a field at `off` from the tracepoint record.
#[inline(always)]
pub fn read<T>(ctx: &TracePointContext, off: u32) -> Result<T, i64> {
    // SAFETY: the record is `ctx`'s memory; probe_read copes with any offset.
    unsafe { ctx.read_at::<T>(off as usize) }.map_err(|_| {
        count(stat::READ_FAILED);
        shadow_common::prog_error::FIELD_READ
    })
}

/// Adds `v` to `*p` atomically: hash-map values are shared by all CPUs.
///
/// The BPF target has no compare-and-swap, so `core`'s atomics offer no
/// `fetch_add`; the kernel's atomic add instruction is emitted directly.
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value, which is 8-byte aligned and lives
    // as long as the map; the instruction only adds `v` to that word.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// Records `v` into a histogram that lives in a map value.
#[inline(always)]
pub fn hist_record(h: *mut Log2Hist, v: u64) {
    let b = (log2_bucket(v) as usize) & (HIST_BUCKETS - 1);
    // SAFETY: `h` is a valid map value pointer and `b < HIST_BUCKETS`.
    unsafe {
        atomic_add(&raw mut (*h).buckets[b], 1);
        atomic_add(&raw mut (*h).sum, v);
    }
}

/// A read-only all-zero value to insert from: map values are too large for
/// the 512-byte BPF stack.
#[map]
pub static ZERO_BLOCK: Array<shadow_common::BlockStats> = Array::with_max_entries(1, 0);
#[map]
pub static ZERO_ENDPOINT: Array<shadow_common::EndpointStats> = Array::with_max_entries(1, 0);
