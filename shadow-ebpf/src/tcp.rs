//! TCP telemetry per remote endpoint.
//!
//! - `tcp:tcp_probe`: smoothed RTT of established connections.
//! - `sock:inet_sock_set_state`: connect latency (SYN_SENT to ESTABLISHED),
//!   connection lifetime and bytes, listening ports.
//! - `sock:sock_send_length` / `sock:sock_recv_length`: bytes per connection.
//! - `tcp:tcp_retransmit_skb`: retransmits.
//!
//! An endpoint is the remote `address:port` for connections this host opened,
//! and the client's address with the local listening port for accepted ones.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use shadow_common::{
    AF_INET, AF_INET6, CONN_ENTRIES, ConnInfo, ENDPOINT_ENTRIES, EndpointKey, EndpointStats,
    IPPROTO_TCP, LISTEN_PORT_ENTRIES, direction, stat, tcp_state,
};

use crate::shared::{ZERO_ENDPOINT, atomic_add, count, hist_record, offsets, read};

#[map]
static ENDPOINTS: LruHashMap<EndpointKey, EndpointStats> =
    LruHashMap::with_max_entries(ENDPOINT_ENTRIES, 0);

#[map]
static CONNS: LruHashMap<u64, ConnInfo> = LruHashMap::with_max_entries(CONN_ENTRIES, 0);

#[map]
static LISTEN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(LISTEN_PORT_ENTRIES, 0);

/// Each CPU's xorshift state for sampling `tcp_probe` (no helper call: an
/// array lookup is inlined by the verifier).
#[map]
static SRTT_RNG: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// One probe in `SRTT_MASK[0] + 1` records its RTT; the agent sets it from
/// the probe rate (`shadow_common::srtt_mask_for`), 0 until then.
#[map]
static SRTT_MASK: Array<u64> = Array::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a plain helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Classifies a connection by its local port: a listening port means a
/// client came in.
#[inline(always)]
fn endpoint_key(family: u16, addr: [u8; 16], sport: u16, dport: u16) -> EndpointKey {
    // SAFETY: the value is only tested for presence.
    let inbound = unsafe { LISTEN_PORTS.get(sport) }.is_some();
    EndpointKey {
        addr,
        port: if inbound { sport } else { dport },
        family,
        direction: if inbound {
            direction::INBOUND
        } else {
            direction::OUTBOUND
        },
        _pad: [0; 3],
    }
}

/// The stats of `key`, created zeroed on first use.
fn endpoint(ctx: &TracePointContext, key: &EndpointKey) -> Option<*mut EndpointStats> {
    if let Some(p) = ENDPOINTS.get_ptr_mut(key) {
        return Some(p);
    }
    let zero = ZERO_ENDPOINT.get(0)?;
    if ENDPOINTS.insert(key, zero, BPF_NOEXIST).is_ok() {
        count(stat::ENDPOINT_INSERTS);
    }
    let p = ENDPOINTS.get_ptr_mut(key);
    if p.is_none() {
        count(stat::ENDPOINT_INSERT_FAILED);
        warn!(ctx, "ENDPOINTS insert failed for port {}", key.port);
    }
    p
}

/// Address from a `sockaddr_in` / `sockaddr_in6` as `tcp_probe` stores it.
#[inline(always)]
fn sockaddr_addr(family: u16, sa: &[u8; 28]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa[4..8]);
    } else {
        addr.copy_from_slice(&sa[8..24]);
    }
    addr
}

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_tcp_probe(&ctx) {
        crate::shared::count_error(shadow_common::program::TCP_PROBE, code);
    }
    0
}

