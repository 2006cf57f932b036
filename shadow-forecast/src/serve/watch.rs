//! Anomaly detection on the live grid, and its feedback.
//!
//! Two detectors judge each completed bin:
//! - the residual [`Detector`] compares it with the interval that was
//!   forecast for it before it was seen (it needs a forecast);
//! - the streaming contextual-novelty [`detect::Detector`] (the one scored
//!   under NAB's scorer in bench/) learns the series' own sequences of
//!   values and alerts on a continuation it has not seen.
//!
//! The bin is anomalous when either flags it, and its score is the larger
//! of the two. Flagged timestamps are remembered (bounded by the grid they
//! index) and become training weights ([`Watch::weights`]), so the next
//! retrain neither learns the anomaly as normal nor widens its interval
//! around it. A run of flagged bins is one [`AnomalyEvent`]: it opens on
//! the first, grows while they continue and closes on the first normal bin.

use std::collections::BTreeSet;

use crate::{
    Forecast,
    anomaly::{self, Detector, DetectorConfig},
    detect::{self, DetectorSettings},
};

pub use shadow_api::forecast::AnomalyEvent;

/// What an observation changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Began(AnomalyEvent),
    Grew(AnomalyEvent),
    Ended(AnomalyEvent),
}

/// Per-metric detector state.
#[derive(Debug, Clone)]
pub struct Watch {
    detector: Detector,
    novelty: detect::Detector,
    margin: usize,
    flagged: BTreeSet<i64>,
    open: Option<AnomalyEvent>,
    /// The last judged bin was anomalous.
    pub anomalous: bool,
    pub score: f64,
    /// Events begun since the start.
    pub events: u64,
}

impl Watch {
    pub fn new(cfg: DetectorConfig) -> Self {
        Self {
            detector: Detector::new(cfg),
            novelty: detect::Detector::new(DetectorSettings::default()),
            margin: cfg.margin,
            flagged: BTreeSet::new(),
            open: None,
            anomalous: false,
            score: 0.0,
            events: 0,
        }
    }

    /// Judges the actual `value` of bin `t`: the novelty detector always
    /// (bins arrive once each, in time order), the residual detector against
    /// `forecast`, the one published before `t` was seen, where it covers
    /// `t`. Events need that forecast (they carry its expectation).
    pub fn observe(
        &mut self,
        metric: &str,
        t: i64,
        value: f64,
        forecast: Option<&Forecast>,
    ) -> Option<Change> {
        let onset = self.novelty.update(t, value) >= self.novelty.settings().alarm_threshold;
        let novelty = self.novelty.raw();
        let covered = forecast.and_then(|f| {
            let step = f.step.max(1);
            let i = usize::try_from((t - f.start) / step).ok()?;
            ((t - f.start) % step == 0 && i < f.len()).then(|| [f.p10[i], f.p50[i], f.p90[i]])
        });
        let Some(expected) = covered else {
            self.score = novelty;
            return None;
        };
        let obs = self
            .detector
            .observe(value, expected[0], expected[1], expected[2]);
        let score = obs.score.max(novelty);
        (self.anomalous, self.score) = (obs.anomalous || onset, score);
        if !self.anomalous {
            return self.open.take().map(|mut e| {
                e.open = false;
                Change::Ended(e)
            });
        }
        self.flagged.insert(t);
        let event = match self.open.take() {
            Some(mut e) => {
                e.end = t;
                e.points += 1;
                if score >= e.peak_score {
                    (e.peak_at, e.peak_value, e.expected, e.peak_score) =
                        (t, value, expected, score);
                }
                self.open = Some(e.clone());
                return Some(Change::Grew(e));
            }
            None => AnomalyEvent {
                metric: metric.to_owned(),
                start: t,
                end: t,
                points: 1,
                open: true,
                peak_at: t,
                peak_value: value,
                expected,
                peak_score: score,
            },
        };
        self.events += 1;
        self.open = Some(event.clone());
        Some(Change::Began(event))
    }

    /// Remembers a flag read back from disk.
    pub fn flag(&mut self, t: i64) {
        self.flagged.insert(t);
    }

    pub fn is_flagged(&self, t: i64) -> bool {
        self.flagged.contains(&t)
    }

