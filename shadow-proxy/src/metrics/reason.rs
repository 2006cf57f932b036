//! Why something sampled did not reach the shadow: one enum for every drop
//! reason of every box, and [`Drop::as_str`], the one place they are named
//! (the `reason`/`outcome` label of the drop counters, and the keys of
//! `shadowctl mirror status`).
//!
//! The boxes keep their own precise types (`capture::reassembly::DropReason`,
//! `http::conversation::HttpError`, `replay::rewrite::Skip`, the replay
//! stack's failures) and convert into this one where they count.

/// A drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Drop {
    // A flow that could not be rebuilt (capture::reassembly).
    MidStream,
    FlowBufferFull,
    TotalBufferFull,
    GapAtClose,
    IdleWithGap,
    TooManyFlows,
    // A flow whose HTTP/1.1 could not be followed (http::conversation).
    MalformedRequest,
    MalformedResponse,
    HeadersTooLarge,
    TooManyHeaders,
    BodyTooLarge,
    BadChunk,
    BadContentLength,
    ConflictingContentLength,
    UnsupportedTransferEncoding,
    UnexpectedResponse,
    PipelineTooDeep,
    Upgrade,
    AfterClose,
    // A request the capture pipeline could not hand to replay.
    NoLiveResponse,
    FlowDropped,
    QueueFull,
    ShuttingDown,
    // A request the service's rules leave out (replay::rewrite).
    MethodFiltered,
    PathFiltered,
    UnsafeMethod,
    KeySampledOut,
    // A request the replay stack refused or the shadow lost (replay::stack).
    RewriteFailed,
    InFlightFull,
    RateLimited,
    ShadowTimeout,
    ShadowError,
    ShadowBodyError,
    /// A streamed body's queue filled: the shadow read slower than live sent.
    StreamOverrun,
    NoiseProbeFailed,
    /// The stack itself failed (a bug, never expected).
    StackFailed,
}

impl Drop {
    /// Every reason, in declaration order.
    pub const ALL: [Drop; 36] = [
        Self::MidStream,
        Self::FlowBufferFull,
        Self::TotalBufferFull,
        Self::GapAtClose,
        Self::IdleWithGap,
        Self::TooManyFlows,
        Self::MalformedRequest,
        Self::MalformedResponse,
        Self::HeadersTooLarge,
        Self::TooManyHeaders,
        Self::BodyTooLarge,
        Self::BadChunk,
        Self::BadContentLength,
        Self::ConflictingContentLength,
        Self::UnsupportedTransferEncoding,
        Self::UnexpectedResponse,
        Self::PipelineTooDeep,
        Self::Upgrade,
        Self::AfterClose,
        Self::NoLiveResponse,
        Self::FlowDropped,
        Self::QueueFull,
        Self::ShuttingDown,
        Self::MethodFiltered,
        Self::PathFiltered,
        Self::UnsafeMethod,
        Self::KeySampledOut,
        Self::RewriteFailed,
        Self::InFlightFull,
        Self::RateLimited,
        Self::ShadowTimeout,
        Self::ShadowError,
        Self::ShadowBodyError,
        Self::StreamOverrun,
        Self::NoiseProbeFailed,
        Self::StackFailed,
    ];

    /// The stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MidStream => "mid_stream",
            Self::FlowBufferFull => "flow_buffer_full",
            Self::TotalBufferFull => "total_buffer_full",
            Self::GapAtClose => "gap_at_close",
            Self::IdleWithGap => "idle_with_gap",
            Self::TooManyFlows => "too_many_flows",
            Self::MalformedRequest => "malformed_request",
            Self::MalformedResponse => "malformed_response",
            Self::HeadersTooLarge => "headers_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::BodyTooLarge => "body_too_large",
            Self::BadChunk => "bad_chunk",
            Self::BadContentLength => "bad_content_length",
            Self::ConflictingContentLength => "conflicting_content_length",
            Self::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Self::UnexpectedResponse => "unexpected_response",
            Self::PipelineTooDeep => "pipeline_too_deep",
            Self::Upgrade => "upgrade",
            Self::AfterClose => "after_close",
            Self::NoLiveResponse => "no_live_response",
            Self::FlowDropped => "flow_dropped",
            Self::QueueFull => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::MethodFiltered => "method_filtered",
            Self::PathFiltered => "path_filtered",
            Self::UnsafeMethod => "unsafe_method",
            Self::KeySampledOut => "key_sampled_out",
            Self::RewriteFailed => "rewrite_failed",
            Self::InFlightFull => "in_flight_full",
            Self::RateLimited => "rate_limited",
            Self::ShadowTimeout => "shadow_timeout",
            Self::ShadowError => "shadow_error",
            Self::ShadowBodyError => "shadow_body_error",
            Self::StreamOverrun => "stream_overrun",
            Self::NoiseProbeFailed => "noise_probe_failed",
            Self::StackFailed => "stack_failed",
        }
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Drop;

    #[test]
    fn labels_are_distinct_snake_case_and_all_is_complete() {
        let labels: std::collections::BTreeSet<_> = Drop::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(labels.len(), Drop::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        // ALL follows declaration order and ends at the last variant.
        assert!(Drop::ALL.iter().enumerate().all(|(i, d)| *d as usize == i));
        assert_eq!(Drop::ALL.last(), Some(&Drop::StackFailed));
    }
}
