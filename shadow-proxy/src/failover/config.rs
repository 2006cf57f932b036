//! `[failover]` in the agent's configuration file: migration profiles,
//! parsed into [`FailoverSettings`], with every bad value named by its key.
//!
//! ```toml
//! [failover]
//! mode = "dry_run"                    # the default: decisions are events only; "apply" acts
//! check_interval = "200ms"            # health checks of every primary and shadow
//! # netns = "/proc/self/ns/net"        # where the cutover program is attached
//! # state_dir = "/var/lib/shadow"      # failover.json: the machines, persisted
//! # pin_dir = "/sys/fs/bpf/shadow-steer"  # the cutover's pins, on the host's bpffs
//!
//! [[failover.service]]
//! name = "web"
//! port = 8080                         # the port clients connect to (the primary's)
//! shadow_port = 9080                  # the shadow's listener, in the same namespace
//! # check_path = "/healthz"           # HTTP GET answered 2xx/3xx ("": a TCP connect)
//! # check_timeout = "100ms"
//! # fail_limit = 3  recover_checks = 5  shadow_fail_limit = 3
//! # false_positive = "5m"  unstage_after = "10m"  promote_after = "30m"
//! # ramp = [10, 50]  ramp_step = "30s"   # planned/predicted: 10 %, 50 %, then all
//! # max_error_rate = 0.05  max_p99_ms = 250   # analysis once the shadow serves
//! # switch = "kernel"                 # "inline" behind the inline proxy, or "hook" across hosts, with
//! # switch_command = ["/usr/local/bin/move-vip"]  switch_timeout = "30s"
//!
//! [[failover.service.step]]           # in order; sync and warm at stage,
//! kind = "sync"                       # gate before a cutover, verify after,
//! command = ["/usr/local/bin/sync-web"]   # rollback after moving back,
//!                                     # remediate when the idle shadow fails
//! timeout = "60s"
//! retries = 2
//!
//! [[failover.service.step]]           # built in when it has no command:
//! kind = "warm"                       # the GETs and HEADs seen live (sampled
//! # last = "5m"  rate = 100  max_requests = 1000   # by the capture) replayed
//!                                     # to the shadow; needs a [[service]] on `port`
//! ```

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

use super::{
    Check, FailoverSettings, ServiceSettings, Step, StepKind, StepRun, SwitchSettings, WarmReplay,
    machine::Rules,
};
use crate::{provision::hook::ExecHook, util::duration};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    mode: Option<String>,
    check_interval: Option<String>,
    netns: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    pin_dir: Option<PathBuf>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    port: u16,
    shadow_port: u16,
    check_path: Option<String>,
    check_timeout: Option<String>,
    fail_limit: Option<u32>,
    recover_checks: Option<u32>,
    shadow_fail_limit: Option<u32>,
    false_positive: Option<String>,
    unstage_after: Option<String>,
    promote_after: Option<String>,
    switch: Option<String>,
    switch_command: Option<Vec<String>>,
    switch_timeout: Option<String>,
    ramp: Option<Vec<f64>>,
    ramp_step: Option<String>,
    max_error_rate: Option<f64>,
    max_p99_ms: Option<f64>,
    #[serde(default)]
    step: Vec<RawStep>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    kind: String,
    #[serde(default)]
    command: Vec<String>,
    timeout: Option<String>,
    retries: Option<u32>,
    /// The built-in warm step's window, rate and bound.
    last: Option<String>,
    rate: Option<u32>,
    max_requests: Option<usize>,
}

/// Where the machines are persisted when `state_dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/shadow";

fn secs<E>(
    key: &str,
    v: &Option<String>,
    default: &str,
    bad: &dyn Fn(&str, String) -> E,
) -> Result<Duration, E> {
    let v = v.as_deref().unwrap_or(default);
    duration::parse(v).map_err(|r| bad(key, r))
}

