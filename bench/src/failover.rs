//! An unpredicted crash of the primary under constant load: shadow's
//! kernel cutover (health checks every 20 ms, 2 failures make a failed
//! primary) next to keepalived moving a VRRP VIP between two network
//! namespaces, with its default `advert_int` (1 s, VRRPv2) and the fastest
//! it accepts (0.01 s, VRRPv3). Same load generator, same rate, one run.
//!
//! Root only: it creates network namespaces, a bridge and veths.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use shadow_api::predict::Level;
use shadow_proxy::failover::{
    Check, FailoverSettings, Orchestrator, ServiceSettings, machine::Rules,
};

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces removed on drop.
struct Netns(Vec<String>);

impl Netns {
    fn add(&mut self, name: &str) -> Result<()> {
        let _ = sh(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name])?;
        sh(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        self.0.push(name.into());
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = sh(&["ip", "netns", "del", n]);
        }
    }
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn enter(ns: &str) {
    let path = format!("/var/run/netns/{ns}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns on a namespace fd we hold, for this thread only.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// `http-peer live ADDR` in `ns`; its address.
fn server(peer: &Path, ns: &str, addr: &str, kill: &mut Kill) -> Result<SocketAddr> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(peer)
        .args(["live", addr])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", peer.display()))?;
    let mut line = String::new();
    BufReader::new(c.stdout.take().context("stdout")?).read_line(&mut line)?;
    kill.0.push(c);
    line.trim()
        .strip_prefix("LISTENING ")
        .context("LISTENING line")?
        .parse()
        .context("address")
}

/// (offset from the start, answered 200) per request.
type Results = Vec<(Duration, bool)>;

fn request(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(1000)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    if s.write_all(b"GET /b HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200")
}

/// 16 client threads in `ns`, a new connection per request, `rate` in all.
fn load(ns: &str, addr: SocketAddr, rate: f64, run: Duration, start: Instant) -> Results {
    let threads = 16;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let ns = ns.to_owned();
            std::thread::spawn(move || {
                enter(&ns);
                let period = Duration::from_secs_f64(threads as f64 / rate);
                let offset = period.mul_f64(t as f64 / threads as f64);
                let mut out = Vec::new();
                for i in 0.. {
                    let due = offset + period * i;
                    if due >= run {
                        break;
                    }
                    std::thread::sleep((start + due).saturating_duration_since(Instant::now()));
                    let at = start.elapsed();
                    out.push((at, request(addr)));
                }
                out
            })
        })
        .collect();
    let mut all: Results = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    all.sort_by_key(|r| r.0);
    all
}

/// Failed requests from `killed` on, and the time from `killed` to the
/// last failure (the recovery).
fn outcome(r: &Results, killed: Duration) -> (usize, usize, Option<Duration>) {
    let after: Vec<&(Duration, bool)> = r.iter().filter(|x| x.0 >= killed).collect();
    let failed = after.iter().filter(|x| !x.1).count();
    let last = after
        .iter()
        .filter(|x| !x.1)
        .map(|x| x.0 - killed)
        .next_back();
    (failed, r.len(), last)
}

struct Row {
    what: String,
    failed: usize,
    sent: usize,
    recovered: Option<Duration>,
}