    /// Forgets flags older than `oldest` (the grid no longer holds them).
    pub fn prune(&mut self, oldest: i64) {
        self.flagged = self.flagged.split_off(&oldest);
    }

    /// Training weights for a grid of `len` points from `start`: 0 over
    /// flagged stretches (with the detector's margin) and over `imputed`
    /// points, 1 elsewhere.
    pub fn weights(&self, start: i64, step: i64, imputed: &[bool]) -> Vec<f64> {
        let flags: Vec<bool> = (0..imputed.len())
            .map(|i| self.flagged.contains(&(start + i as i64 * step)))
            .collect();
        let mut w = anomaly::weights(&flags, self.margin);
        for (w, _) in w.iter_mut().zip(imputed).filter(|(_, imp)| **imp) {
            *w = 0.0;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(start: i64, n: usize) -> Forecast {
        Forecast {
            start,
            step: 60,
            p10: vec![9.0; n],
            p50: vec![10.0; n],
            p90: vec![11.0; n],
        }
    }

    #[test]
    fn a_stretch_outside_is_one_event_and_weighted_out() {
        let cfg = DetectorConfig {
            window: 3,
            min_outside: 2,
            margin: 1,
            ..DetectorConfig::default()
        };
        let mut w = Watch::new(cfg);
        let f = flat(0, 10);
        let values = [10.0, 20.0, 20.0, 20.0, 10.0, 10.0];
        let changes: Vec<Option<Change>> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| w.observe("m", i as i64 * 60, v, Some(&f)))
            .collect();
        assert!(changes[..2].iter().all(Option::is_none), "{changes:?}");
        assert!(matches!(&changes[2], Some(Change::Began(e)) if e.start == 120));
        assert!(matches!(&changes[3], Some(Change::Grew(e)) if e.points == 2 && e.end == 180));
        let Some(Change::Ended(e)) = &changes[4] else {
            panic!("the first normal bin ends the event: {changes:?}");
        };
        assert!(!e.open && e.expected == [9.0, 10.0, 11.0], "{e:?}");
        assert_eq!(w.events, 1);
        assert!(
            w.observe("m", 60 * 20, 50.0, Some(&f)).is_none(),
            "past the forecast"
        );
        let imputed = [false, false, false, false, false, false, true];
        assert_eq!(
            w.weights(0, 60, &imputed),
            [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
        w.prune(150);
        assert!(!w.is_flagged(120) && w.is_flagged(180));
    }

    #[test]
    fn a_novel_pattern_inside_the_interval_is_flagged_by_the_novelty_detector() {
        // An interval so wide the residual detector never fires, and a
        // series that repeats a cycle and then jumps to a level it never had
        // (5-minute bins: the novelty detector's two-day warm-up is 576).
        let n = 1200;
        let wide = Forecast {
            start: 0,
            step: 300,
            p10: vec![-1000.0; n],
            p50: vec![10.0; n],
            p90: vec![1000.0; n],
        };
        let mut w = Watch::new(DetectorConfig::default());
        let mut began = None;
        for i in 0..n {
            let v = if i < 1000 {
                10.0 + 5.0 * (std::f64::consts::TAU * (i % 50) as f64 / 50.0).sin()
            } else {
                60.0
            };
            let change = w.observe("m", i as i64 * 300, v, Some(&wide));
            if let Some(Change::Began(e)) = change {
                assert!(i >= 1000, "false alarm at {i}: {e:?}");
                began.get_or_insert(i);
            }
        }
        let at = began.expect("the jump opens an event");
        assert!(at < 1003, "flagged late, at {at}");
        assert!(w.is_flagged(at as i64 * 300));
        // Without a forecast the novelty score still moves, and no event
        // is opened (an event carries the forecast's expectation).
        let mut bare = Watch::new(DetectorConfig::default());
        for i in 0..1000 {
            let v = 10.0 + 5.0 * (std::f64::consts::TAU * (i % 50) as f64 / 50.0).sin();
            assert!(bare.observe("m", i * 300, v, None).is_none());
        }
        assert!(bare.observe("m", 300_000, 60.0, None).is_none());
        assert!(bare.score >= 0.75, "novelty score {}", bare.score);
    }
}
