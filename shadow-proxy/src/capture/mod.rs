//! Passive capture of sampled connections.
//!
//! The tc classifier (`shadow-ebpf/src/capture.rs`) tees sampled packets
//! into a perf event array. [`TcCapture`] attaches it and owns the sampling
//! table; [`pipeline`] reads the perf buffers on its own thread, rebuilds the
//! TCP streams ([`reassembly`]) and the HTTP exchanges
//! ([`crate::http::conversation`]) and hands finished exchanges to the
//! replayer through a bounded queue that drops (and counts) when full.

pub mod config;
pub mod packet;
pub mod pipeline;
pub mod qdisc;
pub mod reassembly;
pub mod ring;

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, tc},
};
use shadow_common::capture::{
    CaptureCounters, ServiceSampling, TC_EGRESS_PROGRAM, TC_INGRESS_PROGRAM, maps, service_flag,
};

use config::{AttachMode, CaptureConfig};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The interface is not there, or the object lacks a program.
    #[error("interface {interface}: {message}")]
    Attach { interface: String, message: String },
    /// The kernel refused to load or attach a program.
    #[error("interface {interface}: {program}: {source}")]
    Program {
        interface: String,
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {map}: {message}")]
    Missing { map: &'static str, message: String },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Capture errors are the agent's own: the live path is only read.
impl crate::util::Sourced for CaptureError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |e| CaptureError::Map {
        map,
        source: Box::new(e),
    }
}

/// The attached classifier and its maps.
pub struct TcCapture {
    services: Array<MapData, ServiceSampling>,
    /// Ports whose rate was above 0 at some point since attach.
    sampled_ports: std::collections::HashSet<u16>,
    stats: PerCpuArray<MapData, CaptureCounters>,
    pub interface: String,
    /// Whether the clsact qdisc on the interface is ours (it was not there
    /// before): a clean exit removes it, and only then.
    added_clsact: bool,
}

impl TcCapture {
    /// Attaches the classifier to `cfg.interface`, first removing filters a
    /// killed agent may have left (netlink-attached filters outlive their
    /// process; tcx links do not). Returns the capture and the perf event
    /// array, for the capture thread to open its rings on.
    pub fn attach(ebpf: &mut Ebpf, cfg: &CaptureConfig) -> Result<(Self, MapData), CaptureError> {
        let iface = cfg.interface.as_str();
        let attach_err = |message: String| CaptureError::Attach {
            interface: iface.to_owned(),
            message,
        };
        let program_err =
            |program: &'static str, e: aya::programs::ProgramError| CaptureError::Program {
                interface: iface.to_owned(),
                program,
                source: Box::new(e),
            };
        if !qdisc::interface_exists(iface) {
            return Err(attach_err(
                "no such interface here (`ip link` lists them)".into(),
            ));
        }
        let hooks: &[(&str, TcAttachType)] = match cfg.attach {
            AttachMode::Ingress => &[(TC_INGRESS_PROGRAM, TcAttachType::Ingress)],
            AttachMode::Egress => &[(TC_EGRESS_PROGRAM, TcAttachType::Egress)],
            AttachMode::Both => &[
                (TC_INGRESS_PROGRAM, TcAttachType::Ingress),
                (TC_EGRESS_PROGRAM, TcAttachType::Egress),
            ],
        };
        for (name, hook) in [
            (TC_INGRESS_PROGRAM, TcAttachType::Ingress),
            (TC_EGRESS_PROGRAM, TcAttachType::Egress),
        ] {
            if tc::qdisc_detach_program(iface, hook, name).is_ok() {
                tracing::warn!(
                    interface = iface,
                    program = name,
                    "Removed a filter left by an earlier run"
                );
            }
        }
        // tcx (kernel >= 6.6) needs no qdisc; netlink attachment does. An
        // error here means one exists already: someone else's, left alone.
        let added_clsact = tc::qdisc_add_clsact(iface).is_ok();
        for (name, hook) in hooks {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| attach_err(format!("program {name} missing from the object")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| program_err(name, e))?;
            prog.load().map_err(|e| program_err(name, e))?;
            prog.attach(iface, *hook)
                .map_err(|e| program_err(name, e))?;
            tracing::info!(interface = iface, program = name, "Capture attached");
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(CaptureError::Missing {
                map: name,
                message: "missing from the object".into(),
            })
        };
        let services =
            Array::try_from(take(ebpf, maps::SERVICES)?).map_err(map_err(maps::SERVICES))?;
        let stats = PerCpuArray::try_from(take(ebpf, maps::CAPTURE_STATS)?)
            .map_err(map_err(maps::CAPTURE_STATS))?;
        let perf = match take(ebpf, maps::PACKETS)? {
            aya::maps::Map::PerfEventArray(data) => data,
            _ => {
                return Err(CaptureError::Missing {
                    map: maps::PACKETS,
                    message: "not a perf event array".into(),
                });
            }
        };
        Ok((
            Self {
                services,
                sampled_ports: std::collections::HashSet::new(),
                stats,
                interface: cfg.interface.clone(),
                added_clsact,
            },
            perf,
        ))
    }

    /// Removes the clsact qdisc if the agent added it (at a clean exit);
    /// once only.
    pub fn remove_added_qdisc(&mut self) {
        if !std::mem::take(&mut self.added_clsact) {
            return;
        }
        match qdisc::delete_clsact(&self.interface) {
            Ok(()) => {
                tracing::info!(interface = %self.interface, "Removed the clsact qdisc the agent added")
            }
            Err(error) => {
                tracing::warn!(%error, interface = %self.interface, "Could not remove the clsact qdisc the agent added");
            }
        }
    }

    /// Sets a service's sampling rate; takes effect for the next packet.
    pub fn set_sampling(
        &mut self,
        port: u16,
        slot: u32,
        per_ten_thousand: u32,
    ) -> Result<(), CaptureError> {
        if per_ten_thousand > 0 {
            self.sampled_ports.insert(port);
        }
        let mut flags = service_flag::ACTIVE;
        if self.sampled_ports.contains(&port) {
            flags |= service_flag::MAY_HAVE_ADMITTED;
        }
        self.services
            .set(
                u32::from(port),
                ServiceSampling {
                    per_ten_thousand,
                    slot,
                    flags,
                },
                0,
            )
            .map_err(map_err(maps::SERVICES))
    }

    /// The kernel's counters for a service slot, summed over CPUs.
    pub fn counters(&self, slot: u32) -> Result<CaptureCounters, CaptureError> {
        let per_cpu = self
            .stats
            .get(&slot, 0)
            .map_err(map_err(maps::CAPTURE_STATS))?;
        let mut sum = CaptureCounters::default();
        for c in per_cpu.iter() {
            sum.packets_seen += c.packets_seen;
            sum.packets_sampled += c.packets_sampled;
            sum.payload_bytes += c.payload_bytes;
            sum.truncated += c.truncated;
            sum.parse_errors += c.parse_errors;
            sum.flows_admitted += c.flows_admitted;
        }
        Ok(sum)
    }
}
