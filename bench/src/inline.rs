//! The inline proxy against nginx `mirror` on the same upstreams, in one
//! run: live throughput, p50 and p99 through each proxy with a fast shadow
//! and with a shadow that answers after 50 ms, and how much of the traffic
//! reached the shadow.
//!
//! Topology, all on 127.0.0.1: a live nginx (1 worker) serves a 1 KiB page
//! and a fast shadow that logs each request; an in-process async server is
//! the 50 ms shadow (counting requests). A second
//! nginx (2 workers, as the agent has 2 runtime threads) is the proxy:
//! plain `proxy_pass` to live, and `mirror` to each shadow. The agent's
//! inline proxy fronts the same live upstream, mirroring 100 % (no CPU
//! budget, so that it mirrors every request as nginx does). The second
//! peer is moonlight-http from crates.io (installed by `cargo xtask setup
//! --bench`), a Rust shadow proxy that answers with the primary's response
//! without waiting for the candidate and stores each comparison.

use std::{
    fmt::Write as _,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::overhead::{free_port, median, wrk_latency};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy)]
struct Ports {
    live: u16,
    shadow: u16,
    slow: u16,
    plain: u16,
    mirror: u16,
    mirror_slow: u16,
    inline: u16,
    moonlight: u16,
}

fn nginx(dir: &Path, name: &str, workers: u32, http: &str, ports: &[u16]) -> Result<Proc> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes {workers};\ndaemon off;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  log_format req '$request';\n{http}}}\n",
            p = d.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&d)
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    let p = Proc(child);
    wait_listening(
        ports,
        &format!("nginx {name}; see {}/error.log", d.display()),
    )?;
    Ok(p)
}

