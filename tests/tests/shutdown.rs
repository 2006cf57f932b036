//! A shadowing agent with forecasting on stops every task within 2 s of
//! SIGTERM, and removes the clsact qdisc it added, but never one that was
//! there before it.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use shadow_tests::{Proc, built_binary, kernel_test, netns::Netns, sh};

/// Starts a shadowing agent on `lo` in `ns` and waits until it is ready.
fn start(ns: &Netns, dir: &std::path::Path) -> Proc {
    // Nothing listens on either port: capture and replay still start, and
    // that is all this test needs.
    let config = "[capture]\ninterface = \"lo\"\n\n[[service]]\nname = \"web\"\nport = 18080\n\
                  percent = 100.0\ntargets = [\"http://127.0.0.1:18081\"]\n";
    let cfg = dir.join("shadow.toml");
    std::fs::write(&cfg, config).unwrap();
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg(built_binary("shadow-proxy"))
        .args(["--admin", "127.0.0.1:0", "--interval", "200ms", "--config"])
        .arg(&cfg)
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .arg("--forecast-dir")
        .arg(dir.join("forecast"))
        .arg("--pid-file")
        .arg(dir.join("agent.pid"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(log);
    let mut agent = Proc::spawn("shadow-proxy", &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Some(st) = agent.child.try_wait().unwrap() {
            panic!("agent exited with {st}:\n{}", log_of(dir));
        }
        assert!(
            Instant::now() < deadline,
            "agent not ready in 30 s:\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

fn log_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

#[test]
fn sigterm_stops_everything_within_two_seconds_and_removes_only_our_qdisc() {
    let Some(_k) =
        kernel_test("sigterm_stops_everything_within_two_seconds_and_removes_only_our_qdisc")
    else {
        return;
    };
    let ns = Netns::new("stop");
    let dir = std::env::temp_dir().join(format!("shadow-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        !ns.qdiscs().contains("clsact"),
        "a new namespace has no clsact"
    );

    let mut agent = start(&ns, &dir);
    assert!(
        ns.qdiscs().contains("clsact"),
        "the agent adds clsact: {}",
        ns.qdiscs()
    );
    let t = Instant::now();
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    let took = t.elapsed();
    let log = log_of(&dir);
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM to exit took {took:?}\n{log}"
    );
    assert!(log.contains("Detached"), "{log}");
    assert!(
        !log.contains("did not stop in time"),
        "every task stopped: {log}"
    );
    assert!(
        !ns.qdiscs().contains("clsact"),
        "the clsact the agent added is gone: {}\n{log}",
        ns.qdiscs()
    );

    // A clsact that was there before belongs to someone else: kept.
    sh(
        "tc",
        &["-n", ns.name(), "qdisc", "add", "dev", "lo", "clsact"],
    );
    let mut agent = start(&ns, &dir);
    let status = agent.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.success(), "{}", log_of(&dir));
    assert!(
        ns.qdiscs().contains("clsact"),
        "a clsact the agent did not add stays: {}",
        ns.qdiscs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
