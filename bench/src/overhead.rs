//! Telemetry overhead: the same workloads with and without the agent.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// One run of both workloads.
#[derive(Debug, Clone, Copy)]
struct Sample {
    http_rps: f64,
    http_p99_ms: f64,
    disk_iops: f64,
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which a
        // killed master would leave running (and holding their ports).
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_nginx(dir: &Path) -> Result<Nginx> {
    let port = free_port()?;
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "x".repeat(1024))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; server {{ listen 127.0.0.1:{port}; location / {{ root {w}; }} }} }}\n",
            d = dir.display(),
            w = www.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "nginx did not listen on {port}; see {}/error.log",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Nginx { child, port })
}

/// (requests/s, p99 ms) from wrk's --latency output.
fn parse_wrk(out: &str) -> Option<(f64, f64)> {
    parse_wrk_latency(out).map(|(rps, _, p99)| (rps, p99))
}

/// Requests per second, p50 and p99 (ms) from `wrk --latency`.
fn parse_wrk_latency(out: &str) -> Option<(f64, f64, f64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let at = |p: &str| -> Option<f64> {
        let v = out
            .lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .map(str::trim)?;
        if let Some(v) = v.strip_suffix("us") {
            Some(v.parse::<f64>().ok()? / 1000.0)
        } else if let Some(v) = v.strip_suffix("ms") {
            v.parse().ok()
        } else if let Some(v) = v.strip_suffix('s') {
            Some(v.parse::<f64>().ok()? * 1000.0)
        } else {
            None
        }
    };
    Some((rps, at("50%")?, at("99%")?))
}

/// [`wrk`] with the median latency too: (req/s, p50 ms, p99 ms).
pub fn wrk_latency(port: u16, seconds: u64) -> Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk_latency(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

pub fn wrk(port: u16, seconds: u64) -> Result<(f64, f64)> {
    wrk_with(port, seconds, &[])
}

/// [`wrk`] with more arguments (a header, say).
pub fn wrk_with(port: u16, seconds: u64, extra: &[&str]) -> Result<(f64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn fio(file: &Path, seconds: u64) -> Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=shadow",
            "--size=256M",
            "--rw=randrw",
            "--rwmixread=50",
            "--bs=4k",
            "--direct=1",
            "--ioengine=psync",
            "--time_based",
            &format!("--runtime={seconds}"),
            "--output-format=json",
        ])
        .arg(format!("--filename={}", file.display()))
        .output()
        .context("running fio")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("fio output: {}", String::from_utf8_lossy(&out.stderr)))?;
    let job = &v["jobs"][0];
    Ok(job["read"]["iops"].as_f64().unwrap_or(0.0) + job["write"]["iops"].as_f64().unwrap_or(0.0))
}

struct AgentProc {
    child: Child,
}

impl AgentProc {
    fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(bin)
            .args([
                "--no-forecast",
                "--admin",
                "127.0.0.1:0",
                "--interval",
                "1s",
            ])
            .args(extra)
            .arg("--pid-file")
            .arg(dir.join("agent.pid"))
            .arg("--ready-file")
            .arg(&ready)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("agent not ready in 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child })
    }

