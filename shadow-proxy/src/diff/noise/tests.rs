//! The noise engine: verdicts, thresholds, learnt noise, bounds and evictions.

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

#[test]
fn routes_past_the_bound_evict_the_least_compared_and_are_counted() {
    let bounds = Bounds {
        max_routes: 3,
        max_fields: 8,
    };
    let mut e = Engine::with_bounds(Thresholds::default(), bounds);
    for i in 0..50 {
        e.record("GET /busy", i, &[]);
    }
    for n in 0..1000u64 {
        e.record(&format!("GET /scan/{n}x"), n, &[d("$.a", "1", "2")]);
    }
    assert_eq!(e.routes.len(), 3);
    assert!(e.routes.contains_key("GET /busy"), "the busy route stays");
    assert!(
        e.routes.contains_key("GET /scan/999x"),
        "the newest is kept"
    );
    assert_eq!(e.evicted_routes, 1000 - 2);
    e.record_noise("GET /noise-only", &[]);
    assert_eq!((e.routes.len(), e.evicted_routes), (3, 999));
}

#[test]
fn fields_past_the_bound_evict_the_rarest_and_are_counted() {
    let bounds = Bounds {
        max_routes: 8,
        max_fields: 4,
    };
    let mut e = Engine::with_bounds(Thresholds::default(), bounds);
    for i in 0..30u64 {
        // A real regression plus a JSON map keyed by ids: one new key
        // per response, which must not crowd out `$.price`.
        let diffs = [
            d("$.price", "10", "11"),
            d(&format!("$.users.u{i}.name"), "a", "b"),
        ];
        e.record("GET /r", i, &diffs);
    }
    let r = &e.routes["GET /r"];
    assert_eq!(r.fields.len(), 4);
    assert_eq!(r.fields["$.price"].diffs, 30);
    assert_eq!(e.evicted_fields, 30 - 3);
    e.record_noise("GET /r", &[d("$.other", "1", "2")]);
    assert_eq!((e.routes["GET /r"].fields.len(), e.evicted_fields), (4, 28));
    let r = e.regressions();
    assert!(r.iter().any(|x| x.path == "$.price"), "{r:?}");
}

#[test]
fn evictions_are_exported_as_a_counter() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let bounds = Bounds {
        max_routes: 1,
        max_fields: 1,
    };
    metrics::with_local_recorder(&recorder, || {
        let mut e = Engine::with_bounds(Thresholds::default(), bounds);
        e.record("GET /a", 1, &[d("$.x", "1", "2"), d("$.y", "1", "2")]);
        e.record("GET /b", 2, &[]);
    });
    let mut counts: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == crate::metrics::names::DIFF_NOISE_EVICTED)
        .map(|(k, _, _, v)| {
            let what = k.key().labels().next().expect("a label").value().to_owned();
            match v {
                DebugValue::Counter(n) => (what, n),
                other => panic!("not a counter: {other:?}"),
            }
        })
        .collect();
    counts.sort();
    assert_eq!(counts, vec![("field".into(), 1), ("route".into(), 1)]);
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
