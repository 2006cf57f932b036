//! `shadowctl`: the command line for a running shadow agent. It talks to
//! the agent's admin port and control socket through `shadow-api`'s typed
//! client and links neither the agent, aya nor (without the `offline`
//! feature) burn.

#[cfg(feature = "offline")]
mod offline;
mod table;
mod top;

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shadow_api::{
    client::{self, Admin, Control},
    duration,
    kernel::View,
    mirror::{DiffSummary, MarkNoise, MirrorStatus, Verdict},
    routes,
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
    /// The verdict per shadow target: regressed fields first (with rates and
    /// example ids), then a count of healthy routes.
    Summary {
        #[arg(long)]
        json: bool,
        /// Also list every route with its comparison counts.
        #[arg(long)]
        all: bool,
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
    /// Candidate models, comma-separated (seasonal_naive, ets, mstl, lstm).
    #[arg(long, default_value = "seasonal_naive,ets,mstl,lstm")]
    models: String,
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

#[cfg(feature = "offline")]
impl TrainFlags {
    fn args(self) -> Result<offline::TrainArgs, offline::OfflineError> {
        let models = shadow_forecast::serve::parse_models(&self.models)
            .map_err(|e| offline::OfflineError::Usage(format!("--models: {e}")))?;
        let stem = self
            .csv
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        let out = self
            .out
            .unwrap_or_else(|| format!("{}.model", stem.unwrap_or_default()).into());
        Ok(offline::TrainArgs {
            csv: self.csv,
            related: self.related,
            horizon: self.horizon,
            models,
            folds: self.folds,
            season: self.season,
            out,
        })
    }
}

/// Bad usage: exit 64, like a clap error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

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
            if e.downcast_ref::<Usage>().is_some() || is_offline_usage(e.as_ref()) {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(feature = "offline")]
fn is_offline_usage(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        e.downcast_ref::<offline::OfflineError>(),
        Some(offline::OfflineError::Usage(_))
    )
}

#[cfg(not(feature = "offline"))]
fn is_offline_usage(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Writes a raw JSON answer and a newline.
fn print_json(body: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)?;
    writeln!(out)?;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let control = Control::new(&cli.control);
    let admin = Admin::new(&cli.admin);
    match cli.command {
        Command::Mirror(Mirror::Set { service, percent }) => {
            let s = control.set_percent(&service, percent).await?;
            println!("{}: mirroring {}% of connections", s.service, s.percent);
        }
        Command::Mirror(Mirror::Status { json }) => {
            if json {
                print_json(&control.get_json(routes::MIRROR).await?)?;
            } else {
                print_status(&control.mirror().await?);
            }
        }
        Command::Record { out, duration } => {
            let out = std::path::absolute(&out)?;
            control.start_recording(&out).await?;
            eprintln!("recording to {} for {duration:?} ...", out.display());
            tokio::time::sleep(duration).await;
            let (written, dropped) = control.stop_recording().await?;
            println!(
                "recorded {written} exchanges to {} ({dropped} dropped)",
                out.display()
            );
        }
        Command::Replay {
            file,
            target,
            speed,
        } => {
            if !(speed >= 0.0 && speed.is_finite()) {
                return Err(Usage(format!("--speed {speed} must be 0 or positive")).into());
            }
            let recs = shadow_api::recording::read(&file)?;
            let summary = client::replay(&recs, &target, speed).await?;
            println!("{summary}");
        }
        Command::Mirror(Mirror::Rules { service, json }) => {
            control.set_rules(&service, json).await?;
            println!("{service}: rules replaced");
        }
        Command::Mirror(Mirror::Capture) => print_json(&control.get_json(routes::CAPTURE).await?)?,
        Command::Diff(Diff::Summary { json, all }) => {
            if json {
                print_json(&control.get_json(routes::DIFF).await?)?;
            } else {
                print!("{}", render_diff(&control.diff().await?, all));
            }
        }
        Command::Diff(Diff::Show { id }) => {
            let v = control.exchange(id).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Diff(Diff::Noise {
            service,
            route,
            path,
            unmark,
        }) => {
            let mark = MarkNoise {
                service,
                route,
                path,
                noise: !unmark,
            };
            println!("{}", control.mark_noise(&mark).await?);
        }
        Command::Exchanges { limit } => {
            let path = format!("{}?limit={limit}", routes::EXCHANGES);
            print_json(&control.get_json(&path).await?)?;
        }
        Command::Metrics => print!("{}", admin.metrics().await?),
        Command::History { metric: None } => {
            for n in admin.history_names().await? {
                println!("{n}");
            }
        }
        Command::History { metric: Some(m) } => {
            println!("timestamp_ms,server_id,metric,value");
            for p in admin.history(&m).await? {
                println!("{},{},{},{}", p.timestamp, p.server_id, p.metric, p.value);
            }
        }
        Command::Forecast(f) => forecast_cmd(&control, f).await?,
        Command::Top {
            interval,
            count,
            no_clear,
        } => {
            let mut prev: Option<View> = None;
            let mut shown = 0u64;
            loop {
                let view = admin.snapshot().await?;
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

async fn forecast_cmd(control: &Control, f: ForecastCmd) -> Result<()> {
    let out = match (f.action, f.model, f.csv, f.metric) {
        (Some(ForecastAction::Train(t)), ..) => train(t)?,
        (Some(ForecastAction::Events { json }), ..) => {
            if json {
                let body = control.get_json(routes::FORECAST_EVENTS).await?;
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                table::render_events(&control.forecast_events().await?)
            }
        }
        (None, Some(model), Some(csv), _) => offline_forecast(
            &model,
            &csv,
            f.related.as_deref(),
            f.horizon.as_deref(),
            f.json,
        )?,
        (None, _, _, Some(metric)) => {
            let a = control.forecast(&metric, f.horizon.as_deref()).await?;
            render_answer(&a, f.json)?
        }
        (None, ..) => {
            if f.json {
                let body = control.get_json(routes::FORECAST).await?;
                format!("{}\n", String::from_utf8_lossy(&body))
            } else {
                table::render_status(&control.forecast_status().await?)
            }
        }
    };
    print!("{out}");
    Ok(())
}

#[cfg(feature = "offline")]
fn train(t: TrainFlags) -> Result<String> {
    Ok(format!("{}\n", offline::train(&t.args()?)?))
}

#[cfg(feature = "offline")]
fn offline_forecast(
    model: &std::path::Path,
    csv: &std::path::Path,
    related: Option<&std::path::Path>,
    horizon: Option<&str>,
    json: bool,
) -> Result<String> {
    let a = offline::forecast(model, csv, related, horizon)?;
    render_answer(&a, json)
}

#[cfg(not(feature = "offline"))]
fn train(_: TrainFlags) -> Result<String> {
    Err(Usage(OFFLINE_MISSING.into()).into())
}

#[cfg(not(feature = "offline"))]
fn offline_forecast(
    _: &std::path::Path,
    _: &std::path::Path,
    _: Option<&std::path::Path>,
    _: Option<&str>,
    _: bool,
) -> Result<String> {
    Err(Usage(OFFLINE_MISSING.into()).into())
}

#[cfg(not(feature = "offline"))]
const OFFLINE_MISSING: &str =
    "this shadowctl was built without offline forecasting (rebuild with the `offline` feature)";

fn render_answer(a: &shadow_api::forecast::ForecastAnswer, json: bool) -> Result<String> {
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(a)?)
    } else {
        table::render_forecast(a)
    })
}

/// Regressions first (they are what a reader looks for), then a count of
/// healthy routes; `all` lists every route with its counts as well.
fn render_diff(all: &[DiffSummary], every_route: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in all {
        let _ = writeln!(out, "{}:", s.service);
        for (target, t) in &s.targets {
            let verdict = match &t.verdict {
                Verdict::Healthy { compared } => format!("healthy ({compared} compared)"),
                Verdict::Regressed { regressions } => {
                    format!("REGRESSED ({} fields)", regressions.len())
                }
                Verdict::Inconclusive { reason } => format!("inconclusive: {reason}"),
            };
            let _ = writeln!(out, "  {target}: {verdict}");
            let mut regressed_routes = std::collections::BTreeSet::new();
            if let Verdict::Regressed { regressions } = &t.verdict {
                for r in regressions {
                    regressed_routes.insert(r.route.as_str());
                    let _ = writeln!(
                        out,
                        "    {} {}: differs {:.2}% (noise {:.2}%), e.g. exchanges {:?}",
                        r.route,
                        r.path,
                        r.diff_rate * 100.0,
                        r.noise_rate * 100.0,
                        r.examples
                    );
                }
            }
            let healthy = t
                .routes
                .keys()
                .filter(|r| !regressed_routes.contains(r.as_str()))
                .count();
            let _ = writeln!(
                out,
                "    {healthy} of {} routes without regressions{}",
                t.routes.len(),
                if every_route || t.routes.is_empty() {
                    ""
                } else {
                    " (--all lists them)"
                }
            );
            if every_route {
                for (route, r) in &t.routes {
                    let _ = writeln!(
                        out,
                        "    {route}: {} compared, {} noise comparisons",
                        r.compared, r.noise_compared
                    );
                }
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shadow_api::mirror::{Regression, RouteStats, TargetDiff};

    use super::*;

    #[test]
    fn diff_summary_lists_regressions_first_then_counts_healthy_routes() {
        let routes: BTreeMap<String, RouteStats> = ["GET /a", "GET /b", "GET /c"]
            .into_iter()
            .map(|r| (r.to_owned(), RouteStats::default()))
            .collect();
        let regression = Regression {
            route: "GET /b".into(),
            path: "$.price".into(),
            diff_rate: 0.5,
            noise_rate: 0.0,
            examples: vec![7],
        };
        let summary = DiffSummary {
            service: "web".into(),
            targets: [(
                "http://shadow".to_owned(),
                TargetDiff {
                    verdict: Verdict::Regressed {
                        regressions: vec![regression],
                    },
                    routes,
                },
            )]
            .into(),
            marked_noise: Vec::new(),
        };
        let short = render_diff(std::slice::from_ref(&summary), false);
        let lines: Vec<&str> = short.lines().collect();
        assert!(lines[1].contains("REGRESSED (1 fields)"), "{short}");
        assert!(
            lines[2].contains("GET /b $.price: differs 50.00%"),
            "{short}"
        );
        assert!(
            lines[3].contains("2 of 3 routes without regressions (--all lists them)"),
            "{short}"
        );
        assert_eq!(lines.len(), 4, "no route list without --all: {short}");
        let all = render_diff(&[summary], true);
        for r in [
            "GET /a: 0 compared",
            "GET /b: 0 compared",
            "GET /c: 0 compared",
        ] {
            assert!(all.contains(r), "--all lists {r}: {all}");
        }
        assert!(
            all.find("$.price") < all.find("GET /a:"),
            "regressions first: {all}"
        );
    }
}
