//! The poller: every interval it copies the kernel maps into a
//! [`KernelSnapshot`], samples procfs, drains the live-traffic series
//! ([`Traffic`]), updates the `metrics` recorder,
//! appends to the [`History`] and publishes a new [`View`].
//!
//! [`History`]: crate::host::history::History
//! [`Traffic`]: crate::replay::traffic::Traffic

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::{
    api::state::Shared,
    host::{HostSampler, series::Series},
    kernel::{KernelSnapshot, KernelTelemetry, hist::Hist, view::View},
    metrics::names,
    replay::control::Control,
    util::{self, unix_ms},
};

use super::AgentConfig;

pub(super) fn poll_loop(
    mut telemetry: Option<KernelTelemetry>,
    shared: &Shared,
    stop: &AtomicBool,
    cfg: &AgentConfig,
    control: Option<&Control>,
) {
    let mut host = HostSampler::new();
    let mut previous: Option<(u64, KernelSnapshot)> = None;
    let mut traffic_since = unix_ms();
    while !stop.load(Ordering::Relaxed) {
        let started = std::time::Instant::now();
        if let Some(t) = telemetry.as_mut() {
            t.flush_logs();
        }
        let now = unix_ms();
        let snapshot = match telemetry.as_mut() {
            Some(t) => t.snapshot(),
            None => Ok(KernelSnapshot::default()),
        };
        match snapshot {
            Ok(kernel) => {
                let host_sample = host.sample();
                publish_metrics(&kernel, &host_sample);
                let derived = derived_series(previous.as_ref(), now, &kernel);
                let seconds = now.saturating_sub(traffic_since) as f64 / 1000.0;
                traffic_since = now;
                let traffic = control.map_or_else(Vec::new, |c| c.replayer.traffic.drain(seconds));
                for (series, value) in &traffic {
                    series.publish(*value);
                }
                {
                    let mut history = shared.history.lock().expect("history lock");
                    for (series, value) in &host_sample {
                        history.push(now, &series.key(), *value);
                    }
                    for (metric, value) in &derived {
                        history.push(now, metric, *value);
                    }
                    for (series, value) in &traffic {
                        history.push(now, &series.key(), *value);
                    }
                    if let Some(p) = &shared.predict {
                        let secs = i64::try_from(now / 1000).unwrap_or(i64::MAX);
                        p.update(&history, shared.forecast.as_deref(), host.hardware, secs);
                    }
                    metrics::counter!(names::HISTORY_REFUSED).absolute(history.refused);
                    metrics::counter!(names::HISTORY_EVICTED).absolute(history.evicted);
                }
                let view = View {
                    timestamp: now,
                    server_id: cfg.server_id.clone(),
                    kernel: kernel.clone(),
                    host: host_sample.into_iter().map(|(s, v)| (s.key(), v)).collect(),
                };
                shared.views.publish(view);
                previous = Some((now, kernel));
            }
            Err(error) => {
                metrics::counter!(names::POLL_ERRORS).increment(1);
                tracing::warn!(%error, "Reading kernel maps failed");
            }
        }
        if let Some(c) = control {
            c.apply_budget(
                crate::replay::budget::process_cpu_seconds(),
                std::time::Instant::now(),
            );
            c.publish_metrics();
        }
        if let Some(f) = &shared.forecast {
            crate::forecast::export::publish(f);
        }
        if let Some(rss) = util::self_rss() {
            metrics::gauge!(names::AGENT_RSS).set(rss as f64);
        }
        // Sleep in short steps so a stop request is seen promptly.
        while started.elapsed() < cfg.interval && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(cfg.interval));
        }
    }
    if let Some(t) = telemetry.as_mut() {
        t.flush_logs();
    }
}

