//! The Dynamic Resource Provisioner's decisions, without any system in
//! them: policies ([`policy`]: `seed`, `predictive`, `reactive`), one
//! control loop per resource with its safety rules, learnt lead time and
//! alert-driven pre-provisioning ([`controller`]), the cost- and
//! zone-aware capacity pool ([`pool`]), and a trace replay that scores a
//! policy against demand ([`sim`]).
//!
//! The agent's `provision` box runs controllers against real backends
//! (cgroups, local replicas, hooks, IaC files); the bench replays real
//! demand series through the same controllers.

pub mod controller;
pub mod policy;
pub mod pool;
pub mod sim;

pub use controller::{Controller, LeadTime, Limits, Step};
pub use policy::{Observation, Policy, PolicyConfig, Proposal};
