//! Renders a [`KernelSnapshot`] in the Prometheus text format.
//!
//! Histogram buckets are the kernel's: bucket `i` holds integers in
//! `[2^i, 2^(i+1))`, so it is exported as `le = (2^(i+1) - 1) * unit`. Only a
//! fixed window of the 64 buckets is exported per family (the same window
//! for every series, so `histogram_quantile` works across time); lower
//! buckets fold into the first `le`, higher ones only into `+Inf`.

use std::fmt::Write as _;

use super::{
    KernelSnapshot,
    hist::Hist,
    snapshot::{BlockSeries, EndpointSeries},
};
use crate::metrics::names;

/// Exported bucket window (inclusive kernel bucket indices) and unit scale.
#[derive(Debug, Clone, Copy)]
pub struct Buckets {
    pub first: usize,
    pub last: usize,
    /// Multiplier from the kernel's unit to the exported one (ns -> s).
    pub scale: f64,
}

/// 1 µs .. ~68 s, in seconds.
pub const LATENCY: Buckets = Buckets {
    first: 9,
    last: 35,
    scale: 1e-9,
};
/// 512 B .. ~2 TiB, in bytes.
pub const BYTES: Buckets = Buckets {
    first: 8,
    last: 40,
    scale: 1.0,
};

/// Endpoints beyond this many (by activity) are summed into `endpoint="other"`.
pub const DEFAULT_MAX_ENDPOINT_SERIES: usize = 64;

/// (name, help, field, buckets) of a per-endpoint histogram family.
type HistFamily = (
    &'static str,
    &'static str,
    fn(&EndpointSeries) -> &Hist,
    Buckets,
);
/// (name, help, field) of a per-endpoint counter family.
type CounterFamily = (&'static str, &'static str, fn(&EndpointSeries) -> u64);

/// Appends the kernel families to `out`.
pub fn render(snapshot: &KernelSnapshot, max_endpoints: usize, out: &mut String) {
    let block: Vec<(Vec<(&str, &str)>, &BlockSeries)> = snapshot
        .block
        .iter()
        .map(|b| {
            (
                vec![("device", b.device.as_str()), ("op", b.op.as_str())],
                b,
            )
        })
        .collect();
    family(
        out,
        names::BLOCK_LATENCY,
        "Block I/O latency, issue to completion (in-kernel log2 histogram).",
        "histogram",
    );
    for (labels, b) in &block {
        histogram(out, names::BLOCK_LATENCY, labels, &b.latency_ns, LATENCY);
    }
    family(
        out,
        names::BLOCK_SIZE,
        "Block I/O request size (in-kernel log2 histogram).",
        "histogram",
    );
    for (labels, b) in &block {
        histogram(out, names::BLOCK_SIZE, labels, &b.size_bytes, BYTES);
    }
    counter_family(
        out,
        names::BLOCK_REQUESTS,
        "Completed block I/O requests.",
        &block,
        |b| b.size_bytes.count(),
    );
    counter_family(
        out,
        names::BLOCK_BYTES,
        "Bytes moved by completed block I/O requests.",
        &block,
        |b| b.size_bytes.sum,
    );
    counter_family(
        out,
        names::BLOCK_ERRORS,
        "Block I/O requests the driver completed with an error.",
        &block,
        |b| b.errors,
    );

    let endpoints = bounded_endpoints(&snapshot.endpoints, max_endpoints);
    let eps: Vec<(Vec<(&str, &str)>, &EndpointSeries)> = endpoints
        .iter()
        .map(|(name, e)| {
            (
                vec![
                    ("endpoint", name.as_str()),
                    ("direction", e.direction.as_str()),
                ],
                e,
            )
        })
        .collect();
    let hists: [HistFamily; 4] = [
        (
            names::TCP_SRTT,
            "Smoothed TCP round-trip time per remote endpoint (tcp:tcp_probe).",
            |e| &e.srtt_ns,
            LATENCY,
        ),
        (
            names::TCP_CONNECT,
            "TCP connect latency, SYN_SENT to ESTABLISHED.",
            |e| &e.connect_ns,
            LATENCY,
        ),
        (
            names::TCP_LIFETIME,
            "TCP connection lifetime, ESTABLISHED to CLOSE.",
            |e| &e.lifetime_ns,
            LATENCY,
        ),
        (
            names::TCP_CONN_BYTES,
            "Bytes sent plus received per closed TCP connection.",
            |e| &e.conn_bytes,
            BYTES,
        ),
    ];
    for (name, help, get, buckets) in hists {
        family(out, name, help, "histogram");
        for (labels, e) in &eps {
            histogram(out, name, labels, get(e), buckets);
        }
    }
    let counters: [CounterFamily; 6] = [
        (names::TCP_TX_BYTES, "TCP payload bytes sent.", |e| {
            e.tx_bytes
        }),
        (names::TCP_RX_BYTES, "TCP payload bytes received.", |e| {
            e.rx_bytes
        }),
        (names::TCP_RETRANSMITS, "TCP segments retransmitted.", |e| {
            e.retransmits
        }),
        (
            names::TCP_CONNECTIONS,
            "TCP connections established.",
            |e| e.connections,
        ),
        (
            names::TCP_CONNECT_FAILURES,
            "TCP connects that never reached ESTABLISHED.",
            |e| e.connect_failures,
        ),
        (
            names::TCP_CLOSES,
            "Established TCP connections closed.",
            |e| e.closes,
        ),
    ];
    for (name, help, get) in counters {
        counter_family(out, name, help, &eps, get);
    }
    family(
        out,
        names::TCP_ENDPOINTS,
        "Remote endpoints in the kernel's LRU map.",
        "gauge",
    );
    let _ = writeln!(out, "{} {}", names::TCP_ENDPOINTS, snapshot.endpoints.len());
}

