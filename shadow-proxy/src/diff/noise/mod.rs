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
//! Routes and fields come from captured paths and JSON keys, so both maps
//! are bounded ([`Bounds`]): a new entry past the bound evicts the one with
//! the least evidence (fewest comparisons or differences), and each eviction
//! is counted on the engine and in `shadow_diff_noise_evicted_total`.
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

pub use shadow_api::mirror::{FieldStats, Regression, RouteStats, Verdict};

/// How many routes one engine (one shadow target) and fields one route keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_routes: usize,
    pub max_fields: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_routes: 512,
            max_fields: 256,
        }
    }
}

/// How much a field's statistics rest on (for eviction: the least goes first).
trait Evidence {
    fn evidence(&self) -> u64;
}

impl Evidence for FieldStats {
    fn evidence(&self) -> u64 {
        self.diffs + self.noise_diffs + self.shape_noise
    }
}

impl Evidence for RouteStats {
    fn evidence(&self) -> u64 {
        self.compared + self.noise_compared
    }
}

/// The stats of `path` in `route`, evicting the field with the least
/// evidence first when `max` fields are already kept.
fn field<'r>(
    route: &'r mut RouteStats,
    path: String,
    max: usize,
    evicted: &mut u64,
) -> &'r mut FieldStats {
    {
        if !route.fields.contains_key(&path) && route.fields.len() >= max.max(1) {
            let weakest = route
                .fields
                .iter()
                .min_by_key(|(_, f)| f.evidence())
                .map(|(k, _)| k.clone());
            if let Some(k) = weakest {
                route.fields.remove(&k);
                *evicted += 1;
                metrics::counter!(crate::metrics::names::DIFF_NOISE_EVICTED, "what" => "field")
                    .increment(1);
            }
        }
        route.fields.entry(path).or_default()
    }
}

#[derive(Debug, Default)]
pub struct Engine {
    pub thresholds: Thresholds,
    pub bounds: Bounds,
    pub routes: BTreeMap<String, RouteStats>,
    /// (route, generic path) marked as noise by a user.
    pub marked: BTreeSet<(String, String)>,
    /// Routes dropped to make room for new ones.
    pub evicted_routes: u64,
    /// Fields dropped to make room for new ones.
    pub evicted_fields: u64,
}

impl Engine {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            ..Self::default()
        }
    }

    pub fn with_bounds(thresholds: Thresholds, bounds: Bounds) -> Self {
        Self {
            thresholds,
            bounds,
            ..Self::default()
        }
    }

    /// The stats of `route`, evicting the route with the fewest
    /// comparisons first when `max_routes` routes are already kept.
    fn route(&mut self, route: &str) -> &mut RouteStats {
        if !self.routes.contains_key(route) && self.routes.len() >= self.bounds.max_routes.max(1) {
            let weakest = self
                .routes
                .iter()
                .min_by_key(|(_, r)| r.evidence())
                .map(|(k, _)| k.clone());
            if let Some(k) = weakest {
                self.routes.remove(&k);
                self.evicted_routes += 1;
                metrics::counter!(crate::metrics::names::DIFF_NOISE_EVICTED, "what" => "route")
                    .increment(1);
            }
        }
        self.routes.entry(route.to_owned()).or_default()
    }

    /// One live-vs-shadow comparison of exchange `id` on `route`.
    pub fn record(&mut self, route: &str, id: u64, diffs: &[FieldDiff]) {
        let max_fields = self.bounds.max_fields;
        let mut evicted = 0;
        let r = self.route(route);
        r.compared += 1;
        let mut seen = BTreeSet::new();
        for d in diffs {
            let path = generic_path(&d.path);
            if !seen.insert(path.clone()) {
                continue;
            }
            let f = field(r, path, max_fields, &mut evicted);
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
        self.evicted_fields += evicted;
    }

    /// A comparison whose differences are noise by construction.
    pub fn record_noise(&mut self, route: &str, diffs: &[FieldDiff]) {
        let max_fields = self.bounds.max_fields;
        let mut evicted = 0;
        let r = self.route(route);
        r.noise_compared += 1;
        let paths: BTreeSet<String> = diffs.iter().map(|d| generic_path(&d.path)).collect();
        for p in paths {
            field(r, p, max_fields, &mut evicted).noise_diffs += 1;
        }
        self.evicted_fields += evicted;
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
mod tests;
