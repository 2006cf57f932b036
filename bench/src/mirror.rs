//! Traffic-shadowing benchmark: live throughput and p99 with capture at 100 %
//! vs no capture, completeness of the replay at that load, agent CPU and
//! RSS, and nginx's own `mirror` module on the same upstreams for
//! comparison. All in one run, on this machine's loopback.
//!
//! Topology: nginx serves the live site on 127.0.0.1:LIVE; a second nginx
//! server block is the shadow on 127.0.0.1:SHADOW and logs every request
//! (method, URI, a request id header) to its own access log. A third server
//! block on 127.0.0.1:MIRROR is the live site with `mirror` to the shadow.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::overhead::{free_port, median, wrk};

struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Ports {
    live: u16,
    shadow: u16,
    mirror: u16,
}

fn start_nginx(dir: &Path, p: &Ports) -> Result<Nginx> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "x".repeat(1024))?;
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    let w = www.display();
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  log_format req '$request';\n\
               upstream shadow {{ server 127.0.0.1:{s}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{l}; location / {{ root {w}; }} }}\n\
               server {{ listen 127.0.0.1:{s}; access_log {d}/shadow.log req; location / {{ root {w}; }} }}\n\
               server {{ listen 127.0.0.1:{m};\n\
                 location / {{ mirror /mirror; root {w}; }}\n\
                 location = /mirror {{ internal; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                   proxy_pass http://shadow$request_uri; }} }}\n}}\n",
            l = p.live,
            s = p.shadow,
            m = p.mirror
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
    for port in [p.live, p.shadow, p.mirror] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port}; see {d}/error.log");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(Nginx { child })
}

struct Agent {
    child: Child,
    control: PathBuf,
}

impl Agent {
    fn start(bin: &Path, dir: &Path, p: &Ports) -> Result<Self> {
        let cfg = dir.join("shadow.toml");
        std::fs::write(
            &cfg,
            format!(
                "[capture]\ninterface = \"lo\"\nqueue = 100000\n[[service]]\nname = \"web\"\nport = {}\n\
                 percent = 100\ntargets = [\"http://127.0.0.1:{}\"]\ntimeout = \"5s\"\nmax_in_flight = 512\n\
                 [service.diff]\nnoise_fraction = 0.0\n",
                p.live, p.shadow
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("agent not ready; see {}/agent.log", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, control })
    }

    fn status(&self, shadowctl: &Path) -> Result<serde_json::Value> {
        let out = Command::new(shadowctl)
            .arg("--control")
            .arg(&self.control)
            .args(["mirror", "status", "--json"])
            .output()?;
        Ok(serde_json::from_slice::<serde_json::Value>(&out.stdout)?[0].clone())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

pub fn run(agent: &Path, seconds: u64, rounds: u32, report: &Path) -> Result<()> {
    let shadowctl = agent.with_file_name("shadowctl");
    let dir = std::env::temp_dir().join(format!("shadow-bench-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ports = Ports {
        live: free_port()?,
        shadow: free_port()?,
        mirror: free_port()?,
    };
    let _nginx = start_nginx(&dir, &ports)?;
    let shadow_log = dir.join("shadow.log");
    wrk(ports.live, 2)?;

    let mut plain = Vec::new();
    let mut captured = Vec::new();
    let mut mirrored = Vec::new();
    let mut completeness = Vec::new();
    let mut agent_cpu = Vec::new();
    let mut agent_rss = 0u64;
    for round in 0..rounds {
        let r = wrk(ports.live, seconds)?;
        println!(
            "round {round} no capture : {:.0} req/s p99 {:.3} ms",
            r.0, r.1
        );
        plain.push(r);

        let before = count_lines(&shadow_log);
        let a = Agent::start(agent, &dir, &ports)?;
        let (cpu0, _) = crate::overhead::usage(a.child.id());
        let t = Instant::now();
        let r = wrk(ports.live, seconds)?;
        let (cpu1, rss) = crate::overhead::usage(a.child.id());
        agent_cpu.push((cpu1 - cpu0) / t.elapsed().as_secs_f64());
        agent_rss = agent_rss.max(rss);
        // Let in-flight replays land, then compare what the shadow logged
        // with what the agent parsed from the sampled connections.
        std::thread::sleep(Duration::from_secs(3));
        let st = a.status(&shadowctl)?;
        drop(a);
        let parsed = st["stats"]["requests_parsed"].as_u64().unwrap_or(0);
        let received = count_lines(&shadow_log) - before;
        let live_served = (r.0 * seconds as f64).round() as u64;
        completeness.push((
            received as f64 / live_served.max(1) as f64,
            parsed,
            received,
            live_served,
            st,
        ));
        println!(
            "round {round} capture 100%: {:.0} req/s p99 {:.3} ms; shadow received {received} of ~{live_served} live requests ({parsed} parsed)",
            r.0, r.1
        );
        captured.push(r);

        let before = count_lines(&shadow_log);
        let r = wrk(ports.mirror, seconds)?;
        let got = count_lines(&shadow_log) - before;
        println!(
            "round {round} nginx mirror: {:.0} req/s p99 {:.3} ms (shadow got {got})",
            r.0, r.1
        );
        mirrored.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (p_rps, p_p99) = (m(&plain, |x| x.0), m(&plain, |x| x.1));
    let (c_rps, c_p99) = (m(&captured, |x| x.0), m(&captured, |x| x.1));
    let (n_rps, n_p99) = (m(&mirrored, |x| x.0), m(&mirrored, |x| x.1));
    let comp = median(completeness.iter().map(|c| c.0).collect());
    let cpu = median(agent_cpu);
    let mut md = String::new();
    let _ = writeln!(md, "# Traffic shadowing: live overhead and completeness\n");
    let _ = writeln!(
        md,
        "Command: `cargo xtask bench --seconds {seconds} --rounds {rounds}`. wrk -t1 -c32 against nginx \
         (1 worker) on 127.0.0.1, 1 KiB static page; {rounds} rounds; medians.\n"
    );
    let _ = writeln!(
        md,
        "| live server | req/s | p99 ms | req/s ratio | p99 ratio |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| no capture (baseline) | {p_rps:.0} | {p_p99:.3} | 1.0000 | 1.0000 |"
    );
    let _ = writeln!(
        md,
        "| shadow capture at 100 % | {c_rps:.0} | {c_p99:.3} | {:.4} | {:.4} |",
        c_rps / p_rps,
        c_p99 / p_p99
    );
    let _ = writeln!(
        md,
        "| nginx `mirror` module | {n_rps:.0} | {n_p99:.3} | {:.4} | {:.4} |",
        n_rps / p_rps,
        n_p99 / p_p99
    );
    let _ = writeln!(
        md,
        "\nCompleteness at that load (shadow received / live served): median {:.4}%.",
        comp * 100.0
    );
    for (i, (c, parsed, received, served, st)) in completeness.iter().enumerate() {
        let _ = writeln!(
            md,
            "- round {i}: {received} received of {served} served ({:.4}%), {parsed} parsed; drops {} {}",
            c * 100.0,
            st["stats"]["not_replayed"],
            st["stats"]["flow_drops"]
        );
    }
    let _ = writeln!(
        md,
        "\nAgent at that load: {:.1}% of one CPU (median), peak RSS {:.1} MiB.",
        cpu * 100.0,
        agent_rss as f64 / (1024.0 * 1024.0)
    );
    print!("\n{md}");
    if let Some(parent) = report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(report, md)?;
    println!("report written to {}", report.display());
    Ok(())
}
