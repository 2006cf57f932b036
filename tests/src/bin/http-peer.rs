//! HTTP peers for the shadowing tests, run as real processes inside the
//! test's network namespace.
//!
//! - `http-peer live ADDR`: the live service. Answers every request with 200
//!   and a body naming the method, path and a digest of the request body.
//! - `http-peer shadow ADDR LOG [normal|slow|reset]`: a shadow target that
//!   appends one JSON line per request it receives to LOG (method, path,
//!   headers, body length and SHA-256), then answers like live (`normal`),
//!   after 10 s (`slow`), after MS milliseconds (`delay-MS`), or resets the
//!   connection (`reset`).
//! - `http-peer client ADDR SCENARIO [ARGS]`: raw HTTP/1.1 client that prints
//!   one JSON line per response (status, body digest) so runs can be compared:
//!   `keepalive N`, `pipelined N`, `body SIZE chunked|fixed [MS_PER_MIB]`,
//!   `concurrent CONNS`, `connections N`, `methods`.
//!
//! - `http-peer cpu ADDR MICROS`: a CPU-bound service on one thread: every
//!   request spins for MICROS µs of CPU time before its 200.
//! - `http-peer load ADDR RATES STEP_MS`: an open-loop load generator. RATES
//!   is a file of requests per second, one line per step of STEP_MS; each
//!   request goes at its scheduled time whatever the earlier ones did, on a
//!   connection of its own, and prints `STEP LATENCY_US STATUS` (status 0:
//!   failed or no answer within 10 s).
//!
//! All print `LISTENING <addr>` (servers) once ready.

use std::{
    convert::Infallible,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(1) {
        "live" => serve(arg(2), None, "normal"),
        "api" => serve(
            arg(2),
            None,
            if arg(3) == "regress" {
                "api-regress"
            } else {
                "api"
            },
        ),
        "shadow" => serve(
            arg(2),
            Some(arg(3).to_owned()),
            if arg(4).is_empty() { "normal" } else { arg(4) },
        ),
        "client" => client(arg(2).parse()?, arg(3), &args[4.min(args.len())..]),
        "cpu" => cpu_server(arg(2), arg(3).parse().context("MICROS")?),
        "load" => load(arg(2).parse()?, arg(3), arg(4).parse().context("STEP_MS")?),
        _ => {
            bail!("usage: http-peer live ADDR | shadow ADDR LOG [MODE] | client ADDR SCENARIO ...")
        }
    }
}

