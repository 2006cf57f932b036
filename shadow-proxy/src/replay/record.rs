//! Writing recordings of sampled exchanges (`POST /v1/record`); the file
//! format and its reader are [`shadow_api::recording`]'s.
//!
//! Format `shadow-recording` version 1: JSON lines, gzip-compressed when the
//! file name ends in `.gz`. The first line is the header
//! `{"format":"shadow-recording","version":1,"created_ms":...}`; each further
//! line is one [`Recorded`] exchange. Bodies are base64; secret headers are
//! already redacted (the same digest the replayer sends), so a recording can
//! be shared. `offset_ns` is the request's time since the first recorded
//! request, which replay divides by the speed factor.

use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{SyncSender, TrySendError},
    },
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};

use crate::{capture::pipeline::CapturedExchange, http::conversation::Header};

pub use shadow_api::recording::{
    FORMAT, FileHeader, RecordError, Recorded, RecordedResponse, VERSION, read,
};

fn headers(h: &[Header], redact: &[String]) -> Vec<(String, String)> {
    h.iter()
        .map(|h| {
            let v = if redact.contains(&h.name.to_ascii_lowercase()) {
                super::rewrite::redact(&h.value)
            } else {
                String::from_utf8_lossy(&h.value).into_owned()
            };
            (h.name.clone(), v)
        })
        .collect()
}

/// A captured exchange as stored, secret headers redacted.
pub fn recorded(c: &CapturedExchange, first_ns: u64, redact: &[String]) -> Recorded {
    {
        let r = &c.exchange.request;
        Recorded {
            id: c.id,
            service_port: c.service_port,
            offset_ns: r.first_byte_ns.saturating_sub(first_ns),
            method: r.method.clone(),
            target: r.target.clone(),
            headers: headers(&r.headers, redact),
            body_b64: B64.encode(&r.body),
            live: c.exchange.response.as_ref().map(|resp| RecordedResponse {
                status: resp.status,
                headers: headers(&resp.headers, redact),
                body_b64: B64.encode(&resp.body),
            }),
        }
    }
}

fn writer(path: &Path) -> Result<Box<dyn Write + Send>, RecordError> {
    let f = std::fs::File::create(path).map_err(|source| RecordError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::write::GzEncoder::new(
            BufWriter::new(f),
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(BufWriter::new(f))
    })
}

/// A recording in progress: the writer runs on its own thread behind a
/// bounded channel; when it falls behind, exchanges are dropped and counted.
pub struct Recorder {
    tx: SyncSender<Recorded>,
    pub written: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    first_ns: AtomicU64,
    redact: Vec<String>,
    thread: Option<std::thread::JoinHandle<Result<(), RecordError>>>,
}

impl Recorder {
    pub fn start(path: &Path, redact: Vec<String>) -> Result<Self, RecordError> {
        let mut w = writer(path)?;
        let io = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        let header = FileHeader {
            format: FORMAT.into(),
            version: VERSION,
            created_ms: crate::util::unix_ms(),
        };
        writeln!(w, "{}", serde_json::to_string(&header).unwrap_or_default()).map_err(io)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Recorded>(4096);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        let p = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("shadow-recorder".into())
            .spawn(move || {
                let io = |source| RecordError::Io {
                    path: p.clone(),
                    source,
                };
                for rec in rx {
                    let line = serde_json::to_string(&rec).unwrap_or_default();
                    writeln!(w, "{line}").map_err(io)?;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                w.flush().map_err(io)
            })
            .map_err(io)?;
        Ok(Self {
            tx,
            written,
            dropped: Arc::new(AtomicU64::new(0)),
            first_ns: AtomicU64::new(0),
            redact,
            thread: Some(thread),
        })
    }

    /// Queues an exchange; never blocks.
    pub fn offer(&self, c: &CapturedExchange) {
        let ts = c.exchange.request.first_byte_ns;
        let _ = self
            .first_ns
            .compare_exchange(0, ts, Ordering::Relaxed, Ordering::Relaxed);
        let rec = recorded(c, self.first_ns.load(Ordering::Relaxed), &self.redact);
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Flushes and closes the file; returns (written, dropped).
    pub fn finish(mut self) -> Result<(u64, u64), RecordError> {
        let Self {
            tx,
            written,
            dropped,
            ref mut thread,
            ..
        } = self;
        drop(tx);
        if let Some(t) = thread.take() {
            t.join().unwrap_or(Ok(()))?;
        }
        Ok((
            written.load(Ordering::Relaxed),
            dropped.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::reassembly::FlowKey,
        http::conversation::{Exchange, Request},
    };
    use bytes::Bytes;

    fn captured(id: u64, ts: u64) -> CapturedExchange {
        CapturedExchange {
            stream: None,
            id,
            service_port: 80,
            flow: FlowKey {
                client: "127.0.0.1:1".parse().unwrap(),
                server: "127.0.0.1:80".parse().unwrap(),
            },
            exchange: Exchange {
                request: Request {
                    method: "POST".into(),
                    target: format!("/r/{id}"),
                    version: 1,
                    headers: vec![
                        Header {
                            name: "Authorization".into(),
                            value: Bytes::from_static(b"Bearer x"),
                        },
                        Header {
                            name: "Accept".into(),
                            value: Bytes::from_static(b"*/*"),
                        },
                    ],
                    body: Bytes::from(vec![0u8, 255, 7]),
                    first_byte_ns: ts,
                    last_byte_ns: ts,
                    ..Request::default()
                },
                response: None,
            },
        }
    }

    #[test]
    fn round_trip_plain_and_gzip_with_redaction_and_offsets() {
        for name in ["rec.jsonl", "rec.jsonl.gz"] {
            let path = std::env::temp_dir().join(format!("shadow-{}-{name}", std::process::id()));
            let r = Recorder::start(&path, vec!["authorization".into()]).unwrap();
            r.offer(&captured(1, 1_000));
            r.offer(&captured(2, 501_000));
            assert_eq!(r.finish().unwrap(), (2, 0));
            let got = read(&path).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[1].offset_ns, 500_000);
            assert_eq!(got[0].body(), vec![0u8, 255, 7]);
            assert_eq!(
                got[0].headers[0].1,
                super::super::rewrite::redact(b"Bearer x")
            );
            assert_eq!(got[0].headers[1].1, "*/*");
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn wrong_format_is_rejected_with_line() {
        let path = std::env::temp_dir().join(format!("shadow-bad-{}.jsonl", std::process::id()));
        std::fs::write(
            &path,
            "{\"format\":\"other\",\"version\":1,\"created_ms\":0}\n",
        )
        .unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("not a shadow-recording v1"),
            "{e}"
        );
        let _ = std::fs::remove_file(path);
    }
}
