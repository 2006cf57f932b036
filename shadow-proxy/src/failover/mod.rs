//! Failover and migration (issue #12): per service, a state machine
//! ([`machine`]) fed by health checks of the primary and the shadow and by
//! the failure model's level, and an orchestrator that performs what it
//! decides: the profile's steps (hooks), and the kernel-level cutover
//! ([`cutover`]) of new connections to the shadow and back.
//!
//! - Each transition is an event with its reason, kept in a ring.
//! - The machines are persisted atomically after each transition. A
//!   restart resumes a service that was on its shadow (the kernel link died
//!   with the old process, so new connections went to the primary while
//!   the agent was down; see the README).
//! - One action per service at a time: a second is refused and told why.

pub mod config;
pub mod cutover;
pub mod machine;
pub mod resets;
pub mod switch;

use std::{
    collections::VecDeque,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use shadow_api::{
    failover::{Cause, FailoverEvent, FailoverStatus, Phase},
    predict::Level,
};
use shadow_common::steer::STEER_SCALE;

use crate::{metrics::names, provision::hook::ExecHook};
use cutover::{CutoverError, KernelCutover};
use machine::{Action, Machine, Observation, Rules};
use switch::{HookSwitch, InlineSwitch, KernelSwitch, Switch};

/// Events kept for `GET /v1/failover/events`.
pub const EVENTS: usize = 512;

/// Remediations of a failing shadow before giving up until it is healthy.
pub const MAX_REMEDIATIONS: u32 = 3;

/// A health check: an HTTP GET answered 2xx/3xx, or a TCP connect.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub addr: SocketAddr,
    /// `None`: a TCP connect.
    pub path: Option<String>,
    pub timeout: Duration,
    /// The source port checks are sent from (the cutover never steers it,
    /// so a check of the primary reaches the primary). `None`: any.
    pub source_port: Option<u16>,
}

impl Check {
    fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(port) = self.source_port else {
            return TcpStream::connect_timeout(&self.addr, self.timeout);
        };
        let domain = socket2::Domain::for_address(self.addr);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        // Closed with a reset: no TIME_WAIT holds the 4-tuple for the next check.
        s.set_linger(Some(Duration::ZERO))?;
        let local = SocketAddr::new(
            if self.addr.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            },
            port,
        );
        s.bind(&local.into())?;
        s.connect_timeout(&self.addr.into(), self.timeout)?;
        Ok(s.into())
    }

    pub fn passes(&self) -> bool {
        let Ok(mut s) = self.connect() else {
            return false;
        };
        let Some(path) = &self.path else {
            return true;
        };
        let _ = s.set_read_timeout(Some(self.timeout));
        let _ = s.set_write_timeout(Some(self.timeout));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.")
            && matches!(head[9], b'2' | b'3')
    }
}

/// A step of a migration profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Data synchronisation, at staging.
    Sync,
    /// Cache warming, at staging.
    Warm,
    /// Must pass before a cutover (beside the shadow's health check).
    Gate,
    /// Run after a cutover; a failure rolls back.
    Verify,
    /// Run after moving traffic back.
    Rollback,
    /// Self-healing: run when the shadow fails its checks while it is not
    /// serving (restart it, revert its version), a bounded number of times.
    Remediate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub run: StepRun,
    /// Further tries after a failure.
    pub retries: u32,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepRun {
    /// A command, told the service as JSON on stdin; it must exit 0.
    Hook(ExecHook),
    /// Built in (a `warm` step without a command): the requests seen live
    /// in the last `window` (GETs and HEADs the capture sampled) are sent
    /// to the shadow, at most `max_requests`, `rate` a second.
    Replay(WarmReplay),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WarmReplay {
    pub window: Duration,
    pub rate: u32,
    pub max_requests: usize,
}

/// Gives the requests seen live on a port since a time (unix ms).
pub type RecentSource =
    Box<dyn Fn(u16, u64) -> Vec<crate::replay::recent::RecentRequest> + Send + Sync>;

/// How a service's traffic is moved.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SwitchSettings {
    /// On this host, in the kernel (sk_lookup).
    #[default]
    Kernel,
    /// Across hosts: a command (DNS, VIP, load balancer).
    Hook(ExecHook),
    /// The agent's inline proxy in front of the service (`[service.inline]`
    /// with this `port`) sends new requests to the shadow's address.
    Inline,
}

/// One service's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    pub name: String,
    /// The port clients connect to (the primary's).
    pub port: u16,
    /// The port the shadow listens on, in the same network namespace: its
    /// listening socket is what new connections are given to.
    pub shadow_port: u16,
    pub primary: Check,
    pub shadow: Check,
    pub steps: Vec<Step>,
    pub rules: Rules,
    pub switch: SwitchSettings,
    /// A planned or predicted cutover moves these shares of new connections
    /// (hundredths of a percent, rising) one `ramp_step` apart while the
    /// shadow stays healthy; empty: all at once. A failed primary moves all
    /// at once whatever this says.
    pub ramp: Vec<u32>,
    pub ramp_step: Duration,
    /// Analysis on the shadow once it serves (Argo Rollouts style): the
    /// service's live error rate and p99 past these count as failed checks.
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
}

