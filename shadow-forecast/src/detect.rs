//! Streaming contextual-novelty anomaly detector.
//!
//! Each value is quantised into a small alphabet whose bin width is learnt
//! during a warm-up period (two days by default, so the range spans two
//! daily cycles whatever the sampling step) and then frozen (values outside the learnt range
//! fall into new bins, so old contexts stay valid). For every context order
//! `0..=max_order` (the previous `k` symbols) the detector asks whether the
//! continuation "context + current symbol" has been seen before. An unseen
//! continuation counts as novel, weighted by how rarely that context has
//! produced new continuations in the past (the PPM "escape" estimate: a noisy
//! context that keeps producing new continuations is not surprising); a
//! context never seen before inherits the weight of its longest seen suffix.
//! The raw score is the mean of these weights over the orders, in `[0, 1]`.
//! No per-stream tuning: the same settings serve every stream, since the bin
//! width comes from each stream's own warm-up range.
//!
//! NAB-style alerting: once the score reaches `alarm_threshold`, the output is
//! held at zero for `rest_points` points, so one anomaly gives one alert at
//! its onset rather than a burst.
//!
//! Memory is bounded: the context tables hold at most `max_contexts` entries
//! each (rarely seen entries are dropped first), the symbol history holds
//! `max_order` symbols.

use std::collections::{HashMap, VecDeque};

/// Settings of [`Detector`].
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// Quantisation levels spanned by the warm-up range, one channel per
    /// entry (the raw scores of the channels are averaged).
    pub resolutions: Vec<u32>,
    /// Longest context, in previous symbols.
    pub max_order: usize,
    /// Time, in the stream's own timestamps (seconds), over which the value
    /// range is learnt (scores are 0 meanwhile).
    pub warmup_s: i64,
    /// At least this many points are learnt, however long they take.
    pub warmup_points: usize,
    /// Score at which an alert is raised and the rest period starts.
    pub alarm_threshold: f64,
    /// Points after an alert during which the output is 0.
    pub rest_points: usize,
    /// Cap on the entries of each context table (memory bound).
    pub max_contexts: usize,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            resolutions: vec![6],
            max_order: 12,
            warmup_s: 2 * 86_400,
            warmup_points: 100,
            alarm_threshold: 0.75,
            rest_points: 120,
            max_contexts: 200_000,
        }
    }
}

/// One quantisation channel: its alphabet and context tables.
#[derive(Debug, Clone)]
struct Channel {
    levels: u32,
    step: f64,
    anchor: f64,
    history: VecDeque<i64>,
    /// Occurrences of "context + symbol".
    seen: HashMap<u64, u32>,
    /// Per context: (occurrences, distinct continuations).
    contexts: HashMap<u64, (u32, u32)>,
}

