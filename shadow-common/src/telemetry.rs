//! Kernel telemetry: block-I/O and TCP maps, their keys and values, and the
//! tracepoint field offsets the agent hands the programs at load time.

use crate::hist::Log2Hist;

/// Map names, as the agent looks them up in the loaded object.
pub mod maps {
    pub const BLOCK_START: &str = "BLOCK_START";
    pub const BLOCK_STATS: &str = "BLOCK_STATS";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const CONNS: &str = "CONNS";
    pub const LISTEN_PORTS: &str = "LISTEN_PORTS";
    pub const STATS: &str = "STATS";
    pub const SRTT_MASK: &str = "SRTT_MASK";
}

/// Name of the load-time global that holds [`TracepointOffsets`].
pub const TP_OFFSETS_GLOBAL: &str = "TP_OFFSETS";

/// In-flight block requests waiting for their completion (LRU: a lost
/// completion cannot leak an entry forever).
pub const BLOCK_START_ENTRIES: u32 = 16_384;
/// (device, operation) pairs. Hosts rarely have more than a few dozen devices.
pub const BLOCK_STATS_ENTRIES: u32 = 1_024;
/// Remote endpoints tracked at once (LRU; evictions are counted).
pub const ENDPOINT_ENTRIES: u32 = 4_096;
/// Open TCP connections tracked at once (LRU; evictions are counted).
pub const CONN_ENTRIES: u32 = 65_536;
/// `tcp_probe` fires for every segment of an established connection. The
/// agent keeps its RTT samples near this many a second: below it every
/// probe is recorded; above it one in `SRTT_MASK[0] + 1`, at random (the
/// agent sets that mask from the probe rate each interval). Every probe is
/// counted (`stat::TCP_PROBES` stays exact).
pub const SRTT_SAMPLES_PER_SECOND: u64 = 2_000;
/// The largest mask: one probe in 1,024.
pub const SRTT_MASK_MAX: u64 = 1_023;

/// The `SRTT_MASK` that keeps about [`SRTT_SAMPLES_PER_SECOND`] RTT
/// samples at `probes_per_second`: 0 (every probe) below it, else a power
/// of two minus one.
pub fn srtt_mask_for(probes_per_second: u64) -> u64 {
    if probes_per_second <= SRTT_SAMPLES_PER_SECOND {
        return 0;
    }
    probes_per_second
        .div_ceil(SRTT_SAMPLES_PER_SECOND)
        .next_power_of_two()
        .saturating_sub(1)
        .min(SRTT_MASK_MAX)
}
/// Local listening ports (to tell inbound from outbound connections).
pub const LISTEN_PORT_ENTRIES: u32 = 1_024;

/// Slots of the per-CPU `STATS` array: every drop and overflow has one.
pub mod stat {
    /// An issued block request that did not fit in `BLOCK_START`.
    pub const BLOCK_START_INSERT_FAILED: u32 = 0;
    /// A completion with no matching issue (issued before the agent started,
    /// or evicted from `BLOCK_START`).
    pub const BLOCK_COMPLETE_UNMATCHED: u32 = 1;
    /// A (device, op) pair that did not fit in `BLOCK_STATS`.
    pub const BLOCK_STATS_INSERT_FAILED: u32 = 2;
    /// New endpoints inserted into the `ENDPOINTS` LRU (inserted minus present
    /// = evicted).
    pub const ENDPOINT_INSERTS: u32 = 3;
    /// An endpoint insert the kernel refused.
    pub const ENDPOINT_INSERT_FAILED: u32 = 4;
    /// New connections inserted into the `CONNS` LRU.
    pub const CONN_INSERTS: u32 = 5;
    /// A connection insert the kernel refused.
    pub const CONN_INSERT_FAILED: u32 = 6;
    /// A tracepoint field that could not be read.
    pub const READ_FAILED: u32 = 7;
    /// Block requests seen (issue events).
    pub const BLOCK_ISSUED: u32 = 8;
    /// `tcp_probe` events seen.
    pub const TCP_PROBES: u32 = 9;
    /// Local listening ports learnt from accepted connections.
    pub const LISTEN_PORTS_LEARNT: u32 = 10;
    /// `tcp_probe` events whose RTT went into a histogram (see
    /// [`super::srtt_mask_for`]).
    pub const TCP_PROBES_SAMPLED: u32 = 11;
    /// First of the program-error slots (see [`super::prog_error`]).
    pub const PROG_ERRORS: u32 = 16;
    /// Number of slots.
    pub const COUNT: u32 = 64;
}

