//! `[provision]` in the agent's configuration file: parsed here, into
//! [`ProvisionSettings`], with every bad value named by its key.
//!
//! ```toml
//! [provision]
//! mode = "forecast_only"          # the default; "apply" acts
//!
//! [[provision.loop]]
//! target = "web"
//! resource = "cpu"                # cpu (cores) | memory (bytes) | replicas
//! backend = "cgroup"              # cgroup | exec | terraform | cloudformation
//! cgroup = "shadow-web"           # backend = "cgroup"
//! # command = ["/usr/local/bin/scale-web"]   hook_timeout = "30s"   (exec)
//! # file = "infra/shadow.auto.tfvars.json"                          (terraform, cloudformation)
//! # command = ["/usr/bin/web", "--port", "{port}"]  base_port = 9100  (replicas;
//! #   ready_path = "/" (empty: a TCP connect), ready_timeout = "30s", drain = "5s", stop_timeout = "10s")
//! policy = "predictive"           # predictive (default) | seed | reactive
//! quantile = 0.9                  # predictive: the forecast quantile sized for at start
//! # under_target = 0.01           # predictive: the level calibrates to this share of
//!                                 # intervals under-provisioned (0: keep `quantile` fixed)
//! # target_utilisation = 0.8      # reactive and seed
//! # demand = "cgroup.shadow-web.cpu_cores"   (the default for a cgroup loop)
//! # demand_per_unit = 1.0         # the load one unit serves (replicas: req/s per replica)
//! min = 0.2
//! max = 2.0
//! # max_step = 1.0  granularity = 0.1  cooldown_up = "60s"  cooldown_down = "300s"
//! # grace = "120s"  time_to_ready = "300s"  interval = "60s"  alerts = [0.9]  initial = 1.0
//!
//! [provision.pool]                # optional: the capacity pool
//! shadow_fraction = 0.5
//! [[provision.pool.zones]]
//! name = "a"
//! classes = [{ class = "spot", units = 4, cost_per_unit_hour = 0.03 }]
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use shadow_api::provision::{Mode, Resource};
use shadow_forecast::provision::{
    Limits, PolicyConfig,
    policy::{Predictive, Reactive, Seed},
    pool::Pool,
};

