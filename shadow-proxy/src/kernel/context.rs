//! Kernel context for the diff engine: block-I/O latency per device and
//! the RTT to a shadow target over the last poll interval, taken from the
//! two newest [`Views`]. The replayer holds a [`ContextSource`] given to it
//! at construction, so it never reaches up into the agent.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::view::Views;

/// Where the replayer gets the kernel's view of a shadow target from.
pub trait ContextSource: Send + Sync {
    /// Kernel activity over the last poll interval, with the RTT to
    /// `target` (an `ip:port`); `None` before two polls have run.
    fn context(&self, target: &hyper::Uri) -> Option<KernelContext>;
}

impl ContextSource for Views {
    fn context(&self, target: &hyper::Uri) -> Option<KernelContext> {
        let (cur, prev) = (self.current(), self.previous());
        if cur.timestamp == 0 || prev.timestamp == 0 {
            return None;
        }
        let block = cur
            .kernel
            .block
            .iter()
            .filter_map(|b| {
                let before = prev.kernel.block(&b.device, &b.op);
                let lat =
                    before.map_or(b.latency_ns.clone(), |p| b.latency_ns.delta(&p.latency_ns));
                (lat.count() > 0).then(|| BlockContext {
                    device: b.device.clone(),
                    op: b.op.clone(),
                    requests: lat.count(),
                    p50_ns: lat.quantile(0.5).unwrap_or(0),
                    p99_ns: lat.quantile(0.99).unwrap_or(0),
                })
            })
            .collect();
        let addr: Option<SocketAddr> = target.authority().and_then(|a| a.as_str().parse().ok());
        let shadow_rtt = addr.and_then(|a| {
            let e = cur.kernel.endpoint(a.ip(), a.port(), "outbound")?;
            let before = prev.kernel.endpoint(a.ip(), a.port(), "outbound");
            let rtt = before.map_or(e.srtt_ns.clone(), |p| e.srtt_ns.delta(&p.srtt_ns));
            Some(RttContext {
                endpoint: a.to_string(),
                samples: rtt.count(),
                p50_ns: rtt.quantile(0.5).unwrap_or(0),
                p99_ns: rtt.quantile(0.99).unwrap_or(0),
            })
        });
        Some(KernelContext {
            window_ms: cur.timestamp.saturating_sub(prev.timestamp),
            block,
            shadow_rtt,
        })
    }
}

/// What the kernel saw on the shadow's host while an exchange was
/// answered: tells "slower because of the code" from "slower because of
/// the disk or the network". The window is the agent's last poll interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelContext {
    pub window_ms: u64,
    pub block: Vec<BlockContext>,
    pub shadow_rtt: Option<RttContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockContext {
    pub device: String,
    pub op: String,
    pub requests: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttContext {
    pub endpoint: String,
    pub samples: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}
