//! The terminal view behind `shadowctl top`: rates from two consecutive
//! snapshots, and the kernel's log2 histograms drawn as bars.

use std::fmt::Write as _;

use shadow_api::kernel::{Hist, View, bucket_upper_bound};

/// Rows shown per table.
const ROWS: usize = 8;
/// Width of a histogram bar.
const BAR: usize = 40;

pub fn fmt_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

fn host_value(view: &View, metric: &str) -> Option<f64> {
    view.host.iter().find(|(m, _)| m == metric).map(|(_, v)| *v)
}

/// Renders one screen. `prev` (the previous poll) turns counters into rates;
/// histograms show the activity since `prev`, or since attach without it.
pub fn render(prev: Option<&View>, cur: &View, admin: &str) -> String {
    let mut o = String::new();
    let dt = prev
        .map(|p| cur.timestamp.saturating_sub(p.timestamp) as f64 / 1000.0)
        .filter(|d| *d > 0.0);
    let _ = writeln!(
        o,
        "shadow top · {} · metrics at http://{admin}/metrics · Ctrl-C to quit",
        cur.server_id
    );
    let pct = |m| host_value(cur, m).map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
    let rate = |m| host_value(cur, m).map_or("-".into(), |v| format!("{}/s", fmt_bytes(v)));
    let _ = writeln!(
        o,
        "host  cpu {}  mem {}  net rx {} tx {}  disk read {} write {}\n",
        pct("host.cpu_utilisation"),
        pct("host.memory_utilisation"),
        rate("host.net_rx_bytes_per_second"),
        rate("host.net_tx_bytes_per_second"),
        rate("host.disk_read_bytes_per_second"),
        rate("host.disk_write_bytes_per_second"),
    );

    let window = if dt.is_some() {
        "last interval"
    } else {
        "since attach"
    };
    let _ = writeln!(
        o,
        "{:<22} {:>9} {:>11} {:>9} {:>9} {:>11}",
        "BLOCK I/O", "IOPS", "throughput", "p50", "p99", "requests"
    );
    let mut block: Vec<(String, Hist, Hist)> = cur
        .kernel
        .block
        .iter()
        .map(|b| {
            let before = prev.and_then(|p| p.kernel.block(&b.device, &b.op));
            let lat = before.map_or(b.latency_ns.clone(), |p| b.latency_ns.delta(&p.latency_ns));
            let size = before.map_or(b.size_bytes.clone(), |p| b.size_bytes.delta(&p.size_bytes));
            (format!("{} {}", b.device, b.op), lat, size)
        })
        .collect();
    block.sort_by_key(|(_, l, _)| std::cmp::Reverse(l.count()));
    for (name, lat, size) in block.iter().take(ROWS) {
        let per_s = |v: f64| dt.map_or("-".into(), |d| format!("{:.0}", v / d));
        let tput = dt.map_or("-".into(), |d| {
            format!("{}/s", fmt_bytes(size.sum as f64 / d))
        });
        let _ = writeln!(
            o,
            "{name:<22} {:>9} {tput:>11} {:>9} {:>9} {:>11}",
            per_s(lat.count() as f64),
            lat.quantile(0.5).map_or("-".into(), fmt_ns),
            lat.quantile(0.99).map_or("-".into(), fmt_ns),
            lat.count(),
        );
    }
    if let Some((name, lat, _)) = block.first().filter(|(_, l, _)| l.count() > 0) {
        let _ = writeln!(o, "\n{name} latency ({window}):");
        bars(&mut o, lat);
    }

    let _ = writeln!(
        o,
        "\n{:<28} {:>8} {:>8} {:>11} {:>9} {:>9} {:>8}",
        "TCP ENDPOINT", "dir", "conns", "connect p50", "srtt p50", "srtt p99", "retrans"
    );
    let mut eps: Vec<_> = cur
        .kernel
        .endpoints
        .iter()
        .map(|e| {
            let before = prev.and_then(|p| p.kernel.endpoint(e.addr, e.port, &e.direction));
            let srtt = before.map_or(e.srtt_ns.clone(), |p| e.srtt_ns.delta(&p.srtt_ns));
            (e, srtt)
        })
        .collect();
    eps.sort_by_key(|(e, s)| std::cmp::Reverse(s.count() + e.connections));
    for (e, srtt) in eps.iter().take(ROWS) {
        let _ = writeln!(
            o,
            "{:<28} {:>8} {:>8} {:>11} {:>9} {:>9} {:>8}",
            e.endpoint(),
            e.direction,
            e.connections,
            e.connect_ns.quantile(0.5).map_or("-".into(), fmt_ns),
            srtt.quantile(0.5).map_or("-".into(), fmt_ns),
            srtt.quantile(0.99).map_or("-".into(), fmt_ns),
            e.retransmits,
        );
    }
    if let Some((e, srtt)) = eps.first().filter(|(_, s)| s.count() > 0) {
        let _ = writeln!(o, "\n{} smoothed RTT ({window}):", e.endpoint());
        bars(&mut o, srtt);
    }
    let d = &cur.kernel.drops;
    let _ = writeln!(
        o,
        "\nkernel: {} endpoints tracked, {} evicted; unmatched completions {}, map-full drops {}",
        cur.kernel.endpoints.len(),
        d.endpoints_evicted,
        d.block_complete_unmatched,
        d.block_start_insert_failed + d.block_stats_insert_failed + d.conn_insert_failed
    );
    o
}

/// A log2 histogram as horizontal bars, one row per non-empty bucket range.
pub fn bars(o: &mut String, h: &Hist) {
    let Some(lo) = h.buckets.iter().position(|b| *b > 0) else {
        return;
    };
    let hi = h.buckets.iter().rposition(|b| *b > 0).unwrap_or(lo);
    let max = h.buckets[lo..=hi].iter().copied().max().unwrap_or(1).max(1);
    for i in lo..=hi {
        let n = h.buckets[i];
        let width = ((n as f64 / max as f64) * BAR as f64).round() as usize;
        let from = if i == 0 { 0 } else { 1u64 << i };
        let _ = writeln!(
            o,
            "  {:>9} .. {:<9} |{:<BAR$}| {n}",
            fmt_ns(from),
            fmt_ns(bucket_upper_bound(i)),
            "█".repeat(width),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadow_api::kernel::BlockSeries;
    use shadow_common::Log2Hist;

    #[test]
    fn renders_rates_and_bars() {
        let mut k = Log2Hist::ZERO;
        let block = |k: &Log2Hist| BlockSeries {
            device: "vda".into(),
            dev: "254:0".into(),
            op: "write".into(),
            latency_ns: Hist::from(k),
            size_bytes: Hist::from(k),
            errors: 0,
        };
        let mut v1 = View {
            timestamp: 1_000,
            server_id: "h".into(),
            ..View::default()
        };
        v1.kernel.block.push(block(&k));
        for _ in 0..10 {
            k.record(100_000);
        }
        let mut v2 = v1.clone();
        v2.timestamp = 3_000;
        v2.kernel.block[0] = block(&k);
        let screen = render(Some(&v1), &v2, "127.0.0.1:1");
        // 10 requests over 2 s.
        assert!(screen.contains("vda write"), "{screen}");
        let row = screen.lines().find(|l| l.starts_with("vda write")).unwrap();
        assert_eq!(row.split_whitespace().nth(2), Some("5"), "{row}");
        assert!(screen.contains("65.5µs .. 131.1µs"), "{screen}");
    }
}
