//! Failed requests during transitions, counted by the agent in the kernel:
//! `tcp:tcp_send_reset` counts every reset this host sends from a watched
//! port (each service's primary and shadow port). A reset from a service's
//! port is a connection refused (no listener: the primary is down) or
//! aborted (it died with the request in flight); the orchestrator counts
//! the ones that come while a service is in transition.
//!
//! What it does not see: requests answered with an error status, and
//! connections that time out without a reset (a host that vanished). The
//! counts are by port in every namespace of the host.

use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use shadow_common::steer::{
    MAX_WATCHED, RESET_OFFSETS_GLOBAL, RESET_PROGRAM, ResetOffsets, maps as steer_maps,
};

use super::cutover::CutoverError;
use crate::kernel::{self, tracefs::Tracefs};

/// The reset counter, watching a fixed set of ports.
pub struct ResetCounter {
    _ebpf: Ebpf,
    counts: HashMap<MapData, u32, u64>,
}

impl std::fmt::Debug for ResetCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetCounter").finish_non_exhaustive()
    }
}

impl ResetCounter {
    /// Attaches the program and watches `ports` (at most [`MAX_WATCHED`]);
    /// resets sent to `ignore` (the agent's check source ports) are not
    /// counted.
    pub fn attach(ports: &[u16], ignore: &[u16]) -> Result<Self, CutoverError> {
        let format = Tracefs::open_or_mount()
            .and_then(|t| t.format("tcp", "tcp_send_reset"))
            .map_err(kernel::TelemetryError::from)?;
        // A sockaddr_in6 (or a sockaddr_in in its first bytes).
        let offset = |f| {
            format
                .offset(f, &[28])
                .map_err(kernel::TelemetryError::from)
        };
        let offsets = ResetOffsets {
            saddr: offset("saddr")?,
            daddr: offset("daddr")?,
        };
        let mut ebpf = kernel::load_tracepoint_with(
            RESET_OFFSETS_GLOBAL,
            offsets,
            RESET_PROGRAM,
            "tcp",
            "tcp_send_reset",
        )?;
        let map = ebpf
            .take_map(steer_maps::STEER_RESETS)
            .ok_or(CutoverError::MissingMap(steer_maps::STEER_RESETS))?;
        let map_err = |e| CutoverError::Map {
            map: steer_maps::STEER_RESETS,
            source: Box::new(e),
        };
        let mut counts: HashMap<MapData, u32, u64> = HashMap::try_from(map).map_err(map_err)?;
        for port in ports.iter().take(MAX_WATCHED as usize) {
            counts.insert(u32::from(*port), 0, 0).map_err(map_err)?;
        }
        let map = ebpf
            .take_map(steer_maps::STEER_RESET_IGNORE)
            .ok_or(CutoverError::MissingMap(steer_maps::STEER_RESET_IGNORE))?;
        let mut skip: HashMap<MapData, u32, u8> = HashMap::try_from(map).map_err(map_err)?;
        for port in ignore.iter().take(MAX_WATCHED as usize) {
            skip.insert(u32::from(*port), 1, 0).map_err(map_err)?;
        }
        if ports.len() > MAX_WATCHED as usize {
            tracing::warn!(
                watched = MAX_WATCHED,
                ports = ports.len(),
                "Resets are counted on the first ports only"
            );
        }
        Ok(Self {
            _ebpf: ebpf,
            counts,
        })
    }

    /// Resets sent from `port` since it was watched (0 if not watched).
    pub fn count(&self, port: u16) -> u64 {
        self.counts.get(&u32::from(port), 0).unwrap_or(0)
    }
}
