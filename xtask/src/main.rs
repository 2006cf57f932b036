//! `cargo xtask`: shadow's orchestration. Never builds the eBPF object itself
//! (shadow-proxy/build.rs does); it installs what a fresh machine lacks,
//! runs the checks and tests, the demo and the benchmarks.

mod demo;
mod imports;
mod setup;
mod util;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "shadow's setup, tests, demo and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, bpf-linker, the BPF toolchain link).
    Setup {
        /// Also install the benchmark tools (wrk, hey, fio, nginx).
        #[arg(long)]
        bench: bool,
    },
    /// Formatting, clippy (user space and eBPF), unit and kernel tests.
    Test,
    /// Start the agent, generate disk and TCP load, show the live histograms.
    Demo {
        /// How long to run; 0 runs until Ctrl-C.
        #[arg(long, default_value = "30", value_parser = parse_secs)]
        duration: Duration,
        /// The agent's admin address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin: String,
    },
    /// Check the agent's import rule (boxes depend one way, no cycles).
    CheckImports,
    /// Check that the forecaster's GPU backend (wgpu) compiles. It needs no
    /// system libraries; CUDA's build downloads LLVM, so it is not checked.
    CheckGpu,
    /// Fuzz the reassembler, the HTTP pairing, body decoding and the JSON
    /// diff (cargo-fuzz, nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Stop a target after this many inputs (libFuzzer's -runs), if it
        /// comes before `--seconds`.
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Forecast evaluation (bench/): rolling-origin backtest on real series
    /// next to statsforecast and Prophet, and the anomaly detector under
    /// NAB's scorer. Writes bench/reports/forecast.md and its plots.
    BenchForecast {
        /// A directory of `timestamp,value` CSV files (searched recursively).
        #[arg(long, default_value = "../shared/data")]
        data: String,
        /// A NAB checkout (github.com/numenta/NAB) for NAB's scorer.
        #[arg(long)]
        nab_repo: Option<String>,
        /// Extra arguments for `shadow-bench forecast`.
        #[arg(last = true)]
        rest: Vec<String>,
    },
    /// Benchmarks (bench/): telemetry overhead, shadowing overhead and completeness.
    Bench {
        /// Seconds per workload run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Attached/detached round pairs.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is not a number of seconds"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { bench } => setup::run(bench),
        Command::Test => test(),
        Command::Demo { duration, admin } => demo::run(duration, &admin),
        Command::Bench { seconds, rounds } => bench(seconds, rounds),
        Command::Fuzz { seconds, runs } => fuzz(seconds, runs),
        Command::CheckImports => check_imports(),
        Command::CheckGpu => util::step("check the forecaster's GPU feature (wgpu)", || {
            util::cargo(&["check", "-p", "shadow-forecast", "--features", "wgpu"])
        }),
        Command::BenchForecast {
            data,
            nab_repo,
            rest,
        } => bench_forecast(&data, nab_repo.as_deref(), &rest),
    }
}

