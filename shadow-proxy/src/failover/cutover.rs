//! Cutover on one host, in the kernel: an `sk_lookup` program attached to a
//! network namespace gives new TCP connections for a service's port to the
//! shadow's listening socket. Nothing on the data path changes for
//! connections already open: the kernel finds them before any lookup, so
//! they stay on the primary and drain there.
//!
//! - [`KernelCutover::steer`] puts the shadow's listener in the sockmap,
//!   then sets the port's share of new connections (all, or a step of a
//!   ramp). The listener is in place before any lookup can ask for it.
//! - [`KernelCutover::release`] removes the port's entry first (new
//!   connections go back to the primary at once), then the listener.
//! - A refused assignment (the shadow's socket closed) is counted and the
//!   connection goes on to the primary: the program never drops one.
//! - The attachment is a BPF link held by this process: it goes when the
//!   process does, so no leftover can steer traffic after a crash.
//!
//! The shadow's listener is handed over as a file descriptor: taken from
//! the shadow process by its port ([`listener_of`], `pidfd_getfd`), or
//! passed in by whoever opened it.

use std::{
    collections::BTreeMap,
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, SockMap},
    programs::SkLookup,
};
use shadow_common::steer::{
    MAX_STEERED, STEER_PROGRAM, STEER_SCALE, Steer, SteerCounters, maps as steer_maps,
};

use crate::kernel::{self, TelemetryError};

#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    #[error(transparent)]
    Kernel(#[from] TelemetryError),
    #[error("opening the network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sk_lookup program {STEER_PROGRAM}: {0}")]
    Program(#[source] Box<aya::programs::ProgramError>),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("process {pid} has no TCP socket listening on port {port}")]
    NoListener { pid: u32, port: u16 },
    #[error("taking process {pid}'s listener on port {port}: {source}")]
    Take {
        pid: u32,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "port {port}: a share of {share} is not within 0..={STEER_SCALE} (hundredths of a percent)"
    )]
    Share { port: u16, share: u32 },
    #[error("port {0} is not steered")]
    NotSteered(u16),
    #[error("{MAX_STEERED} ports are steered already")]
    Full,
}

/// Steering of one port.
#[derive(Debug)]
struct Steered {
    slot: u32,
    share: u32,
    /// Ours to keep open while the sockmap holds it.
    _listener: OwnedFd,
}

/// The `sk_lookup` program attached to one network namespace, and what it
/// steers.
pub struct KernelCutover {
    /// Its own instance of the object: the program, its link and maps.
    _ebpf: Ebpf,
    steer: HashMap<MapData, u32, Steer>,
    socks: SockMap<MapData>,
    stats: PerCpuArray<MapData, SteerCounters>,
    ports: BTreeMap<u16, Steered>,
    /// Per port: the client source port never steered.
    bypass: BTreeMap<u16, u16>,
    netns: PathBuf,
}

impl std::fmt::Debug for KernelCutover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCutover")
            .field("netns", &self.netns)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// What one steer or release took, from the call to the kernel having the
/// new state (the next lookup sees it).
pub type Took = Duration;

