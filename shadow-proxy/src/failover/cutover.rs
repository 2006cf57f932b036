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
//! - [`KernelCutover::attach`] holds the link in this process: it goes when
//!   the process does (tests of the primitive).
//! - [`KernelCutover::attach_pinned`] (the agent's) pins the link and the
//!   maps in bpffs, one directory per network namespace under
//!   [`PIN_ROOT`]: a service cut over stays on its shadow while the agent
//!   is away (crashed, restarting, upgraded), and the next agent adopts
//!   what is steered. A directory whose namespace is gone, or that no
//!   profile wants, is a leftover and is removed on start
//!   ([`clean_pins`]); one that steers nothing is removed when its owner
//!   drops it.
//!
//! The shadow's listener is handed over as a file descriptor: taken from
//! the shadow process by its port ([`listener_of`], `pidfd_getfd`), or
//! passed in by whoever opened it.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, PerCpuArray, SockMap},
    programs::{SkLookup, links::FdLink, links::PinnedLink},
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
    #[error("pinning in bpffs at {}: {reason}", path.display())]
    Pin { path: PathBuf, reason: String },
}

/// Where the agent pins cutover state: `net-<inode>` per network namespace.
/// Apart from `/sys/fs/bpf/shadow`, which every start empties.
pub const PIN_ROOT: &str = "/sys/fs/bpf/shadow-steer";

const LINK_PIN: &str = "link";

/// Steering of one port.
#[derive(Debug)]
struct Steered {
    slot: u32,
    share: u32,
    bypass: Option<u16>,
    /// Ours to keep open while the sockmap holds it; none for a port
    /// adopted from pins (the sockmap holds its socket).
    _listener: Option<OwnedFd>,
}

/// The `sk_lookup` program attached to one network namespace, and what it
/// steers.
pub struct KernelCutover {
    /// Its own instance of the object: the program, its link and maps
    /// (none when adopted from pins).
    _ebpf: Option<Ebpf>,
    link: Held,
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

/// Who holds the program's link.
#[derive(Debug)]
enum Held {
    /// This process: detached when it exits.
    Process(#[allow(dead_code)] FdLink),
    /// bpffs, at the directory's `link`: attached until unpinned.
    Pinned(#[allow(dead_code)] PinnedLink, PathBuf),
}

impl Drop for KernelCutover {
    /// Pins that steer nothing are removed; pins that steer stay, so the
    /// next agent adopts them.
    fn drop(&mut self) {
        if let Held::Pinned(_, dir) = &self.link {
            if self.ports.is_empty() {
                remove_pin_dir(dir);
            } else {
                tracing::warn!(
                    pins = %dir.display(),
                    steered = ?self.steered(),
                    "Cutover stays in the kernel after the agent: new connections keep going to the shadow"
                );
            }
        }
    }
}

/// What one steer or release took, from the call to the kernel having the
/// new state (the next lookup sees it).
pub type Took = Duration;

impl KernelCutover {
    /// Loads the program and attaches it to the network namespace at
    /// `netns` (`/proc/self/ns/net`, `/run/netns/NAME`). It steers nothing
    /// until [`Self::steer`]. The link is this process's: it goes with it.
    pub fn attach(netns: &Path) -> Result<Self, CutoverError> {
        let ns = open_netns(netns)?;
        let (ebpf, link, maps) = load_and_attach(&ns)?;
        Self::with_maps(
            Some(ebpf),
            Held::Process(link),
            maps,
            netns,
            BTreeMap::new(),
        )
    }

    /// Like [`Self::attach`], with the link and maps pinned under `root`
    /// (normally [`PIN_ROOT`]), so that steering outlives this process. Pins
    /// left for this namespace by an earlier run are adopted: the ports
    /// they steer stay steered, with the shares they had.
    pub fn attach_pinned(netns: &Path, root: &Path) -> Result<Self, CutoverError> {
        let ns = open_netns(netns)?;
        let dir = pin_dir(root, &ns, netns)?;
        if dir.join(LINK_PIN).exists() {
            match adopt(&dir) {
                Ok((link, maps, ports)) => {
                    tracing::info!(
                        netns = %netns.display(),
                        pins = %dir.display(),
                        steered = ?ports.keys().collect::<Vec<_>>(),
                        "Cutover program adopted from pins"
                    );
                    return Self::with_maps(None, Held::Pinned(link, dir), maps, netns, ports);
                }
                Err(error) => {
                    tracing::warn!(pins = %dir.display(), %error, "Cutover pins unusable; replaced");
                    remove_pin_dir(&dir);
                }
            }
        }
        ensure_bpffs(root)?;
        let pin_err = |path: &Path, reason: String| CutoverError::Pin {
            path: path.to_owned(),
            reason,
        };
        std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, e.to_string()))?;
        let (ebpf, link, maps) = load_and_attach(&ns)?;
        let pin = |map: &Map, name: &str| {
            let path = dir.join(name);
            map.pin(&path).map_err(|e| pin_err(&path, e.to_string()))
        };
        let pinned = (|| {
            pin(&maps.0, steer_maps::STEER)?;
            pin(&maps.1, steer_maps::STEER_SOCKS)?;
            pin(&maps.2, steer_maps::STEER_STATS)?;
            let path = dir.join(LINK_PIN);
            link.pin(&path).map_err(|e| pin_err(&path, e.to_string()))
        })();
        let link = match pinned {
            Ok(l) => l,
            Err(e) => {
                remove_pin_dir(&dir);
                return Err(e);
            }
        };
        Self::with_maps(
            Some(ebpf),
            Held::Pinned(link, dir),
            maps,
            netns,
            BTreeMap::new(),
        )
    }

