//! A point-in-time copy of the kernel maps, with names resolved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use shadow_common::{
    AF_INET, BlockKey, BlockStats, EndpointKey, EndpointStats, block_op, direction, stat,
};

use super::devices::{DeviceNames, split_dev};
use super::hist::Hist;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelSnapshot {
    pub block: Vec<BlockSeries>,
    pub endpoints: Vec<EndpointSeries>,
    pub drops: KernelDrops,
    /// Block requests issued since the programs were attached.
    pub block_issued: u64,
    /// `tcp_probe` events seen since attach.
    pub tcp_probes: u64,
}

/// Per (device, operation): latency and request size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockSeries {
    pub device: String,
    /// `major:minor`.
    pub dev: String,
    pub op: String,
    pub latency_ns: Hist,
    /// Its count is the number of requests, its sum the bytes moved.
    pub size_bytes: Hist,
}

/// Per remote endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointSeries {
    pub addr: IpAddr,
    pub port: u16,
    /// `outbound` (a dependency this host connects to) or `inbound` (clients
    /// of a local listening port).
    pub direction: String,
    pub srtt_ns: Hist,
    pub connect_ns: Hist,
    pub lifetime_ns: Hist,
    pub conn_bytes: Hist,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub retransmits: u64,
    pub connections: u64,
    pub connect_failures: u64,
    pub closes: u64,
}

impl EndpointSeries {
    /// `addr:port`, with brackets for IPv6.
    pub fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.addr, self.port).to_string()
    }
}

/// Everything the kernel side dropped or could not fit, by reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelDrops {
    pub block_start_insert_failed: u64,
    pub block_complete_unmatched: u64,
    pub block_stats_insert_failed: u64,
    pub endpoint_insert_failed: u64,
    pub endpoints_evicted: u64,
    pub conn_insert_failed: u64,
    pub read_failed: u64,
}

impl KernelDrops {
    /// (reason, count) pairs, for metrics.
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("block_start_map_full", self.block_start_insert_failed),
            ("block_complete_unmatched", self.block_complete_unmatched),
            ("block_stats_map_full", self.block_stats_insert_failed),
            ("endpoint_insert_failed", self.endpoint_insert_failed),
            ("endpoint_evicted", self.endpoints_evicted),
            ("conn_insert_failed", self.conn_insert_failed),
            ("field_read_failed", self.read_failed),
        ]
    }
}

impl KernelSnapshot {
    pub fn build(
        mut block: Vec<(BlockKey, BlockStats)>,
        mut endpoints: Vec<(EndpointKey, EndpointStats)>,
        counts: &[u64],
        devices: &mut DeviceNames,
    ) -> Self {
        block.sort_by_key(|(k, _)| *k);
        endpoints.sort_by_key(|(k, _)| *k);
        let c = |slot: u32| counts.get(slot as usize).copied().unwrap_or(0);
        let present = endpoints.len() as u64;
        Self {
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
        }
    }

    /// The endpoint `addr:port` in direction `dir`, if the kernel tracks it.
    pub fn endpoint(&self, addr: IpAddr, port: u16, dir: &str) -> Option<&EndpointSeries> {
        self.endpoints
            .iter()
            .find(|e| e.addr == addr && e.port == port && e.direction == dir)
    }

    /// The block series of `device` and `op`.
    pub fn block(&self, device: &str, op: &str) -> Option<&BlockSeries> {
        self.block.iter().find(|b| b.device == device && b.op == op)
    }
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