/// The programs, numbered for their error slots.
pub mod program {
    pub const BLOCK_RQ_ISSUE: u32 = 0;
    pub const BLOCK_RQ_COMPLETE: u32 = 1;
    pub const TCP_PROBE: u32 = 2;
    pub const INET_SOCK_SET_STATE: u32 = 3;
    pub const TCP_RETRANSMIT_SKB: u32 = 4;
    pub const SOCK_SEND_LENGTH: u32 = 5;
    pub const SOCK_RECV_LENGTH: u32 = 6;
    pub const TC_INGRESS: u32 = 7;
    pub const TC_EGRESS: u32 = 8;
    /// In the order of the constants above.
    pub const NAMES: [&str; 9] = [
        "block_rq_issue",
        "block_rq_complete",
        "tcp_probe",
        "inet_sock_set_state",
        "tcp_retransmit_skb",
        "sock_send_length",
        "sock_recv_length",
        "shadow_tc_ingress",
        "shadow_tc_egress",
    ];
}

/// What a program's `try_*` body returned as its error, counted per program
/// and kind in `STATS[stat::PROG_ERRORS + program * KINDS + kind]`.
pub mod prog_error {
    /// A tracepoint field could not be read.
    pub const FIELD_READ: i64 = 1;
    /// Packet bytes could not be loaded.
    pub const PACKET_LOAD: i64 = 2;
    /// Any other positive code.
    pub const OTHER: i64 = 3;
    /// A helper returned a negative errno (perf output, skb load).
    pub const HELPER: i64 = -1;
    pub const KINDS: u32 = 4;
    /// Kind names by kind index.
    pub const NAMES: [&str; 4] = ["field_read", "packet_load", "other", "helper"];

    /// The kind index of an error code.
    pub const fn kind(code: i64) -> u32 {
        match code {
            FIELD_READ => 0,
            PACKET_LOAD => 1,
            c if c < 0 => 3,
            _ => 2,
        }
    }

    /// The stats slot for `program`'s error `code`.
    pub const fn slot(program: u32, code: i64) -> u32 {
        super::stat::PROG_ERRORS + program * KINDS + kind(code)
    }
}

const _: () =
    assert!(stat::PROG_ERRORS + program::NAMES.len() as u32 * prog_error::KINDS <= stat::COUNT);

/// Block operation, decoded from the tracepoint's `rwbs` string.
pub mod block_op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const FLUSH: u8 = 2;
    pub const DISCARD: u8 = 3;
    pub const OTHER: u8 = 4;
    pub const NAMES: [&str; 5] = ["read", "write", "flush", "discard", "other"];
}

/// Decodes the operation from `rwbs` (see the kernel's `blk_fill_rwbs`: an
/// optional leading `F` for a preflush, then the op letter, then flag letters).
#[inline(always)]
pub fn block_op_from_rwbs(rwbs: &[u8; 8]) -> u8 {
    let op = if rwbs[0] == b'F' && rwbs[1] != 0 && rwbs[1] != b'S' && rwbs[1] != b'M' {
        rwbs[1]
    } else {
        rwbs[0]
    };
    match op {
        b'R' => block_op::READ,
        b'W' => block_op::WRITE,
        b'D' => block_op::DISCARD,
        b'F' => block_op::FLUSH,
        _ => block_op::OTHER,
    }
}

/// Key of `BLOCK_START`: a request is identified by its device and sector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockStartKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}
const _: () = assert!(core::mem::size_of::<BlockStartKey>() == 16);

/// Value of `BLOCK_START`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockStart {
    pub ts_ns: u64,
    pub bytes: u32,
    pub op: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<BlockStart>() == 16);

/// Key of `BLOCK_STATS`: the kernel's `dev_t` (major << 20 | minor) and op.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub dev: u32,
    pub op: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<BlockKey>() == 8);

/// Value of `BLOCK_STATS`: latency in nanoseconds and request size in bytes.
/// The size histogram's count is the IOPS counter and its sum the byte counter.
/// `errors` counts the requests the driver completed with an error (the
/// tracepoint's `error` field non-zero, e.g. -EIO or -ENOSPC); they are in
/// the histograms too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockStats {
    pub latency_ns: Log2Hist,
    pub size_bytes: Log2Hist,
    pub errors: u64,
}
const _: () = assert!(core::mem::size_of::<BlockStats>() == 2 * 520 + 8);

