//! Everything that crosses the kernel/user boundary in shadow.
//!
//! Map values and keys are `#[repr(C)]` with explicit padding and a size
//! assertion each, so the eBPF programs (built for `bpfel-unknown-none`) and the
//! agent (built for the host) agree on every byte. Map names, sizes and the
//! slots of the statistics array are defined once here.
#![no_std]

pub mod capture;
pub mod hist;
pub mod steer;
pub mod telemetry;

pub use hist::{HIST_BUCKETS, Log2Hist, log2_bucket};
pub use telemetry::*;
