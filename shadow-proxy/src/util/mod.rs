//! Small helpers every box may use: durations, wall-clock time, page size.

pub use shadow_api::duration;

/// Where an error came from (pingora's `ErrorSource`): the live side (the
/// traffic being served), the shadow side (a shadow target), or inside the
/// agent. Live-side errors are never caused by shadowing; shadow-side ones
/// are counted and dropped, never passed on to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Live,
    Shadow,
    Internal,
}

/// Every error type of the agent says where its errors came from.
pub trait Sourced: std::error::Error {
    fn error_source(&self) -> ErrorSource;
}

pub mod task;

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 if the clock is before the epoch).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// CLOCK_MONOTONIC in nanoseconds: what `bpf_ktime_get_ns` reads, so
/// captured and proxied timestamps compare.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize
}

/// Resident set size of this process, in bytes.
pub fn self_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size() as u64)
}
