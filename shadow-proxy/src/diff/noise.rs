//! Noise learnt from live traffic, and the verdict.
//!
//! A field is reported as a regression only when its live-vs-shadow
//! difference rate beats its noise rate by both thresholds (Diffy's
//! defaults: relative 20 %, absolute 0.03 %) over at least `min_samples`
//! comparisons. Noise comes from three places: values whose two sides have
//! the same volatile shape (RFC 3339 times, UUIDs, hex ids) are counted as
//! noise, not difference; comparisons the caller knows are noise-only (the
//! same request sent twice, a baseline target running the live version, or
//! two live responses to repeated GETs) feed [`Engine::record_noise`]; and
//! users mark fields as noise by hand.
//!
//! Why this test: it is the rule Diffy users already trust, and it needs no
//! distributional assumption; the minimum sample count guards the small-n
//! case where a rate difference means nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{FieldDiff, json::generic_path};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub relative: f64,
    pub absolute: f64,
    pub min_samples: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            relative: 0.20,
            absolute: 0.0003,
            min_samples: 20,
        }
    }
}

/// A value that differs on every response by nature.
pub fn volatile_shape(v: &str) -> Option<&'static str> {
    let b = v.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
    {
        return Some("rfc3339");
    }
    if v.len() == 36
        && v.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
    {
        return Some("uuid");
    }
    if v.len() >= 16 && v.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some("hex_id");
    }
    None
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldStats {
    /// Live-vs-shadow comparisons in which this field differed.
    pub diffs: u64,
    /// Noise-only comparisons in which it differed.
    pub noise_diffs: u64,
    /// Live-vs-shadow comparisons where both values had the same volatile shape.
    pub shape_noise: u64,
    /// Up to three exchange ids that showed the difference.
    pub examples: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStats {
    pub compared: u64,
    pub noise_compared: u64,
    pub fields: BTreeMap<String, FieldStats>,
}

/// A reported field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub route: String,
    pub path: String,
    pub diff_rate: f64,
    pub noise_rate: f64,
    pub examples: Vec<u64>,
}

/// What other modules act on (promotion, rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Verdict {
    Healthy { compared: u64 },
    Regressed { regressions: Vec<Regression> },
    Inconclusive { reason: String },
}

#[derive(Debug, Default)]
pub struct Engine {
    pub thresholds: Thresholds,
    pub routes: BTreeMap<String, RouteStats>,
    /// (route, generic path) marked as noise by a user.
    pub marked: BTreeSet<(String, String)>,
}