impl BlockStats {
    pub const ZERO: Self = Self {
        latency_ns: Log2Hist::ZERO,
        size_bytes: Log2Hist::ZERO,
        errors: 0,
    };
}

/// Which side opened the connection.
pub mod direction {
    /// This host connected out: the endpoint is the remote `address:port`, a
    /// dependency.
    pub const OUTBOUND: u8 = 0;
    /// A client connected in: the endpoint is the client's address and the
    /// local listening port.
    pub const INBOUND: u8 = 1;
}

/// Address family values as the kernel writes them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Key of `ENDPOINTS`. IPv4 addresses occupy the first four bytes of `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub direction: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 24);

/// Plain counters per endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointCounters {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub retransmits: u64,
    /// Active opens that reached ESTABLISHED, or accepted connections.
    pub connections: u64,
    /// Active opens that went from SYN_SENT straight to CLOSE.
    pub connect_failures: u64,
    pub closes: u64,
}
const _: () = assert!(core::mem::size_of::<EndpointCounters>() == 48);

/// Value of `ENDPOINTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    /// Smoothed RTT from `tcp:tcp_probe`, nanoseconds.
    pub srtt_ns: Log2Hist,
    /// SYN_SENT to ESTABLISHED, nanoseconds.
    pub connect_ns: Log2Hist,
    /// ESTABLISHED to CLOSE, nanoseconds.
    pub lifetime_ns: Log2Hist,
    /// Bytes sent plus received per closed connection.
    pub conn_bytes: Log2Hist,
    pub counters: EndpointCounters,
}
const _: () = assert!(core::mem::size_of::<EndpointStats>() == 4 * 520 + 48);

impl EndpointStats {
    pub const ZERO: Self = Self {
        srtt_ns: Log2Hist::ZERO,
        connect_ns: Log2Hist::ZERO,
        lifetime_ns: Log2Hist::ZERO,
        conn_bytes: Log2Hist::ZERO,
        counters: EndpointCounters {
            tx_bytes: 0,
            rx_bytes: 0,
            retransmits: 0,
            connections: 0,
            connect_failures: 0,
            closes: 0,
        },
    };
}

/// Value of `CONNS`, keyed by the kernel's socket address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub endpoint: EndpointKey,
    pub syn_sent_ns: u64,
    pub established_ns: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Set at CLOSE. The entry stays (until the LRU reclaims it) because an
    /// application may still read data that arrived before the close, as
    /// the side that closes first does in TIME_WAIT.
    pub closed_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ConnInfo>() == 64);

/// TCP states as `sock:inet_sock_set_state` reports them.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const CLOSE: i32 = 7;
}

pub const IPPROTO_TCP: u16 = 6;

/// Byte offsets of the tracepoint fields the programs read. Parsed by the
/// agent from `/sys/kernel/tracing/events/<cat>/<name>/format` and written into
/// the read-only global [`TP_OFFSETS_GLOBAL`] before load, so no kernel
/// struct layout is baked into the object.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TracepointOffsets {
    // block:block_rq_issue
    pub issue_dev: u32,
    pub issue_sector: u32,
    pub issue_bytes: u32,
    pub issue_rwbs: u32,
    // block:block_rq_complete
    pub complete_dev: u32,
    pub complete_sector: u32,
    pub complete_error: u32,
    // tcp:tcp_probe
    pub probe_daddr: u32,
    pub probe_sport: u32,
    pub probe_dport: u32,
    pub probe_family: u32,
    pub probe_srtt: u32,
    // sock:inet_sock_set_state
    pub state_skaddr: u32,
    pub state_oldstate: u32,
    pub state_newstate: u32,
    pub state_sport: u32,
    pub state_dport: u32,
    pub state_family: u32,
    pub state_protocol: u32,
    pub state_daddr: u32,
    pub state_daddr_v6: u32,
    // tcp:tcp_retransmit_skb
    pub retrans_sport: u32,
    pub retrans_dport: u32,
    pub retrans_family: u32,
    pub retrans_daddr: u32,
    pub retrans_daddr_v6: u32,
    // sock:sock_send_length and sock:sock_recv_length (same layout)
    pub len_sk: u32,
    pub len_protocol: u32,
    pub len_ret: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 29 * 4);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], made only of integers and arrays
    // of integers, with explicit padding, so any bit pattern is valid.
    unsafe impl aya::Pod for super::BlockStartKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockStart {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TracepointOffsets {}
}
