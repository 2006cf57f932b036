//! Kernel telemetry: loads shadow's eBPF object, attaches the tracepoint
//! programs and reads their in-kernel histograms.
//!
//! Data enters as map contents written by `shadow-ebpf` and leaves as a
//! [`KernelSnapshot`] (plain Rust values with device names and endpoint
//! addresses resolved), which the agent renders and keeps.

pub mod context;
pub mod devices;
pub mod hist;
pub mod prometheus;
pub mod snapshot;
pub mod tracefs;
pub mod view;

use std::os::fd::AsRawFd;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::TracePoint,
};
use shadow_common::{
    BlockKey, BlockStats, EndpointKey, EndpointStats, TP_OFFSETS_GLOBAL, TracepointOffsets, maps,
    stat,
};

pub use snapshot::{KernelDrops, KernelSnapshot};

/// The eBPF object built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shadow"));

/// (program, category, tracepoint) for every telemetry program.
pub const TRACEPOINTS: [(&str, &str, &str); 7] = [
    ("block_rq_issue", "block", "block_rq_issue"),
    ("block_rq_complete", "block", "block_rq_complete"),
    ("tcp_probe", "tcp", "tcp_probe"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("sock_send_length", "sock", "sock_send_length"),
    ("sock_recv_length", "sock", "sock_recv_length"),
];

/// The per-syscall programs behind the TCP byte counters.
pub const BYTE_PROGRAMS: [&str; 2] = ["sock_send_length", "sock_recv_length"];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
}

/// Loading and reading the eBPF programs is the agent's own work.
impl crate::util::Sourced for TelemetryError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> TelemetryError {
    move |source| TelemetryError::Map {
        map,
        source: Box::new(source),
    }
}

/// Loaded and attached telemetry programs. Dropping it detaches everything:
/// tracepoint links are file descriptors owned by this process, so nothing
/// outlives the agent, even when it is killed.
pub struct KernelTelemetry {
    block_stats: HashMap<MapData, BlockKey, BlockStats>,
    endpoints: HashMap<MapData, EndpointKey, EndpointStats>,
    stats: PerCpuArray<MapData, u64>,
    /// `tcp_probe`'s sampling mask, set from the probe rate.
    srtt_mask: Array<MapData, u64>,
    /// The probe count and time of the last snapshot, and the mask set.
    probes_seen: Option<(u64, std::time::Instant, u64)>,
    devices: devices::DeviceNames,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    // Declared last: programs detach after the maps above are closed.
    ebpf: Ebpf,
}

/// Loads a second instance of the eBPF object with nothing attached, for
/// a program that lives apart from the telemetry (the cutover's sk_lookup).
/// Only the programs its owner loads reach the kernel's verifier.
pub fn load_object() -> Result<Ebpf, TelemetryError> {
    raise_memlock_limit();
    EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(|e| TelemetryError::Load(Box::new(e)))
}

