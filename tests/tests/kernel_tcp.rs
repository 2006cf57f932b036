//! TCP telemetry: connect latency and RTT for exactly the endpoint used, and
//! an RTT that follows a deliberately slowed path.

use std::{net::IpAddr, time::Duration};

use shadow_proxy::kernel::view::View;
use shadow_tests::{Agent, NetnsPair, kernel_test, sh, tcp_send, tcp_server};

const CONNS: u64 = 20;
const BYTES: u64 = 1024;

#[test]
fn connections_to_a_local_server_are_measured_for_exactly_that_endpoint() {
    let Some(_kernel) =
        kernel_test("connections_to_a_local_server_are_measured_for_exactly_that_endpoint")
    else {
        return;
    };
    let agent = Agent::start("tcp-local");
    let (_server, addr) = tcp_server(None, "127.0.0.1:0");
    tcp_send(None, addr, BYTES as usize, CONNS as usize);

    let ip: IpAddr = addr.ip();
    let port = addr.port();
    let closed = |v: &View| {
        v.kernel
            .endpoint(ip, port, "outbound")
            .is_some_and(|e| e.closes >= CONNS)
            && v.kernel
                .endpoint(ip, port, "inbound")
                .is_some_and(|e| e.closes >= CONNS)
    };
    let v = agent.wait_for(Duration::from_secs(10), closed);
    let out = v
        .kernel
        .endpoint(ip, port, "outbound")
        .unwrap_or_else(|| panic!("no outbound endpoint {addr} in {:#?}", v.kernel.endpoints));
    assert_eq!(out.connections, CONNS, "connections to {addr}");
    assert_eq!(
        out.connect_ns.count(),
        CONNS,
        "connect-latency samples for {addr}"
    );
    assert!(out.connect_ns.sum > 0);
    // tcp_probe records one RTT in 16 (at random); every probe is counted.
    eprintln!(
        "RTT samples for {addr}: {} (host: {} of {} probes)",
        out.srtt_ns.count(),
        v.kernel.tcp_probes_sampled,
        v.kernel.tcp_probes
    );
    assert!(out.srtt_ns.count() > 0, "RTT samples for {addr}");
    assert_eq!(out.closes, CONNS);
    assert_eq!(out.lifetime_ns.count(), CONNS);
    assert_eq!(out.tx_bytes, CONNS * BYTES, "client payload bytes");
    let reply = format!("{BYTES}\n").len() as u64;
    assert_eq!(out.rx_bytes, CONNS * reply, "client received the replies");
    assert_eq!(out.connect_failures, 0);

    let inb = v
        .kernel
        .endpoint(ip, port, "inbound")
        .expect("inbound side");
    assert_eq!(inb.connections, CONNS, "accepted connections on {port}");
    assert_eq!(inb.rx_bytes, CONNS * BYTES, "server read the payloads");
    assert_eq!(
        inb.connect_ns.count(),
        0,
        "accepted sockets have no connect latency"
    );

    let with_port: Vec<_> = v
        .kernel
        .endpoints
        .iter()
        .filter(|e| e.port == port)
        .collect();
    assert_eq!(
        with_port.len(),
        2,
        "only {addr} in both directions: {with_port:#?}"
    );

    let page = agent.get("/metrics");
    let line = format!(
        "shadow_tcp_connect_latency_seconds_count{{endpoint=\"{addr}\",direction=\"outbound\"}} {CONNS}"
    );
    assert!(page.contains(&line), "missing {line:?} in /metrics");
}

fn mean_srtt_ns(v: &View, ip: IpAddr, port: u16) -> f64 {
    v.kernel
        .endpoint(ip, port, "outbound")
        .and_then(|e| e.srtt_ns.mean())
        .unwrap_or_else(|| panic!("no RTT samples for {ip}:{port}"))
}

#[test]
fn a_shaped_path_raises_the_measured_rtt() {
    let Some(_kernel) = kernel_test("a_shaped_path_raises_the_measured_rtt") else {
        return;
    };
    let agent = Agent::start("tcp-shaped");
    let ns = NetnsPair::new("rtt", 1);
    let ip = IpAddr::V4(ns.addr_b);

    // The same bulk transfer, first over the bare veth ...
    let (_fast, fast) = tcp_server(Some(&ns.b), &format!("{}:0", ns.addr_b));
    tcp_send(Some(&ns.a), fast, 2 << 20, 2);
    // ... then through a 10 Mbit/s token bucket with a 200 ms queue on the
    // sender's side (netem is not in this kernel).
    sh(
        "ip",
        &[
            "netns", "exec", &ns.a, "tc", "qdisc", "add", "dev", "va", "root", "tbf", "rate",
            "10mbit", "burst", "16kb", "latency", "200ms",
        ],
    );
    let (_slow, slow) = tcp_server(Some(&ns.b), &format!("{}:0", ns.addr_b));
    tcp_send(Some(&ns.a), slow, 2 << 20, 1);

    let v = agent.wait_for(Duration::from_secs(10), |v| {
        [fast.port(), slow.port()].iter().all(|p| {
            v.kernel
                .endpoint(ip, *p, "outbound")
                .is_some_and(|e| e.closes >= 1 && e.srtt_ns.count() > 0)
        })
    });
    let base = mean_srtt_ns(&v, ip, fast.port());
    let shaped = mean_srtt_ns(&v, ip, slow.port());
    eprintln!("mean smoothed RTT: bare veth {base:.0} ns, shaped {shaped:.0} ns");
    assert!(
        shaped > 10.0 * base && shaped > 1e6,
        "shaping should raise RTT well above the bare path: bare {base:.0} ns, shaped {shaped:.0} ns"
    );
}
