//! The forecasting service's state and the refresher's work.
//!
//! One [`Slot`] per metric holds the grid ([`Data`], behind a mutex held
//! briefly: refresher, trainer snapshot, status reads), the latest trained
//! model and the latest published forecast, each an `Arc` behind a
//! `RwLock` that is write-locked only to swap the pointer. A fit or a
//! forecast never runs under any of these locks, so the API and the
//! Prometheus export never wait on one.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, atomic::AtomicBool, mpsc},
    time::Instant,
};

use crate::{Forecast, ForecastError, Forecaster, Input, Series};

use super::{
    ForecastSettings,
    resample::{Grid, Resampler},
    store,
    watch::{AnomalyEvent, Change, Watch},
};

/// The refresher saves a metric's grid after this many new bins.
const SAVE_EVERY: usize = 15;

/// The newest forecast of a metric, as served.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub forecast: Option<Forecast>,
    /// The model that made it (its selection label and reason).
    pub model: Option<(String, String)>,
    /// Why there is no forecast, when there is none.
    pub error: Option<String>,
    /// Grid points it was made from.
    pub points: usize,
    pub refresh_seconds: f64,
    /// The anomaly watch as of this refresh (copied here so the export
    /// reads one `Arc` and never the grid's lock).
    pub anomalous: bool,
    pub anomaly_score: f64,
    pub anomalies: u64,
}

/// Training bookkeeping of a metric.
#[derive(Debug, Clone, Default)]
pub struct Training {
    pub running: bool,
    pub ok: u64,
    pub failed: u64,
    /// Unix seconds of the last attempt.
    pub last_attempt: Option<i64>,
    pub last_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// The grid and what is judged against it.
#[derive(Debug)]
pub struct Data {
    pub resampler: Resampler,
    pub grid: Grid,
    pub watch: Watch,
    /// The forecast new bins are judged against: re-anchored every
    /// `judge_every` bins, so a sustained change stays outside it for a
    /// while instead of being absorbed by the next one-step-ahead forecast.
    pub(super) judge: Option<Forecast>,
    pub(super) unsaved: usize,
}

impl Data {
    /// Moves new samples onto the grid; each completed bin is judged
    /// against the anchored forecast (see [`Data::judge`]), re-anchored on
    /// `latest` (published before the bin was seen) when it runs out.
    fn ingest(
        &mut self,
        name: &str,
        samples: Vec<(u64, f64)>,
        latest: Option<&Forecast>,
        settings: &ForecastSettings,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let reanchor = settings.judge_every.min(settings.horizon) as i64;
        for (t, v) in self.resampler.feed(samples) {
            let lead = self.judge.as_ref().map(|j| (t - j.start) / j.step.max(1));
            if lead.is_none_or(|l| !(0..reanchor).contains(&l)) {
                self.judge = latest.cloned();
            }
            if let Some(c) = self.watch.observe(name, t, v, self.judge.as_ref()) {
                changes.push(c);
            }
            self.grid.push(t, v);
            self.unsaved += 1;
        }
        if let Some(first) = self.grid.first() {
            self.watch.prune(first);
        }
        changes
    }

    fn snapshot(&self, name: &str) -> Result<Snapshot, ForecastError> {
        let series = self.grid.series(name)?;
        let weights = self
            .watch
            .weights(series.start, series.step, &series.imputed);
        Ok(Snapshot { series, weights })
    }
}

/// A regular series ending at the newest bin, with its training weights.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub series: Series,
    pub weights: Vec<f64>,
}

impl Snapshot {
    pub fn input(&self) -> Input<'_> {
        Input::from_series(&self.series).with_weights(&self.weights)
    }
}

/// One forecast metric.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    pub dir: PathBuf,
    pub(super) model: RwLock<Option<Arc<Forecaster>>>,
    pub(super) published: RwLock<Arc<Published>>,
    pub(super) data: Mutex<Data>,
    pub(super) training: Mutex<Training>,
}

