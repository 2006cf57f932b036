//! What the poller publishes each interval: the kernel snapshot and the
//! host sample, as one [`View`], and the last two of them ([`Views`]).
//!
//! The poller swaps in a new `Arc` each interval; readers (admin API, the
//! diff's kernel context) clone the `Arc` and never touch the kernel.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::KernelSnapshot;

/// The JSON view served at `/api/v1/snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct View {
    /// Unix milliseconds of the poll that produced this view.
    pub timestamp: u64,
    pub server_id: String,
    pub kernel: KernelSnapshot,
    pub host: Vec<(String, f64)>,
}

/// The newest view and the one before it: the two bound the last poll
/// interval.
#[derive(Debug, Default)]
pub struct Views {
    current: RwLock<Arc<View>>,
    previous: RwLock<Arc<View>>,
}

impl Views {
    pub fn current(&self) -> Arc<View> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn previous(&self) -> Arc<View> {
        self.previous
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `view` the current one; the current one becomes the previous.
    pub fn publish(&self, view: View) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(view),
        );
        *self.previous.write().unwrap_or_else(|p| p.into_inner()) = old;
    }
}
