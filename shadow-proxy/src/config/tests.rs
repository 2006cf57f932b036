//! Parsing the agent's TOML: every table, defaults, and errors that name file, key and reason.

use super::*;

#[test]
fn agent_telemetry_and_forecast_tables_are_typed_and_named_in_errors() {
    use std::time::Duration;

    let c = Config::parse(
        "a.toml",
        "[agent]\nadmin = \"127.0.0.1:9000\"\ninterval = \"500ms\"\nhistory_len = 600\n\
         [telemetry]\ntcp_bytes = false\n\
         [forecast]\nhorizon = 30\nstep = \"2m\"\nmodels = [\"ets\", \"lstm\"]\n",
    )
    .expect("valid");
    assert_eq!(c.agent.admin, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(c.agent.interval, Some(Duration::from_millis(500)));
    assert_eq!(c.agent.history_len, Some(600));
    assert_eq!(c.agent.pid_file, None, "unset keys stay unset");
    assert_eq!(c.telemetry.tcp_bytes, Some(false));
    assert_eq!(c.forecast.horizon, Some(30));
    assert_eq!(c.forecast.step, Some(Duration::from_secs(120)));
    assert_eq!(c.forecast.models.as_ref().map(Vec::len), Some(2));
    assert!(c.services.is_empty(), "no [[service]]: telemetry only");
    for (text, key) in [
        ("[agent]\ninterval = \"soon\"\n", "agent.interval"),
        ("[agent]\nadmin = \"nowhere\"\n", "agent.admin"),
        ("[forecast]\nmodels = [\"tbats\"]\n", "forecast.models"),
        ("[forecast]\nhorizon = 0\n", "forecast.horizon"),
    ] {
        let e = Config::parse("bad.toml", text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("bad.toml: {key}: ")),
            "{text:?}: {e}"
        );
    }
    let e = Config::parse("bad.toml", "[agent]\nintervall = \"1s\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("intervall"), "{e}");
}

const GOOD: &str = r#"
[capture]
interface = "veth0"

[[service]]
name = "web"
port = 8080
percent = 12.5
targets = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
allow_methods = ["post"]
sample_key = { header = "X-User", percent = 50 }

[[service.route]]
path_prefix = "/orders"
allow_methods = ["PUT"]

[[service.rewrite]]
path_prefix = "/v1/"
replace_with = "/v2/"
"#;

#[test]
fn parses_a_full_service() {
    let c = Config::parse("shadow.toml", GOOD).unwrap();
    assert_eq!(c.capture.attach, AttachMode::Both);
    let s = &c.services[0];
    assert_eq!(s.per_ten_thousand, 1250);
    assert_eq!(s.targets.len(), 2);
    assert_eq!(s.allow_methods, vec!["POST"]);
    assert_eq!(
        s.sample_key,
        Some((SampleKey::Header("x-user".into()), 5000))
    );
    assert!(s.redact_headers.contains(&"authorization".to_owned()));
    assert_eq!(s.shadow_header, "X-Shadow-Request");
    assert!(s.rewrite_host);
}

#[test]
fn errors_name_file_key_and_reason() {
    let bad = GOOD.replace("percent = 12.5", "percent = 120");
    let e = Config::parse("shadow.toml", &bad).unwrap_err().to_string();
    assert_eq!(e, "shadow.toml: service[0].percent: 120 is outside 0-100");
    let bad = GOOD.replace("http://127.0.0.1:9002", "ftp://x");
    let e = Config::parse("shadow.toml", &bad).unwrap_err().to_string();
    assert!(e.contains("service[0].targets"), "{e}");
    let e = Config::parse("s.toml", "[capture]\nbogus = 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
    let e = Config::parse("s.toml", "[capture]\nring_mib = 3\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "s.toml: capture.ring_mib: 3 is not a power of two from 1 to 1024"
    );
    let c = Config::parse("s.toml", "[capture]\nring_mib = 32\n").unwrap();
    assert_eq!(c.capture.ring_mib, 32);
}

#[test]
fn decoded_body_cap_defaults_to_8_mib_and_is_settable() {
    let c = Config::parse("s.toml", GOOD).unwrap();
    assert_eq!(
        c.services[0].diff.options.max_decoded_bytes,
        crate::diff::DEFAULT_MAX_DECODED
    );
    let set = format!("{GOOD}\n[service.diff]\nmax_decoded_bytes = 65536\n");
    let c = Config::parse("s.toml", &set).unwrap();
    assert_eq!(c.services[0].diff.options.max_decoded_bytes, 65536);
    let zero = format!("{GOOD}\n[service.diff]\nmax_decoded_bytes = 0\n");
    let e = Config::parse("s.toml", &zero).unwrap_err().to_string();
    assert_eq!(
        e,
        "s.toml: service[0].diff.max_decoded_bytes: must be at least 1"
    );
}

#[test]
fn route_cap_defaults_and_is_settable() {
    let c = Config::parse("s.toml", GOOD).unwrap();
    assert_eq!(
        c.services[0].diff.max_routes,
        crate::diff::route::DEFAULT_MAX_ROUTES
    );
    let set = format!("{GOOD}\n[service.diff]\nmax_routes = 10\n");
    let c = Config::parse("s.toml", &set).unwrap();
    assert_eq!(c.services[0].diff.max_routes, 10);
}

#[test]
fn percent_resolution_is_a_hundredth() {
    assert_eq!(percent_to_hundredths(0.01), Ok(1));
    assert_eq!(percent_to_hundredths(100.0), Ok(10_000));
    assert!(percent_to_hundredths(0.001).is_err());
    assert!(percent_to_hundredths(-1.0).is_err());
    assert!(percent_to_hundredths(f64::NAN).is_err());
}
