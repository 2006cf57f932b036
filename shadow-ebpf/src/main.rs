//! shadow's eBPF object: tracepoint programs for block-I/O and TCP telemetry,
//! the tc classifier that tees sampled connections, and the sk_lookup
//! program that cuts new connections over to a shadow.
//!
//! Each program is a thin entry that calls a `try_*` function and counts a
//! failure instead of dropping it. Field offsets come from the read-only
//! global `TP_OFFSETS`, which the agent fills from tracefs at load time.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The kernel's atomic add has no stable Rust spelling on this target.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod block;
#[cfg(target_arch = "bpf")]
mod capture;
#[cfg(target_arch = "bpf")]
mod shared;
#[cfg(target_arch = "bpf")]
mod steer;
#[cfg(target_arch = "bpf")]
mod tcp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier proves no panic path is reachable; this is never run.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Host builds (clippy, `cargo check --workspace`) compile this stub only.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
