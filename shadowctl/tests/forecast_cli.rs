#![cfg(feature = "offline")]
//! `shadowctl forecast train` and `shadowctl forecast --model` offline, on
//! a real NAB file (AWS CloudWatch CPU, 5-minute steps), and their answers
//! to bad input. CI has `../shared/data` beside the checkout; without it
//! these tests fail rather than pass unseen.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn nab_cpu() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/nab/realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv");
    assert!(
        path.exists(),
        "{} is missing: the forecast CLI tests need the shared data set beside the checkout (<repo>/../shared/data)",
        path.display()
    );
    path
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shadowctl-forecast-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn shadowctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shadowctl"))
        .args(["forecast"])
        .args(args)
        .output()
        .expect("runs shadowctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn trains_on_a_nab_file_then_forecasts_from_the_saved_model() {
    let (csv, dir) = (nab_cpu(), temp("nab"));
    let model = dir.join("cpu.model");
    let out = shadowctl(&[
        "train",
        "--csv",
        path(&csv),
        "--horizon",
        "12",
        "--models",
        "seasonal_naive,ets,mstl",
        "--out",
        path(&model),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "train failed: {stderr}");
    assert!(
        stderr.contains("backtesting mstl: fold 2/2") && stderr.contains("done"),
        "progress on stderr: {stderr}"
    );
    assert!(stdout.contains("4032 points, 5m steps"), "{stdout}");
    assert!(
        stdout.contains("model:") && stdout.contains("why:      lowest recency-weighted MASE"),
        "{stdout}"
    );
    assert!(model.join("forecaster.json").exists(), "model saved");

    let out = shadowctl(&[
        "--model",
        path(&model),
        "--csv",
        path(&csv),
        "--horizon",
        "1h",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "forecast failed: {}",
        text(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["metric"], "ec2_cpu_utilization_5f5533");
    assert!(
        v["reason"].as_str().unwrap().contains("rolling-origin"),
        "{v}"
    );
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 12, "1h of 5-minute steps");
    // The file ends at 2014-02-28 14:22:00 UTC; the forecast starts a step later.
    assert_eq!(points[0]["timeframe"]["at"], 1_393_597_320 + 300);
    assert_eq!(points[11]["timeframe"]["ahead"], 3600);
    for p in points {
        let (lo, mid, hi) = (
            p["confidence_interval"]["lower"].as_f64().unwrap(),
            p["predicted_value"].as_f64().unwrap(),
            p["confidence_interval"]["upper"].as_f64().unwrap(),
        );
        assert!(lo <= mid && mid <= hi && (0.0..150.0).contains(&mid), "{p}");
    }

    let out = shadowctl(&[
        "--model",
        path(&model),
        "--csv",
        path(&csv),
        "--horizon",
        "3",
    ]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ec2_cpu_utilization_5f5533: model "),
        "{table}"
    );
    assert!(
        lines[1].contains("P10") && lines[1].contains("P90"),
        "{table}"
    );
    assert_eq!(lines.len(), 5, "header, column names and 3 rows: {table}");
    assert!(
        lines[2].starts_with("2014-02-28 14:27:00") && lines[2].contains("5m"),
        "{table}"
    );

    let out = shadowctl(&[
        "--model",
        path(&model),
        "--csv",
        path(&csv),
        "--horizon",
        "13",
    ]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "beyond the trained horizon is bad usage: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("beyond the 12"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_one_clear_line_and_an_exit_code() {
    let dir = temp("bad");
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let rows = |n: usize| {
        (0..n)
            .map(|i| format!("{},{}\n", 1_400_000_000 + i * 60, i % 7))
            .collect::<String>()
    };
    let nan = write(
        "nan.csv",
        &(0..100)
            .map(|i| format!("{},NaN\n", 1_400_000_000 + i * 60))
            .collect::<String>(),
    );
    let off = write(
        "off.csv",
        &format!("timestamp,value\n{}1400006030,1\n", rows(100)),
    );
    let short = write("short.csv", &format!("timestamp,value\n{}", rows(20)));
    let missing = dir.join("missing.csv");
    let cases: [(&Path, &str); 4] = [
        (&missing, "No such file"),
        (&nan, "all 100 values are missing"),
        (&off, "off the 60 s grid"),
        (
            &short,
            "too short a history: need at least 26 points, got 20",
        ),
    ];
    for (csv, expected) in cases {
        let out = shadowctl(&[
            "train",
            "--csv",
            path(csv),
            "--horizon",
            "12",
            "--models",
            "seasonal_naive,ets",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", csv.display());
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{}: expected {expected:?} in {stderr}",
            csv.display()
        );
    }
    let out = shadowctl(&["train", "--csv", path(&short), "--models", "tbats"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown model \"tbats\""),
        "{}",
        text(&out.stderr)
    );
    let out = shadowctl(&["--model", path(&dir.join("nothing")), "--csv", path(&short)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("forecaster.json"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real file made messy the way exports are: a repeated timestamp, rows
/// out of order, a missing value and a 31-step gap. It trains, and the
/// summary says what was done; `--max-gap` interpolates the gap instead.
#[test]
fn a_messy_real_file_trains_and_says_what_was_imputed() {
    let dir = temp("messy");
    let text_in = std::fs::read_to_string(nab_cpu()).unwrap();
    let mut lines: Vec<String> = text_in.lines().map(str::to_owned).collect();
    let header = lines.remove(0);
    // 31 rows gone in the middle: a 31-step gap.
    lines.drain(2000..2031);
    // One row twice, two rows swapped, one value missing.
    let dup = lines[100].clone();
    lines.insert(101, dup);
    lines.swap(300, 301);
    let (ts, _) = lines[500].split_once(',').unwrap();
    lines[500] = format!("{ts},");
    let csv = dir.join("messy.csv");
    std::fs::write(&csv, format!("{header}\n{}\n", lines.join("\n"))).unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--csv",
            path(&csv),
            "--horizon",
            "12",
            "--models",
            "seasonal_naive,ets",
        ];
        args.extend_from_slice(extra);
        let model = dir.join("m");
        args.extend_from_slice(&["--out", path(&model)]);
        let out = shadowctl(&args);
        assert!(out.status.success(), "train failed: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = train(&[]);
    let input = out
        .lines()
        .find(|l| l.starts_with("input:"))
        .unwrap_or_else(|| panic!("no input line: {out}"));
    for want in [
        "1 missing values",
        "1 points out of order sorted",
        "1 repeated timestamps averaged",
        "1 short gaps interpolated (1 points)",
        "1 long gaps masked out of training (31 points)",
        "longest gap 31 steps",
    ] {
        assert!(input.contains(want), "{want:?} not in {input:?}");
    }
    assert!(
        out.contains("4032 points"),
        "the grid is whole again: {out}"
    );
    let out = train(&["--max-gap", "31"]);
    assert!(
        out.contains("2 short gaps interpolated (32 points)") && !out.contains("masked"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
