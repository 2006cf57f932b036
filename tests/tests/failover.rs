//! The kernel-level cutover under constant-rate load, inside a network
//! namespace the test creates: a primary and a shadow HTTP server (real
//! processes that log every request they serve), a client that opens a new
//! connection per request on a fixed schedule, and the sk_lookup program
//! attached to the namespace, steering the primary's port to the shadow's
//! listener (taken from the shadow process by its port).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use shadow_proxy::failover::cutover::{KernelCutover, listener_of};
use shadow_tests::{Proc, built_binary, kernel_test, netns::Netns};

fn logging_server(ns: &Netns, log: &Path) -> (Proc, SocketAddr) {
    let mut cmd = ns.cmd(&built_binary("http-peer"));
    cmd.args(["shadow", "127.0.0.1:0"])
        .arg(log)
        .arg("normal")
        .stdout(Stdio::piped());
    let mut p = Proc::spawn("logging server", &mut cmd);
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("LISTENING line");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("server said {line:?}"))
        .parse()
        .expect("address");
    (p, addr)
}

/// The paths a server logged.
fn served(log: &Path) -> std::collections::HashSet<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_owned))
        .collect()
}

/// One request: when it was due and when its connection was opened (from
/// the start), its path, and whether it was answered 200.
struct Sent {
    due: Duration,
    at: Duration,
    path: String,
    ok: bool,
}

/// `threads` clients in the namespace, each opening one connection per
/// request at `rate` requests per second for `run`.
fn constant_load(
    ns_path: PathBuf,
    addr: SocketAddr,
    threads: usize,
    rate: f64,
    run: Duration,
    start: Instant,
) -> Vec<std::thread::JoinHandle<Vec<Sent>>> {
    (0..threads)
        .map(|t| {
            let ns_path = ns_path.clone();
            std::thread::spawn(move || {
                let ns = std::fs::File::open(&ns_path).expect("netns");
                // SAFETY: setns on a namespace fd we hold, for this thread only.
                let rc = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET)
                };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                let period = Duration::from_secs_f64(threads as f64 / rate);
                let offset = period.mul_f64(t as f64 / threads as f64);
                let mut out = Vec::new();
                for i in 0.. {
                    let due = offset + period * i;
                    if due >= run {
                        break;
                    }
                    std::thread::sleep((start + due).saturating_duration_since(Instant::now()));
                    let path = format!("/c/{t}/{i}");
                    let at = start.elapsed();
                    let ok = request(addr, &path);
                    out.push(Sent { due, at, path, ok });
                }
                out
            })
        })
        .collect()
}

fn request(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200")
}

#[test]
fn new_connections_cut_over_to_the_shadow_and_back_in_the_kernel_with_none_failed() {
    let Some(_k) = kernel_test(
        "new_connections_cut_over_to_the_shadow_and_back_in_the_kernel_with_none_failed",
    ) else {
        return;
    };
    let ns = Netns::new("cutover");
    let dir = std::env::temp_dir().join(format!("shadow-cutover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (primary_log, shadow_log) = (dir.join("primary.jsonl"), dir.join("shadow.jsonl"));
    let (_primary, live) = logging_server(&ns, &primary_log);
    let (shadow, shadow_addr) = logging_server(&ns, &shadow_log);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    let mut cutover = KernelCutover::attach(&ns_path).expect("the sk_lookup program attaches");
    // Taken ahead, as a profile's staging does: reading a busy namespace's
    // socket table takes tens of milliseconds, too long for a cutover.
    let listener = || listener_of(shadow.child.id(), shadow_addr.port()).expect("shadow listener");
    let (first, second) = (listener(), listener());

    // 2,000 new connections a second for 4 s. At 1.0 s every new connection
    // goes to the shadow; at 2.0 s back; at 2.5 s a 10 % step of a ramp; at
    // 3.5 s back.
    let (rate, run) = (2000.0, Duration::from_secs(4));
    let start = Instant::now() + Duration::from_millis(100);
    let clients = constant_load(ns_path.clone(), live, 16, rate, run, start);
    let at = |s: f64| {
        let t = start + Duration::from_secs_f64(s);
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        // The decision: when the map is about to change.
        start.elapsed()
    };
    let cut = at(1.0);
    let steer_took = cutover.steer(live.port(), first, 10_000).expect("cutover");
    let back = at(2.0);
    let release_took = cutover.release(live.port()).expect("rollback");
    let ramp = at(2.5);
    cutover
        .steer(live.port(), second, 1_000)
        .expect("a 10% step");
    let ramp_end = at(3.5);
    let counters = cutover.counters(live.port()).expect("counters");
    cutover.release(live.port()).expect("rollback of the step");
    let mut sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    sent.sort_by_key(|s| s.at);
    // Both servers have logged what they answered before answering.
    let (p, s) = (served(&primary_log), served(&shadow_log));

    let failed: Vec<&str> = sent
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.path.as_str())
        .collect();
    let on_shadow = |from: Duration, to: Duration| {
        let w: Vec<&Sent> = sent.iter().filter(|x| x.at >= from && x.at < to).collect();
        let n = w.iter().filter(|x| s.contains(&x.path)).count();
        (n, w.len())
    };
    let margin = Duration::from_millis(5);
    let (before, before_n) = on_shadow(Duration::ZERO, cut);
    let (during, during_n) = on_shadow(cut + margin, back);
    let (after, after_n) = on_shadow(back + margin, ramp);
    let (step, step_n) = on_shadow(ramp + margin, ramp_end);
    let first_on_shadow = sent
        .iter()
        .find(|x| x.at >= cut && s.contains(&x.path))
        .map(|x| x.at - cut);
    let first_back = sent
        .iter()
        .find(|x| x.at >= back && p.contains(&x.path))
        .map(|x| x.at - back);
    let share = step as f64 / step_n as f64 * 100.0;
    let lag = sent
        .iter()
        .map(|x| x.at.saturating_sub(x.due))
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} requests, {} failed; map update {steer_took:?} (cutover), {release_took:?} (rollback); \
         first request served by the shadow {first_on_shadow:?} after the cutover, first back on \
         the primary {first_back:?} after the rollback; shadow served {before}/{before_n} before, \
         {during}/{during_n} during, {after}/{after_n} after, {step}/{step_n} ({share:.1}%) in the \
         10% step; kernel counters over both steers: {counters:?}; the client's worst lag \
         behind its schedule {lag:?}",
        sent.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert_eq!(p.len() + s.len(), sent.len(), "every request served once");
    assert!(
        lag < Duration::from_millis(100),
        "the client fell {lag:?} behind its schedule"
    );
    assert_eq!(before, 0, "the shadow served requests before the cutover");
    assert_eq!(
        during, during_n,
        "requests after the cutover stayed on the primary"
    );
    assert_eq!(after, 0, "requests after the rollback went to the shadow");
    assert!(
        (6.0..=14.0).contains(&share),
        "a 10% step sent {share:.1}% of new connections to the shadow"
    );
    let first = first_on_shadow.expect("the shadow served nothing");
    assert!(
        first <= Duration::from_millis(10),
        "the first new connection served by the shadow came {first:?} after the decision"
    );
    assert!(first_back.expect("nothing came back") <= Duration::from_millis(10));
    assert_eq!(counters.failed, 0, "{counters:?}");
    drop(cutover);
    let _ = std::fs::remove_dir_all(&dir);
}
