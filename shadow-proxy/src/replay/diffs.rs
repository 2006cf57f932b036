//! A service's diff statistics: one noise engine (and so one verdict) per
//! shadow target, the fields users marked as noise, and its routes.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{DiffSettings, ServiceConfig};
use crate::diff::{
    FieldDiff,
    noise::{Bounds, Engine, Thresholds},
    route::{self, RouteSet},
};

/// Diff statistics of one service.
pub struct DiffState {
    thresholds: Thresholds,
    bounds: Bounds,
    pub targets: BTreeMap<String, Engine>,
    pub marked: BTreeSet<(String, String)>,
    pub routes: RouteSet,
}

impl DiffState {
    pub fn new(settings: &DiffSettings) -> Self {
        let bounds = Bounds {
            // The service's routes plus the overflow route.
            max_routes: settings.max_routes + 1,
            ..Default::default()
        };
        Self {
            thresholds: settings.thresholds,
            bounds,
            targets: BTreeMap::new(),
            marked: BTreeSet::new(),
            routes: RouteSet::new(settings.max_routes),
        }
    }

    pub fn engine(&mut self, target: &str) -> &mut Engine {
        let (thresholds, bounds, marked) = (self.thresholds, self.bounds, &self.marked);
        self.targets.entry(target.to_owned()).or_insert_with(|| {
            let mut e = Engine::with_bounds(thresholds, bounds);
            e.marked = marked.clone();
            e
        })
    }

    /// The route `method target` is counted under (templates applied,
    /// ids collapsed, capped per service).
    pub fn route(&mut self, cfg: &ServiceConfig, method: &str, target: &str) -> String {
        let r = route::route(method, target, &cfg.diff.route_templates);
        self.routes.bound(&cfg.name, r)
    }

    /// Noise seen on the live side applies to every target.
    pub fn record_noise_all(&mut self, route: &str, diffs: &[FieldDiff]) {
        for e in self.targets.values_mut() {
            e.record_noise(route, diffs);
        }
    }

    pub fn mark(&mut self, route: String, path: String, noise: bool) {
        if noise {
            self.marked.insert((route, path));
        } else {
            self.marked.remove(&(route, path));
        }
        for e in self.targets.values_mut() {
            e.marked = self.marked.clone();
        }
    }
}