/// What the agent knows of a service besides its checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// The shadow's diff verdict is regressed: why.
    pub diff_regressed: Option<String>,
    /// The service's live error rate and p99 (ms), as last measured.
    pub error_rate: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Gives a service's [`Signals`].
pub type SignalSource = Box<dyn Fn(&str) -> Signals + Send + Sync>;

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverSettings {
    pub services: Vec<ServiceSettings>,
    /// The network namespace the cutover program is attached to.
    pub netns: PathBuf,
    pub check_interval: Duration,
    /// Where the machines are persisted (`failover.json`).
    pub state_dir: PathBuf,
    /// Where the cutover program's link and maps are pinned, one directory
    /// per namespace. On the host's bpffs: an agent in a private mount
    /// namespace (`ip netns exec`) has its own `/sys`, and pins there go
    /// with it.
    pub pin_dir: PathBuf,
    /// `false` (the default, `mode = "dry_run"`): what the machines decide
    /// on their own is an event saying what would be done, and nothing is
    /// done. Commands (`shadowctl failover cutover`) act either way.
    pub apply: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    Cutover(#[from] CutoverError),
    #[error("no failover profile for service {0:?}")]
    UnknownService(String),
    #[error("service {service}: {action} refused: {reason}")]
    Refused {
        service: String,
        action: &'static str,
        reason: String,
    },
    #[error("reading the persisted failover state {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error(
        "failover service {service:?}: switch = \"inline\" needs a [[service]] on port {port} with [service.inline]"
    )]
    NoInlineProxy { service: String, port: u16 },
}

/// A manual action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Cutover,
    Rollback,
    Promote,
}

struct Service {
    settings: ServiceSettings,
    machine: Machine,
    switch: Box<dyn Switch>,
    /// The ramp step reached and when (unix ms), while ramping.
    ramp: Option<(usize, u64)>,
    /// Why the analysis failed the shadow at the last check.
    analysis: Option<String>,
    /// Remediations run since the shadow was last healthy.
    remediations: u32,
    /// A failed staging is retried from then on (unix ms).
    retry_stage_at: u64,
    /// In dry-run mode, the action last reported as what would be done.
    would: Option<&'static str>,
    primary_ok: bool,
    shadow_ok: bool,
    level: Level,
    probability: Option<f64>,
    reason: String,
    /// The reset counter's reading at the last check (primary + shadow).
    resets_seen: u64,
    /// A transition is settling until then (unix ms).
    settle_until_ms: u64,
    /// Resets from the service's ports while it was in transition.
    failed_requests: u64,
}

/// How long after a transition its resets still count against it.
const SETTLE_MS: u64 = 2_000;

pub struct Orchestrator {
    /// Service names, in the order of `services` (looked up without
    /// taking a service's lock).
    names: Vec<String>,
    services: Vec<Mutex<Service>>,
    /// Per service: an action is being performed.
    busy: Vec<std::sync::atomic::AtomicBool>,
    /// The machines as of their last transition: what is persisted.
    saved: Mutex<std::collections::BTreeMap<String, Machine>>,
    events: Mutex<VecDeque<FailoverEvent>>,
    state_file: PathBuf,
    pub check_interval: Duration,
    /// Told each outcome of a prediction: `true` when a service's primary
    /// failed, `false` for a false positive (the failure model learns from
    /// it; seed 003: "PE adjusts predictions based on the failure event").
    outcome: Mutex<Option<Outcome>>,
    signals: Mutex<Option<SignalSource>>,
    /// Whether the machines' own decisions are carried out.
    apply: bool,
    resets: Option<resets::ResetCounter>,
    recent: Mutex<Option<RecentSource>>,
}

