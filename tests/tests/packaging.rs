//! What an operator installs from packaging/: the systemd unit verifies and
//! its capabilities are enough for a non-root agent to load, attach and
//! count; the alert rules pass `promtool check rules`; the rules and the
//! Grafana dashboard query only metrics the agent exports; the DaemonSet's
//! ConfigMap is a configuration the agent accepts.

use std::{
    collections::BTreeSet,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use shadow_tests::{Proc, built_binary, kernel_test, wait_until_ok};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn packaging(file: &str) -> PathBuf {
    repo().join("packaging").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shadow-packaging-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every metric name the agent exports (metrics/names.rs).
fn exported() -> BTreeSet<String> {
    let names = read(&repo().join("shadow-proxy/src/metrics/names.rs"));
    let set: BTreeSet<String> = names
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(set.len() > 50, "names.rs read: {set:?}");
    set
}

/// The `shadow_*` metric names in a query text, histogram suffixes taken
/// off.
fn queried(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("shadow_") {
        let word: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + word.len()..];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| word.strip_suffix(s))
            .unwrap_or(&word);
        out.insert(base.to_owned());
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_query_only_exported_metrics() {
    let rules = packaging("prometheus/shadow-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules failed:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
    let exprs: Vec<String> = read(&rules)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(str::to_owned)
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let used = queried(&exprs.join("\n"));
    assert!(used.len() >= 8, "{used:?}");
    let all = exported();
    let unknown: Vec<_> = used.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "alert rules query metrics the agent does not export: {unknown:?}"
    );
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path = packaging("grafana/shadow-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("no targets: {p}"));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let e = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target without expr: {t}"));
            exprs.push(e.to_owned());
        }
    }
    let used = queried(&exprs.join("\n"));
    let all = exported();
    let unknown: Vec<_> = used.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the agent does not export: {unknown:?}"
    );
    // Each area of the agent is drawn: kernel, host, shadowing, diff,
    // application, forecast, failure, failover and provisioning.
    for prefix in [
        "shadow_block_",
        "shadow_tcp_",
        "shadow_host_",
        "shadow_capture_",
        "shadow_replay_",
        "shadow_diff_",
        "shadow_app_",
        "shadow_forecast",
        "shadow_failure_",
        "shadow_failover_",
        "shadow_provision_",
    ] {
        assert!(
            used.iter().any(|m| m.starts_with(prefix)),
            "no panel draws {prefix}*"
        );
    }
}

