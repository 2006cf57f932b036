//! Passive traffic shadowing end to end, inside a network namespace the test
//! creates: a live HTTP server, raw HTTP clients, shadow servers that log
//! what they receive, and the agent with its tc classifier on the
//! namespace's loopback.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use shadow_proxy::replay::control::MirrorStatus;
use shadow_tests::{Proc, built_binary, kernel_test, netns::Netns, sh, wait_until, wait_until_ok};

fn listening(what: &str, mut cmd: Command) -> (Proc, SocketAddr) {
    cmd.stdout(Stdio::piped());
    let mut p = Proc::spawn(what, &mut cmd);
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("LISTENING line");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("{what} said {line:?}"))
        .parse()
        .expect("address");
    (p, addr)
}

struct Shadow {
    _proc: Option<Proc>,
    /// Holds a "down" shadow's port closed.
    _closed: Option<socket2::Socket>,
    addr: SocketAddr,
    log: PathBuf,
}

struct Mirror {
    ns: Netns,
    dir: PathBuf,
    _live: Proc,
    live: SocketAddr,
    shadows: Vec<Shadow>,
    agent: Proc,
    control: PathBuf,
}

impl Mirror {
    /// `modes`: one shadow per entry: normal, slow, reset, or down (no server).
    fn start(tag: &str, percent: f64, modes: &[&str], extra: &str) -> Self {
        Self::start_with(tag, percent, modes, extra, &[])
    }