impl KernelCutover {
    /// Loads the program and attaches it to the network namespace at
    /// `netns` (`/proc/self/ns/net`, `/run/netns/NAME`). It steers nothing
    /// until [`Self::steer`].
    pub fn attach(netns: &Path) -> Result<Self, CutoverError> {
        let ns = File::open(netns).map_err(|source| CutoverError::Netns {
            path: netns.to_owned(),
            source,
        })?;
        let mut ebpf = kernel::load_object()?;
        let program: &mut SkLookup = ebpf
            .program_mut(STEER_PROGRAM)
            .ok_or(CutoverError::MissingMap(STEER_PROGRAM))?
            .try_into()
            .map_err(|e| CutoverError::Program(Box::new(e)))?;
        program
            .load()
            .map_err(|e| CutoverError::Program(Box::new(e)))?;
        program
            .attach(&ns)
            .map_err(|e| CutoverError::Program(Box::new(e)))?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(CutoverError::MissingMap(name))
        };
        let map_err = |map: &'static str| {
            move |e: aya::maps::MapError| CutoverError::Map {
                map,
                source: Box::new(e),
            }
        };
        let steer = HashMap::try_from(take(&mut ebpf, steer_maps::STEER)?)
            .map_err(map_err(steer_maps::STEER))?;
        let socks = SockMap::try_from(take(&mut ebpf, steer_maps::STEER_SOCKS)?)
            .map_err(map_err(steer_maps::STEER_SOCKS))?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, steer_maps::STEER_STATS)?)
            .map_err(map_err(steer_maps::STEER_STATS))?;
        tracing::info!(netns = %netns.display(), "Cutover program attached");
        Ok(Self {
            _ebpf: ebpf,
            steer,
            socks,
            stats,
            ports: BTreeMap::new(),
            bypass: BTreeMap::new(),
            netns: netns.to_owned(),
        })
    }

    /// Gives `share` (hundredths of a percent; 10000 = all) of new
    /// connections to `port` to `listener`. Steering a port again replaces
    /// its listener and share.
    pub fn steer(
        &mut self,
        port: u16,
        listener: OwnedFd,
        share: u32,
    ) -> Result<Took, CutoverError> {
        if share > STEER_SCALE {
            return Err(CutoverError::Share { port, share });
        }
        let slot = match self.ports.get(&port) {
            Some(s) => s.slot,
            None => (0..MAX_STEERED)
                .find(|i| !self.ports.values().any(|s| s.slot == *i))
                .ok_or(CutoverError::Full)?,
        };
        let started = Instant::now();
        // The listener first: a lookup that sees the entry finds it there.
        self.socks
            .set(slot, &listener, 0)
            .map_err(|e| CutoverError::Map {
                map: steer_maps::STEER_SOCKS,
                source: Box::new(e),
            })?;
        self.write(port, slot, share)?;
        let took = started.elapsed();
        tracing::info!(
            port,
            percent = f64::from(share) / 100.0,
            took_us = took.as_micros() as u64,
            "Cutover: new connections steered to the shadow"
        );
        self.ports.insert(
            port,
            Steered {
                slot,
                share,
                _listener: listener,
            },
        );
        Ok(took)
    }

    /// Changes a steered port's share (a ramp step).
    pub fn set_share(&mut self, port: u16, share: u32) -> Result<Took, CutoverError> {
        if share > STEER_SCALE {
            return Err(CutoverError::Share { port, share });
        }
        let slot = self
            .ports
            .get(&port)
            .ok_or(CutoverError::NotSteered(port))?
            .slot;
        let started = Instant::now();
        self.write(port, slot, share)?;
        if let Some(s) = self.ports.get_mut(&port) {
            s.share = share;
        }
        Ok(started.elapsed())
    }

    /// Connections to `port` from `source_port` are never steered (the
    /// agent's checks of the primary). Takes effect at the next steer.
    pub fn set_bypass(&mut self, port: u16, source_port: u16) {
        self.bypass.insert(port, source_port);
    }

    fn write(&mut self, port: u16, slot: u32, share: u32) -> Result<(), CutoverError> {
        let value = Steer {
            per_ten_thousand: share,
            slot,
            bypass_port: u32::from(self.bypass.get(&port).copied().unwrap_or(0)),
            _pad: 0,
        };
        self.steer
            .insert(u32::from(port), value, 0)
            .map_err(|e| CutoverError::Map {
                map: steer_maps::STEER,
                source: Box::new(e),
            })
    }

    /// Rolls a port back: new connections go to the primary again at once,
    /// then the shadow's listener leaves the sockmap. Connections the
    /// shadow accepted stay with it.
    pub fn release(&mut self, port: u16) -> Result<Took, CutoverError> {
        let s = self
            .ports
            .remove(&port)
            .ok_or(CutoverError::NotSteered(port))?;
        let started = Instant::now();
        self.steer
            .remove(&u32::from(port))
            .map_err(|e| CutoverError::Map {
                map: steer_maps::STEER,
                source: Box::new(e),
            })?;
        let took = started.elapsed();
        if let Err(error) = self.socks.clear_index(&s.slot) {
            // Unreachable by lookups already; only a slot stays in use.
            tracing::warn!(port, %error, "Cutover: the shadow's listener stays in its slot");
        }
        tracing::info!(
            port,
            took_us = took.as_micros() as u64,
            "Cutover released: new connections go to the primary"
        );
        Ok(took)
    }

    /// The share of new connections a port gives the shadow, if steered.
    pub fn share(&self, port: u16) -> Option<u32> {
        self.ports.get(&port).map(|s| s.share)
    }

    /// A steered port's counters, summed over CPUs.
    pub fn counters(&self, port: u16) -> Result<SteerCounters, CutoverError> {
        let slot = self
            .ports
            .get(&port)
            .ok_or(CutoverError::NotSteered(port))?
            .slot;
        let values = self.stats.get(&slot, 0).map_err(|e| CutoverError::Map {
            map: steer_maps::STEER_STATS,
            source: Box::new(e),
        })?;
        Ok(values
            .iter()
            .fold(SteerCounters::default(), |a, c| SteerCounters {
                lookups: a.lookups + c.lookups,
                steered: a.steered + c.steered,
                failed: a.failed + c.failed,
                _reserved: 0,
            }))
    }
}

