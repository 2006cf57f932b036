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