/// The `max` most active endpoints by name, plus one `other` series per
/// direction holding the sum of the rest.
fn bounded_endpoints(all: &[EndpointSeries], max: usize) -> Vec<(String, EndpointSeries)> {
    let mut sorted: Vec<&EndpointSeries> = all.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.connections + e.srtt_ns.count()));
    let mut out: Vec<(String, EndpointSeries)> = sorted
        .iter()
        .take(max)
        .map(|e| (e.endpoint(), (*e).clone()))
        .collect();
    let mut others: Vec<(String, EndpointSeries)> = Vec::new();
    for e in sorted.iter().skip(max) {
        match others.iter_mut().find(|(_, o)| o.direction == e.direction) {
            Some((_, o)) => {
                o.srtt_ns.merge(&e.srtt_ns);
                o.connect_ns.merge(&e.connect_ns);
                o.lifetime_ns.merge(&e.lifetime_ns);
                o.conn_bytes.merge(&e.conn_bytes);
                o.tx_bytes += e.tx_bytes;
                o.rx_bytes += e.rx_bytes;
                o.retransmits += e.retransmits;
                o.connections += e.connections;
                o.connect_failures += e.connect_failures;
                o.closes += e.closes;
            }
            None => others.push(("other".to_owned(), (*e).clone())),
        }
    }
    out.extend(others);
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter_family<T>(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(Vec<(&str, &str)>, &T)],
    get: impl Fn(&T) -> u64,
) {
    family(out, name, help, "counter");
    for (labels, s) in series {
        let _ = writeln!(out, "{name}{} {}", label_set(labels, None), get(s));
    }
}

/// Writes one histogram series (`_bucket`, `_sum`, `_count`).
pub fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Hist, b: Buckets) {
    let mut cumulative: u64 = h.buckets.iter().take(b.first).sum();
    for i in b.first..=b.last {
        cumulative += h.buckets.get(i).copied().unwrap_or(0);
        let le = ((2u128 << i) - 1) as f64 * b.scale;
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            label_set(labels, Some(&format_float(le)))
        );
    }
    let count = h.count();
    let _ = writeln!(
        out,
        "{name}_bucket{} {count}",
        label_set(labels, Some("+Inf"))
    );
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        label_set(labels, None),
        format_float(h.sum as f64 * b.scale)
    );
    let _ = writeln!(out, "{name}_count{} {count}", label_set(labels, None));
}

fn format_float(v: f64) -> String {
    // Rust prints the shortest string that round-trips, which Prometheus parses.
    format!("{v}")
}

