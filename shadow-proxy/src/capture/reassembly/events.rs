//! What goes in (one [`Packet`] per captured segment) and what comes out
//! ([`FlowEvent`]s, the reasons a flow ends, the counters), plus the limits.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::metrics::reason::Drop;

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ToServer,
    ToClient,
}

/// One captured TCP segment (payload only, headers already parsed).
#[derive(Clone, Debug)]
pub struct Packet {
    pub key: FlowKey,
    pub dir: Direction,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: Bytes,
    pub ts_ns: u64,
}

impl Packet {
    /// Whether any of the given [`tcp_flags`] bits is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A new flow whose handshake (SYN from the client) was seen.
    Opened { key: FlowKey },
    /// Newly contiguous, in-order bytes of one direction (never re-delivered, never reordered).
    Data {
        key: FlowKey,
        dir: Direction,
        bytes: Bytes,
    },
    /// The flow ended normally (FIN both ways, or RST, or idle after FINs) and everything before the end was delivered.
    Closed { key: FlowKey, reason: CloseReason },
    /// The flow cannot be rebuilt; nothing more will be delivered for it.
    Dropped { key: FlowKey, reason: DropReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Fin,
    Rst,
    Idle,
}

impl CloseReason {
    /// Every reason, in the order used to index [`ReassemblyStats::closed_by_reason`].
    pub const ALL: [CloseReason; 3] = [Self::Fin, Self::Rst, Self::Idle];

    /// Snake-case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Rst => "rst",
            Self::Idle => "idle",
        }
    }
}

/// Why a flow could not be rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("the handshake was not captured, so the stream start is unknown")]
    MidStream,
    #[error("the flow's out-of-order buffer exceeded its limit")]
    FlowBufferFull,
    #[error("the total out-of-order buffer exceeded its limit")]
    TotalBufferFull,
    #[error("the flow ended with bytes missing")]
    GapAtClose,
    #[error("the flow went idle with bytes missing")]
    IdleWithGap,
    #[error("the flow table is full")]
    TooManyFlows,
}

impl DropReason {
    /// Every reason, in the order used to index [`ReassemblyStats::dropped_by_reason`].
    pub const ALL: [DropReason; 6] = [
        Self::MidStream,
        Self::FlowBufferFull,
        Self::TotalBufferFull,
        Self::GapAtClose,
        Self::IdleWithGap,
        Self::TooManyFlows,
    ];
}

/// Flows the capture did not see whole are live's; flows dropped for room
/// hit the agent's own bounds.
impl crate::util::Sourced for DropReason {
    fn error_source(&self) -> crate::util::ErrorSource {
        match self {
            Self::MidStream | Self::GapAtClose | Self::IdleWithGap => {
                crate::util::ErrorSource::Live
            }
            Self::FlowBufferFull | Self::TotalBufferFull | Self::TooManyFlows => {
                crate::util::ErrorSource::Internal
            }
        }
    }
}

/// Counted under the agent's one drop enum.
impl From<DropReason> for Drop {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::MidStream => Drop::MidStream,
            DropReason::FlowBufferFull => Drop::FlowBufferFull,
            DropReason::TotalBufferFull => Drop::TotalBufferFull,
            DropReason::GapAtClose => Drop::GapAtClose,
            DropReason::IdleWithGap => Drop::IdleWithGap,
            DropReason::TooManyFlows => Drop::TooManyFlows,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Out-of-order bytes one flow (both directions) may hold.
    pub max_flow_buffer: usize,
    /// Out-of-order bytes all flows together may hold.
    pub max_total_buffer: usize,
    /// Open flows; also bounds the memory of ended flow keys.
    pub max_flows: usize,
    pub idle_timeout_ns: u64,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        Self {
            max_flow_buffer: 8 << 20,
            max_total_buffer: 256 << 20,
            max_flows: 65_536,
            idle_timeout_ns: 60_000_000_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    pub packets: u64,
    /// `Opened` events.
    pub flows_opened: u64,
    /// `Closed` events.
    pub flows_closed: u64,
    /// `Dropped` events, including flows rejected before opening.
    pub flows_dropped: u64,
    pub bytes_delivered: u64,
    /// Payload bytes discarded because they were already delivered or buffered.
    pub retransmitted_bytes: u64,
    /// Segments that arrived ahead of the next expected byte.
    pub out_of_order_segments: u64,
    /// Flows dropped because their handshake was not captured.
    pub mid_stream_skipped: u64,
    /// Packets that belong to no open flow.
    pub ignored_packets: u64,
    /// `Closed` events indexed like [`CloseReason::ALL`].
    pub closed_by_reason: [u64; 3],
    /// `Dropped` events indexed like [`DropReason::ALL`].
    pub dropped_by_reason: [u64; 6],
}
