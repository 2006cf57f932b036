//! Host, cgroup and process utilisation from procfs and cgroupfs.
//!
//! Each [`HostSampler::sample`] reads the raw counters, turns the change
//! since the previous call into rates, and returns `(series, value)` pairs:
//! the series the forecaster learns from ([`series::Series`]).

pub mod history;
pub mod sensors;
pub mod series;

use std::{collections::HashMap, path::Path, time::Instant};

use series::{CgroupField, HostField, ProcessField, Series};

/// Processes reported per sample, busiest first (bounded label set).
pub const TOP_PROCESSES: usize = 5;
/// Cgroups reported per controller root (bounded label set).
pub const MAX_CGROUPS: usize = 32;

/// Aggregate CPU jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// (MemTotal, MemAvailable) in bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Received and sent bytes over all interfaces but loopback.
pub fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() >= 9 {
            rx += v[0];
            tx += v[8];
        }
    }
    (rx, tx)
}

/// Bytes read and written by the whole disks named in `disks`.
pub fn parse_diskstats(text: &str, disks: &[String]) -> (u64, u64) {
    let mut read = 0;
    let mut written = 0;
    for line in text.lines() {
        let v: Vec<&str> = line.split_whitespace().collect();
        if v.len() < 10 || !disks.iter().any(|d| d == v[2]) {
            continue;
        }
        // Sectors are always 512 bytes in /proc/diskstats.
        read += v[5].parse::<u64>().unwrap_or(0) * 512;
        written += v[9].parse::<u64>().unwrap_or(0) * 512;
    }
    (read, written)
}

/// (comm, utime + stime in ticks, RSS pages) from `/proc/<pid>/stat`.
pub fn parse_pid_stat(text: &str) -> Option<(String, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields after the comm start at field 3 (state): utime is 14, stime 15, rss 24.
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let rss: u64 = rest.get(21)?.parse().ok()?;
    Some((comm, utime + stime, rss))
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// Whole block devices (not partitions), skipping RAM disks.
fn whole_disks() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("ram"))
        .collect()
}

/// Child cgroups of a controller root, with one counter read from each.
fn cgroup_children(root: &str, file: &str) -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_dir() {
                return None;
            }
            let name = e.file_name().into_string().ok()?;
            Some((name, read_u64(e.path().join(file))?))
        })
        .collect();
    out.sort();
    out.truncate(MAX_CGROUPS);
    out
}

/// Turns cumulative counters into rates between calls.
#[derive(Debug, Default)]
pub struct HostSampler {
    last: Option<Instant>,
    cpu: Option<CpuTimes>,
    net: (u64, u64),
    disk: (u64, u64),
    cgroup_cpu_ns: HashMap<String, u64>,
    proc_ticks: HashMap<u32, u64>,
    disks: Vec<String>,
    /// "No hardware sensors" has been said (once per agent).
    no_sensors_said: bool,
    headroom: sensors::Headroom,
    /// The worst sensor's way to its limit as of the last sample
    /// ([`sensors::Headroom`]); `None` without a sensor that has a limit.
    pub hardware: Option<f64>,
}

impl HostSampler {
    pub fn new() -> Self {
        Self {
            disks: whole_disks(),
            ..Self::default()
        }
    }

    /// One sample. Rates need two calls, so the first returns only levels.
    pub fn sample(&mut self) -> Vec<(Series, f64)> {
        let now = Instant::now();
        let dt = self.last.map(|t| now.duration_since(t).as_secs_f64());
        self.last = Some(now);
        let mut out = Vec::new();

        if let Some(cpu) = read("/proc/stat").as_deref().and_then(parse_proc_stat) {
            if let Some(prev) = self.cpu
                && cpu.total > prev.total
            {
                let busy = cpu.busy.saturating_sub(prev.busy) as f64;
                out.push((
                    Series::Host(HostField::CpuUtilisation),
                    busy / (cpu.total - prev.total) as f64,
                ));
            }
            self.cpu = Some(cpu);
        }
        if let Some((total, avail)) = read("/proc/meminfo").as_deref().and_then(parse_meminfo) {
            out.push((
                Series::Host(HostField::MemoryUsedBytes),
                (total - avail) as f64,
            ));
            out.push((
                Series::Host(HostField::MemoryUtilisation),
                (total - avail) as f64 / total as f64,
            ));
        }
        let net = read("/proc/net/dev").map_or((0, 0), |t| parse_net_dev(&t));
        let disk = read("/proc/diskstats").map_or((0, 0), |t| parse_diskstats(&t, &self.disks));
        if let Some(dt) = dt.filter(|d| *d > 0.0) {
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
            out.push((
                Series::Host(HostField::NetRxBytesPerSecond),
                rate(net.0, self.net.0),
            ));
            out.push((
                Series::Host(HostField::NetTxBytesPerSecond),
                rate(net.1, self.net.1),
            ));
            out.push((
                Series::Host(HostField::DiskReadBytesPerSecond),
                rate(disk.0, self.disk.0),
            ));
            out.push((
                Series::Host(HostField::DiskWriteBytesPerSecond),
                rate(disk.1, self.disk.1),
            ));
            self.sample_cgroups(dt, &mut out);
            self.sample_processes(dt, &mut out);
        }
        self.net = net;
        self.disk = disk;
        self.sample_sensors(&mut out);
        out
    }

