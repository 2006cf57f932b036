//! Local replicas: N copies of a configured command on this host, each on
//! a port of its own (`{port}` in the command), ready when its probe
//! answers, and drained before they stop.
//!
//! - Up: each new copy starts and must pass its readiness probe (an HTTP
//!   GET of `ready_path` answered 2xx or 3xx, or a TCP connect without a
//!   path) within `ready_timeout`. If one fails, every copy this change
//!   started is stopped again and the change fails: the previous
//!   allocation stays.
//! - Down: the newest copies first. Routing stops first (`on_change` is
//!   told the copies that remain), then `drain` lets in-flight requests
//!   finish, then SIGTERM, then SIGKILL after `stop_timeout`.
//!
//! `on_change` receives every change of the set of ready copies' addresses.
//! The agent registers them as shadow targets of the service the loop is
//! named for: the replayer balances over them beside the configured ones
//! (`agent::replica_routing`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use shadow_api::provision::Resource;

use super::backend::{Backend, BackendError, Change};

/// Told the ready copies' addresses after every change.
pub type OnChange = Box<dyn Fn(&[SocketAddr]) + Send + Sync>;

pub struct Replicas {
    /// The program and its arguments; `{port}` is replaced by the copy's port.
    pub command: Vec<String>,
    pub base_port: u16,
    /// `None`: a TCP connect is the probe.
    pub ready_path: Option<String>,
    pub ready_timeout: Duration,
    pub drain: Duration,
    pub stop_timeout: Duration,
    pub on_change: Option<OnChange>,
    running: Mutex<Vec<(u16, Child)>>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("command", &self.command)
            .field("base_port", &self.base_port)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    pub fn new(command: Vec<String>, base_port: u16) -> Self {
        Self {
            command,
            base_port,
            ready_path: Some("/".into()),
            ready_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(10),
            on_change: None,
            running: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u16, Child)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ports of the copies running now.
    pub fn ports(&self) -> Vec<u16> {
        self.lock().iter().map(|r| r.0).collect()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn probe(&self, port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&Self::addr(port), Duration::from_millis(200))
        else {
            return false;
        };
        let Some(path) = &self.ready_path else {
            return true;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.")
            && matches!(head[9], b'2' | b'3')
    }

    fn start(&self, port: u16) -> Result<Child, BackendError> {
        let args: Vec<String> = self
            .command
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let label = args.join(" ");
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BackendError::Io {
                what: format!("starting replica {label}"),
                source,
            })?;
        let started = Instant::now();
        loop {
            if self.probe(port) {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BackendError::Exit {
                    command: label,
                    status: status.to_string(),
                    stderr: "exited before it was ready".into(),
                });
            }
            if started.elapsed() >= self.ready_timeout {
                stop(&mut child, Duration::ZERO);
                return Err(BackendError::Timeout {
                    command: format!("readiness of {label}"),
                    timeout: self.ready_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn announce(&self, running: &[(u16, Child)]) {
        if let Some(f) = &self.on_change {
            let addrs: Vec<SocketAddr> = running.iter().map(|r| Self::addr(r.0)).collect();
            f(&addrs);
        }
    }
}

/// SIGTERM, then SIGKILL once `timeout` has passed.
fn stop(child: &mut Child, timeout: Duration) {
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Backend for Replicas {
    fn apply(&self, change: &Change<'_>) -> Result<(), BackendError> {
        if change.resource != Resource::Replicas {
            return Err(BackendError::Unsupported {
                backend: "replicas",
                resource: change.resource.name(),
            });
        }
        let want = change.to.round().max(0.0) as usize;
        let mut running = self.lock();
        let mut started = Vec::new();
        while running.len() + started.len() < want {
            let used: Vec<u16> = running
                .iter()
                .map(|r| r.0)
                .chain(started.iter().map(|s: &(u16, Child)| s.0))
                .collect();
            let port = (self.base_port..=u16::MAX)
                .find(|p| !used.contains(p))
                .unwrap_or(self.base_port);
            match self.start(port) {
                Ok(child) => started.push((port, child)),
                Err(e) => {
                    // The previous allocation stays: stop what this change started.
                    for (_, mut c) in started {
                        stop(&mut c, self.stop_timeout);
                    }
                    return Err(e);
                }
            }
        }
        running.extend(started);
        if running.len() > want {
            let leaving = running.split_off(want);
            self.announce(&running);
            std::thread::sleep(self.drain);
            for (_, mut c) in leaving {
                stop(&mut c, self.stop_timeout);
            }
        } else {
            self.announce(&running);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "replicas"
    }

    fn current(&self, resource: Resource) -> Option<f64> {
        (resource == Resource::Replicas).then(|| self.lock().len() as f64)
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (_, c) in self.lock().iter_mut() {
            stop(c, self.stop_timeout.min(Duration::from_secs(2)));
        }
    }
}
