//! Tracepoint record layouts, read from tracefs at run time.
//!
//! Aya emits no CO-RE relocations, so the kernel programs read tracepoint
//! fields at offsets the agent parses here from
//! `/sys/kernel/tracing/events/<category>/<name>/format` and hands over as the
//! load-time global `TP_OFFSETS`. A field that is missing or has an
//! unexpected size is an error that names the tracepoint and field.

use std::path::{Path, PathBuf};

use shadow_common::TracepointOffsets;

/// Where tracefs is normally mounted, and the older debugfs location.
pub const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read tracepoint format {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tracepoint}: malformed format line {line:?}")]
    Malformed { tracepoint: String, line: String },
    #[error("{tracepoint}: field {field} not found (this kernel's layout is not supported)")]
    MissingField { tracepoint: String, field: String },
    #[error("{tracepoint}: field {field} has size {found}, expected {expected}")]
    FieldSize {
        tracepoint: String,
        field: String,
        found: u32,
        expected: u32,
    },
}

/// Reading tracefs is the agent's own work.
impl crate::util::Sourced for TracefsError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Internal
    }
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// The parsed format of one tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub tracepoint: String,
    pub fields: Vec<Field>,
}

impl Format {
    /// Parses the text of a `format` file. `tracepoint` is only used in errors.
    pub fn parse(tracepoint: &str, text: &str) -> Result<Self, TracefsError> {
        let malformed = |line: &str| TracefsError::Malformed {
            tracepoint: tracepoint.to_owned(),
            line: line.to_owned(),
        };
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let (mut offset, mut size, mut signed) = (None, None, None);
            for part in rest.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("signed:") {
                    signed = Some(v == "1");
                } else if decl.is_none() {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(malformed(line));
            };
            let name = declared_name(decl).ok_or_else(|| malformed(line))?;
            fields.push(Field {
                name,
                offset,
                size,
                signed: signed.unwrap_or(false),
            });
        }
        Ok(Self {
            tracepoint: tracepoint.to_owned(),
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of `name`, checking that its size is one of `sizes`.
    pub fn offset(&self, name: &str, sizes: &[u32]) -> Result<u32, TracefsError> {
        let f = self.field(name).ok_or_else(|| TracefsError::MissingField {
            tracepoint: self.tracepoint.clone(),
            field: name.to_owned(),
        })?;
        if !sizes.contains(&f.size) {
            return Err(TracefsError::FieldSize {
                tracepoint: self.tracepoint.clone(),
                field: name.to_owned(),
                found: f.size,
                expected: sizes[0],
            });
        }
        Ok(f.offset)
    }
}

/// The identifier a C declaration declares: `char rwbs[10]` -> `rwbs`,
/// `const void * skaddr` -> `skaddr`, `__data_loc char[] cmd` -> `cmd`.
fn declared_name(decl: &str) -> Option<String> {
    let last = decl.split_whitespace().last()?;
    let last = last.trim_start_matches('*');
    let name = last.split('[').next()?;
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| name.to_owned())
}

/// A tracefs mount with the events directory.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs, mounting it at `/sys/kernel/tracing` when it is absent.
    pub fn open_or_mount() -> Result<Self, TracefsError> {
        for root in TRACEFS_ROOTS {
            if Path::new(root).join("events").is_dir() {
                return Ok(Self { root: root.into() });
            }
        }
        let target = TRACEFS_ROOTS[0];
        mount_tracefs(target).map_err(|source| TracefsError::Mount {
            path: target.to_owned(),
            source,
        })?;
        tracing::info!(path = target, "Mounted tracefs");
        Ok(Self {
            root: target.into(),
        })
    }

    /// A tracefs tree at `root` (tests point this at fixtures).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        Format::parse(&format!("{category}:{name}"), &text)
    }

    /// Offsets of every field the telemetry programs read.
    pub fn telemetry_offsets(&self) -> Result<TracepointOffsets, TracefsError> {
        telemetry_offsets(|cat, name| self.format(cat, name))
    }
}

/// Builds [`TracepointOffsets`] from a source of formats.
pub fn telemetry_offsets(
    mut format: impl FnMut(&str, &str) -> Result<Format, TracefsError>,
) -> Result<TracepointOffsets, TracefsError> {
    let issue = format("block", "block_rq_issue")?;
    let complete = format("block", "block_rq_complete")?;
    let probe = format("tcp", "tcp_probe")?;
    let state = format("sock", "inet_sock_set_state")?;
    let retrans = format("tcp", "tcp_retransmit_skb")?;
    let len = format("sock", "sock_send_length")?;
    let recv = format("sock", "sock_recv_length")?;
    // One program reads both length tracepoints with the same offsets.
    for field in ["sk", "protocol", "ret"] {
        let (a, b) = (len.field(field), recv.field(field));
        if a.map(|f| f.offset) != b.map(|f| f.offset) {
            return Err(TracefsError::MissingField {
                tracepoint: "sock:sock_recv_length".into(),
                field: format!("{field} (at the same offset as in sock_send_length)"),
            });
        }
    }
    Ok(TracepointOffsets {
        issue_dev: issue.offset("dev", &[4])?,
        issue_sector: issue.offset("sector", &[8])?,
        issue_bytes: issue.offset("bytes", &[4])?,
        issue_rwbs: rwbs_offset(&issue)?,
        complete_dev: complete.offset("dev", &[4])?,
        complete_sector: complete.offset("sector", &[8])?,
        complete_error: complete.offset("error", &[4])?,
        probe_daddr: probe.offset("daddr", &[28])?,
        probe_sport: probe.offset("sport", &[2])?,
        probe_dport: probe.offset("dport", &[2])?,
        probe_family: probe.offset("family", &[2])?,
        probe_srtt: probe.offset("srtt", &[4])?,
        state_skaddr: state.offset("skaddr", &[8])?,
        state_oldstate: state.offset("oldstate", &[4])?,
        state_newstate: state.offset("newstate", &[4])?,
        state_sport: state.offset("sport", &[2])?,
        state_dport: state.offset("dport", &[2])?,
        state_family: state.offset("family", &[2])?,
        state_protocol: state.offset("protocol", &[2])?,
        state_daddr: state.offset("daddr", &[4])?,
        state_daddr_v6: state.offset("daddr_v6", &[16])?,
        retrans_sport: retrans.offset("sport", &[2])?,
        retrans_dport: retrans.offset("dport", &[2])?,
        retrans_family: retrans.offset("family", &[2])?,
        retrans_daddr: retrans.offset("daddr", &[4])?,
        retrans_daddr_v6: retrans.offset("daddr_v6", &[16])?,
        len_sk: len.offset("sk", &[8])?,
        len_protocol: len.offset("protocol", &[2])?,
        len_ret: len.offset("ret", &[4])?,
    })
}

