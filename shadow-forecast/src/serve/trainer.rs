//! Training: when a metric is due, and one training run.
//!
//! A metric is due when it has no model and enough grid points, or when
//! `every` has passed since its last attempt (for a model loaded from disk,
//! since the end of the data it was trained on). A run snapshots the grid
//! (anomalies and interpolated gaps weighted out), fits with no lock held,
//! saves the model and swaps it in; the refresher is then woken so the new
//! model's forecast is served without waiting for the next step. A failed
//! run keeps the previous model and is retried after `every`.

use std::{sync::Arc, time::Instant};

use crate::{ForecasterConfig, forecaster};

use super::{
    ForecastSettings,
    service::{Service, Slot},
};

/// Grid points before a first training: every fold needs a whole horizon
/// after its origin, and the cheapest candidate its own minimum before it.
pub fn need_points(settings: &ForecastSettings) -> usize {
    need_for(&settings.forecaster_config(), settings.step)
}

/// [`need_points`] for any configuration (the offline CLI's too).
pub fn need_for(cfg: &ForecasterConfig, step: i64) -> usize {
    let season = cfg.season_for(step);
    let least = cfg
        .candidates
        .iter()
        .map(|c| c.build(cfg, season).model().min_history())
        .min()
        .unwrap_or(2);
    cfg.folds * cfg.horizon.max(1) + least
}

impl Service {
    /// Whether `slot` should be trained at `now` (unix seconds).
    pub fn due(&self, slot: &Slot, now: i64) -> bool {
        let points = slot.data().grid.span();
        if points < self.need {
            return false;
        }
        let t = slot.training();
        if t.running {
            return false;
        }
        let last = t
            .last_attempt
            .or_else(|| slot.model().map(|m| m.trained_until));
        let every = self.settings.every.as_secs() as i64;
        last.is_none_or(|l| now - l >= every)
    }

    /// Trains `slot` now (on the calling thread); returns whether a new
    /// model is in.
    pub fn train(&self, index: usize, now: i64) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        let snapshot = match slot.snapshot() {
            Ok(s) => s,
            Err(e) => {
                self.training_failed(slot, now, 0.0, e.to_string());
                return false;
            }
        };
        {
            let mut t = slot.training.lock().unwrap_or_else(|p| p.into_inner());
            (t.running, t.last_attempt) = (true, Some(now));
        }
        let started = Instant::now();
        let cfg = self.settings.forecaster_config();
        let result = forecaster::train(&snapshot.input(), &cfg, &mut |_| self.wait_while_held());
        let seconds = started.elapsed().as_secs_f64();
        let model = match result {
            Ok(m) => m,
            Err(e) => {
                self.training_failed(slot, now, seconds, e.to_string());
                return false;
            }
        };
        if let Err(error) = model.save(&slot.dir) {
            // Still served from memory; the next run tries the disk again.
            tracing::warn!(%error, metric = %slot.name, "Saving the forecast model failed");
        }
        tracing::info!(
            metric = %slot.name,
            model = %model.selection.label(),
            points = snapshot.series.len(),
            seconds,
            reason = %model.selection.reason,
            "Forecast model trained"
        );
        *slot.model.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(model));
        {
            let mut t = slot.training.lock().unwrap_or_else(|p| p.into_inner());
            (t.running, t.ok, t.last_seconds, t.last_error) =
                (false, t.ok + 1, Some(seconds), None);
        }
        if let Some(tx) = self.wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(index);
        }
        true
    }

    /// Blocks while [`Service::hold`] is set (a CPU budget over its limit),
    /// checking every 100 ms.
    pub fn wait_while_held(&self) {
        while self.hold.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn training_failed(&self, slot: &Slot, now: i64, seconds: f64, error: String) {
        tracing::warn!(%error, metric = %slot.name, seconds, "Forecast training failed");
        let mut t = slot.training.lock().unwrap_or_else(|p| p.into_inner());
        t.running = false;
        t.failed += 1;
        t.last_attempt = Some(now);
        t.last_seconds = Some(seconds);
        t.last_error = Some(error);
    }
}