fn try_tcp_probe(ctx: &TracePointContext) -> Result<(), i64> {
    count(stat::TCP_PROBES);
    // It fires for every segment: on a busy host one in mask + 1, at
    // random, records the (smoothed, slowly changing) RTT, and the rest
    // cost no helper call. Random, not every n-th: on loopback the two
    // ends of a connection take turns, and a fixed stride would always
    // pick the same end.
    let mask = SRTT_MASK.get(0).copied().unwrap_or(0);
    if mask != 0 {
        let Some(state) = SRTT_RNG.get_ptr_mut(0) else {
            return Ok(());
        };
        // SAFETY: a per-CPU slot, touched only by this CPU with preemption off.
        let r = unsafe {
            let mut x = *state;
            if x == 0 {
                x = now() | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *state = x;
            x
        };
        if r & mask != 0 {
            return Ok(());
        }
    }
    let off = offsets();
    let family: u16 = read(ctx, off.probe_family)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    count(stat::TCP_PROBES_SAMPLED);
    let daddr: [u8; 28] = read(ctx, off.probe_daddr)?;
    let sport: u16 = read(ctx, off.probe_sport)?;
    let dport: u16 = read(ctx, off.probe_dport)?;
    let srtt_us: u32 = read(ctx, off.probe_srtt)?;
    let key = endpoint_key(family, sockaddr_addr(family, &daddr), sport, dport);
    if let Some(ep) = endpoint(ctx, &key) {
        // SAFETY: `ep` points at a live map value.
        hist_record(
            unsafe { &raw mut (*ep).srtt_ns },
            u64::from(srtt_us) * 1_000,
        );
    }
    Ok(())
}

/// Remote address of a `inet_sock_set_state` / `tcp_retransmit_skb` record.
#[inline(always)]
fn state_addr(
    ctx: &TracePointContext,
    family: u16,
    off_v4: u32,
    off_v6: u32,
) -> Result<[u8; 16], i64> {
    if family == AF_INET {
        let v4: [u8; 4] = read(ctx, off_v4)?;
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&v4);
        Ok(addr)
    } else {
        read(ctx, off_v6)
    }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_inet_sock_set_state(&ctx) {
        crate::shared::count_error(shadow_common::program::INET_SOCK_SET_STATE, code);
    }
    0
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets();
    let protocol: u16 = read(ctx, off.state_protocol)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let skaddr: u64 = read(ctx, off.state_skaddr)?;
    let oldstate: i32 = read(ctx, off.state_oldstate)?;
    let newstate: i32 = read(ctx, off.state_newstate)?;
    let sport: u16 = read(ctx, off.state_sport)?;

    // Moving into LISTEN does not fire this tracepoint (the kernel stores
    // that state directly), so listening ports are learnt from the first
    // connection they accept; the agent seeds the ones open at start.
    if oldstate == tcp_state::SYN_RECV
        && newstate == tcp_state::ESTABLISHED
        && LISTEN_PORTS.insert(sport, 1, BPF_NOEXIST).is_ok()
    {
        count(stat::LISTEN_PORTS_LEARNT);
    }
    match newstate {
        tcp_state::SYN_SENT => {
            let family: u16 = read(ctx, off.state_family)?;
            let dport: u16 = read(ctx, off.state_dport)?;
            let addr = state_addr(ctx, family, off.state_daddr, off.state_daddr_v6)?;
            let info = ConnInfo {
                endpoint: endpoint_key(family, addr, sport, dport),
                syn_sent_ns: now(),
                established_ns: 0,
                tx_bytes: 0,
                rx_bytes: 0,
                closed_ns: 0,
            };
            insert_conn(skaddr, &info);
        }
        tcp_state::ESTABLISHED => on_established(ctx, skaddr, oldstate, sport)?,
        tcp_state::CLOSE => on_close(ctx, skaddr),
        _ => {}
    }
    Ok(())
}

fn insert_conn(skaddr: u64, info: &ConnInfo) {
    if CONNS.insert(skaddr, info, 0).is_ok() {
        count(stat::CONN_INSERTS);
    } else {
        count(stat::CONN_INSERT_FAILED);
    }
}

fn on_established(
    ctx: &TracePointContext,
    skaddr: u64,
    oldstate: i32,
    sport: u16,
) -> Result<(), i64> {
    let ts = now();
    if oldstate == tcp_state::SYN_SENT
        && let Some(conn) = CONNS.get_ptr_mut(skaddr)
    {
        // SAFETY: `conn` points at a live map value that only this socket's
        // state changes touch, and those are serialised by the socket lock.
        let (key, connect_ns) = unsafe {
            (*conn).established_ns = ts;
            ((*conn).endpoint, ts.saturating_sub((*conn).syn_sent_ns))
        };
        if let Some(ep) = endpoint(ctx, &key) {
            // SAFETY: `ep` points at a live map value.
            unsafe {
                hist_record(&raw mut (*ep).connect_ns, connect_ns);
                atomic_add(&raw mut (*ep).counters.connections, 1);
            }
        }
        return Ok(());
    }
    // Accepted (SYN_RECV) or opened before the agent started.
    let off = offsets();
    let family: u16 = read(ctx, off.state_family)?;
    let dport: u16 = read(ctx, off.state_dport)?;
    let addr = state_addr(ctx, family, off.state_daddr, off.state_daddr_v6)?;
    let info = ConnInfo {
        endpoint: endpoint_key(family, addr, sport, dport),
        syn_sent_ns: 0,
        established_ns: ts,
        tx_bytes: 0,
        rx_bytes: 0,
        closed_ns: 0,
    };
    insert_conn(skaddr, &info);
    if let Some(ep) = endpoint(ctx, &info.endpoint) {
        // SAFETY: `ep` points at a live map value.
        atomic_add(unsafe { &raw mut (*ep).counters.connections }, 1);
    }
    Ok(())
}