fn keepalived_round(peer: &Path, advert: &str, version: u8, rate: f64) -> Result<Row> {
    let mut ns = Netns(Vec::new());
    let (br, a, b, c) = ("fo-br", "fo-a", "fo-b", "fo-c");
    for n in [br, a, b, c] {
        ns.add(n)?;
    }
    sh(&["ip", "-n", br, "link", "add", "br0", "type", "bridge"])?;
    sh(&["ip", "-n", br, "link", "set", "br0", "up"])?;
    for (n, ip, veth) in [
        (a, "10.77.0.1", "va"),
        (b, "10.77.0.2", "vb"),
        (c, "10.77.0.3", "vc"),
    ] {
        sh(&[
            "ip", "-n", br, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n,
        ])?;
        sh(&["ip", "-n", br, "link", "set", veth, "master", "br0", "up"])?;
        sh(&[
            "ip",
            "-n",
            n,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ])?;
        sh(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
    }
    let dir = std::env::temp_dir().join(format!("shadow-bench-vrrp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut kill = Kill(Vec::new());
    let mut keepalived = Vec::new();
    for (n, state, prio) in [(a, "MASTER", 150), (b, "BACKUP", 100)] {
        server(peer, n, "0.0.0.0:8080", &mut kill)?;
        let conf = dir.join(format!("{n}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  vrrp_version {version}\n}}\nvrrp_instance VI {{\n  state {state}\n  interface eth0\n  virtual_router_id 51\n  priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    10.77.0.100/24\n  }}\n}}\n"
            ),
        )?;
        let pid = |k: &str| dir.join(format!("{n}-{k}.pid")).display().to_string();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
            ])
            .arg(&conf)
            .args([
                "-p",
                &pid("main"),
                "-r",
                &pid("vrrp"),
                "-c",
                &pid("chk"),
                "-b",
                &pid("bfd"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting keepalived")?;
        keepalived.push(child);
    }
    // The VIP on A.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("ip")
            .args(["-n", a, "addr", "show", "eth0"])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).contains("10.77.0.100") {
            break;
        }
        if Instant::now() > deadline {
            bail!("keepalived in {a} never took the VIP");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let holds = |n: &str| -> Result<bool> {
        let out = Command::new("ip")
            .args(["-n", n, "addr", "show", "eth0"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("10.77.0.100"))
    };
    if holds(b)? {
        bail!("both {a} and {b} hold the VIP: VRRP adverts do not cross the bridge");
    }
    let vip: SocketAddr = "10.77.0.100:8080".parse()?;
    let run = Duration::from_secs(if advert == "1" { 8 } else { 4 });
    let start = Instant::now() + Duration::from_millis(100);
    let client = {
        let c = c.to_owned();
        std::thread::spawn(move || load(&c, vip, rate, run, start))
    };
    std::thread::sleep((start + Duration::from_secs(1)).saturating_duration_since(Instant::now()));
    let killed = start.elapsed();
    // The master dies whole, as a host would: its VRRP child first (killed
    // after its parent, it would resign gracefully with a priority-0
    // advert, which is not a crash), then keepalived, then the server.
    let pids: Vec<String> = ["vrrp", "main"]
        .iter()
        .filter_map(|k| std::fs::read_to_string(dir.join(format!("{a}-{k}.pid"))).ok())
        .map(|p| p.trim().to_owned())
        .collect();
    let mut args = vec!["kill", "-9"];
    args.extend(pids.iter().map(String::as_str));
    let _ = sh(&args);
    let _ = keepalived[0].kill();
    let _ = kill.0[0].kill();
    let r = client.join().map_err(|_| anyhow::anyhow!("client"))?;
    for mut k in keepalived {
        let _ = k.kill();
        let _ = k.wait();
    }
    for k in ["vrrp", "main"] {
        if let Ok(p) = std::fs::read_to_string(dir.join(format!("{b}-{k}.pid"))) {
            let _ = sh(&["kill", "-9", p.trim()]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (failed, sent, recovered) = outcome(&r, killed);
    Ok(Row {
        what: format!("keepalived, VRRPv{version}, advert_int {advert} s"),
        failed,
        sent,
        recovered,
    })
}

/// `predicted`: the failure model says stage at 0.3 s and cutover at 0.6 s,
/// before the crash at 1 s (what shadow is for); otherwise it never warns.
fn shadow_round(peer: &Path, rate: f64, predicted: bool) -> Result<Row> {
    let mut ns = Netns(Vec::new());
    let n = "fo-shadow";
    ns.add(n)?;
    let mut kill = Kill(Vec::new());
    let live = server(peer, n, "127.0.0.1:0", &mut kill)?;
    let shadow = server(peer, n, "127.0.0.1:0", &mut kill)?;
    let check = |addr| Check {
        addr,
        path: Some("/healthz".into()),
        timeout: Duration::from_millis(50),
        source_port: None,
    };
    let state = std::env::temp_dir().join(format!("shadow-bench-fo-{}", std::process::id()));
    let settings = FailoverSettings {
        services: vec![ServiceSettings {
            name: "web".into(),
            port: live.port(),
            shadow_port: shadow.port(),
            primary: check(live),
            shadow: check(shadow),
            steps: Vec::new(),
            switch: Default::default(),
            ramp: Vec::new(),
            ramp_step: Duration::ZERO,
            max_error_rate: None,
            max_p99_ms: None,
            rules: Rules {
                fail_limit: 2,
                ..Rules::default()
            },
        }],
        netns: PathBuf::from(format!("/var/run/netns/{n}")),
        check_interval: Duration::from_millis(20),
        apply: true,
        state_dir: state.clone(),
        pin_dir: shadow_proxy::failover::cutover::PIN_ROOT.into(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let run = Duration::from_secs(4);
    let start = Instant::now() + Duration::from_millis(400);
    let orchestrator = {
        let stop = stop.clone();
        let n = n.to_owned();
        std::thread::spawn(move || -> Result<()> {
            enter(&n);
            let o = Orchestrator::start(settings, &Default::default())?;
            let level = |_: &str| {
                let t = Instant::now().saturating_duration_since(start);
                let l = match (predicted, t.as_secs_f64()) {
                    (true, x) if x >= 0.6 => Level::Cutover,
                    (true, x) if x >= 0.3 => Level::Stage,
                    _ => Level::Ok,
                };
                (l, None)
            };
            o.run_until(&level, &|| stop.load(Ordering::SeqCst));
            Ok(())
        })
    };
    let client = {
        let n = n.to_owned();
        std::thread::spawn(move || load(&n, live, rate, run, start))
    };
    std::thread::sleep((start + Duration::from_secs(1)).saturating_duration_since(Instant::now()));
    let killed = start.elapsed();
    let _ = kill.0[0].kill();
    let r = client.join().map_err(|_| anyhow::anyhow!("client"))?;
    stop.store(true, Ordering::SeqCst);
    orchestrator
        .join()
        .map_err(|_| anyhow::anyhow!("orchestrator"))??;
    let _ = std::fs::remove_dir_all(&state);
    let (failed, sent, recovered) = outcome(&r, killed);
    Ok(Row {
        what: if predicted {
            "shadow, predicted: cut over 0.4 s before the crash".into()
        } else {
            "shadow, unpredicted: sk_lookup cutover after 2 failed checks (every 20 ms)".into()
        },
        failed,
        sent,
        recovered,
    })
}

pub fn run(peer: &Path, rate: f64, rounds: u32, report: &Path) -> Result<()> {
    if !peer.exists() {
        bail!(
            "{} is missing: build it first (cargo build -p shadow-tests --bins)",
            peer.display()
        );
    }
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for which in 0..4 {
            let row = match which {
                0 => shadow_round(peer, rate, false)?,
                3 => shadow_round(peer, rate, true)?,
                1 => keepalived_round(peer, "0.01", 3, rate)?,
                _ => keepalived_round(peer, "1", 2, rate)?,
            };
            eprintln!(
                "round {round}: {}: {} of {} failed, last failure {:?} after the kill",
                row.what, row.failed, row.sent, row.recovered
            );
            rows.push(row);
        }
    }
    let mut out = format!(
        "# Failover: an unpredicted crash of the primary, shadow vs keepalived\n\n\
         Command: `cargo run -p shadow-bench -- failover --rate {rate} --rounds {rounds}` (root; needs `target/debug/http-peer`). \
         Method: bench/src/failover.rs.\n\n\
         A client in its own network namespace opens a new connection per request at {rate} req/s \
         (16 threads on a fixed schedule, 1 s connect and read timeouts); 1 s in, the primary is \
         killed with SIGKILL (its server, and for keepalived its keepalived too). Failed requests \
         count from the kill; recovery is the time from the kill to the last failed request.\n\n\
         - shadow: primary and shadow `http-peer` on one host (one namespace); the orchestrator \
         checks both every 20 ms (GET /healthz, 50 ms timeout) and cuts new connections over \
         in the kernel after 2 failed checks.\n\
         - keepalived 2.2.7: a VRRP VIP between two namespaces (MASTER priority 150, BACKUP 100) \
         on a bridge, each with its server on 0.0.0.0:8080; the client connects to the VIP.\n\n\
         | run | failed requests | sent | recovery (kill to last failure) |\n|---|---|---|---|\n"
    );
    for r in &rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.what,
            r.failed,
            r.sent,
            r.recovered.map_or("none failed".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            ))
        ));
    }
    out.push_str(
        "\nThe two setups differ: keepalived moves a VIP between two hosts (namespaces on a \
         bridge), while shadow moves new connections between two listeners on one host, in \
         the kernel. An unpredicted crash costs both about the same with keepalived at its \
         fastest setting. The predicted row is what keepalived cannot do: the cutover happens \
         before the failure, so none of the requests fail. The four scenarios and the \
         kernel figures are in [failover-scenarios.md](failover-scenarios.md).\n",
    );
    std::fs::write(report, out).with_context(|| format!("writing {}", report.display()))?;
    println!("wrote {}", report.display());
    Ok(())
}
