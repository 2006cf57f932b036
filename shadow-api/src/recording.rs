//! Recordings of sampled exchanges (`shadowctl record`, `shadowctl replay`).
//!
//! Format `shadow-recording` version 1: JSON lines, gzip-compressed when the
//! file name ends in `.gz`. The first line is the header
//! `{"format":"shadow-recording","version":1,"created_ms":...}`; each further
//! line is one [`Recorded`] exchange. Bodies are base64; secret headers are
//! already redacted (the same digest the replayer sends), so a recording can
//! be shared. `offset_ns` is the request's time since the first recorded
//! request, which replay divides by the speed factor.

use std::{
    io::{BufRead, BufReader},
    path::Path,
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "shadow-recording";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileHeader {
    pub format: String,
    pub version: u32,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
}

/// One exchange as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recorded {
    pub id: u64,
    pub service_port: u16,
    pub offset_ns: u64,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_b64: String,
    pub live: Option<RecordedResponse>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Format {
        path: String,
        line: usize,
        message: String,
    },
}

impl Recorded {
    /// The request body (empty if the base64 is damaged).
    pub fn body(&self) -> Vec<u8> {
        B64.decode(&self.body_b64).unwrap_or_default()
    }
}

/// Reads a recording, checking its header.
pub fn read(path: &Path) -> Result<Vec<Recorded>, RecordError> {
    let p = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| RecordError::Io {
        path: p.clone(),
        source,
    })?;
    let r: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|source| RecordError::Io {
            path: p.clone(),
            source,
        })?;
        let bad = |message: String| RecordError::Format {
            path: p.clone(),
            line: i + 1,
            message,
        };
        if i == 0 {
            let h: FileHeader = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(bad(format!(
                    "not a {FORMAT} v{VERSION} file (found {} v{})",
                    h.format, h.version
                )));
            }
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}