/// Rates from the kernel counters, as forecaster series.
fn derived_series(
    previous: Option<&(u64, KernelSnapshot)>,
    now: u64,
    kernel: &KernelSnapshot,
) -> Vec<(String, f64)> {
    let Some((then, before)) = previous else {
        return Vec::new();
    };
    let dt = now.saturating_sub(*then) as f64 / 1000.0;
    if dt <= 0.0 {
        return Vec::new();
    }
    let requests = |s: &KernelSnapshot| s.block.iter().map(|b| b.size_bytes.count()).sum::<u64>();
    let bytes = |s: &KernelSnapshot| s.block.iter().map(|b| b.size_bytes.sum).sum::<u64>();
    let connects = |s: &KernelSnapshot| s.endpoints.iter().map(|e| e.connections).sum::<u64>();
    let errors = |s: &KernelSnapshot| s.block.iter().map(|b| b.errors).sum::<u64>();
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
    // Block latency this interval, every device and op together: its p99,
    // and the outliers (I/Os of at least 2^26 ns, 67 ms) per second, the
    // kernel's early sign of a failing disk.
    let mut latency = Hist::default();
    for b in &kernel.block {
        let earlier = before.block(&b.device, &b.op).map(|e| &e.latency_ns);
        latency.merge(&earlier.map_or_else(|| b.latency_ns.clone(), |e| b.latency_ns.delta(e)));
    }
    let slow: u64 = latency.buckets.iter().skip(SLOW_IO_BUCKET).sum();
    let mut out = vec![("block.slow_ios_per_second".to_owned(), slow as f64 / dt)];
    if let Some(p99) = latency.quantile(0.99) {
        out.push(("block.latency_p99_ms".into(), p99 as f64 / 1e6));
    }
    out.extend([
        (
            "block.iops".into(),
            rate(requests(kernel), requests(before)),
        ),
        (
            "block.bytes_per_second".into(),
            rate(bytes(kernel), bytes(before)),
        ),
        (
            "block.errors_per_second".into(),
            rate(errors(kernel), errors(before)),
        ),
        (
            "tcp.connections_per_second".into(),
            rate(connects(kernel), connects(before)),
        ),
    ]);
    out
}

/// The first log2 bucket counted as a slow block I/O (2^26 ns, 67 ms).
const SLOW_IO_BUCKET: usize = 26;

fn publish_metrics(kernel: &KernelSnapshot, host: &[(Series, f64)]) {
    for (reason, n) in kernel.drops.by_reason() {
        metrics::counter!(names::KERNEL_DROPS, "reason" => reason).absolute(n);
    }
    for e in &kernel.program_errors {
        let labels = [("program", e.program.clone()), ("kind", e.kind.clone())];
        metrics::counter!(names::KERNEL_PROGRAM_ERRORS, &labels).absolute(e.count);
    }
    metrics::counter!(names::KERNEL_EVENTS, "event" => "block_rq_issue")
        .absolute(kernel.block_issued);
    metrics::counter!(names::KERNEL_EVENTS, "event" => "tcp_probe").absolute(kernel.tcp_probes);
    metrics::counter!(names::KERNEL_EVENTS, "event" => "tcp_probe_rtt_sampled")
        .absolute(kernel.tcp_probes_sampled);
    for (series, value) in host {
        let (name, label) = series.gauge();
        match label {
            Some((k, v)) => metrics::gauge!(name, k => v).set(*value),
            None => metrics::gauge!(name).set(*value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::snapshot::BlockSeries;

    fn block(latency_buckets: &[(usize, u64)], errors: u64) -> KernelSnapshot {
        let mut latency_ns = Hist::default();
        for &(i, n) in latency_buckets {
            latency_ns.buckets[i] = n;
        }
        KernelSnapshot {
            block: vec![BlockSeries {
                device: "vda".into(),
                dev: "254:0".into(),
                op: "write".into(),
                latency_ns,
                size_bytes: Hist::default(),
                errors,
            }],
            ..KernelSnapshot::default()
        }
    }

    #[test]
    fn block_latency_p99_and_slow_ios_come_from_the_interval_only() {
        // Before: 100 fast I/Os (2^16 ns) and 5 slow ones (2^27 ns).
        let before = block(&[(16, 100), (27, 5)], 3);
        // Since: 98 more fast, 2 more slow (2^28 ns, 268 ms).
        let now = block(&[(16, 198), (27, 5), (28, 2)], 7);
        let d = derived_series(Some(&(1_000, before)), 3_000, &now);
        let get = |k: &str| d.iter().find(|(m, _)| m == k).map(|p| p.1);
        assert_eq!(get("block.slow_ios_per_second"), Some(1.0), "{d:?}");
        assert_eq!(get("block.errors_per_second"), Some(2.0), "{d:?}");
        // p99 of the interval's 100 I/Os is a slow one: bucket 28's bound.
        let p99 = get("block.latency_p99_ms").unwrap();
        assert!(
            (p99 - ((2u64 << 28) - 1) as f64 / 1e6).abs() < 1e-9,
            "{p99}"
        );
        assert!(derived_series(None, 3_000, &now).is_empty());
    }
}