fn serve(addr: &str, log: Option<String>, mode: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mode = mode.to_owned();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("LISTENING {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let log = Arc::new(Mutex::new(match log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
            None => None,
        }));
        loop {
            let (stream, _) = listener.accept().await?;
            if mode == "reset" {
                // Read the request, then reset: SO_LINGER 0 turns close into RST.
                let std_stream = stream.into_std()?;
                std_stream.set_nonblocking(false)?;
                std::thread::spawn(move || {
                    let mut s = std_stream;
                    let mut buf = [0u8; 4096];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = s.read(&mut buf);
                    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                });
                continue;
            }
            let (log, mode) = (log.clone(), mode.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, log.clone(), mode.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    log: Arc<Mutex<Option<std::fs::File>>>,
    mode: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if mode.starts_with("api") {
        return Ok(api(parts.uri.path(), mode == "api-regress"));
    }
    let digest = hex(&Sha256::digest(&body));
    if let Some(f) = log.lock().expect("log lock").as_mut() {
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let line = serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.to_string(),
            "headers": headers,
            "body_len": body.len(),
            "body_sha256": digest,
        });
        // One write per line: a reader never sees half a record.
        let _ = f.write_all(format!("{line}\n").as_bytes());
        if let Ok(dir) = std::env::var("HTTP_PEER_DUMP") {
            let _ = std::fs::write(format!("{dir}/{digest}.body"), &body);
        }
    }
    if mode == "slow" {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if let Some(ms) = mode.strip_prefix("delay-").and_then(|m| m.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let text = format!("{} {} {} {}\n", parts.method, parts.uri, body.len(), digest);
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// A small JSON API whose answers carry a timestamp and a request id (noise
/// by nature); `regress` plants a price change on `/cart/{n}`.
fn api(path: &str, regress: bool) -> Response<Full<Bytes>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = rfc3339(now.as_secs(), now.subsec_micros());
    let r = now.as_nanos() ^ u128::from(std::process::id()) << 64;
    let h = hex(&Sha256::digest(r.to_le_bytes()));
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    let n: u64 = path
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if path.starts_with("/cart/") {
        let last = if regress { 14 } else { 13 };
        serde_json::json!({"ts": ts, "request_id": uuid, "user": n,
            "items": [{"sku":"a","price":10},{"sku":"b","price":11},{"sku":"c","price":12},{"sku":"d","price":last}]})
    } else {
        serde_json::json!({"ts": ts, "request_id": uuid, "id": n, "name": format!("user-{n}")})
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn rfc3339(secs: u64, micros: u32) -> String {
    let rem = secs % 86_400;
    let (y, m, d) = shadow_api::time::civil_from_days((secs / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads one response with a Content-Length body (what `live` sends).
fn read_response(r: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .context("status line")?
        .parse()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

fn report(status: u16, body: &[u8]) {
    println!(
        "{}",
        serde_json::json!({ "status": status, "body": String::from_utf8_lossy(body) })
    );
}

fn request(method: &str, path: &str, extra: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: live.test\r\n{extra}").into_bytes();
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for chunk in body.chunks(100_003) {
            out.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }
    out
}

fn body_of(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn client(addr: SocketAddr, scenario: &str, args: &[String]) -> Result<()> {
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let connect = || -> Result<BufReader<TcpStream>> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(BufReader::new(s))
    };
    match scenario {
        "keepalive" => {
            let mut c = connect()?;
            for i in 0..n(0, 3) {
                c.get_mut().write_all(&request(
                    "GET",
                    &format!("/keepalive/{i}"),
                    "",
                    b"",
                    false,
                ))?;
                let (s, b) = read_response(&mut c)?;
                report(s, &b);
            }
        }
        "pool" => {
            // CONNS keep-alive connections at once (a pooled client), each
            // asking REQS requests in turn.
            let (conns, reqs) = (n(0, 16), n(1, 100));
            let handles: Vec<_> = (0..conns)
                .map(|c| {
                    std::thread::spawn(move || -> Result<Vec<(u16, Vec<u8>)>> {
                        let s = TcpStream::connect(addr)?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        let mut s = BufReader::new(s);
                        (0..reqs)
                            .map(|i| {
                                let path = format!("/pool/{c}/{i}");
                                s.get_mut()
                                    .write_all(&request("GET", &path, "", b"", false))?;
                                read_response(&mut s)
                            })
                            .collect()
                    })
                })
                .collect();
            for h in handles {
                let answers = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
                for (s, b) in answers {
                    report(s, &b);
                }
            }
        }
        "pipelined" => {
            let mut c = connect()?;
            let mut all = Vec::new();
            for i in 0..n(0, 5) {
                all.extend(request(
                    "GET",
                    &format!("/pipelined/{i}?q={i}"),
                    "Accept: */*\r\n",
                    b"",
                    false,
                ));
            }
            c.get_mut().write_all(&all)?;
            for _ in 0..n(0, 5) {
                let (s, b) = read_response(&mut c)?;
                report(s, &b);
            }
        }
        "body" => {
            let size = n(0, 1024);
            let chunked = args.get(1).is_some_and(|s| s == "chunked");
            // Optional pacing in ms per MiB, like a client on a real network
            // rather than loopback's memory-speed bursts.
            let pace = n(2, 0);
            let mut c = connect()?;
            let body = body_of(size);
            let path = format!(
                "/upload/{size}/{}",
                if chunked { "chunked" } else { "fixed" }
            );
            let req = request(
                "PUT",
                &path,
                "Content-Type: application/octet-stream\r\n",
                &body,
                chunked,
            );
            // 64 KiB at a time, spread evenly: a real link does not deliver
            // a MiB in one memory-speed burst.
            let per_piece = Duration::from_micros(pace as u64 * 1000 / 16);
            for piece in req.chunks(64 << 10) {
                c.get_mut().write_all(piece)?;
                std::thread::sleep(per_piece);
            }
            let (s, b) = read_response(&mut c)?;
            report(s, &b);
        }
        "concurrent" => {
            let conns = n(0, 100);
            let handles: Vec<_> = (0..conns)
                .map(|i| {
                    std::thread::spawn(move || -> Result<(u16, Vec<u8>)> {
                        let s = TcpStream::connect(addr)?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        let mut c = BufReader::new(s);
                        let body = format!("client {i}");
                        c.get_mut().write_all(&request(
                            "GET",
                            &format!("/concurrent/{i}"),
                            "",
                            body.as_bytes(),
                            false,
                        ))?;
                        read_response(&mut c)
                    })
                })
                .collect();
            for h in handles {
                let (s, b) = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
                report(s, &b);
            }
        }
        "connections" => {
            // N sequential connections, one request each, with a pause
            // between them (ms) so a rate change can land mid-run.
            let pause = n(1, 0);
            for i in 0..n(0, 100) {
                let mut c = connect()?;
                c.get_mut()
                    .write_all(&request("GET", &format!("/conn/{i}"), "", b"", false))?;
                let (s, b) = read_response(&mut c)?;
                report(s, &b);
                std::thread::sleep(Duration::from_millis(pause as u64));
            }
        }
        "api" => {
            // N requests to /cart/{i} and N to /users/{i} on one connection.
            let mut c = connect()?;
            for i in 0..n(0, 30) {
                for path in [format!("/cart/{i}"), format!("/users/{i}")] {
                    c.get_mut()
                        .write_all(&request("GET", &path, "", b"", false))?;
                    let (s, b) = read_response(&mut c)?;
                    report(s, &b);
                }
            }
        }
        "methods" => {
            let mut c = connect()?;
            for (m, path) in [
                ("GET", "/m/get"),
                ("POST", "/m/post"),
                ("PUT", "/m/put"),
                ("PATCH", "/m/patch"),
                ("DELETE", "/m/delete"),
                ("POST", "/allowed/post"),
            ] {
                let extra =
                    "Authorization: Bearer s3cret\r\nCookie: session=abc\r\nX-Api-Key: k1\r\n";
                c.get_mut()
                    .write_all(&request(m, path, extra, b"{}", false))?;
                let (s, b) = read_response(&mut c)?;
                report(s, &b);
            }
        }
        other => bail!("unknown scenario {other}"),
    }
    Ok(())
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn cpu_server(addr: &str, micros: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("LISTENING {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    let start = thread_cpu();
                    let mut x = 0u64;
                    while thread_cpu() - start < Duration::from_micros(micros) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{x}\n")))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

fn load(addr: SocketAddr, rates: &str, step_ms: u64) -> Result<()> {
    let rates: Vec<f64> = std::fs::read_to_string(rates)
        .with_context(|| format!("reading {rates}"))?
        .lines()
        .map(|l| {
            l.trim()
                .parse::<f64>()
                .with_context(|| format!("rate {l:?}"))
        })
        .collect::<Result<_>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for (step, rate) in rates.iter().enumerate() {
            let n = (rate * step_ms as f64 / 1000.0).round() as u64;
            for k in 0..n {
                let at = start
                    + Duration::from_millis(step as u64 * step_ms)
                    + Duration::from_micros(k * step_ms * 1000 / n.max(1));
                tokio::time::sleep_until(at).await;
                tasks.push(tokio::spawn(async move {
                    let sent = std::time::Instant::now();
                    let status =
                        tokio::time::timeout(Duration::from_secs(10), one_request(addr)).await;
                    let status = status.ok().and_then(Result::ok).unwrap_or(0);
                    println!("{step} {} {status}", sent.elapsed().as_micros());
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        std::io::stdout().flush()?;
        Ok(())
    })
}

async fn one_request(addr: SocketAddr) -> Result<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "cpu")
        .body(Full::new(Bytes::new()))?;
    let res = send.send_request(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}
