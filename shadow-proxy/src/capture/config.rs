//! The capture box's settings: where the classifier attaches and how much
//! it may buffer. Parsed from `[capture]` by [`crate::config`].

/// Where and how the classifier attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Ingress,
    Egress,
    Both,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub interface: String,
    pub attach: AttachMode,
    /// Exchanges waiting for replay; beyond this they are dropped and counted.
    pub queue: usize,
    /// Size of the perf ring per CPU in MiB (a power of two). A burst larger
    /// than this that the capture thread cannot drain in time is lost (and
    /// counted as `lost`), never slowed down.
    pub ring_mib: usize,
}

/// The perf rings' default size in all: a burst from one connection lands
/// in one CPU's ring, so on few CPUs each ring gets a larger share. A 64 MiB
/// upload at loopback speed (~1 GB/s) outruns a capture thread that waits
/// ~10 ms for a core; 32 MiB rings on this 2-core host absorb it.
pub const RING_TOTAL_MIB: usize = 64;

/// The smallest and largest default ring per CPU.
const RING_MIB_RANGE: (usize, usize) = (4, 32);

/// The default perf ring per CPU on a host with `cpus` CPUs online:
/// [`RING_TOTAL_MIB`] shared out, a power of two within 4-32 MiB.
pub fn default_ring_mib(cpus: usize) -> usize {
    let share = RING_TOTAL_MIB / cpus.max(1);
    let pow2 = if share.is_power_of_two() {
        share
    } else {
        share.next_power_of_two() / 2
    };
    pow2.clamp(RING_MIB_RANGE.0, RING_MIB_RANGE.1)
}

/// [`default_ring_mib`] for this host.
pub fn host_ring_mib() -> usize {
    // SAFETY: sysconf only reads a system value.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    default_ring_mib(usize::try_from(online).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_ring_shares_64_mib_between_the_cpus() {
        let per_cpu: Vec<usize> = [1, 2, 3, 4, 8, 16, 64]
            .into_iter()
            .map(super::default_ring_mib)
            .collect();
        assert_eq!(per_cpu, [32, 32, 16, 16, 8, 4, 4]);
    }
}