/// `None` when there is no `[[failover.service]]`.
pub fn settings<E>(
    raw: RawFailover,
    invalid: &dyn Fn(&str, String) -> E,
) -> Result<Option<FailoverSettings>, E> {
    if raw.service.is_empty() {
        return Ok(None);
    }
    let apply = match raw.mode.as_deref().unwrap_or("dry_run") {
        "dry_run" | "dry-run" => false,
        "apply" => true,
        other => {
            return Err(invalid(
                "failover.mode",
                format!("{other:?} is not dry_run or apply"),
            ));
        }
    };
    let check_interval = secs(
        "failover.check_interval",
        &raw.check_interval,
        "200ms",
        invalid,
    )?;
    let mut services: Vec<ServiceSettings> = Vec::new();
    for (i, s) in raw.service.into_iter().enumerate() {
        let key = |k: &str| format!("failover.service[{i}].{k}");
        let bad = |k: &str, reason: String| invalid(&key(k), reason);
        if s.name.is_empty() {
            return Err(bad("name", "must name the service".into()));
        }
        if services.iter().any(|o| o.name == s.name) {
            return Err(bad("name", format!("{:?} has a profile already", s.name)));
        }
        if s.port == 0 || s.shadow_port == 0 {
            return Err(bad("port", "port and shadow_port must be above 0".into()));
        }
        if s.port == s.shadow_port {
            return Err(bad(
                "shadow_port",
                format!("{} is the primary's port too", s.port),
            ));
        }
        let timeout = secs("check_timeout", &s.check_timeout, "100ms", &bad)?;
        let path =
            Some(s.check_path.clone().unwrap_or_else(|| "/".into())).filter(|p| !p.is_empty());
        let check = |port| Check {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            path: path.clone(),
            timeout,
            source_port: None,
        };
        let positive = |k: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
            0 => Err(bad(k, "must be at least 1".into())),
            n => Ok(n),
        };
        let rules = Rules {
            fail_limit: positive("fail_limit", s.fail_limit, 3)?,
            recover_checks: positive("recover_checks", s.recover_checks, 5)?,
            shadow_fail_limit: positive("shadow_fail_limit", s.shadow_fail_limit, 3)?,
            false_positive: secs("false_positive", &s.false_positive, "5m", &bad)?,
            unstage_after: secs("unstage_after", &s.unstage_after, "10m", &bad)?,
            promote_after: s
                .promote_after
                .as_ref()
                .map(|_| secs("promote_after", &s.promote_after, "", &bad))
                .transpose()?,
        };
        let mut steps = Vec::new();
        for (j, st) in s.step.iter().enumerate() {
            let sk = |k: &str| format!("step[{j}].{k}");
            let kind = match st.kind.as_str() {
                "sync" => StepKind::Sync,
                "warm" => StepKind::Warm,
                "gate" => StepKind::Gate,
                "verify" => StepKind::Verify,
                "rollback" => StepKind::Rollback,
                "remediate" => StepKind::Remediate,
                other => {
                    return Err(bad(
                        &sk("kind"),
                        format!(
                            "{other:?} is not one of sync, warm, gate, verify, rollback, remediate"
                        ),
                    ));
                }
            };
            let replay_keys = st.last.is_some() || st.rate.is_some() || st.max_requests.is_some();
            let run = match st.command.first() {
                None if kind == StepKind::Warm => {
                    let rate = st.rate.unwrap_or(100);
                    if rate == 0 {
                        return Err(bad(&sk("rate"), "must be at least 1".into()));
                    }
                    StepRun::Replay(WarmReplay {
                        window: secs(&sk("last"), &st.last, "5m", &bad)?,
                        rate,
                        max_requests: st.max_requests.unwrap_or(1000),
                    })
                }
                None => {
                    return Err(bad(
                        &sk("command"),
                        "is required (only a warm step is built in)".into(),
                    ));
                }
                Some(_) if replay_keys => {
                    return Err(bad(
                        &sk("command"),
                        "is given with last/rate/max_requests, which only the built-in warm \
                         step (no command) takes"
                            .into(),
                    ));
                }
                Some(program) => {
                    if ExecHook::resolve(program).is_none() {
                        return Err(bad(
                            &sk("command"),
                            format!("{program:?} does not exist or is not executable"),
                        ));
                    }
                    StepRun::Hook(ExecHook {
                        command: st.command.clone(),
                        timeout: secs(&sk("timeout"), &st.timeout, "60s", &bad)?,
                    })
                }
            };
            steps.push(Step {
                kind,
                run,
                retries: st.retries.unwrap_or(0),
            });
        }
        let switch = match s.switch.as_deref().unwrap_or("kernel") {
            "kernel" => SwitchSettings::Kernel,
            "inline" => SwitchSettings::Inline,
            "hook" => {
                let command = s
                    .switch_command
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        bad(
                            "switch_command",
                            "switch = \"hook\" needs the command that moves traffic".into(),
                        )
                    })?;
                if ExecHook::resolve(&command[0]).is_none() {
                    return Err(bad(
                        "switch_command",
                        format!("{:?} does not exist or is not executable", command[0]),
                    ));
                }
                SwitchSettings::Hook(ExecHook {
                    command,
                    timeout: secs("switch_timeout", &s.switch_timeout, "30s", &bad)?,
                })
            }
            other => {
                return Err(bad(
                    "switch",
                    format!("{other:?} is not kernel, hook or inline"),
                ));
            }
        };
        let ramp = s.ramp.clone().unwrap_or_default();
        if ramp
            .iter()
            .any(|p| !p.is_finite() || *p <= 0.0 || *p > 100.0)
            || ramp.windows(2).any(|w| w[1] <= w[0])
        {
            return Err(bad(
                "ramp",
                format!("{ramp:?} must be rising percentages within (0, 100]"),
            ));
        }
        for (k, v) in [
            ("max_error_rate", s.max_error_rate),
            ("max_p99_ms", s.max_p99_ms),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(bad(k, format!("{v:?} must be a number at least 0")));
            }
        }
        services.push(ServiceSettings {
            max_error_rate: s.max_error_rate,
            max_p99_ms: s.max_p99_ms,
            switch,
            ramp: ramp.iter().map(|p| (p * 100.0).round() as u32).collect(),
            ramp_step: secs("ramp_step", &s.ramp_step, "30s", &bad)?,
            primary: check(s.port),
            shadow: check(s.shadow_port),
            name: s.name,
            port: s.port,
            shadow_port: s.shadow_port,
            steps,
            rules,
        });
    }
    Ok(Some(FailoverSettings {
        apply,
        services,
        netns: raw
            .netns
            .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net")),
        check_interval,
        state_dir: raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        pin_dir: raw
            .pin_dir
            .unwrap_or_else(|| PathBuf::from(super::cutover::PIN_ROOT)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<FailoverSettings>, String> {
        #[derive(Deserialize)]
        struct File {
            failover: RawFailover,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        settings(f.failover, &|k, r| format!("{k}: {r}"))
    }

    const WEB: &str =
        "[failover]\n[[failover.service]]\nname = \"web\"\nport = 8080\nshadow_port = 9080\n";

    #[test]
    fn a_profile_gets_its_defaults() {
        let s = parse(WEB).unwrap().unwrap();
        let w = &s.services[0];
        assert_eq!((w.port, w.shadow_port), (8080, 9080));
        assert_eq!(w.primary.path.as_deref(), Some("/"));
        assert_eq!(w.rules, Rules::default());
        assert_eq!(s.check_interval, Duration::from_millis(200));
        assert!(!s.apply, "dry run by default");
    }

    #[test]
    fn a_warm_step_without_a_command_is_the_built_in_replay() {
        let s = parse(&format!(
            "{WEB}[[failover.service.step]]\nkind = \"warm\"\nrate = 50\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            s.services[0].steps[0].run,
            StepRun::Replay(WarmReplay {
                window: Duration::from_secs(300),
                rate: 50,
                max_requests: 1000,
            })
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                WEB.replace("9080", "8080"),
                "failover.service[0].shadow_port: 8080 is the primary's port too",
            ),
            (
                format!(
                    "{WEB}[[failover.service.step]]\nkind = \"sync\"\ncommand = [\"/no/such/sync\"]\n"
                ),
                "failover.service[0].step[0].command: \"/no/such/sync\" does not exist",
            ),
            (
                format!(
                    "{WEB}[[failover.service.step]]\nkind = \"dance\"\ncommand = [\"/bin/true\"]\n"
                ),
                "failover.service[0].step[0].kind: \"dance\" is not one of",
            ),
            (
                format!("{WEB}[[failover.service.step]]\nkind = \"gate\"\n"),
                "failover.service[0].step[0].command: is required (only a warm step is built in)",
            ),
            (
                format!(
                    "{WEB}[[failover.service.step]]\nkind = \"warm\"\ncommand = [\"/bin/true\"]\nrate = 5\n"
                ),
                "failover.service[0].step[0].command: is given with last/rate/max_requests",
            ),
            (
                format!("{WEB}[[failover.service.step]]\nkind = \"warm\"\nlast = \"soon\"\n"),
                "failover.service[0].step[0].last:",
            ),
            (
                format!("{WEB}fail_limit = 0\n"),
                "failover.service[0].fail_limit: must be at least 1",
            ),
            (
                format!("{WEB}[[failover.service]]\nname = \"web\"\nport = 1\nshadow_port = 2\n"),
                "failover.service[1].name: \"web\" has a profile already",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(want), "{err}\nwanted {want}");
        }
    }
}
