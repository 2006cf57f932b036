//! What the poller publishes each interval: the kernel snapshot and the
//! host sample, as one [`View`], and the last two of them ([`Views`]).
//!
//! The poller swaps in a new `Arc` each interval; readers (admin API, the
//! diff's kernel context) clone the `Arc` and never touch the kernel.

use std::sync::{Arc, RwLock};

pub use shadow_api::kernel::View;

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
