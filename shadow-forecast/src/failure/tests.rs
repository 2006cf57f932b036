use super::*;

#[test]
fn the_prior_reads_as_documented() {
    let m = FailureModel::default();
    let quiet = m.assess(&Signals::default()).probability;
    assert!((quiet - 0.0041).abs() < 0.0005, "{quiet}");
    let full_now = Signals {
        exhaustion_s: Some(0.0),
        ..Signals::default()
    };
    let a = m.assess(&full_now);
    assert!((a.probability - 0.62).abs() < 0.01, "{}", a.probability);
    assert_eq!(a.contributions[0].0, "exhaustion");
    // Exhaustion an hour away (two horizons) counts for much less.
    let later = Signals {
        exhaustion_s: Some(3600.0),
        ..Signals::default()
    };
    assert!(m.assess(&later).probability < 0.05);
    // Two strong signals reach stage, or cutover.
    let two = Signals {
        anomaly: 1.0,
        error_rate: 0.5,
        ..Signals::default()
    };
    let p = m.assess(&two).probability;
    assert_eq!(Thresholds::default().level(p), Level::Stage, "{p}");
    let hot = Signals {
        anomaly: 1.0,
        hardware: 1.0,
        ..Signals::default()
    };
    let p = m.assess(&hot).probability;
    assert_eq!(Thresholds::default().level(p), Level::Cutover, "{p}");
    // Nonsense input is not a signal.
    let nan = Signals {
        anomaly: f64::NAN,
        latency_ratio: f64::INFINITY,
        ..Signals::default()
    };
    assert!((m.assess(&nan).probability - quiet).abs() < 1e-12);
}

/// Failures that follow slow block I/O (a weak prior weight) and nothing
/// else: learning raises that weight, and the result is calibrated.
#[test]
fn learning_finds_the_signal_that_precedes_failures_and_stays_calibrated() {
    let mut state = 99_u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let truth = |x: &[f64; N]| sigmoid(-4.0 + 2.5 * x[5]);
    let examples: Vec<Example> = (0..4000)
        .map(|_| {
            let s = Signals {
                slow_ios: (uniform() * 5.0).exp_m1() * uniform(),
                anomaly: uniform() * 0.5,
                ..Signals::default()
            };
            let features = s.features(1800.0);
            let failed = uniform() < truth(&features);
            Example { features, failed }
        })
        .collect();
    let mut m = FailureModel::default();
    m.learn(&examples[..3000]);
    assert!(m.weights[5] > 2.0, "block_io weight {:?}", m.weights);
    assert!(
        m.weights[0] < PRIOR.0[0],
        "anomaly did not precede failures here"
    );
    assert_eq!(m.examples, 3000);
    let held: Vec<(f64, bool)> = examples[3000..]
        .iter()
        .map(|e| (m.probability(&e.features), e.failed))
        .collect();
    let (curve, brier, ece) = reliability(&held, 10);
    assert!(ece < 0.05, "ece {ece}: {curve:?}");
    let base = held.iter().filter(|h| h.1).count() as f64 / held.len() as f64;
    assert!(brier < base * (1.0 - base), "no better than the base rate");
}

#[test]
fn incidents_are_read_and_bad_lines_named() {
    let text = "# exported from the pager\ntime,host,component,cause\n\
                2024-03-01 10:00:00,web-1,disk,controller reset, then fsck\n\
                1709200000,web-2,nginx,oom\n";
    let got = parse_incidents(text, "incidents.csv").unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].host, "web-2", "sorted by time");
    assert_eq!(got[1].cause, "controller reset, then fsck");
    let e = parse_incidents("time,host\n", "x.csv")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("x.csv:1: the header"), "{e}");
    let e = parse_incidents("time,host,component,cause\nyesterday,h,c,d\n", "x.csv")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.csv:2: time \"yesterday\""), "{e}");
    let rate = incident_rate(&got, "web-1", Some("disk"), got[1].time + 86_400 * 10);
    assert!((rate - 1.0 / 40.0).abs() < 1e-9, "{rate}");
}

#[test]
fn moments_before_a_failure_are_positive() {
    let l = label(&[0, 100, 200, 300, 400], &[350], 200);
    assert_eq!(l, vec![false, false, true, true, false]);
}
