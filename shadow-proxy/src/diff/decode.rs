//! Undoing `Content-Encoding` before a diff, with a cap on the decoded
//! size: a few kilobytes of gzip can expand to gigabytes.

use std::io::Read;

/// Decoded bodies are cut at this size unless a service sets
/// `diff.max_decoded_bytes`: a few kilobytes of gzip can expand to gigabytes.
pub const DEFAULT_MAX_DECODED: usize = 8 << 20;

/// A body with its `Content-Encoding` undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    /// The decoded body went on past the cap; `bytes` holds its first `cap` bytes.
    pub truncated: bool,
}

/// Undoes `Content-Encoding` (gzip, deflate, br), stopping after `cap`
/// decoded bytes. Unknown codings and corrupt payloads compare as raw bytes.
pub fn decode_body(encoding: Option<&str>, body: &[u8], cap: usize) -> Decoded {
    let decoded = match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        Some("gzip") | Some("x-gzip") => read_capped(flate2::read::GzDecoder::new(body), cap),
        Some("deflate") => read_capped(flate2::read::ZlibDecoder::new(body), cap)
            .or_else(|| read_capped(flate2::read::DeflateDecoder::new(body), cap)),
        Some("br") => read_capped(brotli_decompressor::Decompressor::new(body, 4096), cap),
        _ => None,
    };
    decoded.unwrap_or_else(|| Decoded {
        bytes: body.to_vec(),
        truncated: false,
    })
}

/// Reads at most `cap` bytes; `None` when the stream is corrupt before the cap.
fn read_capped(decoder: impl Read, cap: usize) -> Option<Decoded> {
    let mut limited = decoder.take(cap as u64);
    let mut bytes = Vec::new();
    limited.read_to_end(&mut bytes).ok()?;
    // One byte more tells a body of exactly `cap` bytes from a longer one;
    // an error past the cap is a body that goes on (corrupt or not).
    let truncated = bytes.len() == cap && !matches!(limited.into_inner().read(&mut [0u8]), Ok(0));
    Some(Decoded { bytes, truncated })
}
