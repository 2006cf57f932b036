//! The sampled tee: a tc classifier on ingress and/or egress of the watched
//! interface. For TCP packets to or from a configured service port it hashes
//! the connection symmetrically, compares the hash with the service's
//! sampling rate, and sends sampled packets whole (metadata plus the packet
//! bytes appended by the kernel) to user space through a perf event array.
//! It always returns TC_ACT_UNSPEC: a live packet is never dropped or changed.

use aya_ebpf::{
    EbpfContext as _,
    bindings::TC_ACT_UNSPEC,
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, PerfEventArray},
    programs::TcContext,
};
use shadow_common::{
    AF_INET, AF_INET6, IPPROTO_TCP,
    capture::{
        ADMITTED_ENTRIES, AdmitKey, CaptureCounters, MAX_SERVICES, PERF_DATA_MAX, PacketMeta,
        SERVICE_PORTS, ServiceSampling, TAIL_MAX, TailRecord, flow_hash, hook, kind, sampled,
        service_flag,
    },
};

#[map]
static SERVICES: Array<ServiceSampling> = Array::with_max_entries(SERVICE_PORTS, 0);

#[map]
static CAPTURE_STATS: PerCpuArray<CaptureCounters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

#[map]
static PACKETS: PerfEventArray<PacketMeta> = PerfEventArray::new(0);

/// Connections sampled at their SYN; every later packet of theirs is sent,
/// whatever the service's rate has become since.
#[map]
static ADMITTED: LruHashMap<AdmitKey, u8> = LruHashMap::with_max_entries(ADMITTED_ENTRIES, 0);

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

#[classifier]
pub fn shadow_tc_ingress(ctx: TcContext) -> i32 {
    if let Err(code) = try_shadow_tc(&ctx, hook::INGRESS) {
        crate::shared::count_error(shadow_common::program::TC_INGRESS, code);
    }
    TC_ACT_UNSPEC
}

#[classifier]
pub fn shadow_tc_egress(ctx: TcContext) -> i32 {
    if let Err(code) = try_shadow_tc(&ctx, hook::EGRESS) {
        crate::shared::count_error(shadow_common::program::TC_EGRESS, code);
    }
    TC_ACT_UNSPEC
}

/// Scratch space for the metadata and a tail: too large for the 512-byte
/// stack together with the parsing state.
#[map]
static SCRATCH: PerCpuArray<TailRecord> = PerCpuArray::with_max_entries(1, 0);

/// Where the TCP header starts and how long the IP payload is.
struct L4 {
    tcp_off: usize,
    ip_payload: u32,
}

/// Reads a `T` at a constant `off`: straight from the packet's linear part
/// when it is there (no helper call: `bpf_skb_load_bytes` costs about
/// 65 ns here, and the IP header takes six reads), else through the helper.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, i64> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() <= end {
        // SAFETY: the read lies within [data, data_end), checked above.
        return Ok(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
    }
    ctx.load(off)
        .map_err(|_| shadow_common::prog_error::PACKET_LOAD)
}

