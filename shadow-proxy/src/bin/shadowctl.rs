//! `shadowctl`: the command line for a running shadow agent.

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shadow_proxy::{agent::View, client, duration, history::PerformanceData, top};

#[derive(Debug, Parser)]
#[command(version, about = "Talk to a running shadow agent")]
struct Cli {
    /// The agent's admin address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9464",
        env = "SHADOW_ADMIN"
    )]
    admin: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live block-I/O and TCP latency histograms, refreshed in place.
    Top {
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = duration::parse)]
        interval: Duration,
        /// Stop after this many screens (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Print screens one after another instead of redrawing.
        #[arg(long)]
        no_clear: bool,
    },
    /// Print the Prometheus page.
    Metrics,
    /// The forecaster's history: metric names, or one metric's samples.
    History {
        /// Metric name, e.g. host.cpu_utilisation.
        metric: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Metrics => {
            let body = client::get(&cli.admin, "/metrics").await?;
            std::io::stdout().write_all(&body)?;
        }
        Command::History { metric: None } => {
            let body = client::get(&cli.admin, "/api/v1/history").await?;
            let names: Vec<String> = serde_json::from_slice(&body)?;
            for n in names {
                println!("{n}");
            }
        }
        Command::History { metric: Some(m) } => {
            let path = format!("/api/v1/history?metric={}", encode(&m));
            let body = client::get(&cli.admin, &path).await?;
            let points: Vec<PerformanceData> = serde_json::from_slice(&body)?;
            println!("timestamp_ms,server_id,metric,value");
            for p in points {
                println!("{},{},{},{}", p.timestamp, p.server_id, p.metric, p.value);
            }
        }
        Command::Top {
            interval,
            count,
            no_clear,
        } => {
            let mut prev: Option<View> = None;
            let mut shown = 0u64;
            loop {
                let body = client::get(&cli.admin, "/api/v1/snapshot").await?;
                let view: View = serde_json::from_slice(&body)?;
                let screen = top::render(prev.as_ref(), &view, &cli.admin);
                let mut out = std::io::stdout().lock();
                if !no_clear {
                    write!(out, "\x1b[2J\x1b[H")?;
                }
                writeln!(out, "{screen}")?;
                out.flush()?;
                prev = Some(view);
                shown += 1;
                if count.is_some_and(|c| shown >= c) {
                    break;
                }
                tokio::time::sleep(interval).await;
            }
        }
    }
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