    fn with_maps(
        ebpf: Option<Ebpf>,
        link: Held,
        (steer, socks, stats): SteerMaps,
        netns: &Path,
        ports: BTreeMap<u16, Steered>,
    ) -> Result<Self, CutoverError> {
        let steer = HashMap::try_from(steer).map_err(map_err(steer_maps::STEER))?;
        let socks = SockMap::try_from(socks).map_err(map_err(steer_maps::STEER_SOCKS))?;
        let stats = PerCpuArray::try_from(stats).map_err(map_err(steer_maps::STEER_STATS))?;
        tracing::info!(
            netns = %netns.display(),
            pinned = matches!(link, Held::Pinned(..)),
            "Cutover program attached"
        );
        let bypass = ports
            .iter()
            .filter_map(|(p, s)| s.bypass.map(|b| (*p, b)))
            .collect();
        Ok(Self {
            _ebpf: ebpf,
            link,
            steer,
            socks,
            stats,
            ports,
            bypass,
            netns: netns.to_owned(),
        })
    }

    /// The ports steered now (adopted ones included).
    pub fn steered(&self) -> Vec<u16> {
        self.ports.keys().copied().collect()
    }

    /// Where the pins are, if pinned.
    pub fn pins(&self) -> Option<&Path> {
        match &self.link {
            Held::Pinned(_, dir) => Some(dir),
            Held::Process(_) => None,
        }
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
                bypass: self.bypass.get(&port).copied(),
                _listener: Some(listener),
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

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> CutoverError {
    move |e| CutoverError::Map {
        map,
        source: Box::new(e),
    }
}

fn open_netns(netns: &Path) -> Result<File, CutoverError> {
    File::open(netns).map_err(|source| CutoverError::Netns {
        path: netns.to_owned(),
        source,
    })
}

/// `root/net-<inode>` for the namespace open as `ns`.
fn pin_dir(root: &Path, ns: &File, netns: &Path) -> Result<PathBuf, CutoverError> {
    let meta = ns.metadata().map_err(|source| CutoverError::Netns {
        path: netns.to_owned(),
        source,
    })?;
    Ok(root.join(format!("net-{}", meta.ino())))
}

/// A fresh instance of the program attached to `ns`, its link, and its
/// maps (STEER, STEER_SOCKS, STEER_STATS).
fn load_and_attach(ns: &File) -> Result<(Ebpf, FdLink, SteerMaps), CutoverError> {
    let mut ebpf = kernel::load_object()?;
    let prog_err = |e| CutoverError::Program(Box::new(e));
    let program: &mut SkLookup = ebpf
        .program_mut(STEER_PROGRAM)
        .ok_or(CutoverError::MissingMap(STEER_PROGRAM))?
        .try_into()
        .map_err(prog_err)?;
    program.load().map_err(prog_err)?;
    let id = program.attach(ns).map_err(prog_err)?;
    let link: FdLink = program.take_link(id).map_err(prog_err)?.into();
    let mut take = |name: &'static str| ebpf.take_map(name).ok_or(CutoverError::MissingMap(name));
    let maps = (
        take(steer_maps::STEER)?,
        take(steer_maps::STEER_SOCKS)?,
        take(steer_maps::STEER_STATS)?,
    );
    Ok((ebpf, link, maps))
}

/// STEER, STEER_SOCKS, STEER_STATS, untyped.
type SteerMaps = (Map, Map, Map);

type Adopted = (PinnedLink, SteerMaps, BTreeMap<u16, Steered>);

/// Opens the pins in `dir` and reads what they steer.
fn adopt(dir: &Path) -> Result<Adopted, CutoverError> {
    let path = dir.join(LINK_PIN);
    let link = PinnedLink::from_pin(&path).map_err(|e| CutoverError::Pin {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let open = |name: &'static str| MapData::from_pin(dir.join(name)).map_err(map_err(name));
    let steer = Map::HashMap(open(steer_maps::STEER)?);
    let socks = Map::SockMap(open(steer_maps::STEER_SOCKS)?);
    let stats = Map::PerCpuArray(open(steer_maps::STEER_STATS)?);
    SockMap::try_from(&socks).map_err(map_err(steer_maps::STEER_SOCKS))?;
    PerCpuArray::<_, SteerCounters>::try_from(&stats).map_err(map_err(steer_maps::STEER_STATS))?;
    let mut ports = BTreeMap::new();
    {
        let table: HashMap<&MapData, u32, Steer> =
            HashMap::try_from(&steer).map_err(map_err(steer_maps::STEER))?;
        for entry in table.iter() {
            let (port, v) = entry.map_err(map_err(steer_maps::STEER))?;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            ports.insert(
                port,
                Steered {
                    slot: v.slot,
                    share: v.per_ten_thousand,
                    bypass: u16::try_from(v.bypass_port).ok().filter(|b| *b != 0),
                    _listener: None,
                },
            );
        }
    }
    Ok((link, (steer, socks, stats), ports))
}

fn remove_pin_dir(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::info!(pins = %dir.display(), "Cutover pins removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(pins = %dir.display(), %error, "Could not remove cutover pins")
        }
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct it is given.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// `root`'s parent is a bpffs; `/sys/fs/bpf` is mounted if it is not.
fn ensure_bpffs(root: &Path) -> Result<(), CutoverError> {
    let parent = root.parent().unwrap_or(root);
    if is_bpffs(parent) {
        return Ok(());
    }
    let err = |reason: String| CutoverError::Pin {
        path: root.to_owned(),
        reason,
    };
    if parent != Path::new("/sys/fs/bpf") {
        return Err(err(format!("{} is not a bpffs mount", parent.display())));
    }
    // SAFETY: constant, NUL-terminated arguments.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(format!(
            "mounting bpffs at /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mnt = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    if mnt("/proc/self/ns/mnt") != mnt("/proc/1/ns/mnt") {
        tracing::warn!(
            "Mounted bpffs at /sys/fs/bpf in a private mount namespace: the cutover's pins go \
             with it; give [failover] pin_dir on the host's bpffs"
        );
    } else {
        tracing::info!("Mounted bpffs at /sys/fs/bpf");
    }
    Ok(())
}

/// The inode of the network namespace a pinned netns link is attached
/// to; 0 once its namespace is gone (the kernel detaches the link then).
/// None if the pin cannot be read.
fn link_netns(dir: &Path) -> Option<u32> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let path = std::ffi::CString::new(dir.join(LINK_PIN).as_os_str().as_encoded_bytes()).ok()?;
    // union bpf_attr, zeroed beyond the fields each command reads.
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: the kernel reads `attr` (its size is passed) and returns a
    // new fd, which is owned at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd from the kernel.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then the 8-aligned union,
    // whose netns arm starts with netns_ino (byte 16).
    let mut info = [0u32; 64];
    let mut attr = [0u64; 16];
    attr[0] = (fd.as_raw_fd() as u32 as u64) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: `info` is as long as the length passed; the kernel writes
    // at most that.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    (rc == 0).then_some(info[4])
}

/// Removes the pin directories under `root` that are leftovers: every one
/// when `all` (no failover profile wants a cutover), otherwise those whose
/// link is unreadable or whose network namespace is gone. Returns them.
pub fn clean_pins(root: &Path, all: bool) -> Vec<PathBuf> {
    let Ok(dirs) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for d in dirs.filter_map(Result::ok) {
        let path = d.path();
        let reason = match link_netns(&path) {
            _ if all => "no failover profile uses it",
            None => "its link cannot be read",
            Some(0) => "its network namespace is gone",
            Some(_) => continue,
        };
        tracing::warn!(pins = %path.display(), reason, "Removing leftover cutover pins");
        remove_pin_dir(&path);
        removed.push(path);
    }
    removed
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
