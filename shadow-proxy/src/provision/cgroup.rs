//! The cgroup backend: CPU and memory limits on a cgroup, v2 where the
//! host has the controllers there, v1 otherwise.
//!
//! | resource | v2 | v1 |
//! |---|---|---|
//! | CPU (cores) | `cpu.max` = `quota period` | `cpu.cfs_quota_us` (period `cpu.cfs_period_us`) |
//! | memory (bytes) | `memory.max`, `memory.high` = `high_fraction` of it | `memory.limit_in_bytes`, `memory.soft_limit_in_bytes` |
//!
//! Every write is read back: the kernel refuses some values (a v1 memory
//! limit under current usage is `EBUSY`), and a refused write must leave
//! the previous allocation in place and say why. This host's cpu and
//! memory controllers are v1 (`/sys/fs/cgroup/unified` has only hugetlb),
//! so the v1 path is tested on real cgroups; the v2 path writes the same
//! files the kernel documents, tested on a directory.

use std::path::{Path, PathBuf};

use shadow_api::provision::Resource;

use super::backend::{Backend, BackendError, Change};

/// The default CFS period, as the kernel sets it.
pub const PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// v2 when the unified hierarchy at `root` offers `cpu` and `memory`.
    pub fn detect(root: &Path) -> Self {
        let controllers =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            Self::V2
        } else {
            Self::V1
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// One cgroup's directories: the CPU and memory controllers' (the same
/// directory on v2).
#[derive(Debug, Clone, PartialEq)]
pub struct Cgroup {
    pub version: Version,
    pub cpu: PathBuf,
    pub memory: PathBuf,
    /// `memory.high` (v2) or the soft limit (v1) as a share of the limit.
    pub high_fraction: f64,
}

impl Cgroup {
    /// The cgroup at `path` (relative to the hierarchy, like `shadow/web`)
    /// under `/sys/fs/cgroup`, in whichever version the host has.
    pub fn at(path: &str) -> Self {
        Self::under(Path::new("/sys/fs/cgroup"), path)
    }

    /// The same under another mount point (tests).
    pub fn under(root: &Path, path: &str) -> Self {
        let rel = path.trim_start_matches('/');
        let version = Version::detect(root);
        let (cpu, memory) = match version {
            Version::V2 => (root.join(rel), root.join(rel)),
            Version::V1 => (root.join("cpu").join(rel), root.join("memory").join(rel)),
        };
        Self {
            version,
            cpu,
            memory,
            high_fraction: 0.9,
        }
    }

    fn write(dir: &Path, file: &str, value: &str) -> Result<(), BackendError> {
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(|source| BackendError::Io {
            what: format!("writing {value:?} to {}", path.display()),
            source,
        })
    }

    fn read(dir: &Path, file: &str) -> Result<String, BackendError> {
        let path = dir.join(file);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| BackendError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
    }

    /// Writes and reads back; `expect` is what the kernel shows for it.
    fn set(dir: &Path, file: &str, value: &str, expect: &str) -> Result<(), BackendError> {
        Self::write(dir, file, value)?;
        let read = Self::read(dir, file)?;
        if read != expect {
            return Err(BackendError::Verify {
                what: dir.join(file).display().to_string(),
                wrote: value.into(),
                read,
            });
        }
        Ok(())
    }

    pub fn set_cpu(&self, cores: f64) -> Result<(), BackendError> {
        let quota = ((cores * PERIOD_US as f64).round() as u64).max(1000);
        match self.version {
            Version::V2 => {
                let v = format!("{quota} {PERIOD_US}");
                Self::set(&self.cpu, "cpu.max", &v, &v)
            }
            Version::V1 => {
                let p = PERIOD_US.to_string();
                Self::set(&self.cpu, "cpu.cfs_period_us", &p, &p)?;
                let q = quota.to_string();
                Self::set(&self.cpu, "cpu.cfs_quota_us", &q, &q)
            }
        }
    }

    /// Cores allowed now; `None` when unlimited or unreadable.
    pub fn cpu(&self) -> Option<f64> {
        let (quota, period) = match self.version {
            Version::V2 => {
                let s = Self::read(&self.cpu, "cpu.max").ok()?;
                let mut it = s.split_whitespace();
                (
                    it.next()?.parse::<f64>().ok()?,
                    it.next()?.parse::<f64>().ok()?,
                )
            }
            Version::V1 => (
                Self::read(&self.cpu, "cpu.cfs_quota_us")
                    .ok()?
                    .parse::<f64>()
                    .ok()?,
                Self::read(&self.cpu, "cpu.cfs_period_us")
                    .ok()?
                    .parse::<f64>()
                    .ok()?,
            ),
        };
        (quota > 0.0 && period > 0.0).then(|| quota / period)
    }

    pub fn set_memory(&self, bytes: f64) -> Result<(), BackendError> {
        // The kernel keeps limits in pages: write and expect whole pages.
        let page = crate::util::page_size() as u64;
        let pages = |b: f64| (b.max(page as f64) as u64) / page * page;
        let (max, high) = (pages(bytes), pages(bytes * self.high_fraction));
        let (m, h) = (max.to_string(), high.to_string());
        match self.version {
            Version::V2 => {
                // Raising: max first, so high never exceeds it; lowering: high first.
                let raise = self.memory().is_none_or(|now| bytes >= now);
                if raise {
                    Self::set(&self.memory, "memory.max", &m, &m)?;
                    Self::set(&self.memory, "memory.high", &h, &h)
                } else {
                    Self::set(&self.memory, "memory.high", &h, &h)?;
                    Self::set(&self.memory, "memory.max", &m, &m)
                }
            }
            Version::V1 => {
                Self::set(&self.memory, "memory.limit_in_bytes", &m, &m)?;
                Self::set(&self.memory, "memory.soft_limit_in_bytes", &h, &h)
            }
        }
    }

    /// The memory limit in bytes; `None` when unlimited or unreadable.
    pub fn memory(&self) -> Option<f64> {
        let file = match self.version {
            Version::V2 => "memory.max",
            Version::V1 => "memory.limit_in_bytes",
        };
        let v = Self::read(&self.memory, file).ok()?.parse::<f64>().ok()?;
        // v1 shows "no limit" as a huge page-aligned number.
        (v < (1u64 << 62) as f64).then_some(v)
    }
}

impl Backend for Cgroup {
    fn apply(&self, change: &Change<'_>) -> Result<(), BackendError> {
        match change.resource {
            Resource::Cpu => self.set_cpu(change.to),
            Resource::Memory => self.set_memory(change.to),
            Resource::Replicas => Err(BackendError::Unsupported {
                backend: "cgroup",
                resource: "replicas",
            }),
        }
    }

    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn current(&self, resource: Resource) -> Option<f64> {
        match resource {
            Resource::Cpu => self.cpu(),
            Resource::Memory => self.memory(),
            Resource::Replicas => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The v2 files, on a directory laid out like a unified hierarchy (this
    /// host has no v2 cpu or memory controller to write for real).
    #[test]
    fn v2_writes_cpu_max_and_memory_max_and_high() {
        let root = std::env::temp_dir().join(format!("shadow-cgv2-{}", std::process::id()));
        let dir = root.join("shadow/web");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        for f in ["cpu.max", "memory.max", "memory.high"] {
            std::fs::write(dir.join(f), "max\n").unwrap();
        }
        let cg = Cgroup::under(&root, "/shadow/web");
        assert_eq!(cg.version, Version::V2);
        assert_eq!(cg.cpu(), None, "max is unlimited");
        cg.set_cpu(1.5).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(cg.cpu(), Some(1.5));
        cg.set_memory(256.0 * 1024.0 * 1024.0).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            "268435456"
        );
        let high: u64 = std::fs::read_to_string(dir.join("memory.high"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(high < 268_435_456 && high > 230_000_000, "{high}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_v2_controllers_the_v1_hierarchies_are_used() {
        let root = std::env::temp_dir().join(format!("shadow-cgv1-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let cg = Cgroup::under(&root, "shadow/web");
        assert_eq!(cg.version, Version::V1);
        assert_eq!(cg.cpu, root.join("cpu/shadow/web"));
        assert_eq!(cg.memory, root.join("memory/shadow/web"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