use super::{BackendSettings, LoopSettings, ProvisionSettings, hook::ExecHook};
use crate::util::duration;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProvision {
    mode: Option<String>,
    #[serde(default, rename = "loop")]
    loops: Vec<RawLoop>,
    pool: Option<Pool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoop {
    target: String,
    resource: String,
    backend: String,
    cgroup: Option<String>,
    command: Option<Vec<String>>,
    hook_timeout: Option<String>,
    file: Option<PathBuf>,
    base_port: Option<u16>,
    ready_path: Option<String>,
    ready_timeout: Option<String>,
    drain: Option<String>,
    stop_timeout: Option<String>,
    policy: Option<String>,
    quantile: Option<f64>,
    under_target: Option<f64>,
    target_utilisation: Option<f64>,
    demand: Option<String>,
    demand_per_unit: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    max_step: Option<f64>,
    granularity: Option<f64>,
    cooldown_up: Option<String>,
    cooldown_down: Option<String>,
    grace: Option<String>,
    time_to_ready: Option<String>,
    interval: Option<String>,
    #[serde(default)]
    alerts: Vec<f64>,
    initial: Option<f64>,
}

const BACKENDS: &str = "cgroup, exec, terraform, cloudformation, replicas";

/// Validates `[provision]`; `invalid(key, reason)` builds the error.
pub fn settings<E>(
    raw: RawProvision,
    invalid: &dyn Fn(&str, String) -> E,
) -> Result<ProvisionSettings, E> {
    let mode = match raw.mode.as_deref().unwrap_or("forecast_only") {
        "forecast_only" | "forecast-only" => Mode::ForecastOnly,
        "apply" => Mode::Apply,
        other => {
            return Err(invalid(
                "provision.mode",
                format!("{other:?} is not forecast_only or apply"),
            ));
        }
    };
    let mut loops = Vec::new();
    for (i, l) in raw.loops.into_iter().enumerate() {
        let key = |k: &str| format!("provision.loop[{i}].{k}");
        let bad = |k: &str, reason: String| invalid(&key(k), reason);
        let resource = Resource::parse(&l.resource).ok_or_else(|| {
            bad(
                "resource",
                format!("{:?} is not one of cpu, memory, replicas", l.resource),
            )
        })?;
        if l.target.is_empty() {
            return Err(bad("target", "must name the host or a service".into()));
        }
        if loops
            .iter()
            .any(|o: &LoopSettings| o.target == l.target && o.resource == resource)
        {
            return Err(bad(
                "resource",
                format!("{} of {:?} has a loop already", resource.name(), l.target),
            ));
        }
        // Zero is a valid cooldown or grace ("0s"); durations are otherwise positive.
        let secs = |k: &str, v: &Option<String>, default: &str| {
            let v = v.as_deref().unwrap_or(default);
            if v.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
                return Ok(std::time::Duration::ZERO);
            }
            duration::parse(v).map_err(|r| bad(k, r))
        };
        let need =
            |k: &str, what: &str| bad(k, format!("backend {:?} needs {k} ({what})", l.backend));
        let backend = match l.backend.as_str() {
            "cgroup" => {
                if resource == Resource::Replicas {
                    return Err(bad(
                        "backend",
                        "a cgroup sizes cpu or memory, not replicas".into(),
                    ));
                }
                let path = l
                    .cgroup
                    .clone()
                    .ok_or_else(|| need("cgroup", "its path, like \"shadow/web\""))?;
                BackendSettings::Cgroup { path }
            }
            "exec" => {
                let command = l
                    .command
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| need("command", "the program and its arguments"))?;
                if ExecHook::resolve(&command[0]).is_none() {
                    return Err(bad(
                        "command",
                        format!("{:?} does not exist or is not executable", command[0]),
                    ));
                }
                let timeout = secs("hook_timeout", &l.hook_timeout, "30s")?;
                BackendSettings::Exec { command, timeout }
            }
            "terraform" | "cloudformation" => {
                let path = l
                    .file
                    .clone()
                    .ok_or_else(|| need("file", "where to write the variables"))?;
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                if !dir.is_dir() {
                    return Err(bad(
                        "file",
                        format!("directory {} does not exist", dir.display()),
                    ));
                }
                if l.backend == "terraform"
                    && !path.to_string_lossy().ends_with(".auto.tfvars.json")
                {
                    return Err(bad(
                        "file",
                        "Terraform loads only *.auto.tfvars.json by itself".into(),
                    ));
                }
                if l.backend == "terraform" {
                    BackendSettings::Terraform { path }
                } else {
                    BackendSettings::CloudFormation { path }
                }
            }
            "replicas" => {
                if resource != Resource::Replicas {
                    return Err(bad(
                        "backend",
                        "local replicas size replicas, not cpu or memory".into(),
                    ));
                }
                let command = l.command.clone().filter(|c| !c.is_empty()).ok_or_else(|| {
                    need(
                        "command",
                        "the program to run, with {port} where its port goes",
                    )
                })?;
                if ExecHook::resolve(&command[0]).is_none() {
                    return Err(bad(
                        "command",
                        format!("{:?} does not exist or is not executable", command[0]),
                    ));
                }
                if !command.iter().any(|a| a.contains("{port}")) {
                    return Err(bad(
                        "command",
                        "no argument has {port}: every copy needs its own port".into(),
                    ));
                }
                BackendSettings::Replicas {
                    command,
                    base_port: l
                        .base_port
                        .ok_or_else(|| need("base_port", "the first copy's port"))?,
                    ready_path: Some(l.ready_path.clone().unwrap_or_else(|| "/".into()))
                        .filter(|p| !p.is_empty()),
                    ready_timeout: secs("ready_timeout", &l.ready_timeout, "30s")?,
                    drain: secs("drain", &l.drain, "5s")?,
                    stop_timeout: secs("stop_timeout", &l.stop_timeout, "10s")?,
                }
            }
            other => {
                return Err(bad(
                    "backend",
                    format!("{other:?} is not one of {BACKENDS}"),
                ));
            }
        };
        let unit_share = |k: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(bad(k, format!("{v} is not within (0, 1]")))
            }
        };
        let policy = match l.policy.as_deref().unwrap_or("predictive") {
            "predictive" => {
                let q = l.quantile.unwrap_or(0.9);
                if !(q.is_finite() && q > 0.0 && q < 1.0) {
                    return Err(bad("quantile", format!("{q} is not within (0, 1)")));
                }
                let under = l.under_target.unwrap_or(0.01);
                if !(under.is_finite() && (0.0..1.0).contains(&under)) {
                    return Err(bad("under_target", format!("{under} is not within [0, 1)")));
                }
                PolicyConfig::Predictive(Predictive {
                    quantile: q,
                    under_target: (under > 0.0).then_some(under),
                    ..Predictive::default()
                })
            }
            "reactive" => PolicyConfig::Reactive(Reactive {
                target: unit_share("target_utilisation", l.target_utilisation.unwrap_or(0.8))?,
                ..Reactive::default()
            }),
            "seed" => PolicyConfig::Seed(Seed {
                target: unit_share("target_utilisation", l.target_utilisation.unwrap_or(0.8))?,
                ..Seed::default()
            }),
            other => {
                return Err(bad(
                    "policy",
                    format!("{other:?} is not one of predictive, seed, reactive"),
                ));
            }
        };
        let granularity_default = match resource {
            Resource::Cpu => 0.1,
            Resource::Memory => 64.0 * 1024.0 * 1024.0,
            Resource::Replicas => 1.0,
        };
        let limits = Limits {
            min: l.min.unwrap_or(granularity_default),
            max: l.max.unwrap_or(f64::MAX),
            max_step: l.max_step.unwrap_or(1.0),
            granularity: l.granularity.unwrap_or(granularity_default),
            cooldown_up_s: secs("cooldown_up", &l.cooldown_up, "60s")?.as_secs_f64(),
            cooldown_down_s: secs("cooldown_down", &l.cooldown_down, "300s")?.as_secs_f64(),
            grace_s: secs("grace", &l.grace, "120s")?.as_secs_f64(),
            ..Limits::default()
        };
        if let Some((k, reason)) = limits.invalid() {
            return Err(bad(k, reason));
        }
        let demand = match (&l.demand, &l.backend[..], &l.cgroup) {
            (Some(d), _, _) => d.clone(),
            (None, "cgroup", Some(cg)) => {
                let field = if resource == Resource::Cpu {
                    "cpu_cores"
                } else {
                    "memory_bytes"
                };
                format!("cgroup.{}.{field}", cg.trim_matches('/'))
            }
            _ => return Err(need("demand", "the history metric that measures demand")),
        };
        let demand_per_unit = l.demand_per_unit.unwrap_or(1.0);
        if !demand_per_unit.is_finite() || demand_per_unit <= 0.0 {
            return Err(bad(
                "demand_per_unit",
                format!("{demand_per_unit} must be positive"),
            ));
        }
        if let Some(a) = l.alerts.iter().find(|a| !a.is_finite() || **a <= 0.0) {
            return Err(bad("alerts", format!("{a} is not a positive utilisation")));
        }
        let interval = match &l.interval {
            Some(_) => secs("interval", &l.interval, "60s")?,
            None => std::time::Duration::from_secs_f64(policy.default_interval_s()),
        };
        let initial = l
            .initial
            .unwrap_or(limits.min)
            .clamp(limits.min, limits.max);
        loops.push(LoopSettings {
            target: l.target,
            resource,
            backend,
            policy,
            limits,
            demand,
            demand_per_unit,
            time_to_ready: secs("time_to_ready", &l.time_to_ready, "300s")?,
            interval,
            alerts: l.alerts,
            initial,
        });
    }
    if let Some(pool) = &raw.pool
        && let Some((k, reason)) = pool.invalid()
    {
        return Err(invalid(&format!("provision.{k}"), reason));
    }
    Ok(ProvisionSettings {
        mode,
        loops,
        pool: raw.pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ProvisionSettings, String> {
        #[derive(Deserialize)]
        struct File {
            provision: RawProvision,
        }
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        settings(f.provision, &|k, r| format!("{k}: {r}"))
    }

    const CPU: &str = "[[provision.loop]]\ntarget = \"web\"\nresource = \"cpu\"\nbackend = \"cgroup\"\ncgroup = \"shadow-web\"\n";

    #[test]
    fn a_cgroup_loop_has_sensible_defaults_and_is_forecast_only() {
        let s = parse(&format!("[provision]\n{CPU}")).unwrap();
        assert_eq!(s.mode, Mode::ForecastOnly);
        let l = &s.loops[0];
        assert_eq!(l.demand, "cgroup.shadow-web.cpu_cores");
        assert_eq!(l.policy.name(), "predictive");
        assert_eq!(l.interval.as_secs(), 60);
        assert_eq!(l.limits.granularity, 0.1);
        assert_eq!(l.limits.cooldown_down_s, 300.0);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (CPU.replace("cgroup\"\n", "k8s\"\n"), "provision.loop[0].backend: \"k8s\" is not one of"),
            (format!("{CPU}min = 4.0\nmax = 2.0\n"), "provision.loop[0].min: min 4 is above max 2"),
            (CPU.replace("cpu", "gpu"), "provision.loop[0].resource"),
            (
                "[[provision.loop]]\ntarget = \"web\"\nresource = \"replicas\"\nbackend = \"exec\"\ncommand = [\"/no/such/hook\"]\ndemand = \"x\"\n".into(),
                "provision.loop[0].command: \"/no/such/hook\" does not exist",
            ),
            (
                format!("{CPU}[provision.pool]\n[[provision.pool.zones]]\nname = \"a\"\nclasses = [{{ class = \"spot\", units = 2, cost_per_unit_hour = -1.0 }}]\n"),
                "provision.pool.zones[0].classes[0].cost_per_unit_hour: cost must be zero or more",
            ),
            (
                format!("{CPU}[provision.pool]\n[[provision.pool.zones]]\nname = \"a\"\nclasses = [{{ class = \"spot\", units = 0, cost_per_unit_hour = 1.0 }}]\n"),
                "provision.pool.zones[0].classes: zone \"a\" has no units",
            ),
            ("[provision]\nmode = \"yolo\"\n".into(), "provision.mode"),
            (
                "[[provision.loop]]\ntarget = \"web\"\nresource = \"replicas\"\nbackend = \"replicas\"\ncommand = [\"/bin/sh\"]\nbase_port = 9100\ndemand = \"web.rate\"\n".into(),
                "provision.loop[0].command: no argument has {port}",
            ),
            (
                "[[provision.loop]]\ntarget = \"web\"\nresource = \"cpu\"\nbackend = \"replicas\"\ncommand = [\"/bin/sh\", \"{port}\"]\nbase_port = 9100\ndemand = \"web.rate\"\n".into(),
                "provision.loop[0].backend: local replicas size replicas",
            ),
            (format!("{CPU}policy = \"magic\"\n"), "provision.loop[0].policy"),
            (format!("{CPU}quantile = 1.5\n"), "provision.loop[0].quantile"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.starts_with(want), "{want}\n got: {err}");
        }
    }
}
