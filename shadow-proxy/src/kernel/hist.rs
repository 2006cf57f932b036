//! The agent's view of a kernel log2 histogram is the wire type
//! [`shadow_api::kernel::Hist`] (serialisable, with deltas and quantiles).

pub use shadow_api::kernel::Hist;
