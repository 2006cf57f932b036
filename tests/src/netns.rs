//! A network namespace a test creates, with loopback up, removed on drop.

use std::{net::SocketAddr, process::Command};

use crate::sh;

/// One namespace with loopback up, deleted on drop.
pub struct Netns(String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("sh-{tag}-{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh("ip", &["netns", "add", &name]);
        sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// `tc qdisc show dev lo` inside the namespace.
    pub fn qdiscs(&self) -> String {
        sh("tc", &["-n", &self.0, "qdisc", "show", "dev", "lo"])
    }

    /// `program` run inside the namespace.
    pub fn cmd(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }

    /// A TCP socket bound to a free loopback port inside the namespace and
    /// never listening: connecting to it is refused, and while it is held
    /// nothing else can take the port (unlike a port bound and released).
    pub fn closed_port(&self) -> (socket2::Socket, SocketAddr) {
        let path = format!("/var/run/netns/{}", self.0);
        // setns changes only the calling thread's namespace, so a thread of
        // its own makes the socket; the socket stays in the namespace.
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace fd we hold, for this thread only.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            sock.bind(&any.into()).expect("bind a loopback port");
            let addr = sock
                .local_addr()
                .expect("local address")
                .as_socket()
                .expect("an IP address");
            (sock, addr)
        })
        .join()
        .expect("closed-port thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
