//! Kernel programs of shadow. The programs themselves live in the `shadow`
//! binary target (`src/main.rs`), which `shadow-proxy/build.rs` compiles for
//! `bpfel-unknown-none`; this empty library lets the agent depend on the crate
//! so that cargo rebuilds the agent when a program changes.
#![no_std]
