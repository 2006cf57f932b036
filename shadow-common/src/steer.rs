//! Kernel-level cutover: an `sk_lookup` program, attached to a network
//! namespace, steers new TCP connections for a steered port to a shadow's
//! listening socket (held in a sockmap). Established connections are found
//! before any lookup, so they stay where they are and drain.

/// Map names.
pub mod maps {
    pub const STEER: &str = "STEER";
    pub const STEER_SOCKS: &str = "STEER_SOCKS";
    pub const STEER_STATS: &str = "STEER_STATS";
    pub const STEER_RESETS: &str = "STEER_RESETS";
    pub const STEER_RESET_IGNORE: &str = "STEER_RESET_IGNORE";
}

/// The `tcp:tcp_send_reset` program: resets sent from a watched local port
/// (a failover service's primary or shadow), counted in `STEER_RESETS`.
pub const RESET_PROGRAM: &str = "shadow_resets";

/// The global holding `tcp_send_reset`'s `saddr` and `daddr` offsets (set
/// before load from tracefs; 0 turns the program off).
pub const RESET_OFFSETS_GLOBAL: &str = "RESET_OFFSETS";

/// Offsets of `tcp_send_reset`'s address fields (sockaddr_in6-sized; the
/// port is at +2 in network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ResetOffsets {
    pub saddr: u32,
    pub daddr: u32,
}

/// Ports watched for resets at once.
pub const MAX_WATCHED: u32 = 2 * MAX_STEERED;

/// The `sk_lookup` program's name.
pub const STEER_PROGRAM: &str = "shadow_steer";

/// Ports steered at once, and so sockmap slots.
pub const MAX_STEERED: u32 = 64;

/// Share resolution: hundredths of a percent (10000 = every new connection).
pub const STEER_SCALE: u32 = 10_000;

/// Value of `STEER`, keyed by the local TCP port (host order) that clients
/// connect to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steer {
    /// New connections sent to the shadow, in hundredths of a percent.
    pub per_ten_thousand: u32,
    /// The shadow listener's index in `STEER_SOCKS`, and the counters'
    /// index in `STEER_STATS`; `< MAX_STEERED`.
    pub slot: u32,
    /// A client source port never steered (0: none): the agent's own
    /// health checks of the primary use it, so they reach the primary
    /// while its port is cut over.
    pub bypass_port: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Steer>() == 16);

/// Per-slot counters (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SteerCounters {
    /// Lookups for the steered port (one per new connection attempt).
    pub lookups: u64,
    /// New connections given to the shadow's listener.
    pub steered: u64,
    /// Assignments the kernel refused (no listener in the slot, or one
    /// that is not listening): the connection went to the primary.
    pub failed: u64,
    pub _reserved: u64,
}
const _: () = assert!(core::mem::size_of::<SteerCounters>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no padding.
    unsafe impl aya::Pod for super::Steer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SteerCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ResetOffsets {}
}