    fn sample_sensors(&mut self, out: &mut Vec<(Series, f64)>) {
        let readings = sensors::read_all(Path::new("/sys"));
        if readings.is_empty() && !self.no_sensors_said {
            self.no_sensors_said = true;
            tracing::info!(
                "No hardware sensors: /sys/class/hwmon and /sys/class/thermal have no readings, \
                 so hardware health has no temperatures, voltages or fans on this host"
            );
        }
        self.hardware = self.headroom.update(&readings);
        out.extend(readings.into_iter().map(|r| {
            (
                Series::Sensor {
                    chip: r.chip,
                    sensor: r.sensor,
                    kind: r.kind,
                },
                r.value,
            )
        }));
    }

    fn sample_cgroups(&mut self, dt: f64, out: &mut Vec<(Series, f64)>) {
        // cgroup v1 (this project's hosts) first, v2 as a fallback.
        let mut cpu = cgroup_children("/sys/fs/cgroup/cpuacct", "cpuacct.usage");
        if cpu.is_empty() {
            cpu = cgroup_children("/sys/fs/cgroup", "cpu.stat")
                .into_iter()
                .map(|(n, us)| (n, us * 1000))
                .collect();
        }
        let mut seen = HashMap::new();
        for (name, ns) in cpu {
            if let Some(prev) = self.cgroup_cpu_ns.get(&name) {
                let cores = ns.saturating_sub(*prev) as f64 / 1e9 / dt;
                let field = CgroupField::CpuCores;
                let series = Series::Cgroup {
                    name: name.clone(),
                    field,
                };
                out.push((series, cores));
            }
            seen.insert(name, ns);
        }
        self.cgroup_cpu_ns = seen;
        let mut mem = cgroup_children("/sys/fs/cgroup/memory", "memory.usage_in_bytes");
        if mem.is_empty() {
            mem = cgroup_children("/sys/fs/cgroup", "memory.current");
        }
        for (name, bytes) in mem {
            let field = CgroupField::MemoryBytes;
            out.push((Series::Cgroup { name, field }, bytes as f64));
        }
    }

    fn sample_processes(&mut self, dt: f64, out: &mut Vec<(Series, f64)>) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut now_ticks = HashMap::new();
        let mut busiest = Vec::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some((comm, ticks, rss)) = read(e.path().join("stat"))
                .as_deref()
                .and_then(parse_pid_stat)
            else {
                continue;
            };
            if let Some(prev) = self.proc_ticks.get(&pid) {
                let cores = ticks.saturating_sub(*prev) as f64 / hz / dt;
                busiest.push((cores, comm, pid, rss as f64 * page));
            }
            now_ticks.insert(pid, ticks);
        }
        self.proc_ticks = now_ticks;
        busiest.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (cores, comm, pid, rss) in busiest.into_iter().take(TOP_PROCESSES) {
            let process = |field| Series::Process {
                comm: comm.clone(),
                pid,
                field,
            };
            out.push((process(ProcessField::CpuCores), cores));
            out.push((process(ProcessField::RssBytes), rss));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let t = "cpu  100 5 50 800 40 1 2 3 0 0\ncpu0 1 2 3 4\n";
        let c = parse_proc_stat(t).unwrap();
        assert_eq!(c.total, 1001);
        assert_eq!(c.busy, 1001 - 840);
    }

    #[test]
    fn meminfo_in_bytes() {
        let t = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            parse_meminfo(t),
            Some((24_000_000 * 1024, 20_000_000 * 1024))
        );
    }

    #[test]
    fn net_dev_skips_loopback() {
        let t = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 500 5 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(t), (500, 300));
    }

    #[test]
    fn diskstats_whole_disks_only() {
        let t = " 254 0 vda 10 0 8 0 20 0 16 0 0 0 0\n 254 1 vda1 10 0 8 0 20 0 16 0 0 0 0\n";
        assert_eq!(parse_diskstats(t, &["vda".into()]), (8 * 512, 16 * 512));
    }

    #[test]
    fn pid_stat_with_spaces_in_comm() {
        let t = "42 (my (odd) proc) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000000 250 18446744073709551615";
        assert_eq!(parse_pid_stat(t), Some(("my (odd) proc".into(), 10, 250)));
    }

    #[test]
    fn sampler_reports_rates_on_second_call() {
        let mut s = HostSampler::new();
        let first = s.sample();
        assert!(
            first
                .iter()
                .all(|(s, _)| !matches!(s, Series::Host(f) if f.is_rate()))
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let second = s.sample();
        let cpu = second
            .iter()
            .find(|(s, _)| *s == Series::Host(HostField::CpuUtilisation))
            .map(|(_, v)| *v);
        if let Some(cpu) = cpu {
            assert!(
                (0.0..=1.0).contains(&cpu),
                "utilisation {cpu} outside 0..=1"
            );
        }
        assert!(
            second
                .iter()
                .any(|(s, _)| *s == Series::Host(HostField::NetRxBytesPerSecond))
        );
    }
}