/// Told a service's name and whether its failure came.
pub type Outcome = Box<dyn Fn(&str, bool) + Send + Sync>;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends one recorded request to the shadow's address; its status.
fn warm_one(shadow: &Check, r: &crate::replay::recent::RecentRequest) -> Option<u16> {
    let mut c =
        TcpStream::connect_timeout(&shadow.addr, shadow.timeout.max(Duration::from_secs(1)))
            .ok()?;
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = format!("{} {} HTTP/1.1\r\n", r.method, r.target).into_bytes();
    for h in &r.headers {
        if h.name.eq_ignore_ascii_case("connection") || h.name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    c.write_all(&head).ok()?;
    let mut status = [0u8; 12];
    c.read_exact(&mut status).ok()?;
    // The rest is drained by closing.
    std::str::from_utf8(&status[9..12]).ok()?.parse().ok()
}

/// What a performed action did.
struct Done {
    to: Phase,
    cause: Option<Cause>,
    took: Option<Duration>,
    /// Said after the action's reason (what the steps did).
    note: Option<String>,
}

impl Orchestrator {
    /// Attaches the cutover program and loads the persisted machines. A
    /// service that was on its shadow is cut over again at once.
    /// `inline`: the inline proxies' upstream switches by service port
    /// (for `switch = "inline"`).
    pub fn start(
        settings: FailoverSettings,
        inline: &std::collections::HashMap<u16, Arc<crate::replay::inline::upstream::Upstream>>,
    ) -> Result<Self, FailoverError> {
        let mut settings = settings;
        if let Some(s) = settings
            .services
            .iter()
            .find(|s| s.switch == SwitchSettings::Inline && !inline.contains_key(&s.port))
        {
            return Err(FailoverError::NoInlineProxy {
                service: s.name.clone(),
                port: s.port,
            });
        }
        // The program is attached only if a service moves in the kernel.
        let kernel = if settings
            .services
            .iter()
            .any(|s| s.switch == SwitchSettings::Kernel)
        {
            cutover::clean_pins(&settings.pin_dir, false);
            let mut cutover = KernelCutover::attach_pinned(&settings.netns, &settings.pin_dir)?;
            for s in &mut settings.services {
                // A source port of the primary's checks, which the cutover
                // never steers: the kernel picks a free one.
                let port = std::net::TcpListener::bind(SocketAddr::new(s.primary.addr.ip(), 0))
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .ok();
                if let Some(p) = port {
                    s.primary.source_port = Some(p);
                    cutover.set_bypass(s.port, p);
                }
                // The shadow's checks have theirs too, so that the resets
                // a down shadow answers them with are not counted as
                // failed requests.
                s.shadow.source_port =
                    std::net::TcpListener::bind(SocketAddr::new(s.shadow.addr.ip(), 0))
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .ok();
            }
            Some(Arc::new(Mutex::new(cutover)))
        } else {
            None
        };
        // Failed requests: resets from the ports of services that move in
        // the kernel (their primary and shadow are on this host).
        let local: Vec<&ServiceSettings> = settings
            .services
            .iter()
            .filter(|s| s.switch == SwitchSettings::Kernel)
            .collect();
        let resets = if local.is_empty() {
            None
        } else {
            let ports: Vec<u16> = local.iter().flat_map(|s| [s.port, s.shadow_port]).collect();
            let ignore: Vec<u16> = local
                .iter()
                .flat_map(|s| [s.primary.source_port, s.shadow.source_port])
                .flatten()
                .collect();
            match resets::ResetCounter::attach(&ports, &ignore) {
                Ok(r) => Some(r),
                Err(error) => {
                    tracing::warn!(%error, "Failed requests during transitions are not counted");
                    None
                }
            }
        };
        let state_file = settings.state_dir.join("failover.json");
        let mut saved: std::collections::BTreeMap<String, Machine> =
            match std::fs::read(&state_file) {
                Ok(b) => serde_json::from_slice(&b).map_err(|e| FailoverError::State {
                    path: state_file.clone(),
                    reason: e.to_string(),
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
                Err(e) => {
                    return Err(FailoverError::State {
                        path: state_file.clone(),
                        reason: e.to_string(),
                    });
                }
            };
        let names: Vec<String> = settings.services.iter().map(|s| s.name.clone()).collect();
        let services: Vec<Mutex<Service>> = settings
            .services
            .into_iter()
            .map(|s| {
                let machine = saved.remove(&s.name).unwrap_or_default();
                let switch: Box<dyn Switch> = match (&s.switch, &kernel) {
                    (SwitchSettings::Hook(h), _) => Box::new(HookSwitch::new(
                        h.clone(),
                        s.name.clone(),
                        s.port,
                        s.shadow_port,
                    )),
                    (SwitchSettings::Kernel, Some(k)) => {
                        Box::new(KernelSwitch::new(k.clone(), s.port, s.shadow_port))
                    }
                    (SwitchSettings::Kernel, None) => unreachable!("attached above"),
                    (SwitchSettings::Inline, _) => Box::new(InlineSwitch {
                        upstream: inline[&s.port].clone(),
                        shadow: s.shadow.addr,
                    }),
                };
                // Said at once, not at the first failed cutover: a shadow
                // that is not there is refused until it answers.
                let shadow_ok = s.shadow.passes();
                if !shadow_ok {
                    tracing::warn!(
                        service = %s.name,
                        shadow_port = s.shadow_port,
                        "Failover shadow does not answer its check at start: a cutover to it is refused until it does"
                    );
                }
                Mutex::new(Service {
                    switch,
                    ramp: None,
                    analysis: None,
                    remediations: 0,
                    retry_stage_at: 0,
                    would: None,
                    machine,
                    settings: s,
                    primary_ok: true,
                    shadow_ok,
                    level: Level::Ok,
                    probability: None,
                    reason: if shadow_ok {
                        "started".into()
                    } else {
                        "started; the shadow does not answer its check".into()
                    },
                    resets_seen: 0,
                    settle_until_ms: 0,
                    failed_requests: 0,
                })
            })
            .collect();
        let snapshot = services
            .iter()
            .map(|s| {
                let s = lock(s);
                (s.settings.name.clone(), s.machine.clone())
            })
            .collect();
        let o = Self {
            busy: names_busy(&names),
            names,
            saved: Mutex::new(snapshot),
            services,
            events: Mutex::new(VecDeque::new()),
            state_file,
            check_interval: settings.check_interval,
            apply: settings.apply,
            outcome: Mutex::new(None),
            signals: Mutex::new(None),
            resets,
            recent: Mutex::new(None),
        };
        // Steering adopted from the pins that no machine on its shadow
        // wants is a leftover: its port goes back to the primary.
        if let Some(k) = &kernel {
            let mut k = k.lock().unwrap_or_else(|p| p.into_inner());
            for port in k.steered() {
                let wanted = o.services.iter().any(|svc| {
                    let s = lock(svc);
                    s.settings.switch == SwitchSettings::Kernel
                        && s.settings.port == port
                        && matches!(s.machine.phase, Phase::OnShadow | Phase::Promoted)
                });
                if !wanted {
                    tracing::warn!(
                        port,
                        "Cutover left steering a port no service is cut over on; released"
                    );
                    let _ = k.release(port);
                }
            }
        }
        for svc in &o.services {
            let mut s = lock(svc);
            if matches!(s.machine.phase, Phase::OnShadow | Phase::Promoted) {
                let from = s.machine.phase;
                // Kernel steering pinned by the last run kept new
                // connections on the shadow while no agent ran.
                let kept = s.switch.share() > 0;
                let result = s.switch.steer(STEER_SCALE);
                let (took, reason, refused) = match result {
                    Ok(t) if kept => (
                        Some(t),
                        "resumed after a restart: on the shadow (the kernel kept it there meanwhile)"
                            .into(),
                        false,
                    ),
                    Ok(t) => (
                        Some(t),
                        "resumed after a restart: on the shadow".into(),
                        false,
                    ),
                    Err(e) => {
                        let _ = s.switch.release();
                        s.machine.enter(Phase::Primary, None, now_ms());
                        (None, format!("could not resume on the shadow: {e}"), true)
                    }
                };
                o.event(&mut s, "resume", from, took, reason, refused);
                o.save(&s);
            }
        }
        Ok(o)
    }

    /// One round: check every service and act on what its machine says.
    /// `level` gives a service's failure level and probability.
    pub fn tick(&self, level: &dyn Fn(&str) -> (Level, Option<f64>)) {
        for (i, svc) in self.services.iter().enumerate() {
            let mut s = lock(svc);
            s.primary_ok = s.settings.primary.passes();
            s.shadow_ok = s.settings.shadow.passes();
            self.count_failed(&mut s);
            // The gate and the analysis: a regressed diff verdict always, the
            // live error rate and p99 once the shadow serves them.
            s.analysis = self.analyse(&s);
            if s.analysis.is_some() {
                s.shadow_ok = false;
            }
            (s.level, s.probability) = level(&s.settings.name);
            if s.shadow_ok {
                s.switch.prepare();
                s.remediations = 0;
            }
            self.ramp_up(&mut s);
            let o = Observation {
                now_ms: now_ms(),
                level: s.level,
                primary_ok: s.primary_ok,
                shadow_ok: s.shadow_ok,
            };
            let rules = s.settings.rules.clone();
            let name = s.settings.name.clone();
            metrics::gauge!(names::FAILOVER_CHECK_FAILURES, "service" => name.clone(), "of" => "primary")
                .set(f64::from(s.machine.primary_failures + u32::from(!s.primary_ok)));
            metrics::gauge!(names::FAILOVER_CHECK_FAILURES, "service" => name, "of" => "shadow")
                .set(f64::from(
                    s.machine.shadow_failures + u32::from(!s.shadow_ok),
                ));
            let decided = s.machine.observe(&o, &rules);
            let decided = match decided {
                Some(a) if !self.apply && !matches!(a, Action::Stuck { .. }) => {
                    self.would(&mut s, &a);
                    None
                }
                Some(a) => Some(a),
                None => {
                    s.would = None;
                    None
                }
            };
            if let Some(action) = decided {
                let retry_later =
                    matches!(action, Action::Stage { .. }) && o.now_ms < s.retry_stage_at;
                if !retry_later && !self.busy[i].swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let _idle = Idle(&self.busy[i]);
                    let e = self.perform(&mut s, action, false);
                    if e.action == "failed"
                        && e.to == Phase::Primary
                        && e.reason.starts_with("stage")
                    {
                        // A failed sync or warm is retried a minute later,
                        // not at every check; the primary keeps serving.
                        s.retry_stage_at = o.now_ms + 60_000;
                    }
                }
            }
            if self.apply {
                self.remediate(&mut s);
            }
        }
    }

    /// A manual action (`shadowctl failover cutover|rollback|promote`).
    pub fn command(
        &self,
        service: &str,
        command: Command,
        dry_run: bool,
        force: bool,
    ) -> Result<FailoverEvent, FailoverError> {
        let i = self
            .names
            .iter()
            .position(|n| n == service)
            .ok_or_else(|| FailoverError::UnknownService(service.into()))?;
        let svc = &self.services[i];
        // One action per service at a time: a second is told why.
        // One action per service at a time: a second is told why. (The
        // checks hold the service's lock only briefly; they are not actions.)
        if self.busy[i].swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(FailoverError::Refused {
                service: service.into(),
                action: "the action",
                reason: "another failover action on this service is in progress".into(),
            });
        }
        let _idle = Idle(&self.busy[i]);
        let mut s = lock(svc);
        let phase = s.machine.phase;
        let (action, name) = match command {
            Command::Cutover => (
                Action::Cutover {
                    cause: Cause::Manual,
                    reason: "asked".into(),
                },
                "cutover",
            ),
            Command::Rollback => (
                Action::Rollback {
                    reason: "asked".into(),
                },
                "rollback",
            ),
            Command::Promote => (
                Action::Promote {
                    reason: "asked".into(),
                },
                "promote",
            ),
        };
        let refuse = |reason: String| FailoverError::Refused {
            service: service.into(),
            action: name,
            reason,
        };
        match command {
            Command::Cutover if matches!(phase, Phase::OnShadow | Phase::Promoted) => {
                return Err(refuse(format!("already on the shadow ({})", phase.name())));
            }
            Command::Rollback if !matches!(phase, Phase::OnShadow) => {
                return Err(refuse(format!(
                    "not on the shadow under analysis ({})",
                    phase.name()
                )));
            }
            Command::Promote if phase != Phase::OnShadow => {
                return Err(refuse(format!("not on the shadow ({})", phase.name())));
            }
            Command::Cutover if !force && !s.settings.shadow.passes() => {
                return Err(refuse(
                    "the shadow fails its health check (--force overrides)".into(),
                ));
            }
            Command::Cutover if !force && self.analyse(&s).is_some() => {
                return Err(refuse(format!(
                    "{} (--force overrides)",
                    self.analyse(&s).unwrap_or_default()
                )));
            }
            _ => {}
        }
        if dry_run {
            return Ok(FailoverEvent {
                at_ms: now_ms(),
                service: service.into(),
                from: phase,
                to: phase,
                action: name.into(),
                reason: format!("dry run: would {name}"),
                probability: s.probability,
                took_us: None,
                refused: true,
            });
        }
        if force && command == Command::Cutover {
            tracing::warn!(service, "Forced cutover: the shadow's gate is skipped");
        }
        Ok(self.perform(&mut s, action, force))
    }

    /// Performs `action`, moves the machine, records and persists it.
    fn perform(&self, s: &mut Service, action: Action, force: bool) -> FailoverEvent {
        let from = s.machine.phase;
        // The analysis' reason goes with the machine's.
        let action = match (action, &s.analysis) {
            (Action::Rollback { reason }, Some(why)) if reason.contains("shadow failed") => {
                Action::Rollback {
                    reason: format!("{reason}: {why}"),
                }
            }
            (Action::Stuck { reason }, Some(why)) => Action::Stuck {
                reason: format!("{reason}: {why}"),
            },
            (a, _) => a,
        };
        let (name, reason, result) = match action {
            Action::Stage { reason } => ("stage", reason, self.stage(s)),
            Action::Unstage { reason } => (
                "unstage",
                reason,
                Ok(Done {
                    to: Phase::Primary,
                    cause: None,
                    took: None,
                    note: None,
                }),
            ),
            Action::Cutover { cause, reason } => {
                ("cutover", reason, self.cut_over(s, cause, force))
            }
            Action::Rollback { reason } => ("rollback", reason, self.roll_back(s)),
            Action::Promote { reason } => (
                "promote",
                reason,
                Ok(Done {
                    to: Phase::Promoted,
                    cause: s.machine.cause,
                    took: None,
                    note: None,
                }),
            ),
            Action::Stuck { reason } => {
                return self.event(s, "refused", from, None, reason, true);
            }
        };
        match result {
            Ok(done) => {
                let told = match (name, done.cause) {
                    ("cutover", Some(Cause::PrimaryFailed)) => Some(true),
                    ("rollback", _) if reason.starts_with("false positive") => Some(false),
                    _ => None,
                };
                if let Some(failed) = told
                    && let Some(f) = &*self.outcome.lock().unwrap_or_else(|p| p.into_inner())
                {
                    f(&s.settings.name, failed);
                }
                s.machine.enter(done.to, done.cause, now_ms());
                let reason = match done.note {
                    Some(n) => format!("{reason}; {n}"),
                    None => reason,
                };
                let e = self.event(s, name, from, done.took, reason, false);
                self.save(s);
                e
            }
            Err(why) => self.event(
                s,
                "failed",
                from,
                None,
                format!("{name} ({reason}) failed: {why}; nothing changed"),
                true,
            ),
        }
    }

    /// Runs the profile's steps of `kinds` in order; says what the
    /// built-in ones did.
    fn run_steps(&self, s: &Service, kinds: &[StepKind]) -> Result<Vec<String>, String> {
        let mut notes = Vec::new();
        for step in s
            .settings
            .steps
            .iter()
            .filter(|st| kinds.contains(&st.kind))
        {
            let input = serde_json::json!({
                "service": s.settings.name,
                "step": step.kind,
                "port": s.settings.port,
                "shadow_port": s.settings.shadow_port,
            })
            .to_string();
            let mut last = None;
            for attempt in 0..=step.retries {
                let result = match &step.run {
                    StepRun::Hook(h) => h.run(input.as_bytes()).map_err(|e| e.to_string()),
                    StepRun::Replay(w) => self.warm(s, w).map(|n| notes.push(n)),
                };
                match result {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(service = %s.settings.name, step = ?step.kind, attempt, error = %e, "Failover step failed");
                        last = Some(e);
                    }
                }
            }
            if let Some(e) = last {
                return Err(format!("{:?} step: {e}", step.kind).to_lowercase());
            }
        }
        Ok(notes)
    }

    /// The built-in warm step: replays the last `w.window` of live GETs and
    /// HEADs to the shadow. Fails if there is no record of live traffic, or
    /// if the shadow answers fewer than half.
    fn warm(&self, s: &Service, w: &WarmReplay) -> Result<String, String> {
        let source = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(source) = source.as_ref() else {
            return Err(format!(
                "no live traffic is recorded: the built-in warm needs a shadowed [[service]] on port {}",
                s.settings.port
            ));
        };
        let since = now_ms().saturating_sub(w.window.as_millis() as u64);
        let mut requests = source(s.settings.port, since);
        let skip = requests.len().saturating_sub(w.max_requests);
        requests.drain(..skip);
        if requests.is_empty() {
            return Ok(format!(
                "warm: no GET or HEAD seen live in the last {}s to replay",
                w.window.as_secs()
            ));
        }
        let started = Instant::now();
        let period = Duration::from_secs_f64(1.0 / f64::from(w.rate.max(1)));
        let (mut answered, mut errors) = (0usize, 0usize);
        for (i, r) in requests.iter().enumerate() {
            std::thread::sleep(
                (started + period * i as u32).saturating_duration_since(Instant::now()),
            );
            match warm_one(&s.settings.shadow, r) {
                Some(status) if status < 500 => answered += 1,
                Some(_) => errors += 1,
                None => {}
            }
            if (i + 1) % 100 == 0 {
                tracing::info!(service = %s.settings.name, sent = i + 1, of = requests.len(), answered, "Warming the shadow");
            }
        }
        let sent = requests.len();
        let note = format!(
            "warm: replayed {sent} live requests of the last {}s to the shadow in {:.1}s, {answered} answered, {errors} with 5xx",
            w.window.as_secs(),
            started.elapsed().as_secs_f64()
        );
        if answered * 2 < sent {
            return Err(note);
        }
        Ok(note)
    }

    fn stage(&self, s: &mut Service) -> Result<Done, String> {
        let notes = self.run_steps(s, &[StepKind::Sync, StepKind::Warm])?;
        Ok(Done {
            to: Phase::Staged,
            cause: None,
            took: None,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    fn cut_over(&self, s: &mut Service, cause: Cause, force: bool) -> Result<Done, String> {
        // On a real failure the primary is gone: no time for gate hooks,
        // the shadow's health check is the gate.
        // A planned cutover of a service that was never staged runs the
        // whole profile: sync and warm first.
        let mut notes = Vec::new();
        if cause != Cause::PrimaryFailed && !force {
            if s.machine.phase == Phase::Primary {
                notes = self.run_steps(s, &[StepKind::Sync, StepKind::Warm])?;
            }
            self.run_steps(s, &[StepKind::Gate])?;
        }
        // A failed primary moves everything at once; otherwise the ramp's
        // first share, if there is a ramp.
        let ramped = cause != Cause::PrimaryFailed && !s.settings.ramp.is_empty();
        let share = if ramped {
            s.settings.ramp[0]
        } else {
            STEER_SCALE
        };
        let took = s.switch.steer(share)?;
        s.ramp = ramped.then(|| (0, now_ms()));
        if let Err(e) = self.run_steps(s, &[StepKind::Verify]) {
            let _ = s.switch.release();
            s.ramp = None;
            return Err(format!("{e}; rolled back"));
        }
        Ok(Done {
            to: Phase::OnShadow,
            cause: Some(cause),
            took: Some(took),
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    fn roll_back(&self, s: &mut Service) -> Result<Done, String> {
        let took = s.switch.release()?;
        s.ramp = None;
        if let Err(e) = self.run_steps(s, &[StepKind::Rollback]) {
            tracing::warn!(service = %s.settings.name, error = %e, "Rollback step failed; traffic is on the primary");
        }
        Ok(Done {
            to: Phase::Primary,
            cause: None,
            took: Some(took),
            note: None,
        })
    }

    /// Dry-run mode: says once what would be done, and does nothing.
    fn would(&self, s: &mut Service, action: &Action) {
        let (name, reason) = match action {
            Action::Stage { reason } => ("stage", reason),
            Action::Unstage { reason } => ("unstage", reason),
            Action::Cutover { reason, .. } => ("cutover", reason),
            Action::Rollback { reason } => ("rollback", reason),
            Action::Promote { reason } => ("promote", reason),
            Action::Stuck { reason } => ("stuck", reason),
        };
        if s.would == Some(name) {
            return;
        }
        s.would = Some(name);
        let from = s.machine.phase;
        let reason = format!("dry run: would {name} ({reason}); mode = \"apply\" acts");
        self.event(s, "dry_run", from, None, reason, true);
    }

    /// Self-healing: a shadow that is not serving and fails its checks
    /// gets the profile's remediate steps, at most `MAX_REMEDIATIONS` times
    /// until it is healthy again, each `shadow_fail_limit` failed checks.
    fn remediate(&self, s: &mut Service) {
        let limit = s.settings.rules.shadow_fail_limit.max(1);
        let serving = matches!(s.machine.phase, Phase::OnShadow | Phase::Promoted);
        if serving
            || s.machine.shadow_failures == 0
            || !s.machine.shadow_failures.is_multiple_of(limit)
            || !s
                .settings
                .steps
                .iter()
                .any(|st| st.kind == StepKind::Remediate)
        {
            return;
        }
        let from = s.machine.phase;
        if s.remediations >= MAX_REMEDIATIONS {
            if s.remediations == MAX_REMEDIATIONS {
                s.remediations += 1;
                let reason = format!(
                    "the shadow still fails its checks after {MAX_REMEDIATIONS} remediations: giving up until it is healthy"
                );
                self.event(s, "remediate", from, None, reason, true);
            }
            return;
        }
        s.remediations += 1;
        let why = s
            .analysis
            .clone()
            .unwrap_or_else(|| format!("{} failed checks", s.machine.shadow_failures));
        let (reason, refused) = match self.run_steps(s, &[StepKind::Remediate]) {
            Ok(_) => (
                format!(
                    "remediation {} of {MAX_REMEDIATIONS} ran: {why}",
                    s.remediations
                ),
                false,
            ),
            Err(e) => (
                format!(
                    "remediation {} of {MAX_REMEDIATIONS} failed: {e}",
                    s.remediations
                ),
                true,
            ),
        };
        self.event(s, "remediate", from, None, reason, refused);
    }

    /// The next step of a ramp, once the step's time has passed with the
    /// shadow healthy (the machine rolls back one that is not).
    fn ramp_up(&self, s: &mut Service) {
        let Some((i, at)) = s.ramp else { return };
        if s.machine.phase != Phase::OnShadow {
            s.ramp = None;
            return;
        }
        let now = now_ms();
        if !s.shadow_ok || now.saturating_sub(at) < s.settings.ramp_step.as_millis() as u64 {
            return;
        }
        let next = s.settings.ramp.get(i + 1).copied().unwrap_or(STEER_SCALE);
        let from = s.machine.phase;
        match s.switch.steer(next) {
            Ok(t) => {
                s.ramp = (next < STEER_SCALE).then_some((i + 1, now));
                let reason = format!(
                    "ramp: {:.1} % of new connections to the shadow, healthy for {:?}",
                    f64::from(next) / 100.0,
                    s.settings.ramp_step
                );
                self.event(s, "ramp", from, Some(t), reason, false);
            }
            Err(e) => {
                self.event(
                    s,
                    "failed",
                    from,
                    None,
                    format!("ramp step failed: {e}"),
                    true,
                );
            }
        }
    }

    fn event(
        &self,
        s: &mut Service,
        action: &str,
        from: Phase,
        took: Option<Duration>,
        reason: String,
        refused: bool,
    ) -> FailoverEvent {
        let e = FailoverEvent {
            at_ms: now_ms(),
            service: s.settings.name.clone(),
            from,
            to: s.machine.phase,
            action: action.into(),
            reason: reason.clone(),
            probability: s.probability,
            took_us: took.map(|t| t.as_micros() as u64),
            refused,
        };
        if refused {
            tracing::warn!(service = %e.service, action, %reason, "Failover");
        } else {
            tracing::info!(service = %e.service, action, from = from.name(), to = e.to.name(), %reason, took_us = e.took_us, "Failover");
        }
        s.reason = reason;
        s.settle_until_ms = now_ms() + SETTLE_MS;
        let service = e.service.clone();
        let cause = s.machine.cause.map_or("none", Cause::name);
        metrics::counter!(names::FAILOVER_TRANSITIONS, "service" => service.clone(), "action" => e.action.clone(), "cause" => cause).increment(1);
        metrics::gauge!(names::FAILOVER_PHASE, "service" => service.clone()).set(phase_value(e.to));
        if let Some(t) = took {
            metrics::histogram!(names::FAILOVER_CUTOVER_SECONDS, "service" => service, "action" => e.action.clone()).record(t.as_secs_f64());
        }
        let mut ev = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if ev.len() == EVENTS {
            ev.pop_front();
        }
        ev.push_back(e.clone());
        e
    }

    /// Records `s`'s machine and writes every machine, atomically (a
    /// temporary file, then rename).
    /// Counts the resets sent from the service's ports since the last
    /// check as failed requests if it is in transition: its primary is
    /// failing, its shadow is failing while it serves, or a transition
    /// happened in the last [`SETTLE_MS`].
    fn count_failed(&self, s: &mut Service) {
        let Some(r) = &self.resets else {
            return;
        };
        let n = r.count(s.settings.port) + r.count(s.settings.shadow_port);
        let new = n.saturating_sub(s.resets_seen);
        s.resets_seen = n;
        let serving_shadow = matches!(s.machine.phase, Phase::OnShadow | Phase::Promoted);
        let in_transition = !s.primary_ok
            || s.machine.primary_failures > 0
            || (serving_shadow && !s.shadow_ok)
            || now_ms() < s.settle_until_ms;
        if new > 0 && in_transition {
            s.failed_requests += new;
            metrics::counter!(names::FAILOVER_FAILED_REQUESTS, "service" => s.settings.name.clone())
                .increment(new);
        }
    }

    fn save(&self, s: &Service) {
        let mut all = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(s.settings.name.clone(), s.machine.clone());
        let tmp = self.state_file.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&*all).unwrap_or_default())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.state_file)
        };
        if let Err(error) = write() {
            tracing::warn!(file = %self.state_file.display(), %error, "Failover state not saved");
        }
    }

    /// Why the shadow counts as unhealthy beside its check, if it does.
    fn analyse(&self, s: &Service) -> Option<String> {
        let source = self.signals.lock().unwrap_or_else(|p| p.into_inner());
        let sig = source.as_ref()?(&s.settings.name);
        if let Some(why) = sig.diff_regressed {
            return Some(format!("the shadow's diff verdict is regressed: {why}"));
        }
        if s.machine.phase != Phase::OnShadow {
            return None;
        }
        if let (Some(v), Some(max)) = (sig.error_rate, s.settings.max_error_rate)
            && v > max
        {
            return Some(format!("error rate {v:.3} on the shadow is above {max}"));
        }
        if let (Some(v), Some(max)) = (sig.p99_ms, s.settings.max_p99_ms)
            && v > max
        {
            return Some(format!("p99 {v:.1} ms on the shadow is above {max} ms"));
        }
        None
    }

    /// Where the agent's signals for the analysis come from.
    pub fn set_signals(&self, f: SignalSource) {
        *self.signals.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Where the built-in warm step finds the requests seen live.
    pub fn set_recent(&self, f: RecentSource) {
        *self.recent.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Where the outcomes of predictions go (the failure model).
    pub fn set_outcome(&self, f: Outcome) {
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    pub fn status(&self) -> Vec<FailoverStatus> {
        self.services
            .iter()
            .map(|svc| {
                let s = lock(svc);
                let share = s.switch.share();
                FailoverStatus {
                    service: s.settings.name.clone(),
                    port: s.settings.port,
                    phase: s.machine.phase,
                    cause: s.machine.cause,
                    since_ms: s.machine.since_ms,
                    share,
                    primary_healthy: s.primary_ok,
                    shadow_healthy: s.shadow_ok,
                    primary_failures: s.machine.primary_failures,
                    shadow_failures: s.machine.shadow_failures,
                    level: s.level,
                    probability: s.probability,
                    reason: s.reason.clone(),
                    failed_requests: s.failed_requests,
                    next: {
                        let next =
                            s.machine
                                .next(s.level, s.shadow_ok, &s.settings.rules, now_ms());
                        if self.apply {
                            next
                        } else {
                            format!("dry run (an event only): {next}")
                        }
                    },
                }
            })
            .collect()
    }

    pub fn events(&self) -> Vec<FailoverEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Runs [`Self::tick`] every check interval until `stop` says so.
    pub fn run_until(&self, level: &dyn Fn(&str) -> (Level, Option<f64>), stop: &dyn Fn() -> bool) {
        while !stop() {
            let started = Instant::now();
            self.tick(level);
            std::thread::sleep(self.check_interval.saturating_sub(started.elapsed()));
        }
    }
}

fn names_busy(names: &[String]) -> Vec<std::sync::atomic::AtomicBool> {
    names
        .iter()
        .map(|_| std::sync::atomic::AtomicBool::new(false))
        .collect()
}

/// Clears a service's busy flag when the action ends.
struct Idle<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn phase_value(p: Phase) -> f64 {
    match p {
        Phase::Primary => 0.0,
        Phase::Staged => 1.0,
        Phase::OnShadow => 2.0,
        Phase::Promoted => 3.0,
    }
}

fn lock(s: &Mutex<Service>) -> std::sync::MutexGuard<'_, Service> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}