    fn usage(&self) -> (f64, u64) {
        usage(self.child.id())
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// (CPU seconds used so far, RSS bytes) of process `pid`.
pub fn usage(pid: u32) -> (f64, u64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (ticks / hz, status_bytes(pid, "VmRSS"))
}

/// A kB field of `/proc/<pid>/status` (VmRSS, VmHWM, ...), in bytes; 0
/// when the process or the field is gone.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn measure(nginx: &Nginx, fio_file: &Path, seconds: u64) -> Result<Sample> {
    let (http_rps, http_p99_ms) = wrk(nginx.port, seconds)?;
    let disk_iops = fio(fio_file, seconds)?;
    Ok(Sample {
        http_rps,
        http_p99_ms,
        disk_iops,
    })
}

/// (label, field) of one report row.
type Column = (&'static str, fn(&Sample) -> f64);

pub fn run(agent: &Path, seconds: u64, rounds: u32, report: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("shadow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let nginx = start_nginx(&dir)?;
    let fio_file: PathBuf = dir.join("fio.dat");
    println!("warm-up (lays out the fio file, warms nginx)");
    measure(&nginx, &fio_file, 2)?;

    // Three modes: detached, attached, attached without the per-syscall
    // TCP byte counters. The order rotates each round so drift cancels.
    const MODES: [(&str, Option<&[&str]>); 3] = [
        ("detached", None),
        ("attached", Some(&[])),
        ("attached, --no-tcp-bytes", Some(&["--no-tcp-bytes"])),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); MODES.len()];
    let mut agent_cpu = Vec::new();
    let mut agent_rss = 0u64;
    for round in 0..rounds as usize {
        for k in 0..MODES.len() {
            let mode = (k + round) % MODES.len();
            let (label, args) = MODES[mode];
            let s = match args {
                Some(extra) => {
                    let a = AgentProc::start(agent, &dir, extra)?;
                    let (cpu0, _) = a.usage();
                    let t = Instant::now();
                    let s = measure(&nginx, &fio_file, seconds)?;
                    let (cpu1, rss) = a.usage();
                    if mode == 1 {
                        agent_cpu.push((cpu1 - cpu0) / t.elapsed().as_secs_f64());
                    }
                    agent_rss = agent_rss.max(rss);
                    s
                }
                None => measure(&nginx, &fio_file, seconds)?,
            };
            samples[mode].push(s);
            println!(
                "round {round} {label:>24}: http {:.0} req/s p99 {:.2} ms, disk {:.0} IOPS",
                s.http_rps, s.http_p99_ms, s.disk_iops
            );
        }
    }
    // One more attached run with the kernel's run-time statistics on (not
    // in the ratios: they add two clock reads per run): what each program
    // costs per event.
    println!("attached, BPF run-time statistics on");
    let stats = {
        let _on = crate::bpfstats::enable()?;
        let before_agent = crate::bpfstats::snapshot();
        let a = AgentProc::start(agent, &dir, &[])?;
        let start = crate::bpfstats::snapshot();
        let t = Instant::now();
        let s = measure(&nginx, &fio_file, seconds)?;
        let rows = crate::bpfstats::delta(&before_agent, &start, &crate::bpfstats::snapshot());
        let wall = t.elapsed();
        drop(a);
        (s, rows, wall)
    };
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);

    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let cpu = median(agent_cpu);
    let metrics: [Column; 3] = [
        ("HTTP (wrk -c32 → nginx, 127.0.0.1) req/s", |s| s.http_rps),
        ("HTTP p99 latency, ms", |s| s.http_p99_ms),
        ("disk (fio 4 KiB O_DIRECT randrw) IOPS", |s| s.disk_iops),
    ];

    let mut md = String::new();
    let _ = writeln!(md, "# Telemetry overhead: agent attached vs detached\n");
    let _ = writeln!(
        md,
        "Command: `shadow-bench {}` (`cargo xtask bench --seconds {seconds} --rounds {rounds}` \
         runs it with the release agent). {rounds} rounds, order rotated each round; medians. \
         Kernel {}, {} CPUs.\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "| workload | detached | attached | ratio | attached, --no-tcp-bytes | ratio |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (name, f) in metrics {
        let (d, a, n) = (
            med(&samples[0], f),
            med(&samples[1], f),
            med(&samples[2], f),
        );
        let _ = writeln!(
            md,
            "| {name} | {d:.3} | {a:.3} | {:.4} | {n:.3} | {:.4} |",
            a / d,
            n / d
        );
    }
    let _ = writeln!(
        md,
        "\nAgent while attached: {:.1}% of one CPU (median), peak RSS {:.1} MiB.",
        cpu * 100.0,
        agent_rss as f64 / (1024.0 * 1024.0)
    );
    let (s, rows, wall) = stats;
    let _ = writeln!(
        md,
        "\n## Each program's cost (the kernel's BPF statistics)\n\n\
         One more attached run of both workloads ({:.0} s, http {:.0} req/s, disk {:.0} IOPS) with \
         `BPF_ENABLE_STATS` on: `run_cnt` and `run_time_ns` of each program the agent loaded. \
         Statistics add two clock reads per run, so this run is not in the ratios above.\n",
        wall.as_secs_f64(),
        s.http_rps,
        s.disk_iops
    );
    md.push_str(&crate::bpfstats::table(&rows, wall));
    print!("\n{md}");
    if let Some(parent) = report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(report, md)?;
    println!("report written to {}", report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 10s test\n  Latency Distribution\n     50%  200.00us\n     99%    1.25ms\n  100 requests\nRequests/sec:  12345.67\nTransfer/sec: 1MB\n";
        assert_eq!(parse_wrk(out), Some((12345.67, 1.25)));
    }
}
