//! Passive capture: the tc classifier's per-service sampling table, the
//! metadata it sends with each sampled packet, and its counters.

/// Map names.
pub mod maps {
    pub const SERVICES: &str = "SERVICES";
    pub const PACKETS: &str = "PACKETS";
    pub const CAPTURE_STATS: &str = "CAPTURE_STATS";
    pub const ADMITTED: &str = "ADMITTED";
}

/// tc program names, one per hook.
pub const TC_INGRESS_PROGRAM: &str = "shadow_tc_ingress";
pub const TC_EGRESS_PROGRAM: &str = "shadow_tc_egress";

/// Services (listening ports) the classifier watches.
pub const MAX_SERVICES: u32 = 64;

/// Sampling resolution: a percentage in hundredths (10000 = 100%).
pub const SAMPLE_SCALE: u32 = 10_000;

/// Connections admitted at once (LRU): each was sampled at its SYN.
pub const ADMITTED_ENTRIES: u32 = 65_536;

/// Key of `ADMITTED`: a connection as (client, server), whichever way the
/// packet goes. A connection is decided once, at its SYN, against the
/// service's rate then; later packets follow that decision, so a rate
/// change (the CPU budget's) never cuts a flow in two.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmitKey {
    pub client: [u8; 16],
    pub server: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub _pad: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<AdmitKey>() == 40);

/// Entries of `SERVICES`: one per TCP port, so a packet's lookup is an
/// array index the verifier inlines, not a hash (about 190 ns here).
pub const SERVICE_PORTS: u32 = 65_536;

/// Value of `SERVICES`, indexed by the TCP port (host order); a port with
/// no service is all zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSampling {
    /// Connections sampled, in hundredths of a percent (0..=10000).
    pub per_ten_thousand: u32,
    /// Index into `CAPTURE_STATS`, `< MAX_SERVICES`.
    pub slot: u32,
    /// Bit 0: a service listens here. Bit 1: its rate was above 0 at some
    /// point since attach, so `ADMITTED` may hold its connections (at 0
    /// with this bit clear, a packet costs no hash lookup at all).
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<ServiceSampling>() == 12);

/// `ServiceSampling::flags` bits.
pub mod service_flag {
    pub const ACTIVE: u32 = 1;
    pub const MAY_HAVE_ADMITTED: u32 = 2;
}

/// Per-service counters (per CPU), indexed by `ServiceSampling::slot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CaptureCounters {
    /// Packets of the service seen by the classifier.
    pub packets_seen: u64,
    /// Packets of sampled connections sent to user space.
    pub packets_sampled: u64,
    /// Payload bytes of sampled packets.
    pub payload_bytes: u64,
    /// Sampled packets larger than one perf sample: sent cut short.
    pub truncated: u64,
    /// Packets whose headers could not be read.
    pub parse_errors: u64,
    /// Connections admitted at their SYN.
    pub flows_admitted: u64,
}
const _: () = assert!(core::mem::size_of::<CaptureCounters>() == 48);

/// Which tc hook saw the packet.
pub mod hook {
    pub const INGRESS: u8 = 0;
    pub const EGRESS: u8 = 1;
}

/// Packet bytes appended to one perf sample. A perf record's size is a
/// `u16`: the record header, the raw-size word, [`PacketMeta`] and the
/// packet must fit in 65,535 bytes. (Measured here: larger samples are
/// delivered, but their bytes are overwritten by the next record.)
pub const PERF_DATA_MAX: u32 = 65_535 - 8 - 4 - core::mem::size_of::<PacketMeta>() as u32 - 8;

/// A GSO/GRO segment is at most 64 KiB of IP plus the link header, so its
/// bytes beyond [`PERF_DATA_MAX`] fit in one tail record of this size.
/// Packets with a longer tail (BIG TCP) are cut and counted as truncated.
/// (A power of two: the program masks the length with `TAIL_MAX - 1`.)
pub const TAIL_MAX: usize = 512;

/// What a perf sample holds.
pub mod kind {
    /// `PacketMeta` then the packet's first `captured_len` bytes.
    pub const PACKET: u8 = 0;
    /// `PacketMeta` (a copy of the head's, same `ts_ns`) then `TAIL_MAX`
    /// bytes of which the first `tail_len` continue the preceding packet.
    pub const TAIL: u8 = 1;
}

/// The tail record of a packet larger than one perf sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailRecord {
    pub meta: PacketMeta,
    pub bytes: [u8; TAIL_MAX],
}
const _: () = assert!(core::mem::size_of::<TailRecord>() == 80 + TAIL_MAX);

/// Sent before the packet bytes in each perf sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub ts_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// The service port this packet belongs to.
    pub service_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// Length of the packet as the kernel has it.
    pub skb_len: u32,
    /// Bytes of the packet appended after this struct.
    pub captured_len: u32,
    /// Offset of the TCP payload in the appended bytes.
    pub payload_off: u32,
    /// TCP payload length from the IP header (excludes link-layer padding).
    pub payload_len: u32,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// [`hook::INGRESS`] or [`hook::EGRESS`].
    pub hook: u8,
    /// 1 when the packet goes to the service (client to server).
    pub to_server: u8,
    /// [`kind::PACKET`] or [`kind::TAIL`].
    pub kind: u8,
    pub _pad: u8,
    /// Bytes of the packet that follow in a tail record (0: none).
    pub tail_len: u16,
}
const _: () = assert!(core::mem::size_of::<PacketMeta>() == 80);

/// Symmetric flow hash: the same for both directions of a connection, since
/// the caller orders the endpoints as (client, server).
#[inline(always)]
pub fn flow_hash(client: &[u8; 16], client_port: u16, server: &[u8; 16], server_port: u16) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < 16 {
        h = (h ^ client[i] as u32).wrapping_mul(0x0100_0193);
        h = (h ^ server[i] as u32).wrapping_mul(0x0100_0193);
        i += 1;
    }
    h = (h ^ client_port as u32).wrapping_mul(0x0100_0193);
    h = (h ^ ((server_port as u32) << 16)).wrapping_mul(0x0100_0193);
    // murmur3 finaliser: spreads the low bits that `% SAMPLE_SCALE` uses.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Whether a connection with hash `h` is sampled at `per_ten_thousand`.
#[inline(always)]
pub fn sampled(h: u32, per_ten_thousand: u32) -> bool {
    h % SAMPLE_SCALE < per_ten_thousand
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and integer arrays only, explicit padding.
    unsafe impl aya::Pod for super::ServiceSampling {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CaptureCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketMeta {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TailRecord {}
}
