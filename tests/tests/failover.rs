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
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use shadow_api::predict::Level;
use shadow_proxy::failover::{
    Check, Command, FailoverSettings, Orchestrator, ServiceSettings,
    cutover::{self, KernelCutover, listener_of},
    machine::Rules,
};
use shadow_tests::{Proc, built_binary, kernel_test, netns::Netns};

fn logging_server(ns: &Netns, log: &Path) -> (Proc, SocketAddr) {
    logging_server_on(ns, log, "127.0.0.1:0")
}

fn logging_server_on(ns: &Netns, log: &Path, addr: &str) -> (Proc, SocketAddr) {
    let mut cmd = ns.cmd(&built_binary("http-peer"));
    cmd.args(["shadow", addr])
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

/// One request from inside the namespace at `ns_path`; whether it got 200.
fn request_in(ns_path: &Path, addr: SocketAddr, path: &str) -> bool {
    let (ns_path, path) = (ns_path.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        enter(&ns_path);
        request(addr, &path)
    })
    .join()
    .expect("request thread")
}

#[test]
fn pinned_steering_outlives_its_owner_is_adopted_by_the_next_and_leftovers_are_removed() {
    let Some(_k) = kernel_test(
        "pinned_steering_outlives_its_owner_is_adopted_by_the_next_and_leftovers_are_removed",
    ) else {
        return;
    };
    let ns = Netns::new("pins");
    let dir = std::env::temp_dir().join(format!("shadow-pins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (primary_log, shadow_log) = (dir.join("primary.jsonl"), dir.join("shadow.jsonl"));
    let (primary, live) = logging_server(&ns, &primary_log);
    let (shadow, shadow_addr) = logging_server(&ns, &shadow_log);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    let root = Path::new(cutover::PIN_ROOT);
    let on = |path: &str| {
        assert!(request_in(&ns_path, live, path), "{path} failed");
        (
            served(&primary_log).contains(path),
            served(&shadow_log).contains(path),
        )
    };

    let mut c = KernelCutover::attach_pinned(&ns_path, root).expect("attach, pinned");
    let pins = c.pins().expect("pinned").to_owned();
    assert!(pins.join("link").exists(), "{}", pins.display());
    let listener = listener_of(shadow.child.id(), shadow_addr.port()).expect("shadow listener");
    c.steer(live.port(), listener, 10_000).expect("steer");
    // Its owner goes (an agent crashing or restarting): the kernel keeps
    // steering.
    drop(c);
    assert_eq!(
        on("/owner-gone"),
        (false, true),
        "steering went with its owner"
    );

    // The next owner adopts what is steered, and can roll it back.
    let mut c = KernelCutover::attach_pinned(&ns_path, root).expect("adopt");
    assert_eq!(c.steered(), vec![live.port()]);
    assert_eq!(c.share(live.port()), Some(10_000));
    assert_eq!(on("/adopted"), (false, true));
    c.release(live.port()).expect("release the adopted port");
    assert_eq!(on("/released"), (true, false));
    // Pins that steer nothing go with their owner.
    drop(c);
    assert!(!pins.exists(), "{} left behind", pins.display());

    // Steering left in a namespace that is then deleted is a leftover: the
    // next start removes it.
    let mut c = KernelCutover::attach_pinned(&ns_path, root).expect("attach again");
    let listener = listener_of(shadow.child.id(), shadow_addr.port()).expect("shadow listener");
    c.steer(live.port(), listener, 10_000).expect("steer");
    let pins = c.pins().expect("pinned").to_owned();
    drop(c);
    assert!(
        cutover::clean_pins(root, false).is_empty(),
        "live steering removed"
    );
    drop((primary, shadow));
    drop(ns);
    shadow_tests::wait_until(
        Duration::from_secs(10),
        "the pins of a deleted namespace to be removed",
        || {
            cutover::clean_pins(root, false);
            !pins.exists()
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Enters the network namespace at `path` on this thread only.
fn enter(path: &Path) {
    let ns = std::fs::File::open(path).expect("netns");
    // SAFETY: setns on a namespace fd we hold, for this thread only.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Failed requests sent within `[from, to)`.
fn failed_in(sent: &[Sent], from: Duration, to: Duration) -> usize {
    sent.iter()
        .filter(|x| !x.ok && x.at >= from && x.at < to)
        .count()
}

#[test]
fn four_failover_scenarios_under_constant_load() {
    let Some(_k) = kernel_test("four_failover_scenarios_under_constant_load") else {
        return;
    };
    let ns = Netns::new("failover");
    let dir = std::env::temp_dir().join(format!("shadow-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (primary_log, shadow_log) = (dir.join("primary.jsonl"), dir.join("shadow.jsonl"));
    let (mut primary, live) = logging_server(&ns, &primary_log);
    let (mut shadow, shadow_addr) = logging_server(&ns, &shadow_log);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    let check = |addr| Check {
        addr,
        path: Some("/healthz".into()),
        timeout: Duration::from_millis(50),
        source_port: None,
    };
    let settings = FailoverSettings {
        services: vec![ServiceSettings {
            name: "web".into(),
            port: live.port(),
            shadow_port: shadow_addr.port(),
            primary: check(live),
            shadow: check(shadow_addr),
            steps: Vec::new(),
            switch: Default::default(),
            ramp: Vec::new(),
            ramp_step: Duration::ZERO,
            max_error_rate: None,
            max_p99_ms: None,
            rules: Rules {
                fail_limit: 2,
                recover_checks: 5,
                shadow_fail_limit: 2,
                false_positive: Duration::from_secs(1),
                ..Rules::default()
            },
        }],
        netns: ns_path.clone(),
        check_interval: Duration::from_millis(20),
        apply: true,
        state_dir: dir.join("state"),
        pin_dir: shadow_proxy::failover::cutover::PIN_ROOT.into(),
    };
    // The failure model's level, as the test sets it.
    let level = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (commands, inbox) =
        std::sync::mpsc::channel::<(Command, std::sync::mpsc::Sender<String>)>();
    // What the failure model is told: each failure, each false positive.
    let outcomes = Arc::new(std::sync::Mutex::new(Vec::<(String, bool)>::new()));
    // The failed requests the orchestrator counted (resets from the ports).
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let orchestrator = {
        let (ns_path, level, stop) = (ns_path.clone(), level.clone(), stop.clone());
        let (outcomes, counted) = (outcomes.clone(), counted.clone());
        std::thread::spawn(move || {
            // Checks and the listener lookup see the namespace's loopback.
            enter(&ns_path);
            let o = Orchestrator::start(settings, &Default::default())
                .expect("the orchestrator starts");
            let told = outcomes.clone();
            o.set_outcome(Box::new(move |s, failed| {
                told.lock().unwrap().push((s.to_owned(), failed));
            }));
            let level_of = |_: &str| {
                let l = match level.load(Ordering::SeqCst) {
                    0 => Level::Ok,
                    1 => Level::Stage,
                    _ => Level::Cutover,
                };
                (l, None)
            };
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                o.tick(&level_of);
                counted.store(o.status()[0].failed_requests, Ordering::SeqCst);
                while let Ok((c, reply)) = inbox.try_recv() {
                    let r = o.command("web", c, false, false);
                    let _ = reply.send(match r {
                        Ok(e) => format!("{} {}", e.action, e.reason),
                        Err(e) => format!("error: {e}"),
                    });
                }
                std::thread::sleep(o.check_interval.saturating_sub(started.elapsed()));
            }
            o.events()
        })
    };
    let ask = |c: Command| {
        let (tx, rx) = std::sync::mpsc::channel();
        commands.send((c, tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("an answer")
    };

    let (rate, run) = (2000.0, Duration::from_millis(9000));
    let start = Instant::now() + Duration::from_millis(300);
    let clients = constant_load(ns_path.clone(), live, 16, rate, run, start);
    let at = |s: f64| {
        let t = start + Duration::from_secs_f64(s);
        std::thread::sleep(t.saturating_duration_since(Instant::now()));
        start.elapsed()
    };
    // 1. A planned cutover, then a rollback.
    let s1 = at(0.5);
    let cut = ask(Command::Cutover);
    at(1.5);
    let back = ask(Command::Rollback);
    // 3. A false positive: the model says stage, then cutover, then falls
    // back; no failure comes within the 1 s window, so it rolls back.
    let s3 = at(2.5);
    level.store(1, Ordering::SeqCst);
    at(2.7);
    level.store(2, Ordering::SeqCst);
    at(3.0);
    level.store(0, Ordering::SeqCst);
    // 4. A shadow that stops answering after a cutover: rolled back to the
    // healthy primary; what it had accepted completes once it runs again.
    let s4 = at(4.5);
    let cut4 = ask(Command::Cutover);
    at(5.0);
    // SAFETY: signals to our own child.
    unsafe { libc::kill(shadow.child.id() as i32, libc::SIGSTOP) };
    at(5.6);
    unsafe { libc::kill(shadow.child.id() as i32, libc::SIGCONT) };
    // 2. The primary crashes, unpredicted; it comes back on its port 1 s
    // later, and once healthy the traffic goes back to it.
    let s2 = at(6.5);
    let counted_before_crash = counted.load(Ordering::SeqCst);
    primary.signal_and_wait(libc::SIGKILL, Duration::from_secs(2));
    at(7.5);
    let (_primary2, _) = logging_server_on(&ns, &primary_log, &live.to_string());
    let end = run;
    let mut sent: Vec<Sent> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client"))
        .collect();
    sent.sort_by_key(|s| s.at);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let events = orchestrator.join().expect("orchestrator");
    let _ = shadow.signal_and_wait(libc::SIGTERM, Duration::from_secs(2));

    let log: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "+{:.3}s {} {}->{} {} ({}){}",
                (e.at_ms as f64 / 1000.0)
                    - (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64()
                        - start.elapsed().as_secs_f64()),
                e.action,
                e.from.name(),
                e.to.name(),
                e.reason,
                e.took_us.map_or(String::new(), |t| format!("{t} us")),
                if e.refused { " REFUSED" } else { "" }
            )
        })
        .collect();
    eprintln!(
        "answers: {cut} | {back} | {cut4}\nevents:\n{}",
        log.join("\n")
    );
    let f1 = failed_in(&sent, s1, s3);
    let f3 = failed_in(&sent, s3, s4);
    // Requests sent in the last 100 ms before the kill were in flight on
    // the primary when it died: they count against the crash.
    let killed = s2.saturating_sub(Duration::from_millis(100));
    let f4 = failed_in(&sent, s4, killed);
    let f2 = failed_in(&sent, killed, end);
    let crash_failures: Vec<Duration> = sent
        .iter()
        .filter(|x| !x.ok && x.at >= killed)
        .map(|x| x.at)
        .collect();
    let recovered = crash_failures.last().map(|t| *t - s2);
    let counted_crash = counted.load(Ordering::SeqCst) - counted_before_crash;
    eprintln!(
        "failed requests counted by the agent: {counted_before_crash} in scenarios 1, 3 and 4, \
         {counted_crash} in the crash (the clients saw {f2})"
    );
    eprintln!(
        "{} requests at {rate} req/s; failed: planned cutover+rollback {f1}, false positive {f3}, \
         regressing shadow {f4}, primary crash {f2} (last failure {recovered:?} after the kill)",
        sent.len()
    );
    let (p, sh) = (served(&primary_log), served(&shadow_log));
    for x in sent.iter().filter(|x| !x.ok && x.at >= s4 && x.at < killed) {
        eprintln!(
            "failed in scenario 4: {} at {:?} (primary logged it: {}, shadow: {})",
            x.path,
            x.at,
            p.contains(&x.path),
            sh.contains(&x.path)
        );
    }
    let has = |action: &str, reason: &str| {
        events
            .iter()
            .any(|e| e.action == action && e.reason.contains(reason) && !e.refused)
    };
    assert!(cut.starts_with("cutover"), "{cut}");
    assert!(back.starts_with("rollback"), "{back}");
    assert!(has("stage", "stage"), "{log:#?}");
    assert!(has("cutover", "reached cutover"), "{log:#?}");
    assert!(has("rollback", "false positive"), "{log:#?}");
    assert!(has("rollback", "the shadow failed"), "{log:#?}");
    assert!(has("cutover", "the primary failed"), "{log:#?}");
    assert!(has("rollback", "the primary is healthy again"), "{log:#?}");
    assert_eq!(
        (f1, f3, f4),
        (0, 0, 0),
        "failed requests in scenarios 1, 3, 4"
    );
    assert_eq!(
        counted_before_crash, 0,
        "the agent counted failures in 1, 3, 4"
    );
    assert!(
        counted_crash > 0 && counted_crash as usize <= f2 + f2 / 2 + 5,
        "the agent counted {counted_crash} failed requests in the crash; the clients saw {f2}"
    );
    assert_eq!(
        *outcomes.lock().unwrap(),
        vec![("web".to_owned(), false), ("web".to_owned(), true)],
        "the failure model is told the false positive, then the failure"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn shadowctl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(built_binary("shadowctl"))
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .expect("runs shadowctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One GET from inside the namespace; the body.
fn get_in(ns_path: &Path, addr: &str, path: &str) -> String {
    let (ns_path, addr, path) = (ns_path.to_owned(), addr.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        enter(&ns_path);
        let mut s = TcpStream::connect(&addr).expect("admin port");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .join()
    .expect("GET thread")
}

#[test]
fn the_agent_cuts_over_and_back_when_told_refuses_what_it_should_and_resumes_after_a_restart() {
    let Some(_k) = kernel_test(
        "the_agent_cuts_over_and_back_when_told_refuses_what_it_should_and_resumes_after_a_restart",
    ) else {
        return;
    };
    let ns = Netns::new("fo-agent");
    let dir = std::env::temp_dir().join(format!("shadow-fo-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (primary_log, shadow_log) = (dir.join("primary.jsonl"), dir.join("shadow.jsonl"));
    let (_primary, live) = logging_server(&ns, &primary_log);
    let (_shadow, shadow_addr) = logging_server(&ns, &shadow_log);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    // `ip netns exec` gives the agent its own /sys: its pins go on a bpffs
    // mounted here, on the host.
    let bpffs = dir.join("bpf");
    std::fs::create_dir_all(&bpffs).unwrap();
    shadow_tests::sh("mount", &["-t", "bpf", "bpf", bpffs.to_str().unwrap()]);
    let config = dir.join("shadow.toml");
    std::fs::write(
        &config,
        format!(
            "[failover]\ncheck_interval = \"100ms\"\nstate_dir = \"{}\"\npin_dir = \"{}\"\n\n[[failover.service]]\nname = \"web\"\nport = {}\nshadow_port = {}\ncheck_path = \"/healthz\"\nramp = [10, 50]\nramp_step = \"1s\"\n\n[[failover.service.step]]\nkind = \"gate\"\ncommand = [\"/bin/sleep\", \"1\"]\n\n[[failover.service]]\nname = \"api\"\nport = 1\nshadow_port = 2\n\n[[failover.service]]\nname = \"far\"\nport = 3\nshadow_port = 4\nswitch = \"hook\"\nswitch_command = [\"/bin/sh\", \"-c\", \"cat >> {}\"]\n\n[[failover.service]]\nname = \"dry\"\nport = 5\nshadow_port = {}\ncheck_path = \"/healthz\"\n",
            dir.join("state").display(),
            bpffs.join("steer").display(),
            live.port(),
            shadow_addr.port(),
            dir.join("switch.log").display(),
            shadow_addr.port()
        ),
    )
    .unwrap();
    // The agent's own directory goes when it stops; the state stays in `dir`.
    let agent_dir = dir.join("agent");
    let start = || {
        std::fs::create_dir_all(&agent_dir).unwrap();
        shadow_tests::Agent::start_in_netns(
            Some(ns.name()),
            agent_dir.clone(),
            &["--config", config.to_str().unwrap(), "--no-forecast"],
        )
    };
    let agent = start();
    let served_by_shadow = |path: &str| {
        let (ns_path, p) = (ns_path.clone(), path.to_owned());
        std::thread::spawn(move || {
            enter(&ns_path);
            assert!(request(live, &p), "{p} failed");
        })
        .join()
        .unwrap();
        served(&shadow_log).contains(path)
    };

    let (ok, status) = shadowctl(&agent_dir, &["failover", "status"]);
    assert!(
        ok && status.contains("web") && status.contains("primary"),
        "{status}"
    );
    // A shadow that is not there is said at start, not at the first cutover.
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("does not answer its check at start") && l.contains("api")),
        "{}",
        agent.log()
    );
    // What each machine does next, beside its probability.
    let (ok, predict) = shadowctl(&agent_dir, &["failover", "predict"]);
    assert!(
        ok && predict.contains("web  phase primary")
            && predict
                .contains("next: dry run (an event only): stage when the level reaches stage"),
        "{predict}"
    );
    let (ok, predict) = shadowctl(&agent_dir, &["failover", "predict", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&predict).expect("predict JSON");
    assert!(
        ok && rows[0]["service"] == "web" && rows[0]["level"] == "ok",
        "{predict}"
    );
    // Dry run by default: "dry"'s primary never answers and its shadow
    // does, so the machine would cut over; it only says so.
    shadow_tests::wait_until_ok(Duration::from_secs(10), "a dry-run event", || {
        let e = shadowctl(&agent_dir, &["failover", "events"]).1;
        if e.contains("dry run: would cutover (the primary failed") {
            Ok(())
        } else {
            Err(e)
        }
    });
    let (_, status) = shadowctl(&agent_dir, &["failover", "status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(rows[3]["phase"], "primary", "{status}");
    // A dry run changes nothing.
    let (ok, dry) = shadowctl(&agent_dir, &["failover", "cutover", "web", "--dry-run"]);
    assert!(ok && dry.contains("dry run"), "{dry}");
    assert!(!served_by_shadow("/dry"), "a dry run moved traffic");
    // A shadow that does not answer is refused, and nothing changes.
    let (ok, refused) = shadowctl(&agent_dir, &["failover", "cutover", "api"]);
    assert!(
        !ok && refused.contains("fails its health check"),
        "{refused}"
    );

    // Two cutovers at once (the gate takes 1 s): one wins, the other is
    // told why.
    let first = {
        let agent_dir = agent_dir.clone();
        std::thread::spawn(move || shadowctl(&agent_dir, &["failover", "cutover", "web"]))
    };
    std::thread::sleep(Duration::from_millis(400));
    let (ok, second) = shadowctl(&agent_dir, &["failover", "cutover", "web"]);
    assert!(!ok && second.contains("in progress"), "{second}");
    let (ok, cut) = first.join().unwrap();
    assert!(ok && cut.contains("cutover: primary -> on_shadow"), "{cut}");
    // The ramp: 10 %, then 50 % and all, 1 s apart while the shadow is healthy.
    let share = |text: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(text).expect("status JSON");
        v[0]["share"].as_u64().unwrap()
    };
    let (_, status) = shadowctl(&agent_dir, &["failover", "status", "--json"]);
    assert_eq!(share(&status), 1000, "{status}");
    shadow_tests::wait_until(Duration::from_secs(10), "the ramp to reach 100 %", || {
        share(&shadowctl(&agent_dir, &["failover", "status", "--json"]).1) == 10_000
    });
    let (_, events) = shadowctl(&agent_dir, &["failover", "events"]);
    assert!(
        events.contains("ramp: 50.0 %") && events.contains("ramp: 100.0 %"),
        "{events}"
    );
    assert!(
        served_by_shadow("/after-cutover"),
        "new connections did not move"
    );

    // Across hosts: the hook is told, and --force skips the unhealthy shadow.
    let (ok, far) = shadowctl(&agent_dir, &["failover", "cutover", "far", "--force"]);
    assert!(ok && far.contains("on_shadow"), "{far}");
    let told = std::fs::read_to_string(dir.join("switch.log")).unwrap_or_default();
    assert!(
        told.contains("\"action\":\"steer\"") && told.contains("\"service\":\"far\""),
        "{told}"
    );
    let (ok, again) = shadowctl(&agent_dir, &["failover", "cutover", "web"]);
    assert!(!ok && again.contains("already on the shadow"), "{again}");
    let metrics = get_in(&ns_path, &agent.admin, "/metrics");
    assert!(
        metrics.contains("shadow_failover_phase{service=\"web\"} 2"),
        "{metrics}"
    );

    // Killed, the agent leaves the kernel steering (pinned): new
    // connections still go to the shadow while it is away.
    drop(agent);
    assert!(
        served_by_shadow("/while-away"),
        "the agent's death moved traffic back to the primary"
    );
    // A restart adopts the steering and resumes on the shadow: the machine
    // was persisted.
    let agent = start();
    assert!(
        served_by_shadow("/after-restart"),
        "the restart left the primary serving"
    );
    let (_, events) = shadowctl(&agent_dir, &["failover", "events"]);
    assert!(
        events.contains("resume") && events.contains("the kernel kept it there meanwhile"),
        "{events}"
    );

    let (ok, back) = shadowctl(&agent_dir, &["failover", "rollback", "web"]);
    assert!(
        ok && back.contains("rollback: on_shadow -> primary"),
        "{back}"
    );
    assert!(
        !served_by_shadow("/after-rollback"),
        "rollback left traffic on the shadow"
    );
    drop(agent);
    shadow_tests::sh("umount", &["-l", bpffs.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_regressed_diff_blocks_the_cutover_a_shadow_past_its_error_rate_is_rolled_back_and_an_idle_one_is_remediated()
 {
    let Some(_k) = kernel_test(
        "a_regressed_diff_blocks_the_cutover_a_shadow_past_its_error_rate_is_rolled_back_and_an_idle_one_is_remediated",
    ) else {
        return;
    };
    use std::sync::atomic::AtomicU64;
    let ns = Netns::new("fo-analysis");
    let dir = std::env::temp_dir().join(format!("shadow-fo-analysis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_primary, live) = logging_server(&ns, &dir.join("p.jsonl"));
    let (_shadow, shadow_addr) = logging_server(&ns, &dir.join("s.jsonl"));
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    let check = |addr| Check {
        addr,
        path: Some("/healthz".into()),
        timeout: Duration::from_millis(50),
        source_port: None,
    };
    let settings = FailoverSettings {
        services: vec![ServiceSettings {
            name: "web".into(),
            port: live.port(),
            shadow_port: shadow_addr.port(),
            primary: check(live),
            shadow: check(shadow_addr),
            // Self-healing: a remediation that says it ran.
            steps: vec![shadow_proxy::failover::Step {
                kind: shadow_proxy::failover::StepKind::Remediate,
                run: shadow_proxy::failover::StepRun::Hook(
                    shadow_proxy::provision::hook::ExecHook {
                        command: vec![
                            "/bin/sh".into(),
                            "-c".into(),
                            format!("echo healed >> {}", dir.join("remediate.log").display()),
                        ],
                        timeout: Duration::from_secs(5),
                    },
                ),
                retries: 0,
            }],
            switch: Default::default(),
            ramp: Vec::new(),
            ramp_step: Duration::ZERO,
            max_error_rate: Some(0.1),
            max_p99_ms: None,
            rules: Rules {
                shadow_fail_limit: 2,
                ..Rules::default()
            },
        }],
        netns: ns_path.clone(),
        check_interval: Duration::from_millis(20),
        apply: true,
        state_dir: dir.join("state"),
        pin_dir: shadow_proxy::failover::cutover::PIN_ROOT.into(),
    };
    // The signals the agent would give: the diff verdict and the live error rate.
    let regressed = Arc::new(AtomicBool::new(true));
    let error_milli = Arc::new(AtomicU64::new(0));
    let (commands, inbox) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<String>>();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (regressed, error_milli, stop) = (regressed.clone(), error_milli.clone(), stop.clone());
        std::thread::spawn(move || {
            enter(&ns_path);
            let o = Orchestrator::start(settings, &Default::default())
                .expect("the orchestrator starts");
            o.set_signals(Box::new(move |_| shadow_proxy::failover::Signals {
                diff_regressed: regressed
                    .load(Ordering::SeqCst)
                    .then(|| "1 regressed field (/price)".into()),
                error_rate: Some(error_milli.load(Ordering::SeqCst) as f64 / 1000.0),
                p99_ms: None,
            }));
            while !stop.load(Ordering::SeqCst) {
                o.tick(&|_| (Level::Ok, None));
                while let Ok(reply) = inbox.try_recv() {
                    let r = o.command("web", Command::Cutover, false, false);
                    let _ = reply.send(match r {
                        Ok(e) => format!("{} {}", e.action, e.reason),
                        Err(e) => format!("error: {e}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            o.events()
        })
    };
    let cutover = || {
        let (tx, rx) = std::sync::mpsc::channel();
        commands.send(tx).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    };
    std::thread::sleep(Duration::from_millis(100));
    let refused = cutover();
    assert!(
        refused.starts_with("error") && refused.contains("diff verdict is regressed"),
        "{refused}"
    );
    regressed.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    let cut = cutover();
    assert!(cut.starts_with("cutover"), "{cut}");
    // The shadow now serves live traffic, and its error rate climbs.
    error_milli.store(500, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    // Back on the primary, the idle shadow regresses: remediated three
    // times, then left alone until it is healthy.
    regressed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    let events = worker.join().unwrap();
    let rollback = events
        .iter()
        .find(|e| e.action == "rollback")
        .unwrap_or_else(|| panic!("no rollback: {events:#?}"));
    assert!(
        rollback
            .reason
            .contains("error rate 0.500 on the shadow is above 0.1"),
        "{}",
        rollback.reason
    );
    // After the rollback: three remediations, then a give-up (the start,
    // while the diff was regressed, may have run some too).
    let after: Vec<_> = events
        .iter()
        .skip_while(|e| e.action != "rollback")
        .filter(|e| e.action == "remediate")
        .collect();
    let ran = after.iter().filter(|e| e.reason.contains(" ran: ")).count();
    let gave_up = after
        .iter()
        .filter(|e| e.reason.contains("giving up"))
        .count();
    assert_eq!((ran, gave_up), (3, 1), "{events:#?}");
    let healed = std::fs::read_to_string(dir.join("remediate.log")).unwrap_or_default();
    assert!(healed.lines().count() >= 3, "the hook ran: {healed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_planned_cutover_warms_the_shadow_with_the_requests_seen_live() {
    let Some(_k) = kernel_test("a_planned_cutover_warms_the_shadow_with_the_requests_seen_live")
    else {
        return;
    };
    let ns = Netns::new("fo-warm");
    let dir = std::env::temp_dir().join(format!("shadow-fo-warm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (primary_log, shadow_log, mirror_log) = (
        dir.join("primary.jsonl"),
        dir.join("shadow.jsonl"),
        dir.join("mirror.jsonl"),
    );
    let (_primary, live) = logging_server(&ns, &primary_log);
    // The failover shadow, and a separate mirror target: what reaches the
    // shadow before the cutover is the warm step's replay.
    let (_shadow, shadow_addr) = logging_server(&ns, &shadow_log);
    let (_mirror, mirror_addr) = logging_server(&ns, &mirror_log);
    let ns_path = PathBuf::from(format!("/var/run/netns/{}", ns.name()));
    let bpffs = dir.join("bpf");
    std::fs::create_dir_all(&bpffs).unwrap();
    shadow_tests::sh("mount", &["-t", "bpf", "bpf", bpffs.to_str().unwrap()]);
    let config = dir.join("shadow.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\ninterface = \"lo\"\n\n[[service]]\nname = \"web\"\nport = {port}\npercent = 100\n\
             targets = [\"http://{mirror_addr}\"]\ntimeout = \"2s\"\n\n[service.diff]\nnoise_fraction = 0.0\n\n\
             [agent]\ncpu_budget = 0\n\n\
             [failover]\ncheck_interval = \"100ms\"\nstate_dir = \"{state}\"\npin_dir = \"{pins}\"\n\n\
             [[failover.service]]\nname = \"web\"\nport = {port}\nshadow_port = {shadow}\ncheck_path = \"/healthz\"\n\n\
             [[failover.service.step]]\nkind = \"warm\"\nlast = \"5m\"\nrate = 200\n",
            port = live.port(),
            shadow = shadow_addr.port(),
            state = dir.join("state").display(),
            pins = bpffs.join("steer").display(),
        ),
    )
    .unwrap();
    let agent_dir = dir.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = shadow_tests::Agent::start_in_netns(
        Some(ns.name()),
        agent_dir.clone(),
        &["--config", config.to_str().unwrap(), "--no-forecast"],
    );
    // Live traffic: 40 GETs and 5 POSTs, all sampled and mirrored.
    let live_paths: Vec<String> = (0..40).map(|i| format!("/live/{i}")).collect();
    {
        let (ns_path, paths) = (ns_path.clone(), live_paths.clone());
        std::thread::spawn(move || {
            enter(&ns_path);
            for p in &paths {
                assert!(request(live, p), "{p} failed");
            }
            for i in 0..5 {
                let mut s = TcpStream::connect(live).unwrap();
                let req = format!(
                    "POST /write/{i} HTTP/1.1\r\nHost: web\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
                );
                s.write_all(req.as_bytes()).unwrap();
                let _ = s.read_to_end(&mut Vec::new());
            }
        })
        .join()
        .unwrap();
    }
    shadow_tests::wait_until(
        Duration::from_secs(20),
        "the mirror target to receive the live GETs",
        || live_paths.iter().all(|p| served(&mirror_log).contains(p)),
    );
    let before = served(&shadow_log);
    assert!(
        !live_paths.iter().any(|p| before.contains(p)),
        "the shadow had live requests before the warm"
    );

    // A planned cutover of a service never staged runs its warm step.
    let (ok, cut) = shadowctl(&agent_dir, &["failover", "cutover", "web"]);
    // The 40 GETs, and any of the agent's own checks of the primary the
    // capture saw meanwhile; never the POSTs.
    let replayed: usize = cut
        .split("warm: replayed ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no warm in {cut}\n{}", agent.log()));
    assert!(ok && replayed >= 40, "{cut}");
    let warmed = served(&shadow_log);
    let missing: Vec<&String> = live_paths.iter().filter(|p| !warmed.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "not replayed to the shadow: {missing:?}"
    );
    assert!(
        !warmed.iter().any(|p| p.starts_with("/write/")),
        "a POST was replayed: {warmed:?}"
    );
    let (ok, back) = shadowctl(&agent_dir, &["failover", "rollback", "web"]);
    assert!(ok, "{back}");
    drop(agent);
    shadow_tests::sh("umount", &["-l", bpffs.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
}
