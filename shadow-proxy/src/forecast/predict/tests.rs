use super::*;

fn push(h: &mut History, t: i64, rate: f64, errors: f64, p99: f64) {
    let ms = t as u64 * 1000;
    h.push(ms, "web.rate", rate);
    h.push(ms, "web.error_rate", errors);
    h.push(ms, "web.p99_latency_ms", p99);
    h.push(ms, "web[GET /a].rate", rate);
    h.push(ms, "block.slow_ios_per_second", 0.0);
}

fn scope<'a>(a: &'a PredictAnswer, name: &str) -> &'a FailureAnswer {
    a.scopes.iter().find(|s| s.name == name).expect("scope")
}

#[test]
fn levels_rise_with_the_signals_and_say_why() {
    let p = Predictor::new(PredictSettings::default(), "h1");
    let mut h = History::new("h1", 4096, 64);
    for t in 0..30 {
        push(&mut h, t * 5, 100.0, 0.0, 50.0);
        p.update(&h, None, None, t * 5);
    }
    let a = p.latest().unwrap();
    assert_eq!(a.scopes.len(), 2, "the host and web: {a:?}");
    assert_eq!(scope(&a, "web").level, Level::Ok);
    assert!(scope(&a, "h1").probability < 0.01);
    assert!(p.events().is_empty(), "{:?}", p.events());
    // p99 ten times its usual and 30 % of requests failing.
    push(&mut h, 150, 100.0, 0.3, 500.0);
    p.update(&h, None, Some(0.0), 150);
    let a = p.latest().unwrap();
    let web = scope(&a, "web");
    assert_eq!(web.level, Level::Warn, "{web:?}");
    assert_eq!(web.signals[0].signal, "latency", "{web:?}");
    assert!(web.signals[0].detail.contains("usually 50.0 ms"), "{web:?}");
    assert_eq!(web.signals[1].signal, "error_rate");
    // The host carries its worst service.
    assert!(scope(&a, "h1").probability >= web.probability - 1e-9);
    let events = p.events();
    assert_eq!(events.len(), 2, "host and web went to warn: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.from == Level::Ok && e.to == Level::Warn)
    );
    assert!(events[1].reason.starts_with("latency +"), "{events:?}");
}

#[test]
fn its_own_failures_teach_it() {
    let settings = PredictSettings {
        horizon_s: 60,
        ..PredictSettings::default()
    };
    let p = Predictor::new(settings, "h1");
    let mut h = History::new("h1", 4096, 64);
    let before = p.model.lock().unwrap().weights;
    let mut t = 0;
    // Quiet, then the p99 climbs for a minute, then the service fails.
    for round in 0..3 {
        for _ in 0..200 {
            push(&mut h, t, 100.0, 0.0, 50.0);
            p.update(&h, None, None, t);
            t += 5;
        }
        for i in 0..12 {
            push(&mut h, t, 100.0, 0.0, 50.0 * (1.0 + i as f64));
            p.update(&h, None, None, t);
            t += 5;
        }
        for _ in 0..2 {
            push(&mut h, t, 100.0, 0.9, 900.0);
            p.update(&h, None, None, t);
            t += 5;
        }
        assert!(round < 3);
    }
    let m = p.model.lock().unwrap().clone();
    assert!(m.failures > 0, "no failure learnt: {m:?}");
    assert!(
        m.weights[3] > before[3],
        "latency preceded every failure: {:?} -> {:?}",
        before,
        m.weights
    );
}
