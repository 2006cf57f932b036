//! Running commands with their output shown and their failure explained.

use std::{process::Command, time::Instant};

use anyhow::{Context, Result, bail};

/// Runs `f` as a named step, printing its start, end and duration.
pub fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    let t = Instant::now();
    f().with_context(|| format!("step failed: {name}"))?;
    println!("==> {name}: done in {:.1?}", t.elapsed());
    Ok(())
}

/// Runs a command with inherited stdio; an error names the command.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    println!("    $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs the cargo that runs us.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(&cargo, args)
}

/// A command's stdout, or `None` when it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
