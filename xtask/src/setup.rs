//! `cargo xtask setup`: installs what a fresh Debian 12 machine of this
//! project's kind lacks, idempotently, saying what it does. The recipe is
//! ../shared/ebpf-toolchain.md: Debian's rustc-web (1.96, with a prebuilt
//! bpfel `core`), bpf-linker built against LLVM 22, and a rustup link.

use anyhow::{Result, bail};

use crate::util::{self, output, step};
use util::run as sh;

/// The BPF toolchain name (`SHADOW_BPF_TOOLCHAIN`, default `debian-bpf`).
pub fn bpf_toolchain() -> String {
    std::env::var("SHADOW_BPF_TOOLCHAIN").unwrap_or_else(|_| "debian-bpf".into())
}

const TOOLCHAIN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-clippy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// What the agent and its tests use at run time.
// libcap2-bin: capsh, to run the agent as nobody with only the systemd
// unit's capabilities; prometheus: promtool checks the alert rules;
// systemd: systemd-analyze verifies the unit.
const RUNTIME_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "util-linux",
    "libcap2-bin",
    "prometheus",
    "systemd",
];
// fonts-dejavu-core: the text in the forecast report's plots.
// keepalived: the failover bench's baseline.
const BENCH_PACKAGES: &[&str] = &[
    "wrk",
    "hey",
    "fio",
    "nginx",
    "fonts-dejavu-core",
    "keepalived",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The inline bench's second peer: a shadow proxy from crates.io.
const MOONLIGHT_VERSION: &str = "0.1.2";

fn installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.trim() == "install ok installed")
}

pub fn run_setup(bench: bool) -> Result<()> {
    let debian_toolchain = bpf_toolchain() == "debian-bpf";
    let mut wanted: Vec<&str> = RUNTIME_PACKAGES.to_vec();
    if debian_toolchain {
        wanted.extend(TOOLCHAIN_PACKAGES);
    } else {
        println!(
            "    SHADOW_BPF_TOOLCHAIN={}: skipping Debian's BPF toolchain",
            bpf_toolchain()
        );
    }
    if bench {
        wanted.extend(BENCH_PACKAGES);
    }
    let missing: Vec<&str> = wanted.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("    Debian packages: all present");
    } else {
        if !util::is_root() {
            bail!("missing Debian packages {missing:?}; run as root (apt-get install) first");
        }
        println!("    installing Debian packages: {}", missing.join(" "));
        set_noninteractive();
        sh("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        sh("apt-get", &args)?;
    }
    if bench {
        install_moonlight()?;
    }

    if debian_toolchain {
        let have =
            output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
        if have {
            println!("    bpf-linker {BPF_LINKER_VERSION}: present");
        } else {
            println!(
                "    building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
            );
            let path = format!(
                "/usr/lib/llvm-22/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            );
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path)
            // Our workspace's RUSTC_BOOTSTRAP must not leak into this build.
            .env_remove("RUSTC_BOOTSTRAP")
            .status()?;
            if !status.success() {
                bail!("cargo install bpf-linker failed with {status}");
            }
        }
        let linked = output("rustup", &["toolchain", "list"])
            .is_some_and(|l| l.lines().any(|t| t.starts_with("debian-bpf")));
        if linked {
            println!("    rustup toolchain debian-bpf: linked");
        } else {
            sh("rustup", &["toolchain", "link", "debian-bpf", "/usr"])?;
        }
    }
    Ok(())
}

/// moonlight-http (crates.io), the inline bench's second peer, built once
/// into cargo's bin directory (about three minutes).
fn install_moonlight() -> Result<()> {
    if output("moonlight-http", &["--version"]).is_some_and(|v| v.contains(MOONLIGHT_VERSION)) {
        println!("    moonlight-http {MOONLIGHT_VERSION}: present");
        return Ok(());
    }
    println!("    building moonlight-http {MOONLIGHT_VERSION} (about three minutes)");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "moonlight-http",
                "--locked",
                "--version",
                MOONLIGHT_VERSION,
            ])
            .env_remove("RUSTC_BOOTSTRAP")
            .status()?;
    if !status.success() {
        bail!("cargo install moonlight-http failed with {status}");
    }
    Ok(())
}

/// apt-get must not stop to ask questions.
fn set_noninteractive() {
    // SAFETY: xtask is single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("DEBIAN_FRONTEND", "noninteractive") };
}

pub fn run(bench: bool) -> Result<()> {
    step("setup", || run_setup(bench))
}
