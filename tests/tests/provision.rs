//! The provisioner on real cgroups with a real process inside: the cgroup
//! backend's limits hold the process to them, and the agent plans in
//! forecast-only mode, then applies when told, through its control socket.
//!
//! This host's cpu and memory controllers are cgroup v1 (the unified
//! hierarchy has only hugetlb), so these tests exercise the v1 path; the v2
//! files are checked in the backend's unit tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use shadow_api::provision::Resource;
use shadow_proxy::provision::{
    Backend, Change,
    cgroup::{Cgroup, Version},
};
use shadow_tests::{Agent, Proc, built_binary, kernel_test, wait_until_ok};

/// A cgroup of one name in the cpu, cpuacct and memory hierarchies,
/// removed (with its processes killed) on drop.
struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    fn new(tag: &str) -> Self {
        let name = format!("shadow-{tag}-{}", std::process::id());
        let dirs: Vec<PathBuf> = ["cpu", "cpuacct", "memory"]
            .iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h).join(&name))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        Self { name, dirs }
    }

    fn enter(&self, pid: u32) {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", d.display()));
        }
    }

    /// CPU used by the cgroup's processes, in nanoseconds.
    fn usage_ns(&self) -> u64 {
        let s = std::fs::read_to_string(self.dirs[1].join("cpuacct.usage")).expect("cpuacct.usage");
        s.trim().parse().expect("a number")
    }

    /// Cores used over `window`.
    fn cores_over(&self, window: Duration) -> f64 {
        let (t0, u0) = (Instant::now(), self.usage_ns());
        std::thread::sleep(window);
        (self.usage_ns() - u0) as f64 / 1e9 / t0.elapsed().as_secs_f64()
    }

    fn quota_cores(&self) -> f64 {
        let q: f64 = std::fs::read_to_string(self.dirs[0].join("cpu.cfs_quota_us"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let p: f64 = std::fs::read_to_string(self.dirs[0].join("cpu.cfs_period_us"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if q < 0.0 { f64::INFINITY } else { q / p }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Ok(pids) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in pids.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A single-threaded busy loop: demand of one core.
fn burner() -> Proc {
    Proc::spawn(
        "burner",
        Command::new("/bin/sh")
            .args(["-c", "while :; do :; done"])
            .stdout(Stdio::null()),
    )
}

fn change(resource: Resource, to: f64, decision: &shadow_api::provision::Decision) -> Change<'_> {
    Change {
        target: "test",
        resource,
        from: 0.0,
        to,
        unit: resource.unit(),
        decision,
    }
}

fn decision() -> shadow_api::provision::Decision {
    shadow_api::provision::Decision {
        time: 0,
        target: "test".into(),
        resource: Resource::Cpu,
        policy: "test".into(),
        current: 0.0,
        desired: 0.0,
        proposed: 0.0,
        demand: 0.0,
        forecast: None,
        quantile: None,
        lead_s: 0.0,
        basis: shadow_api::provision::Basis::Actual,
        outcome: shadow_api::provision::Outcome::Planned,
        reason: String::new(),
    }
}

#[test]
fn cgroup_limits_hold_a_real_process_to_them() {
    let Some(_guard) = kernel_test("cgroup_limits_hold_a_real_process_to_them") else {
        return;
    };
    let cg = TestCgroup::new("limits");
    let backend = Cgroup::at(&cg.name);
    assert_eq!(
        backend.version,
        Version::V1,
        "this host's cpu/memory controllers are v1"
    );
    let burn = burner();
    cg.enter(burn.child.id());
    let d = decision();

    backend
        .apply(&change(Resource::Cpu, 0.2, &d))
        .expect("cpu 0.2");
    assert_eq!(backend.current(Resource::Cpu), Some(0.2));
    let at_02 = cg.cores_over(Duration::from_millis(1500));
    backend
        .apply(&change(Resource::Cpu, 0.6, &d))
        .expect("cpu 0.6");
    let at_06 = cg.cores_over(Duration::from_millis(1500));
    eprintln!("busy loop at a 0.2-core limit used {at_02:.3} cores, at 0.6 {at_06:.3}");
    assert!(
        (0.1..=0.3).contains(&at_02),
        "0.2-core limit, used {at_02:.3}"
    );
    assert!(
        (0.4..=0.75).contains(&at_06),
        "0.6-core limit, used {at_06:.3}"
    );

    backend
        .apply(&change(Resource::Memory, 64.0 * 1048576.0, &d))
        .expect("memory 64 MiB");
    assert_eq!(backend.current(Resource::Memory), Some(64.0 * 1048576.0));
    let soft: u64 = std::fs::read_to_string(cg.dirs[2].join("memory.soft_limit_in_bytes"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((57 << 20..64 << 20).contains(&soft), "soft limit {soft}");

    // A cgroup that is not there: an error naming the file, nothing applied.
    let missing = Cgroup::at("shadow-no-such-cgroup");
    let err = missing
        .apply(&change(Resource::Cpu, 1.0, &d))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("shadow-no-such-cgroup/cpu.cfs_period_us"),
        "{err}"
    );
}

fn shadowctl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(built_binary("shadowctl"))
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .expect("runs shadowctl");
    assert!(
        out.status.success(),
        "shadowctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_agent_plans_without_applying_until_told_then_raises_the_limit() {
    let Some(_guard) =
        kernel_test("the_agent_plans_without_applying_until_told_then_raises_the_limit")
    else {
        return;
    };
    let cg = TestCgroup::new("agent");
    std::fs::write(cg.dirs[0].join("cpu.cfs_quota_us"), "20000").unwrap();
    let burn = burner();
    cg.enter(burn.child.id());

    let dir = std::env::temp_dir().join(format!("shadow-test-provision-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("shadow.toml");
    std::fs::write(
        &config,
        format!(
            "[[provision.loop]]\ntarget = \"burner\"\nresource = \"cpu\"\nbackend = \"cgroup\"\ncgroup = \"{}\"\npolicy = \"reactive\"\nmin = 0.1\nmax = 1.5\ninterval = \"1s\"\ngrace = \"0s\"\ncooldown_up = \"0s\"\n",
            cg.name
        ),
    )
    .unwrap();
    let agent = Agent::start_with(
        dir.clone(),
        &["--config", config.to_str().unwrap(), "--no-forecast"],
    );

    // Forecast-only by default: the loop sees the burner pinned at its
    // 0.2-core limit and plans more, but the limit stays.
    let planned = wait_until_ok(Duration::from_secs(20), "a planned decision", || {
        let events = shadowctl(&dir, &["provision", "events"]);
        if events.contains("planned") {
            Ok(events)
        } else {
            Err(events)
        }
    });
    assert!(
        planned.contains("burner cpu: 0.20 cores -> 0.30 cores"),
        "{planned}"
    );
    assert_eq!(cg.quota_cores(), 0.2, "forecast-only changed the limit");
    let plan = shadowctl(&dir, &["plan"]);
    assert!(
        plan.contains("forecast_only") && plan.contains("HPA"),
        "{plan}"
    );
    let dry = shadowctl(&dir, &["provision", "dry-run"]);
    assert!(dry.contains("planned"), "{dry}");
    assert_eq!(cg.quota_cores(), 0.2, "dry-run changed the limit");

    // Told to apply: the limit rises, the decision says how long it took,
    // and Prometheus counts it.
    let applied = shadowctl(&dir, &["provision", "apply"]);
    assert!(applied.contains("applied (ready in"), "{applied}");
    let quota = cg.quota_cores();
    assert!(
        quota > 0.2 && quota <= 0.3 + 1e-9,
        "quota {quota}: {applied}"
    );
    let metrics = agent.get("/metrics");
    assert!(
        metrics.contains("shadow_provision_actions_total{result=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shadow_provision_desired_capacity{target=\"burner\",resource=\"cpu\"}"),
        "{metrics}"
    );
    let plan: serde_json::Value =
        serde_json::from_str(&shadowctl(&dir, &["plan", "--json"])).unwrap();
    assert_eq!(plan["rows"][0]["lead_samples"], 1, "{plan}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU per request of the test service.
const MICROS_PER_REQUEST: u64 = 2000;

/// Trace steps (300 s each) from asking for more CPU to having it: the
/// time-to-ready of a backend that starts capacity (a VM or a replica that
/// warms up in 15 min), the same for both policies.
const LAG: usize = 3;

struct Run {
    /// Limit in effect per step, cores.
    limits: Vec<f64>,
    /// Latencies (ms) of the requests sent in each step; failures as 10 s.
    latencies: Vec<Vec<f64>>,
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}

/// The CPU-bound service, started in `ns` and moved into `cg`.
fn cpu_service(cg: &TestCgroup, ns: &shadow_tests::netns::Netns) -> (shadow_tests::Proc, String) {
    let mut server = shadow_tests::Proc::spawn(
        "cpu service",
        ns.cmd(&built_binary("http-peer"))
            .args(["cpu", "127.0.0.1:0", &MICROS_PER_REQUEST.to_string()])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .expect("LISTENING")
        .to_string();
    cg.enter(server.child.id());
    (server, addr)
}

/// Cores one request per second costs the service, accept and HTTP
/// included: measured unlimited at a steady 150 req/s for 3 s.
fn cpu_per_request(cg: &TestCgroup, ns: &shadow_tests::netns::Netns) -> f64 {
    std::fs::write(cg.dirs[0].join("cpu.cfs_quota_us"), "-1").unwrap();
    let (server, addr) = cpu_service(cg, ns);
    let file = std::env::temp_dir().join(format!("shadow-calibrate-{}.txt", std::process::id()));
    std::fs::write(&file, "150\n150\n150\n").unwrap();
    let before = cg.usage_ns();
    let out = ns
        .cmd(&built_binary("http-peer"))
        .args(["load", &addr])
        .arg(&file)
        .arg("1000")
        .output()
        .unwrap();
    let used = (cg.usage_ns() - before) as f64 / 1e9;
    drop(server);
    let _ = std::fs::remove_file(&file);
    let answered = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(" 200"))
        .count();
    assert!(answered > 400, "calibration: {answered} of 450 answered");
    used / answered as f64
}

/// The ramp to replay: requests per second per step, the CPU each costs,
/// the limit to start from, and the trace time of the first step.
struct Ramp<'a> {
    rates: &'a [f64],
    cpu_per_req: f64,
    initial: f64,
    trace_start: i64,
    forecasts: &'a [Option<shadow_forecast::Forecast>],
}

/// Replays `rates` (requests per second, one step a second) against the
/// CPU-bound service in `cg`, with `controller` sizing its `cpu.cfs_quota_us`
/// once a step. A raise asked for in one step takes effect [`LAG`] steps
/// later; a cut at once.
fn replay_ramp(
    cg: &TestCgroup,
    ns: &shadow_tests::netns::Netns,
    ramp: &Ramp<'_>,
    controller: &mut shadow_forecast::provision::Controller,
) -> Run {
    let Ramp {
        rates,
        cpu_per_req,
        initial,
        trace_start,
        forecasts,
    } = *ramp;
    let backend = Cgroup::at(&cg.name);
    let d = decision();
    backend
        .apply(&change(Resource::Cpu, initial, &d))
        .expect("initial limit");
    let (server, addr) = cpu_service(cg, ns);
    let file = std::env::temp_dir().join(format!("shadow-ramp-{}.txt", std::process::id()));
    let results = file.with_extension("out");
    let text: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let load = ns
        .cmd(&built_binary("http-peer"))
        .args(["load", &addr])
        .arg(&file)
        .arg("1000")
        // A file, not a pipe: a full pipe would stall the generator.
        .stdout(std::fs::File::create(&results).expect("results file"))
        .spawn()
        .expect("load generator");
    let started = Instant::now();
    let mut limits = Vec::new();
    // Raises asked for, by the step they take effect at.
    let mut allocated = initial;
    let mut pending: std::collections::VecDeque<(usize, f64)> = Default::default();
    for i in 0..rates.len() {
        let at = started + Duration::from_secs(i as u64);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        while pending.front().is_some_and(|p| p.0 <= i) {
            let (_, c) = pending.pop_front().unwrap();
            backend.apply(&change(Resource::Cpu, c, &d)).expect("limit");
        }
        limits.push(backend.current(Resource::Cpu).unwrap_or(f64::INFINITY));
        if i == 0 {
            continue;
        }
        // Demand is the load offered in the last step (the service's request
        // rate times its CPU per request), not its CPU use, which the limit caps.
        let demand = rates[i - 1] * cpu_per_req;
        let now = trace_start + 300 * i as i64;
        let mut step = controller.decide(now, allocated, demand, forecasts[i].as_ref());
        if let Some(c) = step.apply {
            controller.applied(&mut step, 300.0 * LAG as f64);
            if c < allocated {
                // Capacity given back goes at once (and cancels raises
                // still on their way).
                pending.clear();
                backend.apply(&change(Resource::Cpu, c, &d)).expect("limit");
            } else {
                pending.push_back((i + LAG, c));
            }
            allocated = c;
        }
    }
    let mut load = load;
    load.wait().expect("load generator");
    let out = std::fs::read_to_string(&results).expect("load results");
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&results);
    drop(server);
    let mut latencies = vec![Vec::new(); rates.len()];
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [step, micros, status] = f[..] {
            let ms = if status == "200" {
                micros.parse::<f64>().unwrap() / 1000.0
            } else {
                10_000.0
            };
            latencies[step.parse::<usize>().unwrap()].push(ms);
        }
    }
    Run { limits, latencies }
}

#[test]
fn predictive_raises_the_cpu_limit_before_a_real_ramp() {
    use shadow_forecast::{
        Candidate, ForecasterConfig, GridPolicy, Input, Series, forecaster,
        provision::{
            Controller, LeadTime, Limits,
            policy::{Predictive, Reactive},
        },
    };
    let Some(_guard) = kernel_test("predictive_raises_the_cpu_limit_before_a_real_ramp") else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/nab/realAWSCloudwatch/elb_request_count_8c0756.csv");
    assert!(
        path.exists(),
        "{} is missing: this test needs the shared data set beside the checkout",
        path.display()
    );
    let policy = GridPolicy {
        snap_to_grid: true,
        ..GridPolicy::default()
    };
    let s = Series::read_csv(&path, policy).expect("the ELB request series");
    // The load follows the trace's trailing hourly mean: its daily cycle
    // is the ramp (the generator's arrivals stand in for the minute-to-minute
    // noise).
    let day = 288;
    let d: Vec<f64> = (0..s.values.len())
        .map(|i| {
            let w = &s.values[i.saturating_sub(11)..=i];
            w.iter().sum::<f64>() / w.len() as f64
        })
        .collect();
    // The daily ramp: the phase of the day with the steepest rise over a
    // time-to-ready and a decision (what a reactive policy cannot see
    // coming) in the first three days' mean profile, on the fourth day (the
    // forecaster has seen three of them).
    let profile: Vec<f64> = (0..day)
        .map(|k| (0..3).map(|j| d[j * day + k]).sum::<f64>() / 3.0)
        .collect();
    let h = LAG + 1;
    let phase = (0..day - h)
        .max_by(|&a, &b| (profile[a + h] - profile[a]).total_cmp(&(profile[b + h] - profile[b])))
        .unwrap();
    let r = 3 * day + phase.max(24);
    let (start, end) = (r - 24, r + 24);
    let base = d[start..start + 12].iter().sum::<f64>() / 12.0;
    let arrival = (start + 12..end).find(|&i| d[i] > 1.15 * base).unwrap() - start;
    let peak = d[start..end].iter().copied().fold(0.0, f64::max);
    // Peak demand needs 0.6 cores of the 2-core machine (the load
    // generator and the test share the rest), at the CPU per request measured.
    let cg = TestCgroup::new("ramp");
    let ns = shadow_tests::netns::Netns::new("ramp");
    let cpu_per_req = cpu_per_request(&cg, &ns);
    let rate_per_count = 0.6 / cpu_per_req / peak;
    let cores_per_count = rate_per_count * cpu_per_req;
    let rates: Vec<f64> = d[start..end].iter().map(|v| v * rate_per_count).collect();

    // Forecasts from the history before each step only, by the forecaster
    // trained on the days before the segment.
    let cfg = ForecasterConfig {
        horizon: 12,
        season: Some(day),
        candidates: vec![
            Candidate::SeasonalNaive,
            Candidate::Ets,
            Candidate::Mstl,
            Candidate::LastLevel,
        ],
        folds: 2,
        ..ForecasterConfig::default()
    };
    let input = Input::new("elb", &d[..start], s.start, s.step);
    let model = forecaster::train(&input, &cfg, &mut |_| {}).expect("training on the history");
    let forecasts: Vec<Option<shadow_forecast::Forecast>> = (0..end - start)
        .map(|i| {
            let at = start + i;
            let lo = at - 3 * day;
            let f = model
                .forecast(
                    &Input::new("elb", &d[lo..at], s.start + lo as i64 * s.step, s.step),
                    12,
                )
                .ok()?;
            let by = |v: Vec<f64>| v.into_iter().map(|x| x * cores_per_count).collect();
            Some(shadow_forecast::Forecast {
                start: s.start + at as i64 * s.step,
                step: s.step,
                p10: by(f.p10),
                p50: by(f.p50),
                p90: by(f.p90),
            })
        })
        .collect();
    let initial = ((base * cores_per_count / 0.8) * 20.0).ceil() / 20.0;
    let limits = Limits {
        min: 0.1,
        max: 2.0,
        max_step: 4.0,
        granularity: 0.05,
        cooldown_up_s: 0.0,
        cooldown_down_s: 300.0,
        grace_s: 0.0,
        ..Limits::default()
    };
    let trace_start = s.start + start as i64 * s.step;
    let mk = |p: Box<dyn shadow_forecast::provision::Policy>| {
        Controller::new(
            "cpu",
            Resource::Cpu,
            p,
            limits.clone(),
            LeadTime::new(300.0 * LAG as f64),
            300.0,
            trace_start,
        )
    };
    let mut runs = Vec::new();
    for (name, policy) in [
        (
            "reactive",
            Box::new(Reactive::default()) as Box<dyn shadow_forecast::provision::Policy>,
        ),
        ("predictive", Box::new(Predictive::default())),
    ] {
        let mut c = mk(policy);
        let ramp = Ramp {
            rates: &rates,
            cpu_per_req,
            initial,
            trace_start,
            forecasts: &forecasts,
        };
        let run = replay_ramp(&cg, &ns, &ramp, &mut c);
        let mut during: Vec<f64> = run.latencies[arrival..].iter().flatten().copied().collect();
        let sent: usize = run.latencies.iter().map(Vec::len).sum();
        let p = p99(&mut during);
        let worst = (arrival..rates.len())
            .map(|i| rates[i] * cpu_per_req / run.limits[i])
            .fold(0.0, f64::max);
        let changes: Vec<String> = (1..run.limits.len())
            .filter(|&i| run.limits[i] != run.limits[i - 1])
            .map(|i| format!("{:+}:{:.2}", i as i64 - arrival as i64, run.limits[i]))
            .collect();
        eprintln!(
            "{name}: p99 during the ramp {p:.1} ms over {} requests ({sent} sent); limit at the ramp's arrival {:.2} cores; highest offered load / limit from the arrival {worst:.2}; limit changes (steps from the arrival: cores) {}",
            during.len(),
            run.limits[arrival],
            changes.join(" ")
        );
        runs.push((run, p));
    }
    let (reactive, predictive) = (&runs[0], &runs[1]);
    eprintln!(
        "CPU per request {:.3} ms; ELB ramp at point {r} ({} steps of 300 s compressed to 1 s); arrival at step {arrival}; req/s {rates:.0?}",
        cpu_per_req * 1e3,
        end - start
    );
    assert!(
        predictive.0.limits[arrival] > reactive.0.limits[arrival]
            && predictive.0.limits[arrival] > initial,
        "predictive had not raised the limit by the ramp's arrival: {:.2} vs reactive {:.2} (initial {initial})",
        predictive.0.limits[arrival],
        reactive.0.limits[arrival]
    );
    // The p99s are reported, not asserted. Predictive's was the lower in
    // six runs of six here (0.04-0.77 of reactive's), but at 0.99 of its
    // limit one stall of this shared machine decides it, and CI once
    // flipped the comparison (37.0 vs 3.2 ms with a time-to-ready of one
    // step). See bench/reports/provision-e2e.md.
    eprintln!(
        "p99 during the ramp: predictive {:.1} ms, reactive {:.1} ms",
        predictive.1, reactive.1
    );
}

/// A free loopback port range start: ten ports from one the kernel gave.
fn free_base_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn local_replicas_start_ready_drain_and_keep_the_allocation_on_failure() {
    use shadow_proxy::provision::replicas::Replicas;
    let peer = built_binary("http-peer").display().to_string();
    let base = free_base_port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut r = Replicas::new(
        vec![peer.clone(), "live".into(), "127.0.0.1:{port}".into()],
        base,
    );
    r.drain = Duration::from_millis(200);
    r.ready_timeout = Duration::from_secs(10);
    let log = seen.clone();
    r.on_change = Some(Box::new(move |addrs| log.lock().unwrap().push(addrs.len())));
    let d = decision();
    let started = Instant::now();
    r.apply(&change(Resource::Replicas, 3.0, &d))
        .expect("three replicas");
    eprintln!("three replicas ready in {:?}", started.elapsed());
    assert_eq!(r.current(Resource::Replicas), Some(3.0));
    let ports = r.ports();
    for p in &ports {
        // Ready means answering.
        std::net::TcpStream::connect(("127.0.0.1", *p))
            .unwrap_or_else(|e| panic!("replica on {p}: {e}"));
    }
    r.apply(&change(Resource::Replicas, 1.0, &d))
        .expect("down to one");
    assert_eq!(r.ports(), &ports[..1]);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports[2])).is_err(),
        "the stopped replica still answers"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![3, 1],
        "routing was told before each stop"
    );

    // Copies that never get ready: the change fails and one replica stays.
    let mut broken = Replicas::new(
        vec!["/bin/sleep".into(), "30".into(), "{port}".into()],
        base + 5,
    );
    broken.ready_timeout = Duration::from_millis(500);
    let err = broken
        .apply(&change(Resource::Replicas, 2.0, &d))
        .unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert_eq!(broken.current(Resource::Replicas), Some(0.0));
    assert_eq!(r.current(Resource::Replicas), Some(1.0));
}
