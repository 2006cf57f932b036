//! The service end to end on a synthetic history with a fast config:
//! collecting, first training, refreshed forecasts, anomalies fed back
//! into a retrain, and a warm restart from the saved model and grid.

use std::path::PathBuf;

use crate::Candidate;

use super::{
    ForecastSettings, Service,
    answer::{Refusal, Status},
    store,
};

const T0: i64 = 1_700_000_040; // a multiple of 60
const STEP: i64 = 60;

fn settings(dir: PathBuf) -> ForecastSettings {
    ForecastSettings {
        dir,
        metrics: vec!["m".into(), "idle".into()],
        step: STEP,
        horizon: 12,
        candidates: vec![Candidate::SeasonalNaive, Candidate::Ets],
        grid_points: 1000,
        max_gap: 3,
        ..ForecastSettings::default()
    }
}

/// A sample every 10 s for bins `from..to`: a 30-bin wave plus a little
/// deterministic noise, `shift` added.
fn samples(from: i64, to: i64, shift: f64) -> Vec<(u64, f64)> {
    let mut seed = 0x9e37_79b9_u64.wrapping_add(from as u64);
    (from * 6..to * 6)
        .map(|k| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            let t = T0 + k * 10;
            let wave = (t as f64 * std::f64::consts::TAU / (30.0 * STEP as f64)).sin();
            ((t * 1000) as u64, 50.0 + 10.0 * wave + noise + shift)
        })
        .collect()
}

fn now_after(bin: i64) -> i64 {
    T0 + bin * STEP
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shadow-forecast-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A service whose metric "m" was trained on bins 0..89 and has a
/// forecast published from bin 89.
fn trained(dir: &std::path::Path) -> Service {
    let svc = Service::new(settings(dir.to_owned()), "host-a");
    let slot = svc.slot("m").expect("configured");
    svc.refresh(slot, samples(0, 90, 0.0), now_after(90));
    assert!(
        svc.train(0, now_after(90)),
        "trains: {:?}",
        svc.status()[0].error
    );
    svc.refresh(slot, samples(90, 91, 0.0), now_after(91));
    svc
}

#[test]
fn collects_then_trains_once_and_serves() {
    let dir = temp_dir("service");
    let svc = Service::new(settings(dir.clone()), "host-a");
    let slot = svc.slot("m").expect("configured");
    assert_eq!(
        svc.need,
        2 * 12 + 2,
        "two folds of twelve after seasonal naive's two points"
    );

    svc.refresh(slot, samples(0, 10, 0.0), now_after(10));
    let (code, msg) = svc.answer("m", None).unwrap_err();
    assert_eq!(code, Refusal::NotReady);
    assert_eq!(
        msg, "not trained yet: need 26 points, have 9",
        "bin 9 is not complete yet"
    );
    assert!(!svc.due(slot, now_after(10)));
    assert_eq!(svc.status()[0].status, Status::Collecting);

    svc.refresh(slot, samples(10, 90, 0.0), now_after(90));
    assert!(svc.due(slot, now_after(90)), "enough points and no model");
    assert!(
        svc.train(0, now_after(90)),
        "trains: {:?}",
        svc.status()[0].error
    );
    assert!(
        slot.dir.join("forecaster.json").exists(),
        "saved under dir/<metric>"
    );
    assert!(!svc.due(slot, now_after(91)), "not again before `every`");
    svc.refresh(slot, samples(90, 91, 0.0), now_after(91));
    let a = svc
        .answer("m", Some("3"))
        .expect("a forecast after training");
    assert_eq!(a.points.len(), 3);
    assert_eq!(
        a.points[0].timeframe.at,
        T0 + 90 * STEP,
        "one step past the newest bin (89)"
    );
    assert_eq!(a.points[2].timeframe.ahead, 3 * STEP);
    assert!(
        a.points
            .iter()
            .all(|p| p.confidence_interval.lower <= p.predicted_value
                && p.predicted_value <= p.confidence_interval.upper)
    );
    assert!(a.reason.contains("rolling-origin"), "{}", a.reason);
    assert_eq!(
        svc.answer("m", Some("13")).unwrap_err().0,
        Refusal::BadHorizon
    );
    assert_eq!(
        svc.answer("nope", None).unwrap_err().0,
        Refusal::UnknownMetric
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn anomalies_are_one_event_fed_back_and_a_restart_is_warm() {
    let dir = temp_dir("anomaly");
    let svc = trained(&dir);
    let slot = svc.slot("m").unwrap();
    // A level shift, one bin per refresh: judged against the forecast
    // anchored before it, it is one event, and flagged bins weigh nothing.
    for b in 91..99 {
        svc.refresh(slot, samples(b, b + 1, 40.0), now_after(b + 1));
    }
    let events = svc.events();
    assert_eq!(events.len(), 1, "one stretch: {events:?}");
    assert!(events[0].open && events[0].points >= 3, "{events:?}");
    assert!(svc.status()[0].anomaly);
    let snap = slot.snapshot().unwrap();
    assert!(
        snap.weights.iter().filter(|w| **w == 0.0).count() >= 3,
        "flagged bins weigh nothing"
    );
    assert!(svc.train(0, now_after(99)), "retrains with the weights");
    assert_eq!(slot.training().ok, 2);

    svc.save_all();
    let saved = store::load_history(&slot.dir).unwrap().expect("grid saved");
    assert!(
        saved.iter().any(|p| p.anomalous),
        "flags saved for the next start"
    );
    drop(svc);
    let warm = Service::new(settings(dir.clone()), "host-a");
    let slot = warm.slot("m").unwrap();
    assert!(slot.model().is_some(), "model loaded");
    warm.refresh(slot, Vec::new(), now_after(99));
    let a = warm
        .answer("m", None)
        .expect("served at once from the loaded model and grid");
    assert_eq!(a.points.len(), 12);
    assert!(
        slot.snapshot().unwrap().weights.contains(&0.0),
        "flags loaded"
    );
    let idle = warm
        .status()
        .into_iter()
        .find(|s| s.metric == "idle")
        .unwrap();
    assert_eq!((idle.status, idle.points), (Status::Collecting, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stale_grid_is_not_forecast_and_a_long_gap_restarts_it() {
    let dir = temp_dir("stale");
    let svc = Service::new(settings(dir.clone()), "h");
    let slot = svc.slot("m").unwrap();
    svc.refresh(slot, samples(0, 40, 0.0), now_after(40));
    assert!(svc.train(0, now_after(40)));
    svc.refresh(slot, Vec::new(), now_after(41));
    assert!(slot.published().forecast.is_some());
    svc.refresh(slot, Vec::new(), now_after(60));
    let p = slot.published();
    assert!(
        p.forecast.is_none() && p.error.as_deref().unwrap_or_default().contains("stale"),
        "{p:?}"
    );
    // Twenty empty bins is more than max_gap (3): the grid starts afresh.
    svc.refresh(slot, samples(60, 63, 0.0), now_after(63));
    assert_eq!(slot.data().grid.span(), 2);
    assert_eq!(
        slot.published().points,
        2,
        "forecast from the new grid only"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