fn on_close(ctx: &TracePointContext, skaddr: u64) {
    let Some(conn) = CONNS.get_ptr_mut(skaddr) else {
        return;
    };
    let ts = now();
    // SAFETY: `conn` points at a live map value; state changes of one socket
    // are serialised by its lock.
    let conn = unsafe {
        if (*conn).closed_ns != 0 {
            return;
        }
        (*conn).closed_ns = ts;
        *conn
    };
    let Some(ep) = endpoint(ctx, &conn.endpoint) else {
        return;
    };
    // SAFETY: `ep` points at a live map value.
    unsafe {
        if conn.established_ns != 0 {
            hist_record(
                &raw mut (*ep).lifetime_ns,
                ts.saturating_sub(conn.established_ns),
            );
            hist_record(&raw mut (*ep).conn_bytes, conn.tx_bytes + conn.rx_bytes);
            atomic_add(&raw mut (*ep).counters.closes, 1);
        } else {
            atomic_add(&raw mut (*ep).counters.connect_failures, 1);
        }
    }
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_tcp_retransmit_skb(&ctx) {
        crate::shared::count_error(shadow_common::program::TCP_RETRANSMIT_SKB, code);
    }
    0
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Result<(), i64> {
    let off = offsets();
    let family: u16 = read(ctx, off.retrans_family)?;
    let sport: u16 = read(ctx, off.retrans_sport)?;
    let dport: u16 = read(ctx, off.retrans_dport)?;
    let addr = state_addr(ctx, family, off.retrans_daddr, off.retrans_daddr_v6)?;
    let key = endpoint_key(family, addr, sport, dport);
    if let Some(ep) = endpoint(ctx, &key) {
        // SAFETY: `ep` points at a live map value.
        atomic_add(unsafe { &raw mut (*ep).counters.retransmits }, 1);
    }
    Ok(())
}

#[tracepoint]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_sock_length(&ctx, true) {
        crate::shared::count_error(shadow_common::program::SOCK_SEND_LENGTH, code);
    }
    0
}

#[tracepoint]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    if let Err(code) = try_sock_length(&ctx, false) {
        crate::shared::count_error(shadow_common::program::SOCK_RECV_LENGTH, code);
    }
    0
}

/// `(sk, protocol, ret)` of a `sock_send_length` / `sock_recv_length`
/// record: one read of the 16 bytes from `sk` when the other two lie in
/// them (as on every kernel seen), three reads otherwise. A helper call
/// costs about 65 ns here, a third of what the program costs.
#[inline(always)]
fn sock_length_fields(ctx: &TracePointContext) -> Result<(u64, u16, i32), i64> {
    let off = offsets();
    let p = off.len_protocol.wrapping_sub(off.len_sk);
    let r = off.len_ret.wrapping_sub(off.len_sk);
    let fits = |at: u32, size: u32| (8..16).contains(&at) && at % 8 + size <= 8;
    if !(fits(p, 2) && fits(r, 4)) {
        return Ok((
            read(ctx, off.len_sk)?,
            read(ctx, off.len_protocol)?,
            read(ctx, off.len_ret)?,
        ));
    }
    // Both in the second word: shifts by load-time constants, no
    // variable stack offsets for the verifier.
    let [sk, word]: [u64; 2] = read(ctx, off.len_sk)?;
    let protocol = (word >> ((p % 8) * 8)) as u16;
    let ret = (word >> ((r % 8) * 8)) as u32 as i32;
    Ok((sk, protocol, ret))
}

fn try_sock_length(ctx: &TracePointContext, send: bool) -> Result<(), i64> {
    let (sk, protocol, ret) = sock_length_fields(ctx)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    if ret <= 0 {
        return Ok(());
    }
    let Some(conn) = CONNS.get_ptr_mut(sk) else {
        return Ok(());
    };
    let bytes = ret as u64;
    // SAFETY: `conn` and `ep` point at live map values.
    unsafe {
        let key = (*conn).endpoint;
        if send {
            atomic_add(&raw mut (*conn).tx_bytes, bytes);
        } else {
            atomic_add(&raw mut (*conn).rx_bytes, bytes);
        }
        if let Some(ep) = ENDPOINTS.get_ptr_mut(key) {
            let c = &raw mut (*ep).counters;
            atomic_add(
                if send {
                    &raw mut (*c).tx_bytes
                } else {
                    &raw mut (*c).rx_bytes
                },
                bytes,
            );
        }
    }
    Ok(())
}
