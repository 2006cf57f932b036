//! A point-in-time copy of the kernel maps, with names resolved: the maps'
//! keys and values become [`shadow_api::kernel`]'s wire types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shadow_common::{
    AF_INET, BlockKey, BlockStats, EndpointKey, EndpointStats, block_op, direction, prog_error,
    program, stat,
};

pub use shadow_api::kernel::{
    BlockSeries, EndpointSeries, KernelDrops, KernelSnapshot, ProgramErrors,
};

use super::devices::{DeviceNames, split_dev};
use super::hist::Hist;

/// The snapshot of the maps' contents (`counts` are the stat slots).
pub fn build(
    mut block: Vec<(BlockKey, BlockStats)>,
    mut endpoints: Vec<(EndpointKey, EndpointStats)>,
    counts: &[u64],
    devices: &mut DeviceNames,
) -> KernelSnapshot {
    block.sort_by_key(|(k, _)| *k);
    endpoints.sort_by_key(|(k, _)| *k);
    let c = |slot: u32| counts.get(slot as usize).copied().unwrap_or(0);
    let present = endpoints.len() as u64;
    KernelSnapshot {
        block: block
            .into_iter()
            .map(|(k, v)| block_series(k, &v, devices))
            .collect(),
        endpoints: merge_endpoints(endpoints.iter().map(|(k, v)| endpoint_series(k, v))),
        drops: KernelDrops {
            block_start_insert_failed: c(stat::BLOCK_START_INSERT_FAILED),
            block_complete_unmatched: c(stat::BLOCK_COMPLETE_UNMATCHED),
            block_stats_insert_failed: c(stat::BLOCK_STATS_INSERT_FAILED),
            endpoint_insert_failed: c(stat::ENDPOINT_INSERT_FAILED),
            endpoints_evicted: c(stat::ENDPOINT_INSERTS).saturating_sub(present),
            conn_insert_failed: c(stat::CONN_INSERT_FAILED),
            read_failed: c(stat::READ_FAILED),
        },
        block_issued: c(stat::BLOCK_ISSUED),
        tcp_probes: c(stat::TCP_PROBES),
        tcp_probes_sampled: c(stat::TCP_PROBES_SAMPLED),
        program_errors: program_errors(&c),
    }
}

/// Every (program, kind) pair with its count, from the error slots.
fn program_errors(c: &impl Fn(u32) -> u64) -> Vec<ProgramErrors> {
    let mut out = Vec::new();
    for (p, name) in program::NAMES.iter().enumerate() {
        for (k, kind) in prog_error::NAMES.iter().enumerate() {
            out.push(ProgramErrors {
                program: (*name).to_owned(),
                kind: (*kind).to_owned(),
                count: c(stat::PROG_ERRORS + p as u32 * prog_error::KINDS + k as u32),
            });
        }
    }
    out
}

/// Dual-stack sockets report IPv4 peers as mapped IPv6 addresses; once both
/// are shown as IPv4 they are one endpoint.
fn merge_endpoints(series: impl Iterator<Item = EndpointSeries>) -> Vec<EndpointSeries> {
    let mut merged: std::collections::BTreeMap<(IpAddr, u16, String), EndpointSeries> =
        std::collections::BTreeMap::new();
    for s in series {
        match merged.entry((s.addr, s.port, s.direction.clone())) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(s);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let o = o.get_mut();
                o.srtt_ns.merge(&s.srtt_ns);
                o.connect_ns.merge(&s.connect_ns);
                o.lifetime_ns.merge(&s.lifetime_ns);
                o.conn_bytes.merge(&s.conn_bytes);
                o.tx_bytes += s.tx_bytes;
                o.rx_bytes += s.rx_bytes;
                o.retransmits += s.retransmits;
                o.connections += s.connections;
                o.connect_failures += s.connect_failures;
                o.closes += s.closes;
            }
        }
    }
    merged.into_values().collect()
}

fn block_series(k: BlockKey, v: &BlockStats, devices: &mut DeviceNames) -> BlockSeries {
    let (major, minor) = split_dev(k.dev);
    BlockSeries {
        device: devices.name(k.dev),
        dev: format!("{major}:{minor}"),
        op: block_op::NAMES
            .get(k.op as usize)
            .copied()
            .unwrap_or("other")
            .to_owned(),
        latency_ns: Hist::from(&v.latency_ns),
        size_bytes: Hist::from(&v.size_bytes),
        errors: v.errors,
    }
}

fn endpoint_series(k: &EndpointKey, v: &EndpointStats) -> EndpointSeries {
    let addr = if k.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]))
    } else {
        let v6 = Ipv6Addr::from(k.addr);
        // inet_sock_set_state reports IPv4 peers of dual-stack sockets mapped.
        v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
    };
    let c = &v.counters;
    EndpointSeries {
        addr,
        port: k.port,
        direction: if k.direction == direction::INBOUND {
            "inbound"
        } else {
            "outbound"
        }
        .to_owned(),
        srtt_ns: Hist::from(&v.srtt_ns),
        connect_ns: Hist::from(&v.connect_ns),
        lifetime_ns: Hist::from(&v.lifetime_ns),
        conn_bytes: Hist::from(&v.conn_bytes),
        tx_bytes: c.tx_bytes,
        rx_bytes: c.rx_bytes,
        retransmits: c.retransmits,
        connections: c.connections,
        connect_failures: c.connect_failures,
        closes: c.closes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_errors_come_from_their_slots_by_program_and_kind() {
        let mut counts = [0u64; stat::COUNT as usize];
        counts[prog_error::slot(program::TCP_PROBE, prog_error::FIELD_READ) as usize] = 3;
        counts[prog_error::slot(program::TC_EGRESS, -22) as usize] = 2;
        counts[prog_error::slot(program::TC_INGRESS, 99) as usize] = 1;
        let c = |slot: u32| counts[slot as usize];
        let errors = program_errors(&c);
        assert_eq!(errors.len(), program::NAMES.len() * prog_error::NAMES.len());
        let get = |p: &str, k: &str| {
            errors
                .iter()
                .find(|e| e.program == p && e.kind == k)
                .map(|e| e.count)
        };
        assert_eq!(get("tcp_probe", "field_read"), Some(3));
        assert_eq!(get("shadow_tc_egress", "helper"), Some(2));
        assert_eq!(get("shadow_tc_ingress", "other"), Some(1));
        assert_eq!(errors.iter().map(|e| e.count).sum::<u64>(), 6);
    }
}