fn test() -> Result<()> {
    let started = std::time::Instant::now();
    setup::run(false)?;
    let tc = setup::bpf_toolchain();
    // `--all` covers every member, shadow-ebpf included.
    util::step("rustfmt", || {
        util::cargo(&["fmt", "--all", "--", "--check"])
    })?;
    util::step("import rule (shadow-proxy boxes)", check_imports)?;
    util::step("clippy (user space)", || {
        util::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    util::step("clippy (eBPF, bpfel-unknown-none)", || {
        util::run(
            "rustup",
            &[
                "run",
                &tc,
                "cargo",
                "clippy",
                "-p",
                "shadow-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "--target-dir",
                "target/bpf-clippy",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    // The GPU backend needs no system libraries to build (wgpu); this keeps
    // the feature compiling. CUDA's build downloads LLVM, so it is not checked.
    util::step("check the forecaster's GPU feature (wgpu)", || {
        util::cargo(&["check", "-p", "shadow-forecast", "--features", "wgpu"])
    })?;
    util::step("build binaries", || {
        util::cargo(&["build", "--workspace", "--bins"])
    })?;
    if std::env::var("SHADOW_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1") {
        println!("note: SHADOW_SKIP_KERNEL_TESTS=1: kernel tests will report SKIPPED");
    }
    util::step("tests (unit and kernel end-to-end)", || {
        util::cargo(&["test", "--workspace", "--no-fail-fast"])
    })?;
    println!("all checks passed in {:.0?}", started.elapsed());
    Ok(())
}

fn check_imports() -> Result<()> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shadow-proxy/src");
    let n = imports::check(&src)?;
    println!(
        "    {n} references between boxes, all in order ({})",
        imports::order_line()
    );
    Ok(())
}

fn fuzz(seconds: u64, runs: Option<u64>) -> Result<()> {
    setup::run(false)?;
    if util::output("cargo", &["fuzz", "--version"]).is_none() {
        util::step("install cargo-fuzz", || {
            util::cargo(&["install", "cargo-fuzz", "--locked", "--version", "0.13.2"])
        })?;
    }
    for target in ["reassembly", "http_pairing", "diff_decode", "json_diff"] {
        util::step(&format!("fuzz {target} for {seconds} s"), || {
            let mut args = vec![
                "+nightly".to_owned(),
                "fuzz".to_owned(),
                "run".to_owned(),
                target.to_owned(),
                "--".to_owned(),
                format!("-max_total_time={seconds}"),
            ];
            args.extend(runs.map(|n| format!("-runs={n}")));
            let status = std::process::Command::new("cargo")
                .args(&args)
                .current_dir("shadow-proxy/fuzz")
                .status()?;
            anyhow::ensure!(status.success(), "fuzz target {target} failed: {status}");
            Ok(())
        })?;
    }
    Ok(())
}

fn bench_forecast(data: &str, nab_repo: Option<&str>, rest: &[String]) -> Result<()> {
    setup::run(true)?;
    util::step("build the benchmark (release)", || {
        util::cargo(&["build", "--release", "-p", "shadow-bench"])
    })?;
    let mut args = vec!["forecast".to_owned(), "--data".to_owned(), data.to_owned()];
    if let Some(r) = nab_repo {
        args.extend(["--nab-repo".to_owned(), r.to_owned()]);
    }
    args.extend(rest.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    util::step("forecast evaluation", || {
        util::run("target/release/shadow-bench", &args)
    })
}

fn bench(seconds: u64, rounds: u32) -> Result<()> {
    setup::run(true)?;
    util::step("build release binaries", || {
        util::cargo(&[
            "build",
            "--release",
            "-p",
            "shadow-proxy",
            "-p",
            "shadowctl",
            "-p",
            "shadow-bench",
        ])
    })?;
    util::step("telemetry overhead benchmark", || {
        util::run(
            "target/release/shadow-bench",
            &[
                "telemetry-overhead",
                "--agent",
                "target/release/shadow-proxy",
                "--seconds",
                &seconds.to_string(),
                "--rounds",
                &rounds.to_string(),
                "--report",
                "bench/reports/telemetry-overhead.md",
            ],
        )
    })?;
    util::step("diff engine benchmark", || {
        util::run(
            "target/release/shadow-bench",
            &[
                "diff",
                "--pairs",
                "10000",
                "--report",
                "bench/reports/diff.md",
            ],
        )
    })?;
    util::step("traffic shadowing benchmark", || {
        util::run(
            "target/release/shadow-bench",
            &[
                "mirror-overhead",
                "--agent",
                "target/release/shadow-proxy",
                "--seconds",
                &seconds.to_string(),
                "--rounds",
                &rounds.to_string(),
                "--report",
                "bench/reports/mirror-overhead.md",
            ],
        )
    })?;
    util::step("inline proxy against nginx mirror", || {
        util::run(
            "target/release/shadow-bench",
            &[
                "inline-proxy",
                "--agent",
                "target/release/shadow-proxy",
                "--seconds",
                &seconds.to_string(),
                "--rounds",
                &rounds.to_string(),
                "--report",
                "bench/reports/inline-proxy.md",
            ],
        )
    })
}