/// The inodes of the TCP sockets listening on `port`, as the network
/// namespace of `proc_dir` (`/proc/PID`, `/proc/thread-self`) lists them.
fn listening_inodes(proc_dir: &str, port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("{proc_dir}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A"
                && local_port == Some(port)
                && let Ok(i) = inode.parse()
            {
                inodes.push(i);
            }
        }
    }
    inodes
}

/// Takes a duplicate of the socket process `pid` listens on `port` with
/// (`pidfd_getfd`: root, or ptrace rights over it). The process keeps its
/// own; both refer to the same listener.
pub fn listener_of(pid: u32, port: u16) -> Result<OwnedFd, CutoverError> {
    let inodes = listening_inodes(&format!("/proc/{pid}"), port);
    let take = |source| CutoverError::Take { pid, port, source };
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(take)?;
    let target = find_fd(dir, &inodes).ok_or(CutoverError::NoListener { pid, port })?;
    duplicate(pid, port, target)
}

/// Takes a duplicate of whichever process's socket listens on `port` in
/// the calling thread's network namespace.
pub fn listener_on(port: u16) -> Result<OwnedFd, CutoverError> {
    let me = std::process::id();
    let inodes = listening_inodes("/proc/thread-self", port);
    if inodes.is_empty() {
        return Err(CutoverError::NoListener { pid: me, port });
    }
    let procs = std::fs::read_dir("/proc").map_err(|source| CutoverError::Take {
        pid: me,
        port,
        source,
    })?;
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(dir) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if let Some(fd) = find_fd(dir, &inodes) {
            return duplicate(pid, port, fd);
        }
    }
    Err(CutoverError::NoListener { pid: me, port })
}

/// The number of the fd in `dir` (a `/proc/PID/fd`) that is one of `inodes`.
fn find_fd(dir: std::fs::ReadDir, inodes: &[u64]) -> Option<i32> {
    dir.filter_map(Result::ok).find_map(|e| {
        let link = std::fs::read_link(e.path()).ok()?;
        let inode: u64 = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        inodes
            .contains(&inode)
            .then(|| e.file_name().to_str()?.parse::<i32>().ok())
            .flatten()
    })
}

/// `pidfd_getfd` of process `pid`'s fd `target`.
fn duplicate(pid: u32, port: u16, target: i32) -> Result<OwnedFd, CutoverError> {
    let take = |source| CutoverError::Take { pid, port, source };
    // SAFETY: plain syscalls; every fd they return is checked and owned.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(take(std::io::Error::last_os_error()));
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0);
        if fd < 0 {
            return Err(take(std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}
