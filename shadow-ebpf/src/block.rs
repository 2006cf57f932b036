//! Block-I/O latency, size and errors: `block:block_rq_issue` stamps a
//! request by (device, sector); `block:block_rq_complete` finds the stamp and
//! records the latency and size into the (device, operation) histograms, and
//! counts the request as an error when the driver failed it.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use shadow_common::{
    BLOCK_START_ENTRIES, BLOCK_STATS_ENTRIES, BlockKey, BlockStart, BlockStartKey, BlockStats,
    block_op_from_rwbs, stat,
};

use crate::shared::{ZERO_BLOCK, atomic_add, count, hist_record, offsets, read};

#[map]
static BLOCK_START: LruHashMap<BlockStartKey, BlockStart> =
    LruHashMap::with_max_entries(BLOCK_START_ENTRIES, 0);

#[map]
static BLOCK_STATS: HashMap<BlockKey, BlockStats> =
    HashMap::with_max_entries(BLOCK_STATS_ENTRIES, 0);

#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_block_rq_issue(&ctx) {
        crate::shared::count_error(shadow_common::program::BLOCK_RQ_ISSUE, code);
    }
    0
}

fn try_block_rq_issue(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets();
    let dev: u32 = read(ctx, off.issue_dev)?;
    let sector: u64 = read(ctx, off.issue_sector)?;
    let bytes: u32 = read(ctx, off.issue_bytes)?;
    let rwbs: [u8; 8] = read(ctx, off.issue_rwbs)?;
    count(stat::BLOCK_ISSUED);
    let key = BlockStartKey {
        dev,
        _pad: 0,
        sector,
    };
    let start = BlockStart {
        // SAFETY: a plain helper call with no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        bytes,
        op: block_op_from_rwbs(&rwbs),
        _pad: [0; 3],
    };
    if BLOCK_START.insert(key, start, 0).is_err() {
        count(stat::BLOCK_START_INSERT_FAILED);
    }
    Ok(())
}

#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_block_rq_complete(&ctx) {
        crate::shared::count_error(shadow_common::program::BLOCK_RQ_COMPLETE, code);
    }
    0
}

fn try_block_rq_complete(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets();
    let dev: u32 = read(ctx, off.complete_dev)?;
    let sector: u64 = read(ctx, off.complete_sector)?;
    let error: i32 = read(ctx, off.complete_error)?;
    let key = BlockStartKey {
        dev,
        _pad: 0,
        sector,
    };
    let Some(start) = BLOCK_START.get_ptr(key) else {
        count(stat::BLOCK_COMPLETE_UNMATCHED);
        return Ok(());
    };
    // SAFETY: the pointer came from a successful lookup; copy before removing.
    let start = unsafe { *start };
    let _ = BLOCK_START.remove(key);
    // SAFETY: a plain helper call with no arguments.
    let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);

    let stats_key = BlockKey {
        dev,
        op: start.op,
        _pad: [0; 3],
    };
    let Some(stats) = block_stats(ctx, &stats_key) else {
        return Ok(());
    };
    // SAFETY: `stats` points at a live map value.
    unsafe {
        hist_record(&raw mut (*stats).latency_ns, latency);
        hist_record(&raw mut (*stats).size_bytes, u64::from(start.bytes));
        if error != 0 {
            atomic_add(&raw mut (*stats).errors, 1);
        }
    }
    Ok(())
}

/// The stats slot for `key`, created zeroed on first use.
fn block_stats(ctx: &TracePointContext, key: &BlockKey) -> Option<*mut BlockStats> {
    if let Some(p) = BLOCK_STATS.get_ptr_mut(key) {
        return Some(p);
    }
    let zero = ZERO_BLOCK.get(0)?;
    // BPF_NOEXIST: another CPU may have created it meanwhile; that is fine.
    let _ = BLOCK_STATS.insert(key, zero, 1);
    let p = BLOCK_STATS.get_ptr_mut(key);
    if p.is_none() {
        count(stat::BLOCK_STATS_INSERT_FAILED);
        warn!(
            ctx,
            "BLOCK_STATS full, dropping dev {} op {}", key.dev, key.op
        );
    }
    p
}
