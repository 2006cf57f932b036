//! `shadow-proxy --check` validates what a start would do: the programs
//! load, and the classifier attaches to the configured interface. It fails,
//! naming the interface, when that interface does not exist, and leaves no
//! qdisc behind when it does.

use std::process::Command;

use shadow_tests::{built_binary, kernel_test, netns::Netns};

fn check_in(ns: &str, interface: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("shadow-check-{interface}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("shadow.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\ninterface = \"{interface}\"\n\n[[service]]\nname = \"web\"\nport = 18080\n\
             percent = 1.0\ntargets = [\"http://127.0.0.1:18081\"]\n"
        ),
    )
    .unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(built_binary("shadow-proxy"))
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .arg("--forecast-dir")
        .arg(dir.join("forecast"))
        .output()
        .expect("runs shadow-proxy --check");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn check_attaches_the_classifier_and_names_a_missing_interface() {
    let Some(_k) = kernel_test("check_attaches_the_classifier_and_names_a_missing_interface")
    else {
        return;
    };
    let ns = Netns::new("check");

    let out = check_in(ns.name(), "lo");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "--check on lo: {stdout}{stderr}");
    assert!(stdout.contains("classifier attaches to lo"), "{stdout}");
    let qdiscs = ns.qdiscs();
    assert!(
        !qdiscs.contains("clsact"),
        "--check leaves no qdisc: {qdiscs}"
    );

    let out = check_in(ns.name(), "shadow-nope0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interface shadow-nope0") && stderr.contains("no such interface"),
        "the error names the interface: {stderr}"
    );
}

#[test]
fn program_errors_are_exported_for_every_program_and_kind() {
    let Some(_k) = kernel_test("program_errors_are_exported_for_every_program_and_kind") else {
        return;
    };
    let agent = shadow_tests::Agent::start("program-errors");
    // The poller publishes within an interval (200 ms) of the start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        let page = agent.get("/metrics");
        if page.contains("shadow_kernel_program_errors_total{")
            || std::time::Instant::now() > deadline
        {
            break page;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let series: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("shadow_kernel_program_errors_total{"))
        .collect();
    // 9 programs x 4 kinds, zeros included, so `rate()` works from the start.
    assert_eq!(series.len(), 36, "{}", series.join("\n"));
    for program in ["tcp_probe", "block_rq_issue", "shadow_tc_ingress"] {
        assert!(
            series
                .iter()
                .any(|l| l.contains(&format!("program=\"{program}\""))
                    && l.contains("kind=\"field_read\"")),
            "{program} field_read missing:\n{}",
            series.join("\n")
        );
    }
    let view = agent.view();
    assert_eq!(view.kernel.program_errors.len(), 36);
}

#[test]
fn one_file_configures_the_agent_and_flags_override_its_keys() {
    let Some(_k) = kernel_test("one_file_configures_the_agent_and_flags_override_its_keys") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("shadow-onefile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[agent]\ninterval = \"2s\"\n\n[forecast]\ndir = \"{}\"\nhorizon = 30\nstep = \"2m\"\n\
             every = \"2h\"\nmetrics = [\"host.cpu_utilisation\", \"block.iops\"]\n",
            dir.join("models").display()
        ),
    )
    .unwrap();
    let check = |extra: &[&str]| {
        let out = Command::new(built_binary("shadow-proxy"))
            .arg("--check")
            .arg("--config")
            .arg(&cfg)
            .args(extra)
            .output()
            .expect("runs --check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("forecasting 2 metrics every 2h, 30 steps of 2m"),
        "the file's [forecast] keys apply: {text}"
    );
    let (code, text) = check(&["--forecast-horizon", "12"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("2 metrics every 2h, 12 steps of 2m"),
        "a flag overrides its key: {text}"
    );
    // [agent] interval = 2s is longer than a 1s step: the cross-check names the flag.
    let (code, text) = check(&["--forecast-step", "1s"]);
    assert_eq!(code, Some(64), "{text}");
    assert!(text.contains("--forecast-step"), "{text}");
    // The same mistake made in the file is named as the file's key.
    std::fs::write(
        &cfg,
        "[agent]\ninterval = \"2s\"\n\n[forecast]\nstep = \"1s\"\n",
    )
    .unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(64), "{text}");
    assert!(
        text.contains(&format!("{}: forecast.step: ", cfg.display()))
            && !text.contains("--forecast-step"),
        "the error names the file's key, not a flag: {text}"
    );
    std::fs::write(&cfg, "[forecast]\nhorizon = \"soon\"\n").unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(64), "{text}");
    assert!(
        text.contains(&format!("{}: ", cfg.display())) && text.contains("horizon"),
        "the error names the file and the key: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
