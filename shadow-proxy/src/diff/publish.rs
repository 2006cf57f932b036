//! The diff's counters, with a bounded route label per service.

use crate::metrics::names;

use super::FieldDiff;

/// Routes per service that get their own metric labels; the rest are "other".
pub const MAX_ROUTE_LABELS: usize = 64;

/// The route label for metrics: the first `MAX_ROUTE_LABELS` routes of a
/// service by name, "other" after that.
fn route_label(service: &str, route: &str) -> String {
    use std::sync::{Mutex, OnceLock};
    static ROUTES: OnceLock<Mutex<std::collections::BTreeSet<(String, String)>>> = OnceLock::new();
    let known = ROUTES.get_or_init(Default::default);
    {
        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
        let key = (service.to_owned(), route.to_owned());
        let per_service = k.iter().filter(|(s, _)| s == service).count();
        if k.contains(&key) || per_service < MAX_ROUTE_LABELS {
            k.insert(key);
            route.to_owned()
        } else {
            "other".to_owned()
        }
    }
}

/// Counts one live-vs-shadow comparison (bounded labels).
pub fn publish(service: &str, route: &str, diffs: &[FieldDiff]) {
    let l = [
        ("service", service.to_owned()),
        ("route", route_label(service, route)),
    ];
    metrics::counter!(names::DIFF_COMPARED, &l).increment(1);
    if !diffs.is_empty() {
        metrics::counter!(names::DIFF_DIFFERING, &l).increment(1);
    }
}

/// Counts one noise comparison, and whether it differed.
pub fn publish_noise(service: &str, route: &str, diffs: &[FieldDiff]) {
    let l = [
        ("service", service.to_owned()),
        ("route", route_label(service, route)),
    ];
    metrics::counter!(names::DIFF_NOISE_COMPARED, &l).increment(1);
    if !diffs.is_empty() {
        metrics::counter!(names::DIFF_NOISE, &l).increment(1);
    }
}
