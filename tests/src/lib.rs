//! Helpers for the end-to-end tests: a real agent process, real peer
//! processes, test network namespaces, and the explicit kernel-test switch.
//!
//! Kernel tests run for real (they need root). They skip only when
//! `SHADOW_SKIP_KERNEL_TESTS=1` says so, and then say that they skipped.

pub mod netns;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use shadow_proxy::{agent::Ready, kernel::view::View};

pub const SKIP_VAR: &str = "SHADOW_SKIP_KERNEL_TESTS";

static KERNEL: Mutex<()> = Mutex::new(());

/// Serialises kernel tests within a test binary (they share the kernel's
/// global tracepoints and the machine's two cores). Returns `None` only when
/// the skip variable is set; panics when the tests cannot run as root.
pub fn kernel_test(name: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED {name}: {SKIP_VAR}=1");
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{name} loads eBPF programs and needs root; set {SKIP_VAR}=1 to skip it explicitly"
    );
    Some(KERNEL.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout` with a
/// message naming `what` it waited for.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_until_ok(timeout, what, || {
        if cond() { Ok(()) } else { Err(String::new()) }
    });
}

/// Polls `probe` every 50 ms until it returns `Ok`; panics after `timeout`
/// naming `what` it waited for and the last `Err`: what was seen instead.
pub fn wait_until_ok<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{}{seen}",
            if seen.is_empty() { "" } else { "; last seen: " }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// Path of a binary built by `cargo build` (`cargo xtask test` builds them
/// first; `SHADOW_BIN_DIR` overrides the directory).
pub fn built_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SHADOW_BIN_DIR")
        .map_or_else(|| target_dir().join("debug"), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// The `tcp-peer` helper of this crate.
pub fn tcp_peer() -> PathBuf {
    built_binary("tcp-peer")
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    /// Sends `sig` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> std::process::ExitStatus {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?} of signal {sig}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `shadow-proxy` with its admin address.
pub struct Agent {
    pub proc: Proc,
    pub admin: String,
    pub dir: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Agent {
    /// Starts the agent with a 200 ms poll interval and waits until it has
    /// attached its programs and listens.
    pub fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shadow-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self::start_in(dir)
    }

    /// Starts the agent in `dir`, keeping whatever an earlier agent left there.
    pub fn start_in(dir: PathBuf) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Agent::start_in`] with extra command-line arguments (models go to
    /// `dir/forecast`, the control socket is `dir/control.sock`).
    pub fn start_with(dir: PathBuf, extra: &[&str]) -> Self {
        Self::start_in_netns(None, dir, extra)
    }

    /// Started inside the network namespace `netns` (`ip netns exec`).
    pub fn start_in_netns(netns: Option<&str>, dir: PathBuf, extra: &[&str]) -> Self {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("log file");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(built_binary("shadow-proxy"));
                c
            }
            None => Command::new(built_binary("shadow-proxy")),
        };
        let proc = Proc::spawn(
            "shadow-proxy",
            cmd.args(["--admin", "127.0.0.1:0", "--interval", "200ms"])
                .arg("--pid-file")
                .arg(dir.join("agent.pid"))
                .arg("--ready-file")
                .arg(&ready)
                // Keep the test's models and socket out of /var/lib and /run.
                .arg("--forecast-dir")
                .arg(dir.join("forecast"))
                .arg("--control-socket")
                .arg(dir.join("control.sock"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log),
        );
        let mut agent = Self {
            proc,
            admin: String::new(),
            dir,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(r) = serde_json::from_str::<Ready>(&text)
            {
                agent.admin = r.admin.to_string();
                break;
            }
            if let Some(status) = agent.proc.child.try_wait().expect("try_wait") {
                panic!("agent exited with {status} before ready:\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready in 30 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> String {
        let body = self
            .rt
            .block_on(shadow_api::client::get(&self.admin, path))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        String::from_utf8(body.to_vec()).expect("utf-8 body")
    }

    /// The agent's latest published view.
    pub fn view(&self) -> View {
        serde_json::from_str(&self.get("/api/v1/snapshot")).expect("snapshot JSON")
    }

    /// A view published after this call (so it includes everything done
    /// before it).
    pub fn fresh_view(&self) -> View {
        let t0 = shadow_proxy::util::unix_ms();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.view();
            if v.timestamp > t0 {
                return v;
            }
            assert!(Instant::now() < deadline, "agent stopped publishing");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls fresh views until `done` holds or `timeout` passes; returns the
    /// last view either way, so the caller's assertion shows what was seen.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&View) -> bool) -> View {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.fresh_view();
            if done(&v) || Instant::now() > deadline {
                return v;
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loaded tracepoint programs whose names are shadow's (the kernel keeps 15
/// bytes of a name; bpftool shows the full one when BTF has it).
pub fn shadow_programs_loaded() -> usize {
    let out = sh("bpftool", &["-j", "prog", "show"]);
    let progs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("bpftool JSON");
    let ours = shadow_proxy::kernel::TRACEPOINTS.map(|(p, _, _)| p);
    progs
        .iter()
        .filter(|p| p["type"] == "tracepoint")
        .filter(|p| {
            p["name"].as_str().is_some_and(|n| {
                ours.iter()
                    .any(|o| *o == n || (n.len() == 15 && o.starts_with(n)))
            })
        })
        .count()
}

/// Runs a command and returns its stdout, panicking with its stderr on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `tcp-peer serve` (optionally inside a namespace) and returns it
/// with the address it listens on.
pub fn tcp_server(netns: Option<&str>, bind: &str) -> (Proc, std::net::SocketAddr) {
    let peer = tcp_peer();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&peer);
            c
        }
        None => Command::new(&peer),
    };
    cmd.args(["serve", bind]).stdout(Stdio::piped());
    let mut proc = Proc::spawn("tcp-peer serve", &mut cmd);
    let stdout = proc.child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read LISTENING line");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("tcp-peer said {line:?}"))
        .parse()
        .expect("socket address");
    (proc, addr)
}

/// Runs `tcp-peer send` to completion (optionally inside a namespace).
pub fn tcp_send(netns: Option<&str>, addr: std::net::SocketAddr, bytes: usize, conns: usize) {
    let peer = tcp_peer();
    let peer = peer.to_str().expect("utf-8 path");
    let (addr, bytes, conns) = (addr.to_string(), bytes.to_string(), conns.to_string());
    let mut args = vec![peer, "send", &addr, &bytes, &conns];
    match netns {
        Some(ns) => {
            args.splice(0..0, ["netns", "exec", ns]);
            sh("ip", &args);
        }
        None => {
            sh(peer, &args[1..]);
        }
    }
}

/// Two network namespaces joined by a veth pair, deleted on drop.
/// `a` has `10.213.N.1/30` on `va`, `b` has `10.213.N.2/30` on `vb`: the
/// test's own hosts, reachable only from inside these namespaces.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub addr_b: std::net::Ipv4Addr,
}

impl NetnsPair {
    pub fn new(tag: &str, subnet: u8) -> Self {
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("sh-{tag}-a-{id}"), format!("sh-{tag}-b-{id}"));
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh("ip", &["netns", "add", ns]);
            sh("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        sh(
            "ip",
            &[
                "-n", &a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b,
            ],
        );
        let ip_a = format!("10.213.{subnet}.1/30");
        let ip_b = format!("10.213.{subnet}.2/30");
        sh("ip", &["-n", &a, "addr", "add", &ip_a, "dev", "va"]);
        sh("ip", &["-n", &b, "addr", "add", &ip_b, "dev", "vb"]);
        sh("ip", &["-n", &a, "link", "set", "va", "up"]);
        sh("ip", &["-n", &b, "link", "set", "vb", "up"]);
        Self {
            a,
            b,
            addr_b: std::net::Ipv4Addr::new(10, 213, subnet, 2),
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