/// Parses Ethernet + IPv4/IPv6 into `m`'s addresses; `None` for non-TCP.
fn parse_ip(ctx: &TcContext, m: &mut PacketMeta) -> Result<Option<L4>, i64> {
    let proto = u16::from_be(load::<u16>(ctx, 12)?);
    if proto == ETH_P_IP {
        let vihl: u8 = load(ctx, ETH_HLEN)?;
        let ihl = ((vihl & 0x0f) as usize) * 4;
        let l4: u8 = load(ctx, ETH_HLEN + 9)?;
        if l4 as u16 != IPPROTO_TCP || ihl < 20 {
            return Ok(None);
        }
        let total = u16::from_be(load::<u16>(ctx, ETH_HLEN + 2)?) as u32;
        let s: [u8; 4] = load(ctx, ETH_HLEN + 12)?;
        let d: [u8; 4] = load(ctx, ETH_HLEN + 16)?;
        m.saddr = [0; 16];
        m.daddr = [0; 16];
        m.saddr[..4].copy_from_slice(&s);
        m.daddr[..4].copy_from_slice(&d);
        m.family = AF_INET;
        Ok(Some(L4 {
            tcp_off: ETH_HLEN + (ihl & 0x3c),
            ip_payload: total.saturating_sub(ihl as u32),
        }))
    } else if proto == ETH_P_IPV6 {
        let next: u8 = load(ctx, ETH_HLEN + 6)?;
        if next as u16 != IPPROTO_TCP {
            return Ok(None);
        }
        m.saddr = load(ctx, ETH_HLEN + 8)?;
        m.daddr = load(ctx, ETH_HLEN + 24)?;
        m.family = AF_INET6;
        Ok(Some(L4 {
            tcp_off: ETH_HLEN + 40,
            ip_payload: u16::from_be(load::<u16>(ctx, ETH_HLEN + 4)?) as u32,
        }))
    } else {
        Ok(None)
    }
}

#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "passing the metadata by value would copy 80 bytes onto the 512-byte BPF stack"
)]
fn try_shadow_tc(ctx: &TcContext, hook: u8) -> Result<(), i64> {
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: per-CPU scratch, used only by this CPU with preemption off.
    let rec = unsafe { &mut *rec };
    let m = &mut rec.meta;
    let Some(l4) = parse_ip(ctx, m)? else {
        return Ok(());
    };
    // The TCP header's offset varies with the IPv4 options, and the
    // verifier does not follow a packet pointer of variable offset through
    // the comparison LLVM emits: these two go through the helper.
    let ports: u32 = ctx
        .load(l4.tcp_off)
        .map_err(|_| shadow_common::prog_error::PACKET_LOAD)?;
    let sport = u16::from_be(ports as u16);
    let dport = u16::from_be((ports >> 16) as u16);
    let service = |port: u16| {
        SERVICES
            .get(u32::from(port))
            .filter(|s| s.flags & service_flag::ACTIVE != 0)
            .copied()
    };
    let (svc, to_server) = match service(dport) {
        Some(s) => (s, true),
        None => match service(sport) {
            Some(s) => (s, false),
            None => return Ok(()),
        },
    };
    let Some(counters) = CAPTURE_STATS.get_ptr_mut(svc.slot) else {
        return Ok(());
    };
    // SAFETY: per-CPU slot, touched only by this CPU with preemption off.
    let counters = unsafe { &mut *counters };
    counters.packets_seen += 1;
    let key = if to_server {
        AdmitKey {
            client: m.saddr,
            server: m.daddr,
            client_port: sport,
            server_port: dport,
            _pad: [0; 4],
        }
    } else {
        AdmitKey {
            client: m.daddr,
            server: m.saddr,
            client_port: dport,
            server_port: sport,
            _pad: [0; 4],
        }
    };
    let flags: u8 = ctx
        .load(l4.tcp_off + 13)
        .map_err(|_| shadow_common::prog_error::PACKET_LOAD)?;
    // A client's SYN decides, at the rate now; a stale entry of an earlier
    // connection on the same ports goes. A connection already open when the
    // agent came is never admitted (it could not be rebuilt anyway).
    let admitted = if to_server && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        let h = flow_hash(&key.client, key.client_port, &key.server, key.server_port);
        let take = sampled(h, svc.per_ten_thousand);
        if take {
            if ADMITTED.insert(&key, &1, 0).is_ok() {
                counters.flows_admitted += 1;
            }
        } else {
            let _ = ADMITTED.remove(&key);
        }
        take
    } else if svc.flags & service_flag::MAY_HAVE_ADMITTED == 0 {
        // Never sampled since attach: nothing to look up.
        false
    } else {
        // SAFETY: only tested for presence.
        unsafe { ADMITTED.get(&key) }.is_some()
    };
    if !admitted {
        return Ok(());
    }
    if fill_tcp(ctx, m, &l4).is_err() {
        counters.parse_errors += 1;
        return Ok(());
    }
    m.sport = sport;
    m.dport = dport;
    m.service_port = if to_server { dport } else { sport };
    m.to_server = u8::from(to_server);
    m.hook = hook;
    m.kind = kind::PACKET;
    m.tail_len = 0;
    let mut tail = 0u32;
    if m.skb_len > PERF_DATA_MAX {
        m.captured_len = PERF_DATA_MAX;
        tail = m.skb_len - PERF_DATA_MAX;
        if tail as usize >= TAIL_MAX {
            counters.truncated += 1;
            tail = 0;
        } else {
            m.tail_len = tail as u16;
        }
    }
    counters.packets_sampled += 1;
    counters.payload_bytes += u64::from(m.payload_len);
    // The kernel appends `captured_len` bytes of the packet to the sample.
    PACKETS.output(ctx, &*m, m.captured_len);
    if tail > 0 && send_tail(ctx, rec, tail).is_err() {
        counters.truncated += 1;
    }
    Ok(())
}

