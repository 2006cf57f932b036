//! The agent detaches everything on SIGTERM/SIGINT, leaves nothing in the
//! kernel when killed, and cleans up after a killed run on the next start.

use std::time::{Duration, Instant};

use shadow_tests::{Agent, kernel_test, shadow_programs_loaded};

fn wait_programs(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = shadow_programs_loaded();
        if n == expected || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_and_sigint_detach_every_program() {
    let Some(_kernel) = kernel_test("sigterm_and_sigint_detach_every_program") else {
        return;
    };
    let baseline = shadow_programs_loaded();
    let programs = shadow_proxy::kernel::TRACEPOINTS.len();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut agent = Agent::start("lifecycle");
        assert_eq!(
            shadow_programs_loaded(),
            baseline + programs,
            "all programs attached"
        );
        let status = agent.proc.signal_and_wait(sig, Duration::from_secs(10));
        assert!(
            status.success(),
            "agent exit after signal {sig}: {status}\n{}",
            agent.log()
        );
        assert_eq!(
            wait_programs(baseline),
            baseline,
            "programs left after signal {sig}"
        );
        assert!(!agent.dir.join("agent.pid").exists(), "pid file removed");
        assert!(agent.log().contains("Detached"), "{}", agent.log());
    }
}

#[test]
fn a_killed_agent_leaves_nothing_and_the_next_start_cleans_up() {
    let Some(_kernel) = kernel_test("a_killed_agent_leaves_nothing_and_the_next_start_cleans_up")
    else {
        return;
    };
    let baseline = shadow_programs_loaded();
    let mut agent = Agent::start("killed");
    agent
        .proc
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    assert_eq!(
        wait_programs(baseline),
        baseline,
        "a killed agent's programs are gone"
    );
    let pid_file = agent.dir.join("agent.pid");
    assert!(pid_file.exists(), "SIGKILL leaves the pid file behind");

    let dir = agent.dir.clone();
    let second = Agent::start_in(dir);
    assert!(
        second.log().contains("did not exit cleanly"),
        "restart should report the cleanup:\n{}",
        second.log()
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        pid,
        second.proc.child.id(),
        "pid file now names the new agent"
    );
    drop(agent);
}
