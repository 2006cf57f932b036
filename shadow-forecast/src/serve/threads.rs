//! The service's two threads, both below the poller's priority.
//!
//! They are plain threads, not tokio tasks: a fit takes seconds to minutes
//! of CPU and a forecast milliseconds, which would stall the runtime that
//! serves the admin and control APIs. The nice value is per thread on
//! Linux, and threads a fit starts (burn's workers) inherit it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::service::Service;

/// Where the samples come from: the agent's history, or (for a fleet) a
/// Prometheus server.
pub trait Source: Send + Sync {
    /// `metric`'s samples as `(unix ms, value)`, oldest first. An unknown
    /// metric has none.
    fn samples(&self, metric: &str) -> Vec<(u64, f64)>;
}

/// Nice values: the refresher is light but must keep to its step; the
/// trainer takes whatever is left over.
const REFRESHER_NICE: i32 = 10;
const TRAINER_NICE: i32 = 19;

/// The running threads; join the refresher at shutdown (it saves the
/// grids). The trainer is left to the process exit: a fit cannot be
/// interrupted, and the model on disk is only replaced by a rename.
pub struct Threads {
    pub refresher: JoinHandle<()>,
    pub trainer: JoinHandle<()>,
}

/// Starts the refresher and the trainer. `delay` is how long after a bin
/// boundary the refresher runs, so the sample that completes it is in.
pub fn spawn(
    service: &Arc<Service>,
    source: Arc<dyn Source>,
    stop: Arc<AtomicBool>,
    delay: Duration,
) -> std::io::Result<Threads> {
    let (tx, rx) = mpsc::channel();
    *service.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let refresher = {
        let (service, stop) = (service.clone(), stop.clone());
        std::thread::Builder::new()
            .name("shadow-forecast".into())
            .spawn(move || refresher_loop(&service, &*source, &stop, &rx, delay))?
    };
    let trainer = {
        let service = service.clone();
        std::thread::Builder::new()
            .name("shadow-train".into())
            .spawn(move || trainer_loop(&service, &stop))?
    };
    Ok(Threads { refresher, trainer })
}

fn refresher_loop(
    service: &Service,
    source: &dyn Source,
    stop: &AtomicBool,
    wake: &mpsc::Receiver<usize>,
    delay: Duration,
) {
    lower_priority(REFRESHER_NICE);
    let step = Duration::from_secs(service.settings.step as u64);
    // Warm start: a loaded model serves from the loaded grid at once.
    service.refresh_all(source, now_s());
    let mut next = next_boundary(step) + delay;
    while !stop.load(Ordering::Relaxed) {
        let wait = next.saturating_sub(wall()).min(Duration::from_millis(200));
        match wake.recv_timeout(wait) {
            Ok(i) => {
                if let Some(slot) = service.slots.get(i) {
                    service.refresh(slot, source.samples(&slot.name), now_s());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if wall() >= next {
            service.refresh_all(source, now_s());
            next = next_boundary(step) + delay;
        }
    }
    service.save_all();
}

fn trainer_loop(service: &Service, stop: &AtomicBool) {
    lower_priority(TRAINER_NICE);
    // Checking is cheap; a short tick trains soon after enough history.
    let tick = Duration::from_secs(service.settings.step as u64)
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    while !stop.load(Ordering::Relaxed) {
        for (i, slot) in service.slots.iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if service.due(slot, now_s()) {
                service.wait_while_held();
                service.train(i, now_s());
            }
        }
        let started = Instant::now();
        while started.elapsed() < tick && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Lowers the calling thread's priority (best effort: it is logged, not
/// fatal, since forecasting still works at normal priority).
pub fn lower_priority(nice: i32) {
    // SAFETY: gettid and setpriority have no memory-safety preconditions;
    // PRIO_PROCESS with a thread id changes only that thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, nice, "Cannot lower the forecast thread's priority");
    }
}

/// Wall-clock time since the epoch: bins are aligned to it.
fn wall() -> Duration {
    Duration::from_millis(unix_ms())
}

fn now_s() -> i64 {
    (unix_ms() / 1000) as i64
}

/// The next multiple of `step` after now, as time since the epoch.
fn next_boundary(step: Duration) -> Duration {
    let step_ms = step.as_millis().max(1) as u64;
    Duration::from_millis((unix_ms() / step_ms + 1) * step_ms)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
