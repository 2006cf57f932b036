//! The backend trait: what applies a capacity change to a system.

use std::time::Duration;

use serde::Serialize;
use shadow_api::provision::{Decision, Resource};

/// A change for a backend to apply: one loop's new capacity, with the
/// decision that asked for it (what an exec hook receives as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Change<'a> {
    pub target: &'a str,
    pub resource: Resource,
    /// Capacity in effect, and the one asked for, in `unit`.
    pub from: f64,
    pub to: f64,
    pub unit: &'static str,
    pub decision: &'a Decision,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{backend} cannot size {resource}")]
    Unsupported {
        backend: &'static str,
        resource: &'static str,
    },
    #[error("hook {command} took longer than {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },
    #[error("hook {command} exited with {status}: {stderr}")]
    Exit {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: wrote {wrote}, read back {read}")]
    Verify {
        what: String,
        wrote: String,
        read: String,
    },
}

impl BackendError {
    /// The label of `shadow_provision_backend_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Unsupported { .. } => "unsupported",
            Self::Timeout { .. } => "timeout",
            Self::Exit { .. } => "exit",
            Self::Verify { .. } => "verify",
        }
    }
}

/// A backend failing is neither live nor shadow traffic: the agent's side.
impl crate::util::Sourced for BackendError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// Applies capacity. `apply` returns once the capacity is ready (the
/// caller times it: that is the backend's measured time-to-ready), or
/// fails and leaves the previous allocation in place.
pub trait Backend: Send + Sync {
    fn apply(&self, change: &Change<'_>) -> Result<(), BackendError>;

    /// `cgroup`, `replicas`, `exec`, `terraform`, `cloudformation`.
    fn name(&self) -> &'static str {
        "backend"
    }

    /// The capacity in effect as the system reports it, when it can.
    fn current(&self, _resource: Resource) -> Option<f64> {
        None
    }
}