impl Slot {
    pub fn model(&self) -> Option<Arc<Forecaster>> {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn published(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn training(&self) -> Training {
        self.training
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The grid as it stands (copied out, so the caller may fit on it).
    pub fn snapshot(&self) -> Result<Snapshot, ForecastError> {
        self.data().snapshot(&self.name)
    }

    fn publish(&self, p: Published) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
    }
}

/// The forecasting service; see the module docs.
#[derive(Debug)]
pub struct Service {
    pub settings: ForecastSettings,
    pub server_id: String,
    /// Grid points a metric needs before its first training.
    pub need: usize,
    pub slots: Vec<Slot>,
    events: Mutex<VecDeque<AnomalyEvent>>,
    /// Tells the refresher which metric has a new model.
    pub(super) wake: Mutex<Option<mpsc::Sender<usize>>>,
    /// While set, training waits: before a metric's run and between the
    /// folds of one (a CPU budget sets it; nice alone is not a budget).
    pub hold: Arc<AtomicBool>,
}

impl Service {
    /// Loads each metric's saved model and grid from `settings.dir`.
    pub fn new(settings: ForecastSettings, server_id: impl Into<String>) -> Self {
        let need = super::trainer::need_points(&settings);
        let slots = settings
            .metrics
            .iter()
            .map(|m| store::load_slot(&settings, m))
            .collect();
        Self {
            settings,
            server_id: server_id.into(),
            need,
            slots,
            events: Mutex::new(VecDeque::new()),
            wake: Mutex::new(None),
            hold: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn slot(&self, metric: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == metric)
    }

    /// The anomaly events kept, oldest first.
    pub fn events(&self) -> Vec<AnomalyEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// One refresher step for every metric: `samples` reads a metric's
    /// history as `(unix ms, value)`; `now` is unix seconds.
    pub fn refresh_all(&self, source: &dyn super::Source, now: i64) {
        for slot in &self.slots {
            let fresh = source.samples(&slot.name);
            self.refresh(slot, fresh, now);
        }
    }

    /// Moves new samples onto the grid, judges each new bin against the
    /// forecast published before it, then forecasts from the new grid.
    pub fn refresh(&self, slot: &Slot, samples: Vec<(u64, f64)>, now: i64) {
        let started = Instant::now();
        let before = slot.published();
        let (changes, snapshot, unsaved, watch) = {
            let mut d = slot.data();
            let changes = d.ingest(
                &slot.name,
                samples,
                before.forecast.as_ref(),
                &self.settings,
            );
            let stale = d
                .grid
                .last()
                .is_some_and(|l| now - l > (self.settings.max_gap as i64 + 2) * self.settings.step);
            let watch = (d.watch.anomalous, d.watch.score, d.watch.events);
            let snapshot = (!stale).then(|| d.snapshot(&slot.name));
            (changes, snapshot, d.unsaved, watch)
        };
        self.record(changes);
        let mut next = self.forecast(slot, snapshot);
        (next.anomalous, next.anomaly_score, next.anomalies) = watch;
        next.refresh_seconds = started.elapsed().as_secs_f64();
        slot.publish(next);
        if unsaved >= SAVE_EVERY
            && let Err(error) = slot.save_history()
        {
            tracing::warn!(%error, metric = %slot.name, dir = %slot.dir.display(), "Saving the forecast history failed");
        }
    }

    fn forecast(
        &self,
        slot: &Slot,
        snapshot: Option<Result<Snapshot, ForecastError>>,
    ) -> Published {
        let model = slot.model();
        let mut p = Published {
            model: model
                .as_ref()
                .map(|m| (m.selection.label(), m.selection.reason.clone())),
            ..Published::default()
        };
        let snapshot = match snapshot {
            None => {
                p.error = Some("history is stale: waiting for new points".into());
                return p;
            }
            Some(Err(e)) => {
                p.error = Some(e.to_string());
                return p;
            }
            Some(Ok(s)) => s,
        };
        p.points = snapshot.series.len();
        let Some(model) = model else { return p };
        let input = snapshot.input();
        match model.forecast_explained(&input, self.settings.horizon) {
            Ok((f, shift)) => {
                if let (Some(shift), Some((label, reason))) = (shift, p.model.as_mut()) {
                    *label = format!("{label} -> following a shift");
                    *reason = format!("{}; trained: {reason}", shift.describe(&input));
                }
                p.forecast = Some(f);
            }
            Err(e) => p.error = Some(e.to_string()),
        }
        p
    }

    /// Logs the changes and keeps them in the bounded event ring.
    fn record(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut ring = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            let e = match c {
                Change::Began(e) => {
                    tracing::warn!(metric = %e.metric, at = e.start, value = e.peak_value, p10 = e.expected[0], p90 = e.expected[2], score = e.peak_score, "Forecast anomaly began");
                    if ring.len() >= self.settings.events.max(1) {
                        ring.pop_front();
                    }
                    ring.push_back(e);
                    continue;
                }
                Change::Grew(e) => e,
                Change::Ended(e) => {
                    tracing::info!(metric = %e.metric, start = e.start, end = e.end, points = e.points, "Forecast anomaly ended");
                    e
                }
            };
            if let Some(slot) = ring
                .iter_mut()
                .rev()
                .find(|x| x.metric == e.metric && x.start == e.start)
            {
                *slot = e;
            }
        }
    }

    /// Saves every grid with unsaved bins (at shutdown).
    pub fn save_all(&self) {
        for slot in self.slots.iter().filter(|s| s.data().unsaved > 0) {
            if let Err(error) = slot.save_history() {
                tracing::warn!(%error, metric = %slot.name, "Saving the forecast history failed");
            }
        }
    }
}