fn mix(h: u64, v: u64) -> u64 {
    let x = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

impl Channel {
    fn new(levels: u32) -> Self {
        Self {
            levels: levels.max(2),
            step: 0.0,
            anchor: 0.0,
            history: VecDeque::new(),
            seen: HashMap::new(),
            contexts: HashMap::new(),
        }
    }

    fn learn_range(&mut self, lo: f64, hi: f64) {
        self.step = (hi - lo) / f64::from(self.levels - 1);
        self.anchor = lo;
        if !self.step.is_finite() || self.step <= 0.0 {
            self.step = 1e-9 * lo.abs().max(1.0);
        }
    }

    fn symbol(&self, v: f64) -> i64 {
        ((v - self.anchor) / self.step).floor().clamp(-1e9, 1e9) as i64
    }

    /// Novelty of `v` given the recent symbols; then learns it.
    fn novelty(&mut self, v: f64, max_order: usize, cap: usize) -> f64 {
        let sym = self.symbol(v);
        let mut full = mix(0, sym as u64);
        let mut ctx = 0x1234_5678_u64;
        let orders = max_order.min(self.history.len());
        let mut novelty = 0.0;
        let mut weight = 1.0;
        for order in 0..=orders {
            if order > 0 {
                let prev = self.history[self.history.len() - order];
                let tag = (prev as u64).wrapping_add(order as u64 * 1_000_003);
                full = mix(full, tag);
                ctx = mix(ctx, tag);
            }
            let count = self.seen.entry(full).or_insert(0);
            let (occ, distinct) = self.contexts.entry(ctx).or_insert((0, 0));
            if *occ > 0 {
                weight = 1.0 - f64::from(*distinct) / (f64::from(*occ) + 1.0);
            }
            if *count == 0 {
                novelty += weight;
                *distinct = distinct.saturating_add(1);
            }
            *occ = occ.saturating_add(1);
            *count = count.saturating_add(1);
        }
        self.history.push_back(sym);
        if self.history.len() > max_order {
            self.history.pop_front();
        }
        if self.seen.len() > cap {
            self.seen.retain(|_, c| *c > 1);
            if self.seen.len() > cap {
                self.seen.clear();
            }
        }
        if self.contexts.len() > cap {
            self.contexts.retain(|_, c| c.0 > 1);
            if self.contexts.len() > cap {
                self.contexts.clear();
            }
        }
        novelty / (orders + 1) as f64
    }
}

/// Streaming anomaly detector; see the module documentation.
#[derive(Debug, Clone)]
pub struct Detector {
    settings: DetectorSettings,
    channels: Vec<Channel>,
    points: usize,
    /// The first timestamp and the latest one, for the warm-up.
    first: Option<i64>,
    latest: i64,
    lo: f64,
    hi: f64,
    since_alarm: usize,
    raw: f64,
}

impl Detector {
    /// A detector with the given settings.
    pub fn new(settings: DetectorSettings) -> Self {
        let mut res = settings.resolutions.clone();
        if res.is_empty() {
            res.push(6);
        }
        Self {
            channels: res.into_iter().map(Channel::new).collect(),
            settings,
            points: 0,
            first: None,
            latest: i64::MIN,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            since_alarm: usize::MAX,
            raw: 0.0,
        }
    }

    /// The last point's novelty before alerting (0 during warm-up): unlike
    /// [`Detector::update`]'s output it is not held at 0 after an alert, so
    /// it says how unusual the present still is.
    pub fn raw(&self) -> f64 {
        self.raw
    }

    pub fn settings(&self) -> &DetectorSettings {
        &self.settings
    }

    /// Points learnt so far.
    pub fn points(&self) -> usize {
        self.points
    }

    /// One point, in time order; returns the anomaly score in [0, 1].
    ///
    /// The timestamp only times the warm-up (the method works on the
    /// sequence of values), so irregular sampling is accepted; a timestamp
    /// that goes backwards does not extend it. Non-finite values score 0 and
    /// are not learnt.
    pub fn update(&mut self, timestamp: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        self.points = self.points.saturating_add(1);
        let first = *self.first.get_or_insert(timestamp);
        self.latest = self.latest.max(timestamp);
        let warming = self.points <= self.settings.warmup_points
            || self.latest.saturating_sub(first) < self.settings.warmup_s;
        if warming {
            self.lo = self.lo.min(value);
            self.hi = self.hi.max(value);
        }
        let (order, cap) = (self.settings.max_order, self.settings.max_contexts.max(16));
        let mut raw = 0.0;
        for ch in &mut self.channels {
            if warming {
                ch.learn_range(self.lo, self.hi);
            }
            raw += ch.novelty(value, order, cap);
        }
        let raw = (raw / self.channels.len() as f64).clamp(0.0, 1.0);
        if warming {
            return 0.0;
        }
        self.raw = raw;
        let out = if self.since_alarm >= self.settings.rest_points {
            raw
        } else {
            0.0
        };
        self.since_alarm = self.since_alarm.saturating_add(1);
        if out >= self.settings.alarm_threshold {
            self.since_alarm = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform noise in [-0.5, 0.5).
    fn noise(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn seasonal(i: usize) -> f64 {
        10.0 + 5.0 * (std::f64::consts::TAU * (i % 100) as f64 / 100.0).sin()
    }

    #[test]
    fn steady_seasonal_series_stays_low() {
        let mut d = Detector::new(DetectorSettings::default());
        let mut worst: f64 = 0.0;
        for i in 0..5000 {
            let s = d.update(i as i64 * 300, seasonal(i));
            assert!((0.0..=1.0).contains(&s));
            if i >= 1000 {
                worst = worst.max(s);
            }
        }
        assert!(worst < 0.1, "steady seasonal series scored {worst}");
    }

    #[test]
    fn spike_is_scored_high_once() {
        let mut d = Detector::new(DetectorSettings::default());
        let mut rng = 7u64;
        let mut at_spike: f64 = 0.0;
        let mut after: f64 = 0.0;
        for i in 0..3000 {
            let mut v = seasonal(i) + 0.2 * noise(&mut rng);
            if i == 2000 {
                v += 40.0;
            }
            let s = d.update(i as i64 * 300, v);
            if (2000..2003).contains(&i) {
                at_spike = at_spike.max(s);
            } else if (2003..2100).contains(&i) {
                after = after.max(s);
            }
        }
        assert!(at_spike >= 0.75, "spike scored {at_spike}");
        assert!(after < 0.75, "repeated alert {after}");
    }

    #[test]
    fn level_shift_is_detected() {
        let mut d = Detector::new(DetectorSettings::default());
        let mut rng = 11u64;
        let mut best: f64 = 0.0;
        for i in 0..3000 {
            let base = if i < 2000 { 5.0 } else { 15.0 };
            let s = d.update(i as i64 * 120, base + noise(&mut rng) + noise(&mut rng));
            if (2000..2010).contains(&i) {
                best = best.max(s);
            }
        }
        assert!(best >= 0.75, "level shift scored {best}");
    }

    #[test]
    fn memory_stays_bounded_and_bad_input_is_harmless() {
        let settings = DetectorSettings {
            max_contexts: 5000,
            ..DetectorSettings::default()
        };
        let mut d = Detector::new(settings);
        let mut rng = 3u64;
        for i in 0..100_000 {
            let v = match i % 997 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                _ => 100.0 * noise(&mut rng) * noise(&mut rng),
            };
            // Irregular (even repeated or backwards) timestamps are accepted.
            let s = d.update((i as i64 * 37) % 5000, v);
            assert!((0.0..=1.0).contains(&s));
            for ch in &d.channels {
                assert!(ch.seen.len() <= 5000 + 8);
                assert!(ch.contexts.len() <= 5000 + 8);
                assert!(ch.history.len() <= d.settings.max_order);
            }
        }
        let mut flat = Detector::new(DetectorSettings {
            resolutions: Vec::new(),
            ..DetectorSettings::default()
        });
        for i in 0..1000 {
            assert!((0.0..=1.0).contains(&flat.update(i, 1.0)));
        }
        assert!(flat.update(1000, 1e300).is_finite());
    }
}
