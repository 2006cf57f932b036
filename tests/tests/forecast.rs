//! Forecasting in a real agent, telemetry only: the control API answers
//! without shadowing, a metric trains once enough history exists, the
//! forecast and the Prometheus series appear, and a restarted agent serves
//! at once from the model and grid it saved. A 1 s grid and a horizon of 3
//! keep it short (the first training needs 2 folds x 3 + 2 = 8 points).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use shadow_tests::{Agent, built_binary, kernel_test};

const METRIC: &str = "host.cpu_utilisation";

fn start(dir: &Path) -> Agent {
    let metrics = format!("{METRIC},host.memory_utilisation");
    Agent::start_with(
        dir.to_path_buf(),
        &[
            "--forecast-step",
            "1s",
            "--forecast-horizon",
            "3",
            "--forecast-models",
            "seasonal_naive,ets",
            "--forecast-metrics",
            &metrics,
        ],
    )
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

fn shadowctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(built_binary("shadowctl"))
        .arg("--control")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .expect("runs shadowctl")
}

/// Asks for the forecast until it is served or `timeout` passes.
fn wait_forecast(dir: &Path, timeout: Duration) -> (serde_json::Value, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut refusals = Vec::new();
    loop {
        let out = shadowctl(dir, &["forecast", METRIC, "--json"]);
        if out.status.success() {
            return (
                serde_json::from_slice(&out.stdout).expect("forecast JSON"),
                refusals,
            );
        }
        refusals.push(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        assert!(
            Instant::now() < deadline,
            "no forecast in {timeout:?}: {refusals:?}\n{}",
            log_of(dir)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn telemetry_only_agent_trains_serves_exports_and_restarts_warm() {
    let Some(_kernel) = kernel_test("telemetry_only_agent_trains_serves_exports_and_restarts_warm")
    else {
        return;
    };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("shadow-test-forecast-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut agent = start(&dir);

    let (answer, refusals) = wait_forecast(&dir, Duration::from_secs(40));
    assert!(
        refusals
            .first()
            .is_some_and(|r| r.contains("not trained yet: need 8 points")),
        "{refusals:?}"
    );
    assert_eq!(answer["metric"], METRIC);
    let points = answer["points"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{answer}");
    assert_eq!(points[2]["timeframe"]["ahead"], 3);
    let mirror = shadowctl(&dir, &["mirror", "status"]);
    assert_eq!(mirror.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&mirror.stderr).contains("no services are shadowed"),
        "{mirror:?}"
    );
    let list = shadowctl(&dir, &["forecast"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("ready"),
        "{list:?}"
    );

    // The poller exports what was published by its last interval.
    let exported = |page: &str, (start, end): &(&str, &str)| {
        page.lines()
            .any(|l| l.starts_with(start) && l.contains(METRIC) && l.ends_with(end))
    };
    let wants = [
        ("shadow_forecast_model_info{", "} 1"),
        ("shadow_forecast_trainings_total{", "result=\"ok\"} 1"),
        ("shadow_forecast_anomaly{", "} 0"),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = agent.get("/metrics");
        let missing: Vec<_> = wants.iter().filter(|w| !exported(&page, w)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} for {METRIC} not in:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let api = agent.get(&format!("/api/v1/forecast/{METRIC}?horizon=2"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&api).unwrap()["points"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let status = agent
        .proc
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", log_of(&dir));
    let saved = dir.join("forecast").join(METRIC);
    assert!(
        saved.join("forecaster.json").exists() && saved.join("history.csv").exists(),
        "model and grid saved in {}",
        saved.display()
    );

    // Lines, not fields: the log has ANSI colours around field names.
    let trained = |log: &str| {
        log.lines()
            .filter(|l| l.contains("Forecast model trained") && l.contains(METRIC))
            .count()
    };
    let before = trained(&log_of(&dir));
    assert_eq!(before, 1, "{}", log_of(&dir));
    let _agent = start(&dir);
    let (answer, _) = wait_forecast(&dir, Duration::from_secs(3));
    assert_eq!(answer["points"].as_array().map(Vec::len), Some(3));
    let log = log_of(&dir);
    assert!(log.contains("Forecast model loaded"), "{log}");
    assert_eq!(
        trained(&log),
        before,
        "served from the loaded model, not a new training"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
