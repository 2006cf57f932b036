//! `shadowctl`: the command line for a running shadow agent.

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shadow_proxy::{
    api::client,
    forecast::{self, cli::OfflineError},
    host::history::PerformanceData,
    kernel::view::View,
    replay::control::MirrorStatus,
    top,
    util::duration,
};

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
    /// The agent's control socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/shadow/control.sock",
        env = "SHADOW_CONTROL"
    )]
    control: std::path::PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Diff {
    /// Per route: requests compared, regressed fields with rates, example ids; the verdict.
    Summary {
        #[arg(long)]
        json: bool,
    },
    /// One exchange, live and shadow side by side, with its differences.
    Show { id: u64 },
    /// Mark a field of a route as noise (or --unmark).
    Noise {
        service: String,
        /// e.g. "GET /users/{id}".
        route: String,
        /// e.g. "$.items[*].price" or "header.etag".
        path: String,
        #[arg(long)]
        unmark: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Mirror {
    /// Set the share of connections mirrored for a service (0-100, 0.01 steps).
    Set { service: String, percent: f64 },
    /// Sampling rate, counters and coverage of every service.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Capture path counters: perf samples, losses, truncation, reassembly.
    Capture,
    /// Replace a service's rules with a JSON document, e.g.
    /// '{"allow_methods":["POST"],"routes":[{"path_prefix":"/orders","allow_methods":["PUT"]}],"rps_limit":50}'.
    /// Fields: methods, path_prefixes, allow_methods, routes, sample_key, rps_limit.
    Rules { service: String, json: String },
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
    /// Traffic mirroring: rates and status.
    #[command(subcommand)]
    Mirror(Mirror),
    /// Record sampled exchanges to FILE (JSON lines, gzip if it ends in .gz)
    /// for DURATION, then stop.
    Record {
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = "30s", value_parser = duration::parse)]
        duration: Duration,
    },
    /// Replay a recording against a target at N times the recorded pace.
    Replay {
        file: std::path::PathBuf,
        /// Where to send the requests, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        target: String,
        /// Speed factor (2 = twice as fast); 0 sends as fast as possible.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Live vs shadow differences.
    #[command(subcommand)]
    Diff(Diff),
    /// The latest replayed exchanges (JSON), live and shadow side by side.
    Exchanges {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The forecaster's history: metric names, or one metric's samples.
    History {
        /// Metric name, e.g. host.cpu_utilisation.
        metric: Option<String>,
    },
    /// Forecasts: every metric and its model, or one metric's P10/P50/P90;
    /// offline on a CSV file with `train` and `--model DIR --csv FILE`.
    Forecast(ForecastCmd),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ForecastCmd {
    #[command(subcommand)]
    action: Option<ForecastAction>,
    /// Metric name, e.g. host.cpu_utilisation (default: list every metric).
    metric: Option<String>,
    /// How far ahead: steps (12) or a duration (30m); default the whole horizon.
    #[arg(long)]
    horizon: Option<String>,
    /// Print JSON: the model, why, and PredictionData points.
    #[arg(long)]
    json: bool,
    /// Offline: forecast from a model saved by `forecast train` (with --csv).
    #[arg(long, requires = "csv", conflicts_with = "metric")]
    model: Option<std::path::PathBuf>,
    /// Offline: the history to forecast from, `timestamp,value`.
    #[arg(long, requires = "model")]
    csv: Option<std::path::PathBuf>,
    /// Offline: the related series the model was trained with.
    #[arg(long, requires = "model")]
    related: Option<std::path::PathBuf>,
}

// An alias, so clap parses the list as one comma-separated value.
type Models = Vec<forecast::Candidate>;

#[derive(Debug, Subcommand)]
enum ForecastAction {
    /// Train on a `timestamp,value` CSV file (no agent needed) and save the model.
    Train(TrainFlags),
    /// Anomaly events the agent has seen (forecast interval left persistently).
    Events {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct TrainFlags {
    /// The history: `timestamp,value` lines (unix seconds or `YYYY-MM-DD HH:MM:SS`, UTC).
    #[arg(long)]
    csv: std::path::PathBuf,
    /// A related series on the same grid (e.g. request rate for CPU); the LSTM uses it.
    #[arg(long)]
    related: Option<std::path::PathBuf>,
    /// Steps forecast (and backtested per fold).
    #[arg(long, default_value_t = 60)]
    horizon: usize,
    /// Candidate models, comma-separated.
    #[arg(long, default_value = "seasonal_naive,ets,mstl,lstm", value_parser = forecast::parse_models)]
    models: Models,
    /// Rolling-origin folds for the selection.
    #[arg(long, default_value_t = 2)]
    folds: usize,
    /// Steps per season (default: a day at the file's step).
    #[arg(long)]
    season: Option<usize>,
    /// Model directory (default: <csv name>.model in the current directory).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

impl TrainFlags {
    fn args(self) -> forecast::cli::TrainArgs {
        let stem = self
            .csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let out = self
            .out
            .unwrap_or_else(|| format!("{}.model", stem.unwrap_or_default()).into());
        forecast::cli::TrainArgs {
            csv: self.csv,
            related: self.related,
            horizon: self.horizon,
            models: self.models,
            folds: self.folds,
            season: self.season,
            out,
        }
    }
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
            match e.downcast_ref::<OfflineError>() {
                Some(OfflineError::Usage(_)) => ExitCode::from(64),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Mirror(Mirror::Set { service, percent }) => {
            let body = serde_json::json!({ "percent": percent }).to_string();
            let path = format!("/v1/mirror/{}", encode(&service));
            let (status, body) =
                client::control(&cli.control, hyper::Method::PUT, &path, Some(body)).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            let s: MirrorStatus = serde_json::from_slice(&body)?;
            println!("{}: mirroring {}% of connections", s.service, s.percent);
        }
        Command::Mirror(Mirror::Status { json }) => {
            let (status, body) =
                client::control(&cli.control, hyper::Method::GET, "/v1/mirror", None).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            if json {
                std::io::stdout().write_all(&body)?;
                println!();
            } else {
                let all: Vec<MirrorStatus> = serde_json::from_slice(&body)?;
                print_status(&all);
            }
        }
        Command::Record { out, duration } => {
            let out = std::path::absolute(&out)?;
            let body = serde_json::json!({ "path": out }).to_string();
            let (status, body) =
                client::control(&cli.control, hyper::Method::POST, "/v1/record", Some(body))
                    .await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            eprintln!("recording to {} for {duration:?} ...", out.display());
            tokio::time::sleep(duration).await;
            let (status, body) =
                client::control(&cli.control, hyper::Method::DELETE, "/v1/record", None).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            println!(
                "recorded {} exchanges to {} ({} dropped)",
                v["written"],
                out.display(),
                v["dropped"]
            );
        }
        Command::Replay {
            file,
            target,
            speed,
        } => {
            if !(speed >= 0.0 && speed.is_finite()) {
                return Err(format!("--speed {speed} must be 0 or positive").into());
            }
            let recs = shadow_proxy::replay::record::read(&file)?;
            let summary = client::replay(&recs, &target, speed).await?;
            println!("{summary}");
        }
        Command::Mirror(Mirror::Rules { service, json }) => {
            let path = format!("/v1/mirror/{}/rules", encode(&service));
            let (status, body) =
                client::control(&cli.control, hyper::Method::PUT, &path, Some(json)).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            println!("{service}: rules replaced");
        }
        Command::Mirror(Mirror::Capture) => {
            let (status, body) =
                client::control(&cli.control, hyper::Method::GET, "/v1/capture", None).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            std::io::stdout().write_all(&body)?;
            println!();
        }
        Command::Diff(Diff::Summary { json }) => {
            let (status, body) =
                client::control(&cli.control, hyper::Method::GET, "/v1/diff", None).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            if json {
                std::io::stdout().write_all(&body)?;
                println!();
            } else {
                let all: Vec<shadow_proxy::replay::control::DiffSummary> =
                    serde_json::from_slice(&body)?;
                print_diff(&all);
            }
        }
        Command::Diff(Diff::Show { id }) => {
            let (status, body) = client::control(
                &cli.control,
                hyper::Method::GET,
                &format!("/v1/diff/{id}"),
                None,
            )
            .await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Diff(Diff::Noise {
            service,
            route,
            path,
            unmark,
        }) => {
            let body = serde_json::json!({ "service": service, "route": route, "path": path, "noise": !unmark }).to_string();
            let (status, body) = client::control(
                &cli.control,
                hyper::Method::PUT,
                "/v1/diff/noise",
                Some(body),
            )
            .await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            println!("{}", String::from_utf8_lossy(&body));
        }
        Command::Exchanges { limit } => {
            let path = format!("/v1/exchanges?limit={limit}");
            let (status, body) =
                client::control(&cli.control, hyper::Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(api_error(&body).into());
            }
            std::io::stdout().write_all(&body)?;
            println!();
        }
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
        Command::Forecast(f) => forecast_cmd(&cli.control, f).await?,
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

async fn forecast_cmd(
    socket: &std::path::Path,
    f: ForecastCmd,
) -> Result<(), Box<dyn std::error::Error>> {
    use forecast::cli;
    let out = match (f.action, f.model, f.csv, f.metric) {
        (Some(ForecastAction::Train(t)), ..) => format!("{}\n", cli::train(&t.args())?),
        (Some(ForecastAction::Events { json }), ..) => {
            let body = control_get(socket, "/v1/forecast/events").await?;
            if json {
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                forecast::table::render_events(&serde_json::from_slice::<Vec<_>>(&body)?)
            }
        }
        (None, Some(model), Some(csv), _) => {
            let a = cli::forecast(&model, &csv, f.related.as_deref(), f.horizon.as_deref())?;
            render_answer(&a, f.json)?
        }
        (None, _, _, Some(metric)) => {
            let mut path = format!("/v1/forecast/{}", encode(&metric));
            if let Some(h) = &f.horizon {
                path.push_str(&format!("?horizon={}", encode(h)));
            }
            let body = control_get(socket, &path).await?;
            render_answer(&serde_json::from_slice(&body)?, f.json)?
        }
        (None, ..) => {
            let body = control_get(socket, "/v1/forecast").await?;
            if f.json {
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                forecast::table::render_status(&serde_json::from_slice::<Vec<_>>(&body)?)
            }
        }
    };
    print!("{out}");
    Ok(())
}

fn render_answer(
    a: &forecast::answer::ForecastAnswer,
    json: bool,
) -> Result<String, Box<dyn std::error::Error>> {
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(a)?)
    } else {
        forecast::table::render_forecast(a)
    })
}

/// GETs `path` from the control socket; the API's error message otherwise.
async fn control_get(
    socket: &std::path::Path,
    path: &str,
) -> Result<hyper::body::Bytes, Box<dyn std::error::Error>> {
    let (status, body) = client::control(socket, hyper::Method::GET, path, None).await?;
    if !status.is_success() {
        return Err(api_error(&body).into());
    }
    Ok(body)
}

fn api_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn print_diff(all: &[shadow_proxy::replay::control::DiffSummary]) {
    use shadow_proxy::diff::noise::Verdict;
    for s in all {
        println!("{}:", s.service);
        for (target, t) in &s.targets {
            let verdict = match &t.verdict {
                Verdict::Healthy { compared } => format!("healthy ({compared} compared)"),
                Verdict::Regressed { regressions } => {
                    format!("REGRESSED ({} fields)", regressions.len())
                }
                Verdict::Inconclusive { reason } => format!("inconclusive: {reason}"),
            };
            println!("  {target}: {verdict}");
            for (route, r) in &t.routes {
                println!(
                    "    {route}: {} compared, {} noise comparisons",
                    r.compared, r.noise_compared
                );
            }
            if let Verdict::Regressed { regressions } = &t.verdict {
                for r in regressions {
                    println!(
                        "      {} {}: differs {:.2}% (noise {:.2}%), e.g. exchanges {:?}",
                        r.route,
                        r.path,
                        r.diff_rate * 100.0,
                        r.noise_rate * 100.0,
                        r.examples
                    );
                }
            }
        }
    }
}

fn print_status(all: &[MirrorStatus]) {
    println!(
        "{:<12} {:>6} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}  not replayed",
        "SERVICE", "PORT", "PERCENT", "PKTS SEEN", "SAMPLED", "REQUESTS", "REPLAYED", "COVERAGE"
    );
    for s in all {
        let reasons: Vec<String> = s
            .stats
            .not_replayed
            .iter()
            .chain(s.stats.flow_drops.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<12} {:>6} {:>7}% {:>10} {:>10} {:>9} {:>9} {:>9}  {}",
            s.service,
            s.port,
            s.percent,
            s.packets_seen,
            s.packets_sampled,
            s.stats.requests_parsed,
            s.stats.replayed,
            s.coverage
                .map_or("-".into(), |c| format!("{:.2}%", c * 100.0)),
            reasons.join(" ")
        );
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
