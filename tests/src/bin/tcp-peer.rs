//! A TCP peer for the end-to-end tests, run as a real process (often inside
//! a test network namespace).
//!
//! - `tcp-peer serve ADDR`: accept connections, read each to EOF, reply with
//!   the number of bytes read as text, close. Prints `LISTENING <addr>`.
//! - `tcp-peer send ADDR BYTES CONNS`: open CONNS connections one after
//!   another, send BYTES on each, half-close, read the reply. Prints
//!   `SENT <total bytes> <seconds>`.

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    time::Instant,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(args.get(2).map_or("127.0.0.1:0", String::as_str)),
        Some("send") => {
            let addr = args
                .get(2)
                .ok_or_else(|| anyhow::anyhow!("send ADDR BYTES CONNS"))?;
            let bytes: usize = args.get(3).map_or(Ok(1024), |s| s.parse())?;
            let conns: usize = args.get(4).map_or(Ok(1), |s| s.parse())?;
            send(addr, bytes, conns)
        }
        _ => anyhow::bail!("usage: tcp-peer serve ADDR | tcp-peer send ADDR BYTES CONNS"),
    }
}

fn serve(addr: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("LISTENING {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = stream.write_all(format!("{total}\n").as_bytes());
        });
    }
    Ok(())
}

fn send(addr: &str, bytes: usize, conns: usize) -> anyhow::Result<()> {
    let payload = vec![0x5au8; bytes];
    let start = Instant::now();
    for _ in 0..conns {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(&payload)?;
        s.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        anyhow::ensure!(
            reply.trim() == bytes.to_string(),
            "server read {reply:?} bytes, sent {bytes}"
        );
    }
    println!(
        "SENT {} {:.3}",
        bytes * conns,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
