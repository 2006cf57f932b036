//! The agent's CPU budget (`[agent] cpu_budget`, in cores): the agent's
//! own CPU (every thread: capture, replay, diff, forecast training) is
//! measured each interval, and the share of new connections captured is
//! scaled down while it is over the budget and back up once it is well
//! under. The kernel decides each connection once, at its SYN, so a change
//! only moves new connections: what was admitted is captured whole, and
//! unsampled packets are never copied.
//!
//! Forecast training counts against the same budget, and yields first:
//! while training may run, an interval over the budget pauses it (between
//! folds) instead of cutting the capture; only an interval over the budget
//! with training held cuts the capture rate. Training resumes once the
//! capture is back to all it asked and the agent is well under the budget.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Below this share of the budget the scale grows again.
const RAISE_BELOW: f64 = 0.7;
/// The smallest scale: some traffic is always mirrored.
const MIN_SCALE: f64 = 0.001;

/// The controller: a multiplicative decrease to the share that fits, and
/// a gentle increase.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Cores; 0 is off.
    pub cores: f64,
    /// The share of each service's asked capture rate in force, in (0, 1].
    pub scale: f64,
    /// The agent's CPU in the last interval, in cores.
    pub used: f64,
    /// Set while forecast training must wait (shared with the trainer).
    pub hold_training: Arc<AtomicBool>,
    last: Option<(f64, std::time::Instant)>,
}

impl Budget {
    /// `hold_training`: the forecast trainer's hold flag, if it runs.
    pub fn new(cores: f64, hold_training: Option<Arc<AtomicBool>>) -> Self {
        Self {
            cores,
            scale: 1.0,
            used: 0.0,
            hold_training: hold_training.unwrap_or_default(),
            last: None,
        }
    }

    /// Whether forecast training is held now.
    pub fn training_held(&self) -> bool {
        self.hold_training.load(Ordering::Relaxed)
    }

    pub fn enabled(&self) -> bool {
        self.cores > 0.0
    }

    /// Feeds the process's total CPU seconds now; returns the new scale
    /// when it changed.
    pub fn observe(&mut self, cpu_seconds: f64, now: std::time::Instant) -> Option<f64> {
        let (cpu0, t0) = self.last.replace((cpu_seconds, now))?;
        let wall = now.duration_since(t0).as_secs_f64();
        if wall <= 0.0 {
            return None;
        }
        self.used = (cpu_seconds - cpu0).max(0.0) / wall;
        self.step(self.used)
    }

    /// One decision from the CPU used (cores) over the last interval.
    pub fn step(&mut self, used: f64) -> Option<f64> {
        if !self.enabled() {
            return None;
        }
        let old = self.scale;
        let held = self.training_held();
        if used > self.cores {
            if held {
                // What fits, with a margin, at most halving per step.
                self.scale = (self.scale * (self.cores / used * 0.9).max(0.5)).max(MIN_SCALE);
            } else {
                // Training yields first; the capture is cut only if the
                // next interval, without it, is still over.
                self.hold_training.store(true, Ordering::Relaxed);
            }
        } else if used < self.cores * RAISE_BELOW {
            if self.scale < 1.0 {
                self.scale = (self.scale * 1.25 + 0.01).min(1.0);
            } else if held {
                self.hold_training.store(false, Ordering::Relaxed);
            }
        }
        ((self.scale - old).abs() > 1e-9).then_some(self.scale)
    }
}

/// This process's CPU time (user + system, every thread), in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: a valid out pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `asked` (hundredths of a percent) under `scale`: never 0 while asked.
pub fn scaled(asked: u32, scale: f64) -> u32 {
    if asked == 0 {
        return 0;
    }
    ((f64::from(asked) * scale).round() as u32).clamp(1, asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_lowers_to_what_fits_and_under_raises_gently() {
        let mut b = Budget::new(0.5, None);
        assert_eq!(b.step(0.4), None, "within the budget at full scale");
        assert_eq!(b.step(2.0), None, "training yields first");
        assert!(b.training_held());
        let s = b.step(2.0).expect("lowered");
        assert!((s - 0.5).abs() < 1e-9, "at most halved: {s}");
        let s = b.step(0.6).expect("lowered");
        assert!(
            (s - 0.5 * 0.75).abs() < 1e-9,
            "to what fits, less 10 %: {s}"
        );
        assert_eq!(b.step(0.45), None, "between 70 % and 100 % it holds");
        let mut last = b.scale;
        while let Some(s) = b.step(0.1) {
            assert!(s > last);
            assert!(b.training_held(), "training waits for the capture");
            last = s;
        }
        assert_eq!(b.scale, 1.0, "back to all of what was asked");
        assert!(!b.training_held(), "and then training resumes");
        let mut off = Budget::new(0.0, None);
        assert_eq!(off.step(5.0), None, "0 is off");
        assert!(!off.training_held());
    }

    #[test]
    fn scaled_rates_stay_within_what_was_asked() {
        assert_eq!(scaled(10_000, 0.25), 2500);
        assert_eq!(scaled(10, 0.001), 1);
        assert_eq!(scaled(0, 0.5), 0);
        assert_eq!(scaled(500, 1.0), 500);
    }
}