/// Sends the bytes past `PERF_DATA_MAX` as a tail record right after the
/// head sample (same CPU, so the same buffer, in order).
fn send_tail(ctx: &TcContext, rec: &mut TailRecord, tail: u32) -> Result<(), i64> {
    rec.meta.kind = kind::TAIL;
    rec.meta.captured_len = tail;
    // The verifier needs a bound it can see; a plain `&` is folded away by
    // LLVM, which already knows `tail < TAIL_MAX`.
    let mut n = u64::from(tail);
    // SAFETY: masks a register; no memory is touched.
    unsafe { core::arch::asm!("{0} &= 511", inout(reg) n, options(nomem, nostack)) };
    if n == 0 {
        return Err(shadow_common::prog_error::OTHER);
    }
    // SAFETY: `rec.bytes` has TAIL_MAX bytes and `n <= TAIL_MAX`; the helper
    // checks the offset against the packet.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            PERF_DATA_MAX,
            rec.bytes.as_mut_ptr().cast(),
            n as u32,
        )
    };
    if ret != 0 {
        return Err(ret);
    }
    // The array is typed for heads; a tail is a bigger record in the same
    // array, so it goes through the helper directly.
    // SAFETY: PerfEventArray is a transparent wrapper of its map definition,
    // whose address the loader relocates; `rec` is valid for its size.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_perf_event_output(
            ctx.as_ptr(),
            core::ptr::addr_of!(PACKETS).cast_mut().cast(),
            aya_ebpf::bindings::BPF_F_CURRENT_CPU,
            core::ptr::from_mut(rec).cast(),
            core::mem::size_of::<TailRecord>() as u64,
        )
    };
    if ret != 0 {
        return Err(ret);
    }
    Ok(())
}

/// Sequence numbers, flags, lengths and the time.
fn fill_tcp(ctx: &TcContext, m: &mut PacketMeta, l4: &L4) -> Result<(), i64> {
    let off = l4.tcp_off;
    m.seq = u32::from_be(
        ctx.load::<u32>(off + 4)
            .map_err(|_| shadow_common::prog_error::PACKET_LOAD)?,
    );
    m.ack = u32::from_be(
        ctx.load::<u32>(off + 8)
            .map_err(|_| shadow_common::prog_error::PACKET_LOAD)?,
    );
    let doff_flags: [u8; 2] = ctx
        .load(off + 12)
        .map_err(|_| shadow_common::prog_error::PACKET_LOAD)?;
    let tcp_hlen = ((doff_flags[0] >> 4) as u32) * 4;
    m.tcp_flags = doff_flags[1];
    m.skb_len = ctx.len();
    m.captured_len = m.skb_len;
    m.payload_off = off as u32 + tcp_hlen;
    m.payload_len = l4.ip_payload.saturating_sub(tcp_hlen);
    // SAFETY: a helper call without arguments.
    m.ts_ns = unsafe { bpf_ktime_get_ns() };
    m._pad = 0;
    Ok(())
}
