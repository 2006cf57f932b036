//! Where a cutover happens: one trait, [`Switch`], so that another way of
//! moving traffic only adds an implementation. Two are here:
//!
//! - [`KernelSwitch`], on one host: the sk_lookup program gives new
//!   connections for the service's port to the shadow's listener.
//! - [`HookSwitch`], across hosts: a command is told the change as JSON on
//!   stdin (a DNS update, a VIP move, a load balancer's API) and must exit 0.
//!
//! - [`InlineSwitch`], behind the agent's inline proxy: new requests go to
//!   the shadow's address, in-flight ones drain on the primary.

use std::{
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::cutover::{self, CutoverError, KernelCutover};
use crate::provision::hook::ExecHook;

/// Moves a service's new connections to its shadow, by a share (hundredths
/// of a percent), and back.
pub trait Switch: Send {
    fn kind(&self) -> &'static str;

    /// What a cutover will need, taken ahead (called at each check while
    /// the shadow is healthy), so that the cutover itself is quick.
    fn prepare(&mut self) {}

    /// `share` of new connections to the shadow (10000 = all). Returns the
    /// time the switch took.
    fn steer(&mut self, share: u32) -> Result<Duration, String>;

    /// Every new connection back to the primary.
    fn release(&mut self) -> Result<Duration, String>;

    /// The share given to the shadow now.
    fn share(&self) -> u32;
}

/// The kernel-level cutover for one service (the program is shared).
pub struct KernelSwitch {
    pub cutover: Arc<Mutex<KernelCutover>>,
    pub port: u16,
    pub shadow_port: u16,
    /// The shadow's listener, taken ahead: reading a busy namespace's
    /// socket tables takes tens of milliseconds.
    listener: Option<OwnedFd>,
}

impl KernelSwitch {
    pub fn new(cutover: Arc<Mutex<KernelCutover>>, port: u16, shadow_port: u16) -> Self {
        Self {
            cutover,
            port,
            shadow_port,
            listener: cutover::listener_on(shadow_port).ok(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KernelCutover> {
        self.cutover.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Switch for KernelSwitch {
    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn prepare(&mut self) {
        if self.listener.is_none() {
            self.listener = cutover::listener_on(self.shadow_port).ok();
        }
    }

    fn steer(&mut self, share: u32) -> Result<Duration, String> {
        let listener = match self.listener.as_ref().map(OwnedFd::try_clone) {
            Some(Ok(fd)) => fd,
            _ => cutover::listener_on(self.shadow_port).map_err(|e| e.to_string())?,
        };
        let first = self.lock().steer(self.port, listener, share);
        match first {
            Ok(t) => Ok(t),
            // A shadow that restarted has a new listener: take it and retry.
            Err(_) => {
                let fresh = cutover::listener_on(self.shadow_port).map_err(|e| e.to_string())?;
                self.listener = fresh.try_clone().ok();
                self.lock()
                    .steer(self.port, fresh, share)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn release(&mut self) -> Result<Duration, String> {
        match self.lock().release(self.port) {
            Err(CutoverError::NotSteered(_)) => Ok(Duration::ZERO),
            other => other.map_err(|e| e.to_string()),
        }
    }

    fn share(&self) -> u32 {
        self.lock().share(self.port).unwrap_or(0)
    }
}

/// A command that moves traffic elsewhere: given
/// `{"service", "action": "steer"|"release", "share", "port", "shadow_port"}`
/// on stdin.
pub struct HookSwitch {
    pub hook: ExecHook,
    pub service: String,
    pub port: u16,
    pub shadow_port: u16,
    share: u32,
}

impl HookSwitch {
    pub fn new(hook: ExecHook, service: String, port: u16, shadow_port: u16) -> Self {
        Self {
            hook,
            service,
            port,
            shadow_port,
            share: 0,
        }
    }

    fn run(&self, action: &str, share: u32) -> Result<Duration, String> {
        let input = serde_json::json!({
            "service": self.service,
            "action": action,
            "share": share,
            "port": self.port,
            "shadow_port": self.shadow_port,
        })
        .to_string();
        let started = Instant::now();
        self.hook
            .run(input.as_bytes())
            .map_err(|e| format!("switch hook: {e}"))?;
        Ok(started.elapsed())
    }
}

impl Switch for HookSwitch {
    fn kind(&self) -> &'static str {
        "hook"
    }

    fn steer(&mut self, share: u32) -> Result<Duration, String> {
        let t = self.run("steer", share)?;
        self.share = share;
        Ok(t)
    }

    fn release(&mut self) -> Result<Duration, String> {
        let t = self.run("release", 0)?;
        self.share = 0;
        Ok(t)
    }

    fn share(&self) -> u32 {
        self.share
    }
}

/// The inline proxy's upstream switch (`switch = "inline"`): a share of new
/// requests to the shadow; requests in flight finish where they went.
pub struct InlineSwitch {
    pub upstream: Arc<crate::replay::inline::upstream::Upstream>,
    pub shadow: std::net::SocketAddr,
}

impl Switch for InlineSwitch {
    fn kind(&self) -> &'static str {
        "inline"
    }

    fn steer(&mut self, share: u32) -> Result<Duration, String> {
        let started = Instant::now();
        self.upstream.steer(self.shadow, share);
        Ok(started.elapsed())
    }

    fn release(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        self.upstream.release();
        Ok(started.elapsed())
    }

    fn share(&self) -> u32 {
        self.upstream.share()
    }
}