/// The program reads 8 bytes of `rwbs`, whose declared size varies (8 or 10).
fn rwbs_offset(f: &Format) -> Result<u32, TracefsError> {
    let field = f.field("rwbs").ok_or_else(|| TracefsError::MissingField {
        tracepoint: f.tracepoint.clone(),
        field: "rwbs".into(),
    })?;
    if field.size < 8 {
        return Err(TracefsError::FieldSize {
            tracepoint: f.tracepoint.clone(),
            field: "rwbs".into(),
            found: field.size,
            expected: 8,
        });
    }
    Ok(field.offset)
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in constant");
    let (src, dst, fs) = (c("nodev"), c(target), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Copied from this project's reference kernel (6.18).
    fn fixture(name: &str) -> &'static str {
        match name {
            "block_rq_issue" => include_str!("testdata/block_rq_issue.format"),
            "block_rq_complete" => include_str!("testdata/block_rq_complete.format"),
            "tcp_probe" => include_str!("testdata/tcp_probe.format"),
            "inet_sock_set_state" => include_str!("testdata/inet_sock_set_state.format"),
            "tcp_retransmit_skb" => include_str!("testdata/tcp_retransmit_skb.format"),
            "sock_send_length" | "sock_recv_length" => {
                include_str!("testdata/sock_send_length.format")
            }
            other => panic!("no fixture for {other}"),
        }
    }

    #[test]
    fn parses_block_rq_issue() {
        let f = Format::parse("block:block_rq_issue", fixture("block_rq_issue")).unwrap();
        let dev = f.field("dev").expect("dev field");
        assert_eq!((dev.offset, dev.size, dev.signed), (8, 4, false));
        assert_eq!(f.field("sector").unwrap().offset, 16);
        assert_eq!(f.field("rwbs").unwrap().size, 10, "char rwbs[10]");
        assert_eq!(f.field("cmd").unwrap().offset, 60, "__data_loc char[] cmd");
        assert!(f.field("common_pid").unwrap().signed);
    }

    #[test]
    fn parses_pointer_and_array_declarations() {
        let f = Format::parse("tcp:tcp_probe", fixture("tcp_probe")).unwrap();
        assert_eq!(
            f.field("skaddr").unwrap().offset,
            128,
            "const void * skaddr"
        );
        assert_eq!(f.field("daddr").unwrap().size, 28, "__u8 daddr[28]");
        assert_eq!(f.field("srtt").unwrap().offset, 100);
    }

    #[test]
    fn builds_all_offsets_from_this_kernel() {
        let o = telemetry_offsets(|_, name| Format::parse(name, fixture(name))).unwrap();
        assert_eq!(o.issue_dev, 8);
        assert_eq!(o.issue_bytes, 28);
        assert_eq!(o.issue_rwbs, 34);
        assert_eq!(o.probe_srtt, 100);
        assert_eq!(o.state_newstate, 20);
        assert_eq!(o.state_daddr_v6, 56);
        assert_eq!(o.retrans_daddr, 38);
        assert_eq!(o.len_ret, 20);
    }

    #[test]
    fn missing_field_names_tracepoint_and_field() {
        let text = fixture("tcp_probe").replace("srtt", "srtt_renamed");
        let err = telemetry_offsets(|_, name| {
            let t = if name == "tcp_probe" {
                text.clone()
            } else {
                fixture(name).to_owned()
            };
            Format::parse(name, &t)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp_probe: field srtt not found (this kernel's layout is not supported)"
        );
    }

    #[test]
    fn wrong_size_is_rejected() {
        let text = fixture("block_rq_issue").replace("offset:16;\tsize:8;", "offset:16;\tsize:4;");
        let f = Format::parse("block:block_rq_issue", &text).unwrap();
        let err = f.offset("sector", &[8]).unwrap_err();
        assert!(
            matches!(err, TracefsError::FieldSize { found: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_line_is_an_error() {
        let err = Format::parse("x:y", "\tfield:int a;\toffset:zero;\tsize:4;\n").unwrap_err();
        assert!(matches!(err, TracefsError::Malformed { .. }), "{err}");
    }
}
