//! `shadowctl`: the command line for a running shadow agent. It talks to
//! the agent's admin port and control socket through `shadow-api`'s typed
//! client and links neither the agent, aya nor (without the `offline`
//! feature) burn.

mod cli;
mod forecast;
mod mirror;
#[cfg(feature = "offline")]
mod offline;
mod provision;
mod table;
mod top;

use std::{io::Write as _, process::ExitCode};

use clap::Parser;

use cli::{Cli, Command, Diff, Failover, Mirror, Provision};
use forecast::forecast_cmd;
use mirror::{print_status, render_diff};
use shadow_api::{
    client::{self, Admin, Control},
    kernel::View,
    mirror::MarkNoise,
    routes,
};

/// Bad usage: exit 64, like a clap error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(pub(crate) String);

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

pub(crate) type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

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
        Command::Predict { events, json } => {
            let path = if events {
                routes::PREDICT_EVENTS
            } else {
                routes::PREDICT
            };
            if json {
                print_json(&control.get_json(path).await?)?;
            } else if events {
                print!(
                    "{}",
                    table::render_level_events(&control.predict_events().await?)
                );
            } else {
                print!("{}", table::render_predict(&control.predict().await?));
            }
        }
        Command::Plan { json } => {
            if json {
                print_json(&control.get_json(routes::PROVISION_PLAN).await?)?;
            } else {
                print!(
                    "{}",
                    provision::render_plan(&control.provision_plan().await?)
                );
            }
        }
        Command::Provision(Provision::Events { json }) => {
            if json {
                print_json(&control.get_json(routes::PROVISION_EVENTS).await?)?;
            } else {
                print!(
                    "{}",
                    provision::render_events(&control.provision_events().await?)
                );
            }
        }
        Command::Provision(Provision::Apply { json } | Provision::DryRun { json }) => {
            let dry_run = matches!(cli.command, Command::Provision(Provision::DryRun { .. }));
            let decisions = control.provision_apply(dry_run).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&decisions)?);
            } else {
                print!("{}", provision::render_decisions(&decisions));
            }
        }
        Command::Pool { json } => {
            if json {
                print_json(&control.get_json(routes::PROVISION_POOL).await?)?;
            } else {
                print!(
                    "{}",
                    provision::render_pool(&control.provision_pool().await?)
                );
            }
        }
        Command::Failover(Failover::Status { json }) => {
            if json {
                print_json(&control.get_json(routes::FAILOVER).await?)?;
            } else {
                print!(
                    "{}",
                    provision::render_failover(&control.failover_status().await?)
                );
            }
        }
        Command::Failover(Failover::Events { json }) => {
            if json {
                print_json(&control.get_json(routes::FAILOVER_EVENTS).await?)?;
            } else {
                print!(
                    "{}",
                    provision::render_failover_events(&control.failover_events().await?)
                );
            }
        }
        Command::Failover(Failover::Predict { json }) => {
            let status = control.failover_status().await?;
            // Without probabilities (predicting off, or too early) the
            // machines' own view still says what they do next.
            let predict = control.predict().await.map_err(|e| e.to_string());
            let rows = provision::failover_predictions(predict.as_ref().ok(), &status);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!(
                    "{}",
                    provision::render_failover_predictions(
                        predict.as_ref().map_err(Clone::clone),
                        &rows
                    )
                );
            }
        }
        Command::Failover(
            Failover::Cutover(ref a) | Failover::Rollback(ref a) | Failover::Promote(ref a),
        ) => {
            let route = match cli.command {
                Command::Failover(Failover::Cutover(_)) => routes::FAILOVER_CUTOVER,
                Command::Failover(Failover::Rollback(_)) => routes::FAILOVER_ROLLBACK,
                _ => routes::FAILOVER_PROMOTE,
            };
            let e = control
                .failover_action(route, &a.service, a.dry_run, a.force)
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print!(
                    "{}",
                    provision::render_failover_events(std::slice::from_ref(&e))
                );
            }
        }
        Command::Whatif {
            traffic,
            scale,
            service,
            json,
        } => {
            let w = control.what_if(traffic, scale, service.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&w)?);
            } else {
                print!("{}", provision::render_whatif(&w));
            }
        }
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
        Command::Completion { shell } => {
            // Made from the command line's own definition, so it always
            // matches this binary; needs no agent.
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "shadowctl", &mut script);
            std::io::stdout().lock().write_all(&script)?;
        }
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