/// A fresh instance of the object with the read-only global `global` set
/// to `value`, and `program` attached to `category:name` (a program of
/// another module that needs a field offset from tracefs).
pub fn load_tracepoint_with<T: aya::Pod>(
    global: &str,
    value: T,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<Ebpf, TelemetryError> {
    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        .override_global(global, &value, true)
        .load(EBPF_OBJECT)
        .map_err(|e| TelemetryError::Load(Box::new(e)))?;
    attach(&mut ebpf, program, category, name)?;
    Ok(ebpf)
}

impl KernelTelemetry {
    /// Parses tracefs, loads the object and attaches every tracepoint.
    pub fn load() -> Result<Self, TelemetryError> {
        Self::load_with(true)
    }

    /// `tcp_bytes: false` leaves out the per-syscall `sock_send_length` /
    /// `sock_recv_length` programs: endpoint byte counters and the
    /// bytes-per-connection histogram stay at zero, everything else works,
    /// and busy request/response servers pay less (see bench/reports).
    pub fn load_with(tcp_bytes: bool) -> Result<Self, TelemetryError> {
        raise_memlock_limit();
        let tracefs = tracefs::Tracefs::open_or_mount()?;
        let offsets = tracefs.telemetry_offsets()?;
        Self::load_with_offsets(&offsets, tcp_bytes)
    }

    fn load_with_offsets(
        offsets: &TracepointOffsets,
        tcp_bytes: bool,
    ) -> Result<Self, TelemetryError> {
        let mut ebpf = EbpfLoader::new()
            .override_global(TP_OFFSETS_GLOBAL, offsets, true)
            .load(EBPF_OBJECT)
            .map_err(|e| TelemetryError::Load(Box::new(e)))?;
        // Kernel-side diagnostics (aya-log-ebpf) flow into our `tracing` output.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(error) => {
                tracing::warn!(%error, "Kernel log bridge unavailable");
                None
            }
        };
        for (program, category, name) in TRACEPOINTS {
            if !tcp_bytes && BYTE_PROGRAMS.contains(&program) {
                continue;
            }
            attach(&mut ebpf, program, category, name)?;
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(TelemetryError::MissingMap(name))
        };
        let mut listen: HashMap<MapData, u16, u8> =
            HashMap::try_from(take(&mut ebpf, maps::LISTEN_PORTS)?)
                .map_err(map_err(maps::LISTEN_PORTS))?;
        for port in listening_ports() {
            listen
                .insert(port, 1, 0)
                .map_err(map_err(maps::LISTEN_PORTS))?;
        }
        Ok(Self {
            block_stats: HashMap::try_from(take(&mut ebpf, maps::BLOCK_STATS)?)
                .map_err(map_err(maps::BLOCK_STATS))?,
            endpoints: HashMap::try_from(take(&mut ebpf, maps::ENDPOINTS)?)
                .map_err(map_err(maps::ENDPOINTS))?,
            stats: PerCpuArray::try_from(take(&mut ebpf, maps::STATS)?)
                .map_err(map_err(maps::STATS))?,
            srtt_mask: Array::try_from(take(&mut ebpf, maps::SRTT_MASK)?)
                .map_err(map_err(maps::SRTT_MASK))?,
            probes_seen: None,
            devices: devices::DeviceNames::default(),
            logger,
            ebpf,
        })
    }

    /// The loaded object, for attaching the capture programs.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// File descriptor that becomes readable when kernel log records wait.
    pub fn log_fd(&self) -> Option<std::os::fd::RawFd> {
        self.logger.as_ref().map(|l| l.as_raw_fd())
    }

    /// Forwards pending kernel log records to `tracing`.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Reads every map into a snapshot.
    pub fn snapshot(&mut self) -> Result<KernelSnapshot, TelemetryError> {
        let mut block = Vec::new();
        for entry in self.block_stats.iter() {
            let (key, value) = entry.map_err(map_err(maps::BLOCK_STATS))?;
            block.push((key, value));
        }
        let mut endpoints = Vec::new();
        for entry in self.endpoints.iter() {
            let (key, value) = entry.map_err(map_err(maps::ENDPOINTS))?;
            endpoints.push((key, value));
        }
        let mut counts = [0u64; stat::COUNT as usize];
        for (slot, out) in counts.iter_mut().enumerate() {
            let per_cpu = self
                .stats
                .get(&(slot as u32), 0)
                .map_err(map_err(maps::STATS))?;
            *out = per_cpu.iter().sum();
        }
        self.sample_srtt(counts[stat::TCP_PROBES as usize]);
        Ok(snapshot::build(
            block,
            endpoints,
            &counts,
            &mut self.devices,
        ))
    }
}

impl KernelTelemetry {
    /// Sets `tcp_probe`'s sampling from the probe rate since the last
    /// snapshot, so a busy host keeps about `SRTT_SAMPLES_PER_SECOND` RTT
    /// samples and a quiet one records every probe.
    fn sample_srtt(&mut self, probes: u64) {
        let now = std::time::Instant::now();
        let (mask, changed) = match self.probes_seen {
            Some((before, at, mask)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                let rate = (probes.saturating_sub(before) as f64 / secs) as u64;
                let new = shadow_common::srtt_mask_for(rate);
                (new, new != mask)
            }
            None => (0, false),
        };
        if changed && let Err(error) = self.srtt_mask.set(0, mask, 0) {
            tracing::warn!(%error, "tcp_probe sampling could not be set");
            return;
        }
        self.probes_seen = Some((probes, now, mask));
    }
}

fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &str,
    name: &str,
) -> Result<(), TelemetryError> {
    let err = |source| TelemetryError::Program {
        program,
        source: Box::new(source),
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(TelemetryError::Program {
            program,
            source: Box::new(aya::programs::ProgramError::UnexpectedProgramType),
        })?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    prog.attach(category, name).map_err(err)?;
    tracing::debug!(program, "Attached {category}:{name}");
    Ok(())
}

/// Older kernels charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("Could not raise RLIMIT_MEMLOCK");
    }
}

/// Local TCP ports in LISTEN state now (the kernel program learns later ones
/// from `inet_sock_set_state`).
fn listening_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            ports.extend(parse_listening_ports(&text));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports of the `0A` (LISTEN) rows of a `/proc/net/tcp{,6}` table.
pub fn parse_listening_ports(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(parse_listening_ports(text), vec![0x1F90]);
    }

    #[test]
    fn a_quiet_host_records_every_rtt_and_a_busy_one_about_two_thousand_a_second() {
        assert_eq!(shadow_common::srtt_mask_for(0), 0);
        assert_eq!(
            shadow_common::srtt_mask_for(shadow_common::SRTT_SAMPLES_PER_SECOND),
            0,
            "every probe"
        );
        for rate in [2_001, 10_000, 54_000, 500_000] {
            let mask = shadow_common::srtt_mask_for(rate);
            assert!((mask + 1).is_power_of_two(), "{rate}: {mask}");
            let kept = rate / (mask + 1);
            assert!(
                (shadow_common::SRTT_SAMPLES_PER_SECOND / 2
                    ..=shadow_common::SRTT_SAMPLES_PER_SECOND)
                    .contains(&kept),
                "{rate}/s keeps {kept}/s"
            );
        }
        assert_eq!(
            shadow_common::srtt_mask_for(u64::MAX),
            shadow_common::SRTT_MASK_MAX,
            "bounded"
        );
    }
}
