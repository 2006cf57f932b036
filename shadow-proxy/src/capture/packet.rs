//! Decoding one perf sample from the tc classifier: [`PacketMeta`] followed
//! by the packet bytes the kernel appended.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use shadow_common::{AF_INET, capture::PacketMeta};

use super::reassembly::{Direction, FlowKey, Packet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("sample of {len} bytes is shorter than its metadata")]
    Short { len: usize },
    #[error("payload [{off}, {end}) lies beyond the {captured} captured bytes")]
    Truncated {
        off: usize,
        end: usize,
        captured: usize,
    },
}

/// A sample of live traffic that does not decode.
impl crate::util::Sourced for DecodeError {
    fn error_source(&self) -> crate::util::ErrorSource {
        crate::util::ErrorSource::Live
    }
}

fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

/// Splits a sample into its metadata and the bytes after it.
pub fn split(sample: &[u8]) -> Result<(PacketMeta, &[u8]), DecodeError> {
    let meta_len = std::mem::size_of::<PacketMeta>();
    if sample.len() < meta_len {
        return Err(DecodeError::Short { len: sample.len() });
    }
    // SAFETY: `sample` holds at least size_of::<PacketMeta>() bytes and
    // PacketMeta is plain old data valid for any bit pattern.
    let meta: PacketMeta = unsafe { std::ptr::read_unaligned(sample.as_ptr().cast()) };
    Ok((meta, &sample[meta_len..]))
}

/// Decodes a whole sample. `Truncated` means the packet was larger than one
/// perf sample: the flow it belongs to cannot be rebuilt.
pub fn decode(sample: &[u8]) -> Result<(PacketMeta, Packet), DecodeError> {
    let (meta, data) = split(sample)?;
    decode_parts(meta, Bytes::copy_from_slice(data))
}

/// Decodes metadata and the packet bytes (a head joined with its tail); the
/// payload is a slice of `data`, not a copy.
pub fn decode_parts(meta: PacketMeta, data: Bytes) -> Result<(PacketMeta, Packet), DecodeError> {
    let captured = (meta.captured_len as usize + meta.tail_len as usize).min(data.len());
    let off = meta.payload_off as usize;
    let end = off + meta.payload_len as usize;
    if end > captured {
        return Err(DecodeError::Truncated { off, end, captured });
    }
    let src = SocketAddr::new(addr(meta.family, &meta.saddr), meta.sport);
    let dst = SocketAddr::new(addr(meta.family, &meta.daddr), meta.dport);
    let (key, dir) = if meta.to_server == 1 {
        (
            FlowKey {
                client: src,
                server: dst,
            },
            Direction::ToServer,
        )
    } else {
        (
            FlowKey {
                client: dst,
                server: src,
            },
            Direction::ToClient,
        )
    };
    let packet = Packet {
        key,
        dir,
        seq: meta.seq,
        ack: meta.ack,
        flags: meta.tcp_flags,
        payload: data.slice(off..end),
        ts_ns: meta.ts_ns,
    };
    Ok((meta, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(to_server: u8, payload: &[u8], pad: usize) -> Vec<u8> {
        let hdr = 14 + 20 + 20;
        let meta = PacketMeta {
            ts_ns: 7,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000,
            dport: 80,
            family: AF_INET,
            service_port: 80,
            seq: 1000,
            ack: 5,
            skb_len: (hdr + payload.len() + pad) as u32,
            captured_len: (hdr + payload.len() + pad) as u32,
            payload_off: hdr as u32,
            payload_len: payload.len() as u32,
            tcp_flags: 0x18,
            hook: 0,
            to_server,
            kind: 0,
            _pad: 0,
            tail_len: 0,
        };
        // SAFETY: PacketMeta is plain old data.
        let raw: [u8; 80] = unsafe { std::mem::transmute(meta) };
        let mut v = raw.to_vec();
        v.extend(std::iter::repeat_n(0u8, hdr));
        v.extend_from_slice(payload);
        v.extend(std::iter::repeat_n(0xeeu8, pad));
        v
    }

    #[test]
    fn decodes_payload_without_link_padding() {
        let (meta, p) = decode(&sample(1, b"GET / HTTP/1.1\r\n", 6)).unwrap();
        assert_eq!(meta.seq, 1000);
        assert_eq!(&p.payload[..], b"GET / HTTP/1.1\r\n");
        assert_eq!(p.dir, Direction::ToServer);
        assert_eq!(p.key.server, "10.0.0.2:80".parse().unwrap());
        assert_eq!(p.key.client, "10.0.0.1:40000".parse().unwrap());
    }

    #[test]
    fn server_to_client_orders_the_key_by_role() {
        let (_, p) = decode(&sample(0, b"HTTP/1.1 200 OK\r\n", 0)).unwrap();
        assert_eq!(p.dir, Direction::ToClient);
        assert_eq!(p.key.server, "10.0.0.1:40000".parse().unwrap());
    }

    #[test]
    fn truncated_and_short_samples_are_errors() {
        let mut s = sample(1, b"hello", 0);
        s.truncate(s.len() - 2);
        assert!(matches!(decode(&s), Err(DecodeError::Truncated { .. })));
        assert!(matches!(decode(&s[..10]), Err(DecodeError::Short { .. })));
    }
}