fn wait_listening(ports: &[u16], what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in ports {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if Instant::now() > deadline {
                bail!("{what}: nothing listens on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// A keep-alive HTTP/1.1 server that answers every request after `delay`:
/// async on one thread of its own, so that hundreds of waiting requests
/// cost the machine's two cores next to nothing.
fn slow_shadow(port: u16, delay: Duration) -> Result<Arc<AtomicU64>> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut r = tokio::io::BufReader::new(stream);
                    let page = "x".repeat(1024);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/html\r\n\r\n{page}",
                        page.len()
                    );
                    loop {
                        let mut len = 0usize;
                        let mut first = true;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" && !first {
                                break;
                            }
                            first = false;
                            if let Some((k, v)) = line.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        c.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        if r.get_mut().write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    Ok(count)
}

fn agent(bin: &Path, dir: &Path, p: Ports, target: u16) -> Result<(Proc, PathBuf)> {
    let cfg = dir.join("inline.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ncpu_budget = 0\n[capture]\ninterface = \"lo\"\nqueue = 100000\n[[service]]\nname = \"web\"\nport = {}\n\
             percent = 100\ntargets = [\"http://127.0.0.1:{target}\"]\ntimeout = \"5s\"\n\
             max_in_flight = 512\n[service.diff]\nnoise_fraction = 0.0\n\
             [service.inline]\nlisten = \"127.0.0.1:{}\"\n",
            p.live, p.inline
        ),
    )?;
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let control = dir.join("control.sock");
    let child = Command::new(bin)
        .args(["--no-forecast", "--admin", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--control-socket")
        .arg(&control)
        .arg("--pid-file")
        .arg(dir.join("agent.pid"))
        .arg("--ready-file")
        .arg(&ready)
        .stderr(std::fs::File::create(dir.join("agent.log"))?)
        .spawn()?;
    let a = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!("agent not ready; see {}/agent.log", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((a, control))
}

/// moonlight-http in front of `live`, comparing with `target`: the primary's
/// answer is returned without waiting for the candidate; comparisons go to
/// a JSONL file (the last 1,000 kept).
fn moonlight(dir: &Path, listen: u16, live: u16, target: u16) -> Result<Proc> {
    let child = Command::new("moonlight-http")
        .args(["--no-config", "--return-target", "primary"])
        .args(["--response-timing", "return-selected"])
        .args(["--retention-max-runs", "1000"])
        .arg("--bind-addr")
        .arg(format!("127.0.0.1:{listen}"))
        .arg("--primary-url")
        .arg(format!("http://127.0.0.1:{live}"))
        .arg("--candidate-url")
        .arg(format!("http://127.0.0.1:{target}"))
        .arg("--storage-path")
        .arg(dir.join("moonlight.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting moonlight-http (`cargo xtask setup --bench` installs it)")?;
    let p = Proc(child);
    wait_listening(&[listen], "moonlight-http")?;
    Ok(p)
}

fn inline_status(shadowctl: &Path, control: &Path) -> Result<serde_json::Value> {
    let out = Command::new(shadowctl)
        .arg("--control")
        .arg(control)
        .args(["mirror", "status", "--json"])
        .output()?;
    Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout)?[0].clone())
}

fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count() as u64)
}

/// One measured setting: (req/s, p50, p99) per round and the share of
/// live requests the shadow received.
#[derive(Default)]
struct Runs {
    wrk: Vec<(f64, f64, f64)>,
    received: Vec<f64>,
}

impl Runs {
    fn med(&self, f: fn(&(f64, f64, f64)) -> f64) -> f64 {
        median(self.wrk.iter().map(f).collect())
    }
}

const SETTINGS: [&str; 8] = [
    "live direct (no proxy)",
    "nginx proxy_pass, no mirror",
    "nginx mirror, fast shadow",
    "nginx mirror, 50 ms shadow",
    "shadow inline, fast shadow",
    "shadow inline, 50 ms shadow",
    "moonlight-http, fast shadow",
    "moonlight-http, 50 ms shadow",
];

pub fn run(bin: &Path, seconds: u64, rounds: u32, report: &Path) -> Result<()> {
    let shadowctl = bin.with_file_name("shadowctl");
    let dir = std::env::temp_dir().join(format!("shadow-bench-inline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let p = Ports {
        live: free_port()?,
        shadow: free_port()?,
        slow: free_port()?,
        plain: free_port()?,
        mirror: free_port()?,
        mirror_slow: free_port()?,
        inline: free_port()?,
        moonlight: free_port()?,
    };
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "x".repeat(1024))?;
    let shadow_log = dir.join("shadow.log");
    let _live = nginx(
        &dir,
        "live",
        1,
        &format!(
            "  server {{ listen 127.0.0.1:{l}; location / {{ root {w}; }} }}\n\
               server {{ listen 127.0.0.1:{s}; access_log {log} req; location / {{ root {w}; }} }}\n",
            l = p.live,
            s = p.shadow,
            w = www.display(),
            log = shadow_log.display()
        ),
        &[p.live, p.shadow],
    )?;
    let slow = slow_shadow(p.slow, Duration::from_millis(50))?;
    let mirror_block = |port: u16, to: &str| {
        format!(
            "  server {{ listen 127.0.0.1:{port};\n\
                 location / {{ mirror /mirror; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://live; }}\n\
                 location = /mirror {{ internal; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                   proxy_pass http://{to}$request_uri; }} }}\n"
        )
    };
    let _proxy = nginx(
        &dir,
        "proxy",
        2,
        &format!(
            "  upstream live {{ server 127.0.0.1:{l}; keepalive 64; }}\n\
               upstream shadow {{ server 127.0.0.1:{s}; keepalive 64; }}\n\
               upstream slow {{ server 127.0.0.1:{d}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{pl}; location / {{ proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://live; }} }}\n\
             {m1}{m2}",
            l = p.live,
            s = p.shadow,
            d = p.slow,
            pl = p.plain,
            m1 = mirror_block(p.mirror, "shadow"),
            m2 = mirror_block(p.mirror_slow, "slow"),
        ),
        &[p.plain, p.mirror, p.mirror_slow],
    )?;
    wrk_latency(p.live, 2)?;
    let mut runs: Vec<Runs> = (0..SETTINGS.len()).map(|_| Runs::default()).collect();
    let mut statuses = Vec::new();
    for round in 0..rounds {
        for (k, name) in SETTINGS.iter().enumerate() {
            let fast_before = lines(&shadow_log);
            let slow_before = slow.load(Ordering::Relaxed);
            let (agent, peer, port) = match k {
                0 => (None, None, p.live),
                1 => (None, None, p.plain),
                2 => (None, None, p.mirror),
                3 => (None, None, p.mirror_slow),
                4 => (Some(agent(bin, &dir, p, p.shadow)?), None, p.inline),
                5 => (Some(agent(bin, &dir, p, p.slow)?), None, p.inline),
                6 => (
                    None,
                    Some(moonlight(&dir, p.moonlight, p.live, p.shadow)?),
                    p.moonlight,
                ),
                _ => (
                    None,
                    Some(moonlight(&dir, p.moonlight, p.live, p.slow)?),
                    p.moonlight,
                ),
            };
            let r = wrk_latency(port, seconds)?;
            // Replays still in flight land (a 50 ms shadow, 5 s timeout).
            if k >= 2 {
                std::thread::sleep(Duration::from_secs(2));
            }
            if let Some((_, control)) = &agent {
                statuses.push((name, inline_status(&shadowctl, control)?));
            }
            drop(agent);
            drop(peer);
            let got =
                (lines(&shadow_log) - fast_before) + (slow.load(Ordering::Relaxed) - slow_before);
            let served = r.0 * seconds as f64;
            let share = got as f64 / served.max(1.0);
            println!(
                "round {round} {name:>28}: {:.0} req/s p50 {:.3} ms p99 {:.3} ms; shadow got {got} ({:.1} %)",
                r.0,
                r.1,
                r.2,
                share * 100.0
            );
            runs[k].wrk.push(r);
            runs[k].received.push(share);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut md = String::new();
    let _ = writeln!(md, "# Inline proxy against nginx `mirror`\n");
    let _ = writeln!(
        md,
        "Command: `cargo xtask bench --seconds {seconds} --rounds {rounds}` (the step \
         `shadow-bench inline-proxy`). wrk -t1 -c32 for {seconds} s per setting, {rounds} rounds \
         with the settings in turn, medians. Live: nginx, 1 worker, 1 KiB page on 127.0.0.1. \
         Proxies: nginx with 2 workers (plain `proxy_pass`, and `mirror` of every request) and \
         the agent's inline proxy (2 runtime threads, 100 % mirrored with no CPU budget, as nginx mirrors every request, telemetry attached) on the \
         same live upstream; moonlight-http 0.1.2 (crates.io) returning the primary's answer without \
         waiting for the candidate. Fast shadow: nginx; slow shadow: answers after 50 ms. All on this \
         host's 2 cores.\n"
    );
    let _ = writeln!(
        md,
        "| setting | req/s | p50 ms | p99 ms | req/s vs live direct | shadow received |\n|---|---|---|---|---|---|"
    );
    let live = runs[0].med(|x| x.0);
    for (k, name) in SETTINGS.iter().enumerate() {
        let r = &runs[k];
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            r.med(|x| x.0),
            r.med(|x| x.1),
            r.med(|x| x.2),
            r.med(|x| x.0) / live,
            if k >= 2 {
                format!("{:.1} %", median(r.received.clone()) * 100.0)
            } else {
                "-".into()
            }
        );
    }
    let ratio =
        |a: usize, b: usize, f: fn(&(f64, f64, f64)) -> f64| runs[a].med(f) / runs[b].med(f);
    let _ = writeln!(md, "\n## Goals\n");
    let thr = ratio(4, 2, |x| x.0);
    let p99 = ratio(4, 2, |x| x.2);
    let _ = writeln!(
        md,
        "- Throughput, inline vs nginx `mirror` (fast shadow): **{thr:.2}x** (goal ≥ 1.3x: {}); \
         p99 {:.3} vs {:.3} ms (goal ≤ nginx's: {}).",
        if thr >= 1.3 { "met" } else { "missed" },
        runs[4].med(|x| x.2),
        runs[2].med(|x| x.2),
        if p99 <= 1.0 { "met" } else { "missed" }
    );
    let _ = writeln!(
        md,
        "- With the 50 ms shadow, inline throughput vs nginx `mirror`: **{:.2}x**.",
        ratio(5, 3, |x| x.0)
    );
    let _ = writeln!(
        md,
        "- Live p50 with the 50 ms shadow, inline: {:.3} ms against {:.3} ms with the fast shadow \
         ({:.2}x; goal unchanged). nginx `mirror`: {:.3} ms against {:.3} ms ({:.1}x).",
        runs[5].med(|x| x.1),
        runs[4].med(|x| x.1),
        ratio(5, 4, |x| x.1),
        runs[3].med(|x| x.1),
        runs[2].med(|x| x.1),
        ratio(3, 2, |x| x.1)
    );
    let _ = writeln!(
        md,
        "- The inline proxy's cost against a plain nginx `proxy_pass`: {:.2}x its throughput.",
        ratio(4, 1, |x| x.0)
    );
    let _ = writeln!(
        md,
        "- Against moonlight-http: inline throughput **{:.2}x** with the fast shadow (p99 {:.3} vs \
         {:.3} ms) and **{:.2}x** with the 50 ms shadow (p50 {:.3} vs {:.3} ms).",
        ratio(4, 6, |x| x.0),
        runs[4].med(|x| x.2),
        runs[6].med(|x| x.2),
        ratio(5, 7, |x| x.0),
        runs[5].med(|x| x.1),
        runs[7].med(|x| x.1)
    );
    let _ = writeln!(
        md,
        "\nWhat the agent counted (last round of each inline setting):\n"
    );
    for (name, st) in statuses
        .iter()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let _ = writeln!(
            md,
            "- {name}: {} proxied, {} teed, {} replayed, not replayed {}",
            st["inline"]["requests"],
            st["inline"]["teed"],
            st["stats"]["replayed"],
            st["stats"]["not_replayed"]
        );
    }
    print!("\n{md}");
    if let Some(parent) = report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(report, md)?;
    println!("report written to {}", report.display());
    Ok(())
}
