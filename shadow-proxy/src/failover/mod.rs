//! Failover and migration (issue #12). So far: the kernel-level cutover
//! primitive ([`cutover`]), which the migration state machine will drive.

pub mod cutover;