impl Engine {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            ..Self::default()
        }
    }

    /// One live-vs-shadow comparison of exchange `id` on `route`.
    pub fn record(&mut self, route: &str, id: u64, diffs: &[FieldDiff]) {
        let r = self.routes.entry(route.to_owned()).or_default();
        r.compared += 1;
        let mut seen = BTreeSet::new();
        for d in diffs {
            let path = generic_path(&d.path);
            if !seen.insert(path.clone()) {
                continue;
            }
            let f = r.fields.entry(path).or_default();
            let shape = |v: &Option<String>| v.as_deref().and_then(volatile_shape);
            if shape(&d.live).is_some() && shape(&d.live) == shape(&d.shadow) {
                f.shape_noise += 1;
                continue;
            }
            f.diffs += 1;
            if f.examples.len() < 3 {
                f.examples.push(id);
            }
        }
    }

    /// A comparison whose differences are noise by construction.
    pub fn record_noise(&mut self, route: &str, diffs: &[FieldDiff]) {
        let r = self.routes.entry(route.to_owned()).or_default();
        r.noise_compared += 1;
        let paths: BTreeSet<String> = diffs.iter().map(|d| generic_path(&d.path)).collect();
        for p in paths {
            r.fields.entry(p).or_default().noise_diffs += 1;
        }
    }

    pub fn regressions(&self) -> Vec<Regression> {
        let t = self.thresholds;
        let mut out = Vec::new();
        for (route, r) in &self.routes {
            if r.compared < t.min_samples {
                continue;
            }
            for (path, f) in &r.fields {
                if self.marked.contains(&(route.clone(), path.clone())) {
                    continue;
                }
                let diff_rate = f.diffs as f64 / r.compared as f64;
                // Explicit noise is a rate over noise comparisons, shape
                // noise over live ones: the noise rate is the larger.
                let explicit = f.noise_diffs as f64 / r.noise_compared.max(1) as f64;
                let shape = f.shape_noise as f64 / r.compared as f64;
                let noise_rate = explicit.max(shape);
                if diff_rate - noise_rate > t.absolute
                    && diff_rate > noise_rate * (1.0 + t.relative)
                {
                    out.push(Regression {
                        route: route.clone(),
                        path: path.clone(),
                        diff_rate,
                        noise_rate,
                        examples: f.examples.clone(),
                    });
                }
            }
        }
        out
    }

    pub fn verdict(&self) -> Verdict {
        let compared: u64 = self.routes.values().map(|r| r.compared).sum();
        let regressions = self.regressions();
        if !regressions.is_empty() {
            return Verdict::Regressed { regressions };
        }
        if self
            .routes
            .values()
            .all(|r| r.compared < self.thresholds.min_samples)
        {
            return Verdict::Inconclusive {
                reason: format!(
                    "no route has {} comparisons yet ({compared} in all)",
                    self.thresholds.min_samples
                ),
            };
        }
        Verdict::Healthy { compared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::DiffKind;
    use proptest::prelude::*;

    fn d(path: &str, l: &str, s: &str) -> FieldDiff {
        FieldDiff {
            path: path.into(),
            kind: DiffKind::Changed,
            live: Some(l.into()),
            shadow: Some(s.into()),
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(volatile_shape("2026-11-24T10:00:00Z"), Some("rfc3339"));
        assert_eq!(
            volatile_shape("123e4567-e89b-12d3-a456-426614174000"),
            Some("uuid")
        );
        assert_eq!(volatile_shape("deadbeefcafebabe"), Some("hex_id"));
        assert_eq!(volatile_shape("42"), None);
    }

    #[test]
    fn planted_regression_is_reported_and_noise_is_not() {
        let mut e = Engine::new(Thresholds::default());
        for i in 0..100u64 {
            let mut diffs = vec![
                d(
                    "$.ts",
                    &format!("2026-11-24T10:00:{:02}Z", i % 60),
                    "2026-11-24T10:01:00Z",
                ),
                d(
                    "$.id",
                    "123e4567-e89b-12d3-a456-426614174000",
                    "223e4567-e89b-12d3-a456-426614174000",
                ),
            ];
            if i % 2 == 0 {
                diffs.push(d("$.items[3].price", "10", "11"));
            }
            e.record("GET /cart/{id}", i, &diffs);
        }
        let r = e.regressions();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].path, "$.items[*].price");
        assert!(matches!(e.verdict(), Verdict::Regressed { .. }));
        e.marked
            .insert(("GET /cart/{id}".into(), "$.items[*].price".into()));
        assert!(matches!(e.verdict(), Verdict::Healthy { compared: 100 }));
    }

    #[test]
    fn noise_learnt_from_baseline_suppresses_random_fields() {
        let mut e = Engine::new(Thresholds::default());
        for i in 0..200u64 {
            // A counter that differs half the time, live vs shadow and
            // shadow vs baseline alike: noise.
            let diffs = if i % 2 == 0 {
                vec![d("$.hits", "1", "2")]
            } else {
                vec![]
            };
            e.record("GET /x", i, &diffs);
            e.record_noise("GET /x", &diffs);
        }
        assert!(e.regressions().is_empty(), "{:?}", e.regressions());
    }

    #[test]
    fn too_few_samples_is_inconclusive() {
        let mut e = Engine::new(Thresholds::default());
        e.record("GET /x", 1, &[d("$.a", "1", "2")]);
        assert!(matches!(e.verdict(), Verdict::Inconclusive { .. }));
    }

    proptest! {
        #[test]
        fn injected_change_is_always_reported_once_sampled(n in 20u64..200, every in 1u64..4) {
            let mut e = Engine::new(Thresholds::default());
            for i in 0..n {
                let diffs = if i % every == 0 { vec![d("$.v", "1", "2")] } else { vec![] };
                e.record("GET /r", i, &diffs);
            }
            let r = e.regressions();
            prop_assert_eq!(r.len(), 1);
            prop_assert_eq!(&r[0].path, "$.v");
        }

        #[test]
        fn shape_noise_alone_is_never_reported(n in 20u64..200) {
            let mut e = Engine::new(Thresholds::default());
            for i in 0..n {
                e.record("GET /r", i, &[d("$.at", &format!("2026-01-01T00:00:{:02}Z", i % 60), "2026-01-02T00:00:00Z")]);
            }
            prop_assert!(e.regressions().is_empty());
        }
    }
}
