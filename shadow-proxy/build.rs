//! Builds the kernel programs (`shadow-ebpf`) for `bpfel-unknown-none` and
//! leaves the object in `OUT_DIR`, where `src/telemetry/loader.rs` embeds it.
//!
//! The toolchain defaults to `debian-bpf` (Debian's rustc with a prebuilt BPF
//! `core`, linked by `cargo xtask setup`); set `SHADOW_BPF_TOOLCHAIN=nightly`
//! to use a nightly with rust-src instead.

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SHADOW_BPF_TOOLCHAIN");
    let toolchain =
        std::env::var("SHADOW_BPF_TOOLCHAIN").unwrap_or_else(|_| "debian-bpf".to_owned());
    let package = aya_build::Package {
        name: "shadow-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../shadow-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}