fn label_set(labels: &[(&str, &str)], le: Option<&str>) -> String {
    let mut s = String::new();
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (i, (k, v)) in all.enumerate() {
        s.push(if i == 0 { '{' } else { ',' });
        let _ = write!(s, "{k}=\"{}\"", escape(v));
    }
    if !s.is_empty() {
        s.push('}');
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadow_common::Log2Hist;

    fn hist(values: &[u64]) -> Hist {
        let mut k = Log2Hist::ZERO;
        for v in values {
            k.record(*v);
        }
        Hist::from(&k)
    }

    #[test]
    fn histogram_is_cumulative_with_kernel_bounds() {
        let h = hist(&[100, 1_500, 1_500, 3_000_000, u64::MAX / 2]);
        let mut out = String::new();
        histogram(&mut out, "x_seconds", &[("device", "vda")], &h, LATENCY);
        let lines: Vec<&str> = out.lines().collect();
        // First exported bucket (i = 9, le = 1023 ns) folds in the 100 ns value.
        assert_eq!(
            lines[0],
            "x_seconds_bucket{device=\"vda\",le=\"0.000001023\"} 1"
        );
        // 1500 ns is in bucket 10: le = 2047 ns.
        assert_eq!(
            lines[1],
            "x_seconds_bucket{device=\"vda\",le=\"0.000002047\"} 3"
        );
        let n = LATENCY.last - LATENCY.first + 1;
        // The last exported bucket has everything but the huge value.
        assert!(lines[n - 1].ends_with(" 4"), "{}", lines[n - 1]);
        assert_eq!(lines[n], "x_seconds_bucket{device=\"vda\",le=\"+Inf\"} 5");
        assert!(lines[n + 1].starts_with("x_seconds_sum{device=\"vda\"} "));
        assert_eq!(lines[n + 2], "x_seconds_count{device=\"vda\"} 5");
        // Buckets never decrease.
        let counts: Vec<u64> = lines[..=n]
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn sum_is_exact_in_seconds() {
        let h = hist(&[1_000_000_000, 500_000_000]);
        let mut out = String::new();
        histogram(&mut out, "y", &[], &h, LATENCY);
        assert!(out.contains("\ny_sum 1.5\n"), "{out}");
        assert!(out.contains("\ny_count 2\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(
            label_set(&[("a", "x\"y\\z\n")], None),
            "{a=\"x\\\"y\\\\z\\n\"}"
        );
    }

    fn endpoint(port: u16, connections: u64) -> EndpointSeries {
        EndpointSeries {
            addr: "127.0.0.1".parse().unwrap(),
            port,
            direction: "outbound".into(),
            srtt_ns: hist(&[50_000]),
            connect_ns: Hist::default(),
            lifetime_ns: Hist::default(),
            conn_bytes: Hist::default(),
            tx_bytes: 10,
            rx_bytes: 0,
            retransmits: 0,
            connections,
            connect_failures: 0,
            closes: 0,
        }
    }

    #[test]
    fn endpoints_beyond_the_bound_sum_into_other() {
        let all: Vec<EndpointSeries> = (0..5).map(|i| endpoint(1000 + i, u64::from(i))).collect();
        let b = bounded_endpoints(&all, 2);
        let names: Vec<&str> = b.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["127.0.0.1:1004", "127.0.0.1:1003", "other"]);
        let other = &b[2].1;
        assert_eq!(other.tx_bytes, 30, "three endpoints folded, nothing lost");
        assert_eq!(other.srtt_ns.count(), 3);
    }

    #[test]
    fn full_page_has_each_family_once() {
        let snap = KernelSnapshot {
            endpoints: vec![endpoint(80, 1)],
            ..Default::default()
        };
        let mut out = String::new();
        render(&snap, 10, &mut out);
        for name in [
            names::TCP_SRTT,
            names::BLOCK_LATENCY,
            names::TCP_RETRANSMITS,
        ] {
            let n = out.matches(&format!("# TYPE {name} ")).count();
            assert_eq!(n, 1, "{name} declared {n} times");
        }
        assert!(out.contains(
            "shadow_tcp_sent_bytes_total{endpoint=\"127.0.0.1:80\",direction=\"outbound\"} 10"
        ));
    }
}