    /// [`Self::start`] with more agent flags.
    fn start_with(tag: &str, percent: f64, modes: &[&str], extra: &str, flags: &[&str]) -> Self {
        let ns = Netns::new(tag);
        let dir = std::env::temp_dir().join(format!("shadow-mirror-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = built_binary("http-peer");
        let mut live_cmd = ns.cmd(&peer);
        if modes.first().is_some_and(|m| m.starts_with("api")) {
            live_cmd.args(["api", "127.0.0.1:0"]);
        } else {
            live_cmd.args(["live", "127.0.0.1:0"]);
        }
        let (live_proc, live) = listening("live server", live_cmd);
        let mut shadows = Vec::new();
        for (i, mode) in modes.iter().enumerate() {
            let log = dir.join(format!("shadow{i}.jsonl"));
            if *mode == "down" {
                let (sock, addr) = ns.closed_port();
                shadows.push(Shadow {
                    _proc: None,
                    _closed: Some(sock),
                    addr,
                    log,
                });
                continue;
            }
            let mut c = ns.cmd(&peer);
            if let Some(api_mode) = mode.strip_prefix("api") {
                c.args(["api", "127.0.0.1:0", api_mode.trim_start_matches('-')]);
            } else {
                c.args(["shadow", "127.0.0.1:0"]).arg(&log).arg(mode);
            }
            let (p, addr) = listening("shadow server", c);
            shadows.push(Shadow {
                _proc: Some(p),
                _closed: None,
                addr,
                log,
            });
        }
        let targets: Vec<String> = shadows
            .iter()
            .map(|s| format!("\"http://{}\"", s.addr))
            .collect();
        let config = format!(
            "[capture]\ninterface = \"lo\"\n\n[[service]]\nname = \"web\"\nport = {}\npercent = {percent}\n\
             targets = [{}]\ntimeout = \"2s\"\n{extra}",
            live.port(),
            targets.join(", ")
        );
        // Tests that count what the shadow receives turn off the noise
        // probes (a share of requests sent twice), unless they set them.
        let config = if extra.contains("[service.diff]") {
            config
        } else {
            format!("{config}\n[service.diff]\nnoise_fraction = 0.0\n")
        };
        // The budget would lower the capture rate under a burst, and these
        // tests count what each connection mirrored; its own test turns it
        // on with the flag.
        let config = format!("{config}\n[agent]\ncpu_budget = 0\n");
        let cfg_path = dir.join("shadow.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let control = dir.join("control.sock");
        let ready = dir.join("ready.json");
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut a = ns.cmd(&built_binary("shadow-proxy"));
        a.args(["--admin", "127.0.0.1:0", "--interval", "200ms", "--config"])
            .arg(&cfg_path)
            .arg("--control-socket")
            .arg(&control)
            .arg("--forecast-dir")
            .arg(dir.join("forecast"))
            .arg("--pid-file")
            .arg(dir.join("agent.pid"))
            .arg("--ready-file")
            .arg(&ready)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(log);
        let mut agent = Proc::spawn("shadow-proxy", &mut a);
        wait_until(Duration::from_secs(30), "the agent's ready file", || {
            if let Some(st) = agent.child.try_wait().unwrap() {
                panic!(
                    "agent exited with {st}:\n{}",
                    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
                );
            }
            ready.exists()
        });
        Self {
            ns,
            dir,
            _live: live_proc,
            live,
            shadows,
            agent,
            control,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Runs an `http-peer client` scenario inside the namespace; returns
    /// one JSON value per response.
    fn client(&self, scenario: &str, args: &[&str]) -> Vec<Value> {
        self.client_to(self.live, scenario, args)
    }

    /// [`Self::client`] against `addr` (the inline proxy).
    fn client_to(&self, addr: SocketAddr, scenario: &str, args: &[&str]) -> Vec<Value> {
        let out = self
            .ns
            .cmd(&built_binary("http-peer"))
            .args(["client", &addr.to_string(), scenario])
            .args(args)
            .output()
            .expect("run client");
        assert!(
            out.status.success(),
            "client {scenario} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("client JSON"))
            .collect()
    }

    fn shadow_log(&self, i: usize) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.shadows[i].log).unwrap_or_default();
        // Only whole lines: the server may be writing the next one.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).expect("shadow log JSON"))
            .collect()
    }

    /// Waits until shadow `i` logged `n` requests (or the timeout), then
    /// until the agent has settled, so extra ones would show too.
    fn wait_shadow(&self, i: usize, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        while self.shadow_log(i).len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.settle(Duration::from_secs(15));
        self.shadow_log(i)
    }

    /// Waits until the agent has caught up with everything it sampled: the
    /// capture thread read every sample the kernel sent, no flow is open
    /// or buffered, and every parsed request was replayed or counted as not
    /// replayed. A shadow logs a request before answering it, so its log is
    /// complete then.
    fn settle(&self, timeout: Duration) {
        wait_until_ok(
            timeout,
            "the agent to capture, parse and replay everything it sampled",
            || {
                let st = self.status();
                let out = self.shadowctl(&["mirror", "capture"]);
                let cap: shadow_proxy::capture::pipeline::PipelineView =
                    serde_json::from_slice(&out.stdout).expect("capture JSON");
                let accounted = st.stats.replayed
                    + st.stats.sampled_out
                    + st.stats.not_replayed.values().sum::<u64>();
                let settled = cap.samples + cap.lost >= st.packets_sampled
                    && cap.flows == 0
                    && cap.buffered_bytes == 0
                    && accounted >= st.stats.requests_parsed;
                if settled {
                    Ok(())
                } else {
                    Err(format!("status {st:?}\ncapture {cap:?}"))
                }
            },
        );
    }

    fn status(&self) -> MirrorStatus {
        let out = self.shadowctl(&["mirror", "status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all: Vec<MirrorStatus> = serde_json::from_slice(&out.stdout).expect("status JSON");
        all.remove(0)
    }

    fn shadowctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(built_binary("shadowctl"))
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .expect("run shadowctl")
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.agent
            .signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn header<'a>(req: &'a Value, name: &str) -> Option<&'a str> {
    req["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))?[1]
        .as_str()
}

fn paths(log: &[Value]) -> Vec<String> {
    let mut p: Vec<String> = log
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    p.sort();
    p
}

#[test]
fn keep_alive_and_pipelined_requests_reach_the_shadow_exactly() {
    let Some(_k) = kernel_test("keep_alive_and_pipelined_requests_reach_the_shadow_exactly") else {
        return;
    };
    let m = Mirror::start("kp", 100.0, &["normal"], "");
    let ka = m.client("keepalive", &["3"]);
    let pl = m.client("pipelined", &["5"]);
    assert!(
        ka.iter().chain(&pl).all(|r| r["status"] == 200),
        "live answered"
    );
    let log = m.wait_shadow(0, 8, Duration::from_secs(10));
    let mut want: Vec<String> = (0..3).map(|i| format!("/keepalive/{i}")).collect();
    want.extend((0..5).map(|i| format!("/pipelined/{i}?q={i}")));
    want.sort();
    assert_eq!(
        paths(&log),
        want,
        "shadow got exactly the sampled requests\n{}",
        m.log()
    );
    let host = format!("127.0.0.1-shadow:{}", m.shadows[0].addr.port());
    for r in &log {
        assert_eq!(r["method"], "GET");
        assert_eq!(header(r, "host"), Some(host.as_str()), "{r}");
        assert_eq!(header(r, "x-shadow-request"), Some("1"), "{r}");
        // The live client, not the agent, is who asked.
        assert_eq!(header(r, "x-forwarded-for"), Some("127.0.0.1"), "{r}");
        assert_eq!(header(r, "forwarded"), Some("for=127.0.0.1"), "{r}");
        assert_eq!(r["body_len"], 0);
    }
    let pipelined: Vec<&Value> = log
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/pipelined"))
        .collect();
    assert!(pipelined.iter().all(|r| header(r, "accept") == Some("*/*")));
    let st = m.status();
    assert_eq!(st.stats.requests_parsed, 8);
    assert_eq!(st.stats.replayed, 8);
    assert_eq!(st.coverage, Some(1.0));
}

/// A process's resident memory now and at its peak since the last reset,
/// in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 10
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

#[test]
fn fixed_and_chunked_bodies_up_to_64_mib_sent_unpaced_arrive_byte_for_byte_and_are_streamed() {
    let Some(_k) = kernel_test(
        "fixed_and_chunked_bodies_up_to_64_mib_sent_unpaced_arrive_byte_for_byte_and_are_streamed",
    ) else {
        return;
    };
    let m = Mirror::start(
        "bodies",
        100.0,
        &["normal"],
        "[[service.route]]\npath_prefix = \"/upload\"\nallow_methods = [\"PUT\"]\n",
    );
    // Warm: the first requests fault in the agent's pools and rings.
    let r = m.client("body", &["2000000", "fixed"]);
    assert_eq!(r[0]["status"], 200);
    m.wait_shadow(0, 1, Duration::from_secs(10));
    let pid = m.agent.child.id();
    std::thread::sleep(Duration::from_millis(500));
    // Resets the peak (VmHWM) to now, so the peak is that of the uploads.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (idle, _) = rss(pid);
    // Every size at memory speed (no pacing): up to 1 MiB a body is held
    // whole; over it, it streams to the shadow as it is captured.
    let sizes = [0usize, 1024, 1 << 20, 64 << 20];
    let mut expected = vec![(
        "/upload/2000000/fixed".to_owned(),
        2_000_000,
        r[0]["body"].as_str().unwrap().trim().to_owned(),
    )];
    for size in sizes {
        for mode in ["fixed", "chunked"] {
            let r = m.client("body", &[&size.to_string(), mode]);
            assert_eq!(r[0]["status"], 200);
            // The live server's answer carries the digest of what it read.
            let live_line = r[0]["body"].as_str().unwrap().trim().to_owned();
            expected.push((format!("/upload/{size}/{mode}"), size, live_line));
        }
    }
    let log = m.wait_shadow(0, expected.len(), Duration::from_secs(60));
    let (_, peak) = rss(pid);
    let st = m.status();
    assert_eq!(
        log.len(),
        expected.len(),
        "every upload mirrored once: got {:?}\nstatus {st:?}\ncapture {}",
        paths(&log),
        String::from_utf8_lossy(&m.shadowctl(&["mirror", "capture"]).stdout)
    );
    for (path, size, live_line) in expected {
        let r = log
            .iter()
            .find(|r| r["path"] == path.as_str())
            .unwrap_or_else(|| panic!("shadow never got {path}"));
        assert_eq!(r["method"], "PUT");
        assert_eq!(
            r["body_len"],
            size,
            "{path}: {st:?}\ncapture {}",
            String::from_utf8_lossy(&m.shadowctl(&["mirror", "capture"]).stdout)
        );
        let digest = live_line.split_whitespace().last().unwrap();
        assert_eq!(
            r["body_sha256"], digest,
            "{path}: shadow body differs from what live read"
        );
    }
    assert_eq!(st.stats.replayed, 9, "{st:?}");
    assert_eq!(st.coverage, Some(1.0), "{st:?}");
    // Two 64 MiB bodies went through; held whole, one would take 64 MiB.
    let above = peak.saturating_sub(idle);
    eprintln!(
        "agent RSS idle {} MiB, peak during the uploads {} MiB (+{} MiB)",
        idle >> 20,
        peak >> 20,
        above >> 20
    );
    assert!(
        above <= 64 << 20,
        "agent RSS rose {} MiB above idle during the uploads",
        above >> 20
    );
}

#[test]
fn a_hundred_concurrent_connections_are_all_mirrored() {
    let Some(_k) = kernel_test("a_hundred_concurrent_connections_are_all_mirrored") else {
        return;
    };
    let m = Mirror::start("conc", 100.0, &["normal", "normal"], "");
    let r = m.client("concurrent", &["100"]);
    assert_eq!(r.len(), 100);
    assert!(r.iter().all(|x| x["status"] == 200));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        a = m.shadow_log(0);
        b = m.shadow_log(1);
        if a.len() + b.len() >= 100 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    m.settle(Duration::from_secs(15));
    let mut all = m.shadow_log(0);
    all.extend(m.shadow_log(1));
    let mut want: Vec<String> = (0..100).map(|i| format!("/concurrent/{i}")).collect();
    want.sort();
    assert_eq!(paths(&all), want, "{:?}\n{}", m.status(), m.log());
    assert!(
        !a.is_empty() && !b.is_empty(),
        "load spread over both targets: {} / {}",
        a.len(),
        b.len()
    );
}

#[test]
fn request_sampling_mirrors_the_share_asked_over_a_few_keep_alive_connections() {
    let Some(_k) =
        kernel_test("request_sampling_mirrors_the_share_asked_over_a_few_keep_alive_connections")
    else {
        return;
    };
    // 16 pooled connections: sampled per connection, 10 % is 0, 1, 2 or 3
    // of them (0 %, 6 %, 12 %, 19 % of requests); per request it is 10 %.
    let m = Mirror::start("reqs", 10.0, &["normal"], "sample = \"request\"\n");
    let (conns, reqs) = (16, 100);
    let r = m.client("pool", &[&conns.to_string(), &reqs.to_string()]);
    let n = conns * reqs;
    assert_eq!(r.len(), n);
    assert!(
        r.iter().all(|x| x["status"] == 200),
        "every live request answered"
    );
    m.settle(Duration::from_secs(15));
    let st = m.status();
    assert_eq!((st.sample.as_str(), st.capture_percent), ("request", 100.0));
    let mirrored = m.shadow_log(0).len();
    let share = mirrored as f64 / n as f64 * 100.0;
    assert!(
        (8.0..=12.0).contains(&share),
        "{mirrored} of {n} requests ({share:.1} %) mirrored at 10 % per request\n{st:?}"
    );
    // What was left out is said as such, not as lost: coverage is of what
    // was asked for.
    assert_eq!(st.stats.requests_parsed, n as u64, "{st:?}");
    assert_eq!(st.stats.sampled_out + st.stats.replayed, n as u64, "{st:?}");
    assert_eq!(st.coverage, Some(1.0), "{st:?}");
    let text = m.shadowctl(&["mirror", "status"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("req (100%)"),
        "{text:?}"
    );
}

#[test]
fn ten_percent_sampling_holds_and_changes_at_run_time_without_losing_live_requests() {
    let Some(_k) = kernel_test(
        "ten_percent_sampling_holds_and_changes_at_run_time_without_losing_live_requests",
    ) else {
        return;
    };
    let m = Mirror::start("rate", 10.0, &["normal"], "");
    let n = 1000;
    let r = m.client("connections", &[&n.to_string(), "0"]);
    assert_eq!(r.len(), n);
    assert!(
        r.iter().all(|x| x["status"] == 200),
        "every live request answered"
    );
    m.settle(Duration::from_secs(15));
    let mirrored = m.shadow_log(0).len();
    // Binomial(1000, 0.1): mean 100, sd 9.5; 4 sd either side.
    assert!(
        (62..=138).contains(&mirrored),
        "{mirrored} of {n} connections mirrored at 10%"
    );

    // Bad input changes nothing.
    let bad = m.shadowctl(&["mirror", "set", "web", "150"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("outside 0-100"),
        "{bad:?}"
    );
    let unknown = m.shadowctl(&["mirror", "set", "nope", "5"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown service"),
        "{unknown:?}"
    );
    assert_eq!(m.status().percent, 10.0);

    // Raise to 100% while a client is running: later connections are all
    // mirrored, and the client sees every answer.
    let peer = built_binary("http-peer");
    let mut running = m.ns.cmd(&peer);
    running
        .args(["client", &m.live.to_string(), "connections", "300", "5"])
        .stdout(Stdio::piped());
    let seen_before = m.status().packets_seen;
    let child = running.spawn().unwrap();
    // Change the rate only once the client is under way.
    wait_until(
        Duration::from_secs(10),
        "the running client's first packets",
        || m.status().packets_seen > seen_before,
    );
    let set = m.shadowctl(&["mirror", "set", "web", "100"]);
    assert!(set.status.success(), "{set:?}");
    let out = child.wait_with_output().unwrap();
    let answers = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(answers, 300, "live client lost requests during the change");
    m.settle(Duration::from_secs(15));
    let log = m.shadow_log(0);
    let last_50: Vec<String> = (250..300).map(|i| format!("/conn/{i}")).collect();
    for p in &last_50 {
        assert!(
            log.iter().any(|r| r["path"] == p.as_str()),
            "{p} not mirrored after the change"
        );
    }
    assert_eq!(m.status().percent, 100.0);
}

#[test]
fn a_down_slow_or_resetting_shadow_leaves_live_results_unchanged() {
    let Some(_k) = kernel_test("a_down_slow_or_resetting_shadow_leaves_live_results_unchanged")
    else {
        return;
    };
    let baseline = {
        let m = Mirror::start("base", 0.0, &["normal"], "");
        m.client("keepalive", &["20"])
    };
    for mode in ["down", "slow", "reset"] {
        let m = Mirror::start(mode, 100.0, &[mode], "");
        let got = m.client("keepalive", &["20"]);
        assert_eq!(got, baseline, "live answers changed with a {mode} shadow");
        // A slow shadow's replays end at the 2 s timeout.
        m.settle(Duration::from_secs(15));
        let st = m.status();
        assert_eq!(
            st.stats.requests_parsed, 20,
            "{mode}: all sampled requests parsed"
        );
        let failed: u64 = st.stats.not_replayed.values().sum();
        assert_eq!(
            st.stats.replayed + failed,
            20,
            "{mode}: each request accounted for: {:?}",
            st.stats
        );
        assert_eq!(
            st.stats.replayed, 0,
            "{mode}: nothing succeeded against a {mode} shadow"
        );
    }
}

#[test]
fn secrets_are_redacted_and_unsafe_methods_blocked_by_default() {
    let Some(_k) = kernel_test("secrets_are_redacted_and_unsafe_methods_blocked_by_default") else {
        return;
    };
    let m = Mirror::start(
        "safety",
        100.0,
        &["normal"],
        "redact_headers = [\"X-Api-Key\"]\n[[service.route]]\npath_prefix = \"/allowed\"\nallow_methods = [\"POST\"]\n",
    );
    let r = m.client("methods", &[]);
    assert!(r.iter().all(|x| x["status"] == 200));
    let log = m.wait_shadow(0, 2, Duration::from_secs(10));
    assert_eq!(
        paths(&log),
        vec!["/allowed/post", "/m/get"],
        "only safe or allowed methods"
    );
    let redacted = shadow_proxy::replay::rewrite::redact(b"Bearer s3cret");
    for r in &log {
        assert_eq!(header(r, "authorization"), Some(redacted.as_str()));
        assert!(header(r, "cookie").unwrap().starts_with("redacted-sha256:"));
        assert!(
            header(r, "x-api-key")
                .unwrap()
                .starts_with("redacted-sha256:")
        );
        assert!(!r.to_string().contains("s3cret"));
    }
    m.settle(Duration::from_secs(15));
    let st = m.status();
    assert_eq!(
        st.stats.not_replayed.get("unsafe_method"),
        Some(&4),
        "{:?}",
        st.stats
    );
}

#[test]
fn segments_arriving_out_of_order_are_reassembled() {
    let Some(_k) = kernel_test("segments_arriving_out_of_order_are_reassembled") else {
        return;
    };
    let m = Mirror::start(
        "ooo",
        100.0,
        &["normal"],
        "[[service.route]]\npath_prefix = \"/upload\"\nallow_methods = [\"PUT\"]\n",
    );
    // Reorder on the namespace's loopback (netem and prio are not in this
    // kernel): TCP segments whose sequence number has bit 2 clear go through
    // a slow HTB class, the others through a fast one and overtake them.
    let ns = m.ns.name();
    let tc = |args: &str| {
        let mut a = vec!["netns", "exec", ns, "tc"];
        a.extend(args.split_whitespace());
        sh("ip", &a);
    };
    tc("qdisc add dev lo root handle 1: htb default 20");
    tc("class add dev lo parent 1: classid 1:10 htb rate 100mbit burst 256k");
    tc("class add dev lo parent 1: classid 1:20 htb rate 10gbit burst 1m");
    tc(
        "filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match u8 0x00 0x04 at 27 flowid 1:10",
    );

    let mut expected = Vec::new();
    for size in ["1048576", "300000"] {
        for mode in ["fixed", "chunked"] {
            let r = m.client("body", &[size, mode]);
            let live = r[0]["body"].as_str().unwrap().trim().to_owned();
            expected.push((format!("/upload/{size}/{mode}"), live));
        }
    }
    let ka = m.client("keepalive", &["10"]);
    assert!(ka.iter().all(|r| r["status"] == 200));
    let log = m.wait_shadow(0, expected.len() + 10, Duration::from_secs(30));
    for (path, live) in &expected {
        let r = log
            .iter()
            .find(|r| r["path"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not mirrored\n{}", m.log()));
        let digest = live.split_whitespace().last().unwrap();
        assert_eq!(r["body_sha256"], digest, "{path}: reassembled body differs");
    }
    assert_eq!(
        log.len(),
        expected.len() + 10,
        "nothing lost, nothing doubled"
    );
    let out = m.shadowctl(&["mirror", "capture"]);
    let capture: Value = serde_json::from_slice(&out.stdout).expect("capture JSON");
    assert!(
        capture["out_of_order_segments"].as_u64().unwrap() > 0,
        "the qdisc should have reordered segments: {capture}"
    );
}

#[test]
fn a_recording_replays_at_n_times_speed() {
    let Some(_k) = kernel_test("a_recording_replays_at_n_times_speed") else {
        return;
    };
    let m = Mirror::start("rec", 100.0, &["normal"], "");
    let file = m.dir.join("rec.jsonl.gz");
    let mut rec = Command::new(built_binary("shadowctl"));
    rec.arg("--control")
        .arg(&m.control)
        .args(["record", "--duration", "3s", "--out"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut recorder = rec.spawn().unwrap();
    // shadowctl says "recording to ..." once the agent has started the
    // recording; traffic before that would not be in it.
    let mut said = String::new();
    BufReader::new(recorder.stderr.take().expect("stderr"))
        .read_line(&mut said)
        .expect("recorder's first line");
    assert!(
        said.starts_with("recording to "),
        "shadowctl record said {said:?}"
    );
    m.client("connections", &["20", "50"]);
    let out = recorder.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("recorded 20 exchanges"), "{said}");
    let recs = shadow_proxy::replay::record::read(&file).expect("recording readable");
    assert_eq!(recs.len(), 20);
    let span = Duration::from_nanos(recs.last().unwrap().offset_ns);
    assert!(span > Duration::from_millis(900), "recorded span {span:?}");

    let before = m.shadow_log(0).len();
    let t = Instant::now();
    let target = format!("http://{}", m.shadows[0].addr);
    let out =
        m.ns.cmd(&built_binary("shadowctl"))
            .arg("replay")
            .arg(&file)
            .args(["--target", &target, "--speed", "2"])
            .output()
            .unwrap();
    let took = t.elapsed();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("replayed 20 requests") && said.contains("200: 20"),
        "{said}"
    );
    assert!(
        took < span.mul_f64(0.8) && took > span.mul_f64(0.4),
        "2x replay of a {span:?} recording took {took:?}"
    );
    // The shadow logs each request before answering it, and shadowctl
    // waited for every answer: the log is complete, or short.
    let log = wait_until_ok(Duration::from_secs(5), "20 more shadow log lines", || {
        let log = m.shadow_log(0);
        if log.len() >= before + 20 {
            Ok(log)
        } else {
            Err(format!("{} lines, {before} before", log.len()))
        }
    });
    assert_eq!(log.len(), before + 20);
}

#[test]
fn a_planted_regression_is_reported_and_nothing_else() {
    let Some(_k) = kernel_test("a_planted_regression_is_reported_and_nothing_else") else {
        return;
    };
    // Live and shadow both answer with timestamps and UUIDs; the shadow
    // also changes one price on /cart/{n}.
    let m = Mirror::start(
        "diff",
        100.0,
        &["api-regress"],
        "[service.diff]\nnoise_fraction = 0.2\n",
    );
    // Kernel context covers the agent's last full poll interval (200 ms
    // here), so the replay connections must exist one poll before. Deliberate
    // pacing: the kernel view is only on the admin port, which is inside the
    // namespace, so three poll intervals stand in for a condition.
    m.client("api", &["2"]);
    std::thread::sleep(Duration::from_millis(600));
    let r = m.client("api", &["30"]);
    assert_eq!(r.len(), 60);
    let deadline = Instant::now() + Duration::from_secs(15);
    let summary = loop {
        let out = m.shadowctl(&["diff", "summary", "--json"]);
        assert!(out.status.success(), "{out:?}");
        let v: Vec<shadow_proxy::replay::control::DiffSummary> =
            serde_json::from_slice(&out.stdout).unwrap();
        let compared: u64 = v[0]
            .targets
            .values()
            .flat_map(|t| t.routes.values())
            .map(|r| r.compared)
            .sum();
        if compared >= 60 || Instant::now() > deadline {
            break v.into_iter().next().unwrap();
        }
        // The poll interval of a wait on a condition (compared >= 60).
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(summary.targets.len(), 1, "one shadow target: {summary:#?}");
    let target = summary.targets.values().next().unwrap();
    let shadow_proxy::diff::noise::Verdict::Regressed { regressions } = &target.verdict else {
        panic!("verdict should be regressed: {summary:#?}");
    };
    let found: Vec<(String, String)> = regressions
        .iter()
        .map(|r| (r.route.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        found,
        vec![("GET /cart/{id}".to_owned(), "$.items[*].price".to_owned())],
        "exactly the planted field: {summary:#?}"
    );
    let example = regressions[0].examples[0];
    let show = m.shadowctl(&["diff", "show", &example.to_string()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("$.items[3].price"), "{text}");

    // Differing exchanges carry the kernel's view of the shadow's host:
    // block-I/O and the RTT to the shadow over the last poll interval.
    let ex = m.shadowctl(&["exchanges", "--limit", "100"]);
    let recs: Vec<Value> = serde_json::from_slice(&ex.stdout).expect("exchanges JSON");
    let shadow = m.shadows[0].addr.to_string();
    assert!(
        recs.iter()
            .any(|r| r["kernel"]["shadow_rtt"]["endpoint"] == shadow.as_str()
                && r["kernel"]["window_ms"].as_u64().unwrap_or(0) > 0),
        "no differing exchange carries kernel context for {shadow}: {}",
        recs.iter()
            .map(|r| r["kernel"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Marking the field as noise flips the verdict.
    let mark = m.shadowctl(&["diff", "noise", "web", "GET /cart/{id}", "$.items[*].price"]);
    assert!(mark.status.success(), "{mark:?}");
    let out = m.shadowctl(&["diff", "summary", "--json"]);
    let v: Vec<shadow_proxy::replay::control::DiffSummary> =
        serde_json::from_slice(&out.stdout).unwrap();
    let verdict = &v[0].targets.values().next().unwrap().verdict;
    assert!(
        matches!(verdict, shadow_proxy::diff::noise::Verdict::Healthy { .. }),
        "{verdict:?}"
    );
}

/// The live-traffic series come from the captured exchanges: the rate in
/// the history adds up to the requests sent (100 % sampled), latency and
/// errors are there, CPU regresses on the rate, and the failure
/// probability of the host and the service is served, quiet here.
#[test]
fn live_traffic_series_feed_the_regression_and_the_failure_probability() {
    let Some(_k) =
        kernel_test("live_traffic_series_feed_the_regression_and_the_failure_probability")
    else {
        return;
    };
    let m = Mirror::start("apps", 100.0, &["normal"], "");
    // A few quiet intervals first: a value is the requests since the
    // previous sample, so the first burst needs a sample before it.
    std::thread::sleep(Duration::from_millis(800));
    // Bursts with pauses between, so the rate varies from one interval to
    // the next.
    for _ in 0..3 {
        let r = m.client("connections", &["100", "2"]);
        assert_eq!(r.len(), 100);
        std::thread::sleep(Duration::from_millis(800));
    }
    m.settle(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let ready: Value =
        serde_json::from_str(&std::fs::read_to_string(m.dir.join("ready.json")).unwrap()).unwrap();
    let admin = ready["admin"].as_str().unwrap().to_owned();
    let history = |metric: &str| -> Vec<(u64, f64)> {
        let out =
            m.ns.cmd(&built_binary("shadowctl"))
                .args(["--admin", &admin, "history", metric])
                .output()
                .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[3].parse().unwrap())
            })
            .collect()
    };
    let rate = history("web.rate");
    // Each value is requests / seconds since the previous sample.
    let requests: f64 = rate
        .windows(2)
        .map(|w| w[1].1 * (w[1].0 - w[0].0) as f64 / 1000.0)
        .sum();
    assert!(
        (297.0..=303.0).contains(&requests),
        "web.rate adds up to {requests} requests, 300 were sent: {rate:?}"
    );
    let p99 = history("web.p99_latency_ms");
    assert!(
        !p99.is_empty() && p99.iter().all(|p| p.1 >= 0.0 && p.1 < 1000.0),
        "{p99:?}"
    );
    assert!(history("web.error_rate").iter().all(|p| p.1 == 0.0));
    // And per route group.
    let names =
        m.ns.cmd(&built_binary("shadowctl"))
            .args(["--admin", &admin, "history"])
            .output()
            .unwrap();
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    assert!(
        names
            .lines()
            .any(|l| l.starts_with("web[") && l.ends_with("].p99_latency_ms")),
        "{names}"
    );

    let out = m.shadowctl(&["forecast", "regress", "cpu", "--on", "web.rate", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let r: shadow_api::forecast::Regression = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r.y.as_str(), r.on.as_str()),
        ("host.cpu_utilisation", "web.rate")
    );
    assert!(
        r.n >= 10 && r.slope.is_finite() && r.slope_se.is_finite(),
        "{r:?}"
    );
    assert_eq!(r.at.len(), 3);
    let table = m.shadowctl(&[
        "forecast", "regress", "cpu", "--on", "web.rate", "--at", "1000",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("host.cpu_utilisation = ") && text.contains("1000"),
        "{text}"
    );
    let bad = m.shadowctl(&["forecast", "regress", "cpu", "--on", "nope.rate"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("no history series \"nope.rate\""),
        "{bad:?}"
    );

    let out = m.shadowctl(&["predict", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let p: shadow_api::predict::PredictAnswer = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = p.scopes.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"web"), "{names:?}");
    assert_eq!(p.scopes[0].scope, "host");
    for s in &p.scopes {
        assert!(s.probability < p.thresholds.warn, "{s:?}");
        assert_eq!(s.horizon_s, 1800);
    }
    let table = m.shadowctl(&["predict"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("P(FAIL)") && text.contains("service  web"),
        "{text}"
    );
}

#[test]
fn local_replicas_the_provisioner_starts_become_shadow_targets() {
    let Some(_k) = kernel_test("local_replicas_the_provisioner_starts_become_shadow_targets")
    else {
        return;
    };
    let logs = std::env::temp_dir().join(format!("shadow-replica-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    // Two copies of a logging shadow server, started by the provisioner in
    // the agent's namespace (its minimum is two, so the first round
    // applies it), each on its own port from 9300.
    let extra = format!(
        "\n[service.diff]\nnoise_fraction = 0.0\n\n[provision]\nmode = \"apply\"\n\n\
         [[provision.loop]]\ntarget = \"web\"\nresource = \"replicas\"\nbackend = \"replicas\"\n\
         command = [\"{peer}\", \"shadow\", \"127.0.0.1:{{port}}\", \"{logs}/replica-{{port}}.jsonl\", \"normal\"]\n\
         base_port = 9300\ndemand = \"web.rate\"\ndemand_per_unit = 1000.0\npolicy = \"reactive\"\n\
         min = 2\nmax = 3\ninterval = \"1s\"\ngrace = \"0s\"\ncooldown_up = \"0s\"\n",
        peer = built_binary("http-peer").display(),
        logs = logs.display(),
    );
    let m = Mirror::start("replicas", 100.0, &["normal"], &extra);
    let status = wait_until_ok(
        Duration::from_secs(30),
        "the two replicas to be registered as shadow targets",
        || {
            let st = m.status();
            if st.targets.len() == 3 {
                Ok(st)
            } else {
                Err(format!("targets {:?}\n{}", st.targets, m.log()))
            }
        },
    );
    assert!(
        status.targets[1..]
            .iter()
            .all(|t| t.starts_with("http://127.0.0.1:930")),
        "{:?}",
        status.targets
    );
    let r = m.client("concurrent", &["60"]);
    assert!(r.iter().all(|x| x["status"] == 200));
    let replica_log = |port: u16| -> Vec<Value> {
        let text =
            std::fs::read_to_string(logs.join(format!("replica-{port}.jsonl"))).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).expect("replica log JSON"))
            .filter(|v: &Value| {
                v["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/concurrent"))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let total = || m.shadow_log(0).len() + replica_log(9300).len() + replica_log(9301).len();
    while total() < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    m.settle(Duration::from_secs(15));
    let (a, b) = (replica_log(9300), replica_log(9301));
    let mut all = m.shadow_log(0);
    all.extend(a.iter().cloned());
    all.extend(b.iter().cloned());
    // The point here is where requests go, not that none is ever lost
    // (a_hundred_concurrent_connections_are_all_mirrored holds that): on a
    // loaded machine the agent may drop a request, but only one it counts,
    // and only a few.
    let got = paths(&all);
    let missing: Vec<String> = (0..60)
        .map(|i| format!("/concurrent/{i}"))
        .filter(|p| !got.contains(p))
        .collect();
    let st = m.status();
    let cap: shadow_proxy::capture::pipeline::PipelineView =
        serde_json::from_slice(&m.shadowctl(&["mirror", "capture"]).stdout).expect("capture JSON");
    let unparsed = if cap.lost > 0 {
        60u64.saturating_sub(st.stats.requests_parsed)
    } else {
        0
    };
    let counted = st.stats.flow_drops.values().sum::<u64>()
        + st.stats.not_replayed.values().sum::<u64>()
        + unparsed;
    assert!(
        got.len() + missing.len() == 60 && missing.len() as u64 <= counted.min(3),
        "missing {missing:?}, {counted} counted as dropped\n{st:?}\n{cap:?}\n{}",
        m.log()
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both replicas were sent shadow requests: {} and {} (configured target {})",
        a.len(),
        b.len(),
        m.shadow_log(0).len()
    );
    drop(m);
    let _ = std::fs::remove_dir_all(&logs);
}

#[test]
fn the_inline_proxy_serves_live_unchanged_and_tees_to_a_slow_shadow_without_waiting() {
    let Some(_k) = kernel_test(
        "the_inline_proxy_serves_live_unchanged_and_tees_to_a_slow_shadow_without_waiting",
    ) else {
        return;
    };
    // The namespace is the test's own, so a fixed port is free.
    let proxy: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let m = Mirror::start(
        "inline",
        100.0,
        &["delay-50"],
        "[[service.route]]\npath_prefix = \"/upload\"\nallow_methods = [\"PUT\"]\n\
         [service.inline]\nlisten = \"127.0.0.1:18080\"\ntee_body_bytes = 67108864\n",
    );
    // Live through the proxy answers as live does, and never waits on the
    // 50 ms shadow: 40 keep-alive requests in turn would take 2 s if it did.
    let started = Instant::now();
    let through = m.client_to(proxy, "keepalive", &["40"]);
    let took = started.elapsed();
    let direct = m.client("keepalive", &["40"]);
    assert_eq!(through, direct, "the proxy changed live answers");
    assert!(
        took < Duration::from_millis(1200),
        "40 proxied requests took {took:?}: live waited on the shadow"
    );
    // Uploads at memory speed, unpaced, up to 64 MiB: what live read is
    // what the shadow got.
    let mut expected = Vec::new();
    for (size, mode) in [(1usize << 20, "chunked"), (64 << 20, "fixed")] {
        let r = m.client_to(proxy, "body", &[&size.to_string(), mode]);
        assert_eq!(r[0]["status"], 200);
        let live_line = r[0]["body"].as_str().unwrap().trim().to_owned();
        expected.push((format!("/upload/{size}/{mode}"), size, live_line));
    }
    let log = m.wait_shadow(0, 42, Duration::from_secs(30));
    let st = m.status();
    assert_eq!(log.len(), 42, "{:?}\n{st:?}\n{}", paths(&log), m.log());
    for (path, size, live_line) in expected {
        let r = log.iter().find(|r| r["path"] == path.as_str()).unwrap();
        assert_eq!(r["body_len"], size, "{path}");
        let digest = live_line.split_whitespace().last().unwrap();
        assert_eq!(
            r["body_sha256"], digest,
            "{path}: the shadow's body differs from live's"
        );
    }
    for r in log.iter().filter(|r| r["method"] == "GET") {
        assert_eq!(header(r, "x-forwarded-for"), Some("127.0.0.1"), "{r}");
        assert_eq!(header(r, "x-shadow-request"), Some("1"), "{r}");
    }
    assert_eq!(st.sample, "inline");
    assert_eq!(st.packets_sampled, 0, "the kernel captured nothing of it");
    let inline = st.inline.as_ref().expect("inline status");
    assert_eq!(
        (inline.requests, inline.teed, inline.upstream_errors),
        (42, 42, 0)
    );
    assert_eq!(inline.upstream, m.live.to_string());
    assert_eq!((st.stats.requests_parsed, st.stats.replayed), (42, 42));
    assert_eq!(st.coverage, Some(1.0));
}

#[test]
fn without_kernel_programs_the_inline_proxy_still_shadows_and_captured_services_are_refused() {
    let Some(_k) = kernel_test(
        "without_kernel_programs_the_inline_proxy_still_shadows_and_captured_services_are_refused",
    ) else {
        return;
    };
    let inline = "[service.inline]\nlisten = \"127.0.0.1:18080\"\n";
    let m = Mirror::start_with("nokernel", 100.0, &["normal"], inline, &["--no-kernel"]);
    let r = m.client_to("127.0.0.1:18080".parse().unwrap(), "keepalive", &["5"]);
    assert!(r.iter().all(|x| x["status"] == 200), "{r:?}");
    let log = m.wait_shadow(0, 5, Duration::from_secs(10));
    assert_eq!(paths(&log).len(), 5, "{}", m.log());
    assert!(m.log().contains("No kernel programs"), "{}", m.log());
    let st = m.status();
    assert_eq!((st.packets_seen, st.stats.replayed), (0, 5));
    // A service the kernel would capture cannot run without it: the agent
    // says which, and how to fix it.
    let cfg = m.dir.join("captured.toml");
    std::fs::write(
        &cfg,
        "[[service]]\nname = \"api\"\nport = 8080\ntargets = [\"http://127.0.0.1:9\"]\n",
    )
    .unwrap();
    let out = Command::new(built_binary("shadow-proxy"))
        .args(["--no-kernel", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("service \"api\" is captured in the kernel")
            && err.contains("[service.inline]"),
        "{err}"
    );
}

#[test]
fn the_cpu_budget_lowers_the_capture_rate_under_load_and_loses_nothing_it_admitted() {
    let Some(_k) = kernel_test(
        "the_cpu_budget_lowers_the_capture_rate_under_load_and_loses_nothing_it_admitted",
    ) else {
        return;
    };
    // max_in_flight well above what the shadow holds in flight here, so that
    // only the budget decides what is captured and replayed.
    let m = Mirror::start_with(
        "budget",
        100.0,
        &["normal"],
        "max_in_flight = 1024\n",
        &["--cpu-budget", "0.2"],
    );
    // Every request on a new connection, 100 % asked: more than a fifth of
    // a core for the agent to capture and replay them all. Batches until
    // the budget has acted (bounded).
    let scales = |log: &str| -> Vec<f64> {
        log.lines()
            .filter(|l| l.contains("CPU budget"))
            .filter_map(|l| {
                l.split("scale=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .trim_matches('"')
                    .parse()
                    .ok()
            })
            .collect()
    };
    let mut sent = 0u64;
    for _ in 0..8 {
        let answers = m.client("connections", &["1500"]);
        assert_eq!(answers.len(), 1500);
        assert!(answers.iter().all(|r| r["status"] == 200), "live answered");
        sent += 1500;
        if scales(&m.log()).iter().any(|s| *s < 1.0) {
            break;
        }
    }
    let scales = scales(&m.log());
    assert!(
        scales.iter().any(|s| *s < 1.0),
        "the budget lowered the capture rate: {scales:?}\n{}",
        m.log()
    );
    // Forecast training counts against the budget and yields first.
    assert!(
        m.log().contains("CPU budget: forecast training is held"),
        "{}",
        m.log()
    );
    // What was admitted was captured whole: nothing dropped, all replayed.
    m.settle(Duration::from_secs(20));
    let st = m.status();
    assert!(
        st.stats.flow_drops.is_empty() && st.stats.not_replayed.is_empty(),
        "{st:?}"
    );
    assert_eq!(st.coverage, Some(1.0), "{st:?}");
    assert!(
        st.stats.replayed < sent,
        "fewer connections captured than the {sent} sent: {st:?}"
    );
    let log = m.shadow_log(0);
    assert_eq!(log.len() as u64, st.stats.replayed, "{st:?}");
    let budget = st.budget.expect("the budget is reported");
    assert_eq!(budget.cores, 0.2);
    // Once the load is gone the rate comes back to what was asked.
    wait_until_ok(
        Duration::from_secs(30),
        "the capture rate back to 100 %",
        || {
            let st = m.status();
            if st.capture_percent == 100.0 {
                Ok(())
            } else {
                Err(format!("{st:?}"))
            }
        },
    );
}