/// The unit's capabilities, by name (`AmbientCapabilities=`).
fn unit_capabilities(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities= in the unit")
        .split_whitespace()
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[test]
fn the_systemd_unit_verifies_and_bounds_the_agent_to_its_capabilities() {
    let unit = read(&packaging("systemd/shadow-proxy.service"));
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet=");
    assert_eq!(
        bounding
            .to_ascii_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>(),
        unit_capabilities(&unit),
        "the bounding set is the ambient set"
    );
    for hardening in [
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=shadow",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "{hardening} missing");
    }
    // systemd-analyze checks the directives and that ExecStart exists: point
    // it at the built agent.
    let dir = scratch("unit");
    let copy = dir.join("shadow-proxy.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/shadow-proxy",
            &built_binary("shadow-proxy").display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This process's bounding set, as capsh names it.
fn host_bounding_set() -> String {
    let status = read(Path::new("/proc/self/status"));
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim()
        .to_owned();
    let out = Command::new("capsh")
        .arg(format!("--decode={hex}"))
        .output()
        .expect("capsh");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `agent args` as nobody with only `caps` (capsh keeps them across
/// the uid change as ambient capabilities).
fn as_nobody(caps: &[String], agent_args: &str) -> Command {
    let list = caps.join(",");
    let mut cmd = Command::new("capsh");
    cmd.arg(format!(
        "--caps={list}+eip cap_setpcap,cap_setuid,cap_setgid+ep"
    ))
    .args(["--keep=1", "--user=nobody"])
    .arg(format!("--addamb={list}"))
    .args(["--", "-c"])
    .arg(format!(
        "grep -E '^Cap(Eff|Amb)' /proc/self/status >&2; exec {} {agent_args}",
        built_binary("shadow-proxy").display()
    ));
    cmd
}

#[test]
fn the_agent_runs_as_nobody_with_only_the_units_capabilities() {
    let Some(_k) = kernel_test("the_agent_runs_as_nobody_with_only_the_units_capabilities") else {
        return;
    };
    let unit = read(&packaging("systemd/shadow-proxy.service"));
    let host = host_bounding_set();
    // A capability this host cannot grant (CAP_SYS_RESOURCE is outside
    // this machine's bounding set) is left out and said: the agent must
    // work without it.
    let (caps, missing): (Vec<String>, Vec<String>) = unit_capabilities(&unit)
        .into_iter()
        .partition(|c| host.contains(c.as_str()));
    eprintln!("granting {caps:?}; not in this host's bounding set: {missing:?}");
    assert!(
        missing.iter().all(|c| c == "cap_sys_resource"),
        "{missing:?}"
    );
    let dir = scratch("nobody");
    // nobody writes its pid file, socket and forecasts here.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cfg = dir.join("shadow.toml");
    std::fs::write(
        &cfg,
        "[capture]\ninterface = \"lo\"\n[[service]]\nname = \"web\"\nport = 18090\npercent = 1.0\n\
         targets = [\"http://127.0.0.1:18091\"]\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let d = dir.display();

    // --check: every program loads and attaches, the classifier included.
    let out = as_nobody(
        &caps,
        &format!("--check --config {d}/shadow.toml --forecast-dir {d}/forecast"),
    )
    .output()
    .expect("capsh");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--check as nobody failed:\n{said}");
    assert!(
        said.contains("tracepoint programs load and attach"),
        "{said}"
    );
    assert!(said.contains("the classifier attaches to lo"), "{said}");
    let effective = said
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff printed");
    assert_ne!(
        effective.trim_end(),
        "CapEff:\t000001fffeffffff",
        "not root's set"
    );

    // Running: it serves and counts connections made meanwhile.
    let ready = dir.join("ready.json");
    let mut agent = Proc::spawn(
        "agent as nobody",
        as_nobody(
            &caps,
            &format!(
                "--no-forecast --admin 127.0.0.1:0 --pid-file {d}/agent.pid \
                 --control-socket {d}/control.sock --ready-file {d}/ready.json \
                 --forecast-dir {d}/forecast"
            ),
        )
        .stdout(Stdio::null()),
    );
    let admin: String = wait_until_ok(Duration::from_secs(30), "the agent ready as nobody", || {
        let text = std::fs::read_to_string(&ready).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        v["admin"].as_str().map(str::to_owned).ok_or(text)
    });
    let uid = read(Path::new(&format!("/proc/{}/status", agent.child.id())));
    assert!(uid.lines().any(|l| l.starts_with("Uid:\t65534")), "{uid}");
    wait_until_ok(
        Duration::from_secs(20),
        "connections counted by the tracepoints",
        || {
            for _ in 0..5 {
                let _ = TcpStream::connect(&admin);
            }
            let page = metrics_page(&admin)?;
            let n: f64 = page
                .lines()
                .filter(|l| l.starts_with("shadow_tcp_connections_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if n > 0.0 {
                Ok(())
            } else {
                Err(page
                    .lines()
                    .filter(|l| l.starts_with("shadow_tcp"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        },
    );
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "the agent as nobody stopped with {status}"
    );
}

/// The agent's /metrics page, read over a plain HTTP/1.0 request.
fn metrics_page(admin: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(admin).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut page = String::new();
    s.read_to_string(&mut page).map_err(|e| e.to_string())?;
    Ok(page)
}

#[test]
fn the_daemonsets_config_map_is_a_configuration_the_agent_loads() {
    let Some(_k) = kernel_test("the_daemonsets_config_map_is_a_configuration_the_agent_loads")
    else {
        return;
    };
    let yaml = read(&packaging("kubernetes/shadow-daemonset.yaml"));
    for must in [
        "kind: DaemonSet",
        "hostNetwork: true",
        "privileged: false",
        "drop: [\"ALL\"]",
        "kind: ConfigMap",
    ] {
        assert!(yaml.contains(must), "the DaemonSet lacks {must}");
    }
    // The block under `shadow.toml: |`, dedented.
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "shadow.toml: |")
        .skip(1);
    let indent = "    ";
    let toml: String = lines
        .by_ref()
        .take_while(|l| l.is_empty() || l.starts_with(indent))
        .map(|l| format!("{}\n", l.strip_prefix(indent).unwrap_or("")))
        .collect();
    assert!(toml.contains("[agent]"), "{toml}");
    let dir = scratch("daemonset");
    let cfg = dir.join("shadow.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let out = Command::new(built_binary("shadow-proxy"))
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .arg("--forecast-dir")
        .arg(dir.join("forecast"))
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the ConfigMap's shadow.toml:\n{toml}\n{said}"
    );
    assert!(
        said.contains("tracepoint programs load and attach"),
        "{said}"
    );
}

#[test]
fn shadowctl_prints_completion_scripts_that_the_shells_load() {
    let ctl = built_binary("shadowctl");
    let script = |shell: &str| {
        let out = Command::new(&ctl)
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = script("bash");
    let dir = scratch("completion");
    let file = dir.join("shadowctl.bash");
    std::fs::write(&file, &bash).unwrap();
    // Loaded into bash, it completes `shadowctl fail` to `failover`.
    let probe = format!(
        "source {}; COMP_WORDS=(shadowctl fail); COMP_CWORD=1; COMP_LINE='shadowctl fail'; \
         COMP_POINT=${{#COMP_LINE}}; _shadowctl shadowctl fail shadowctl; echo \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && words.split_whitespace().any(|w| w == "failover"),
        "{words}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(script(shell).contains("failover"), "{shell}");
    }
    let bad = Command::new(&ctl)
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(64),
        "an unknown shell is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}
