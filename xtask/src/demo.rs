//! `cargo xtask demo`: the agent on this host with real disk and TCP load,
//! shown live by `shadowctl top` and at the /metrics URL.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{setup, util};

const DEMO_DIR: &str = "target/demo";

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(duration: Duration, admin: &str) -> Result<()> {
    if !util::is_root() {
        bail!("the demo loads eBPF programs: run it as root");
    }
    setup::run(false)?;
    util::step("build the agent and shadowctl (release)", || {
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "shadow-proxy",
            "-p",
            "shadowctl",
        ])
    })?;
    std::fs::create_dir_all(DEMO_DIR)?;
    let ready = Path::new(DEMO_DIR).join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::File::create(Path::new(DEMO_DIR).join("agent.log"))?;
    println!("==> starting shadow-proxy (log: {DEMO_DIR}/agent.log)");
    let agent = Guard(
        Command::new("target/release/shadow-proxy")
            .args(["--admin", admin, "--ready-file"])
            .arg(&ready)
            .arg("--pid-file")
            .arg(Path::new(DEMO_DIR).join("agent.pid"))
            .stderr(log)
            .spawn()
            .context("starting target/release/shadow-proxy")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline {
            bail!("the agent did not become ready; see {DEMO_DIR}/agent.log");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin: String =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&ready)?)?["admin"]
            .as_str()
            .unwrap_or(admin)
            .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let server = TcpListener::bind("127.0.0.1:0")?;
    let server_addr = server.local_addr()?;
    println!("==> load: TCP clients -> {server_addr}, O_DIRECT writes to {DEMO_DIR}/io.dat");
    let mut workers = vec![
        std::thread::spawn(move || serve(&server)),
        spawn_tcp_clients(server_addr, stop.clone()),
        spawn_disk_io(Path::new(DEMO_DIR).join("io.dat"), stop.clone())?,
    ];
    println!("==> live view: shadowctl top (metrics at http://{admin}/metrics)");
    std::thread::sleep(Duration::from_millis(1500));
    let mut top = Command::new("target/release/shadowctl");
    top.args(["--admin", &admin, "top", "--interval", "1s"]);
    if !duration.is_zero() {
        top.args(["--count", &duration.as_secs().max(1).to_string()]);
    }
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(1) } == 0 {
        top.arg("--no-clear");
    }
    let status = top.stdin(Stdio::null()).status()?;
    stop.store(true, Ordering::Relaxed);
    let rss = std::fs::read_to_string(format!("/proc/{}/status", agent.0.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        });
    println!("\n==> metrics:  curl -s http://{admin}/metrics");
    if let Some(rss) = rss {
        println!("==> agent {rss}");
    }
    drop(agent);
    for w in workers.drain(1..) {
        let _ = w.join();
    }
    println!("==> agent stopped (SIGINT): programs detached");
    if !status.success() {
        bail!("shadowctl top failed with {status}");
    }
    Ok(())
}

/// Echo server: reads a request, answers with its length.
fn serve(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = stream;
            let mut buf = [0u8; 16 * 1024];
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = s.write_all(format!("{total}\n").as_bytes());
        });
    }
}

/// About 100 short connections a second, each sending 8 KiB.
fn spawn_tcp_clients(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let payload = vec![7u8; 8 * 1024];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&payload);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut reply = String::new();
                let _ = s.read_to_string(&mut reply);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// O_DIRECT 4 KiB writes at scattered offsets of a 64 MiB file, with a read
/// every fourth request.
fn spawn_disk_io(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
    file.set_len(64 << 20)?;
    Ok(std::thread::spawn(move || {
        let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("layout");
        // SAFETY: non-zero size; freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        // SAFETY: ptr is valid for 4096 bytes and only used here.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, 4096) };
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x % (16 * 1024)) * 4096;
            let _ = if i % 4 == 3 {
                file.read_exact_at(buf, off)
            } else {
                file.write_all_at(buf, off)
            };
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(ptr, layout) };
    }))
}
