//! TCP stream reassembly and flow table for passively captured connections.
//!
//! The eBPF tc classifier samples connections and hands user space one
//! [`Packet`] per captured TCP segment (headers already parsed). Feeding them
//! to [`FlowTable::push`] yields [`FlowEvent`]s for the HTTP parser: `Opened`
//! when the client's SYN is seen, `Data` carrying newly contiguous bytes of one
//! direction (exactly once, in stream order, zero-copy slices of the captured
//! payloads), and one final `Closed` or `Dropped`. [`FlowTable::expire`] must be
//! called periodically (about once a second) to end idle flows.
//!
//! A flow that cannot be rebuilt exactly is dropped with a reason and counted,
//! never guessed at. Policies:
//! - Only a client SYN without ACK starts a flow; its sequence number + 1 is
//!   offset 0 of the client stream. Packets of flows never seen with a SYN are
//!   reported once as `Dropped { MidStream }`.
//! - The server stream needs the SYN-ACK for its ISN. Server segments seen
//!   before it are held (counted against the buffer caps) and replayed when it
//!   arrives; if it never does, the flow ends as `Dropped { MidStream }`.
//!   Inferring the ISN from client ACK numbers would be a guess.
//! - Overlaps: the first received copy of a byte wins. Bytes already delivered
//!   or already buffered are discarded and counted as `retransmitted_bytes`.
//! - A FIN ends its direction; `Closed { Fin }` follows once both directions
//!   are delivered up to their FINs. A hole that remains after the peer ACKed
//!   the FIN will never be retransmitted: once it has waited out a short
//!   grace period for late capture events, `expire` drops the flow as
//!   `GapAtClose`. Without that ACK a hole waits for the idle timeout
//!   (`IdleWithGap`).
//! - RST ends the flow at once: `Closed { Rst }`, or `GapAtClose` with holes.
//!   RSTs are not checked against the window. Data from another CPU's capture
//!   buffer that is read after the RST is lost; the caller should merge
//!   per-CPU batches by timestamp if that matters.
//! - A SYN with a new ISN for an open key (port reuse) ends the old flow as
//!   `Closed { Idle }`, or `GapAtClose` with holes, and opens a fresh one.
//! - Keys of ended or rejected flows are remembered (bounded by `max_flows`,
//!   expiring after the idle timeout) so their stragglers, like the last ACK,
//!   are ignored silently instead of being reported as mid-stream.
//!
//! Sequence numbers are mapped to u64 offsets relative to ISN + 1, choosing
//! the offset closest to the next expected byte, so both u32 wraparound and
//! streams longer than 4 GiB work.

mod events;
mod flow;
mod stream;
mod table;
#[cfg(test)]
mod tests;

pub use events::{
    CloseReason, Direction, DropReason, FlowEvent, FlowKey, Packet, ReassemblyConfig,
    ReassemblyStats, tcp_flags,
};
pub use table::FlowTable;
