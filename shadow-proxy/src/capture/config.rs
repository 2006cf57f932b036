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

/// The default perf ring per CPU: a loopback burst of a few MiB fits while
/// the capture thread is descheduled for tens of milliseconds.
pub const DEFAULT_RING_MIB: usize = 8;
