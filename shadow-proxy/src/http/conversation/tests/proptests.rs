//! Property tests: arbitrary exchanges, cut anywhere and interleaved, rebuild exactly;
//! and a captured chunked upload split where the capture split it.

use super::*;

#[derive(Clone, Debug)]
struct Msg {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Chunk sizes to cycle through, or `None` for Content-Length framing.
    chunks: Option<Vec<usize>>,
    interim: bool,
}

fn msg(start: impl Strategy<Value = String>) -> impl Strategy<Value = Msg> {
    let headers = prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..5);
    let chunks = prop::option::of(prop::collection::vec(1usize..50, 1..5));
    (
        start,
        headers,
        prop::collection::vec(any::<u8>(), 0..200),
        chunks,
        any::<bool>(),
    )
        .prop_map(|(start, headers, body, chunks, interim)| Msg {
            start,
            headers,
            body,
            chunks,
            interim,
        })
}

fn request_msg() -> impl Strategy<Value = Msg> {
    let methods = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD",
    ]);
    msg((methods, "/[a-z0-9/._~-]{0,30}").prop_map(|(m, p)| format!("{m} {p} HTTP/1.1")))
}

fn response_msg() -> impl Strategy<Value = Msg> {
    let statuses = prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]);
    msg(statuses.prop_map(|s| format!("HTTP/1.1 {s} Some Reason")))
}

/// Serialises `m` onto `out`; returns the header fields sent and where the head ended.
fn write(
    out: &mut Vec<u8>,
    m: &Msg,
    send_body: bool,
    interim: bool,
) -> (Vec<(String, String)>, usize) {
    if interim {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut headers = m.headers.clone();
    match &m.chunks {
        None => headers.push(("Content-Length".into(), m.body.len().to_string())),
        Some(_) if send_body => headers.push(("Transfer-Encoding".into(), "chunked".into())),
        Some(_) => {}
    }
    out.extend_from_slice(format!("{}\r\n", m.start).as_bytes());
    headers
        .iter()
        .for_each(|(n, v)| out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes()));
    out.extend_from_slice(b"\r\n");
    let head_end = out.len();
    match (&m.chunks, send_body) {
        (_, false) => {}
        (None, true) => out.extend_from_slice(&m.body),
        (Some(sizes), true) => {
            let (mut rest, mut sizes) = (&m.body[..], sizes.iter().cycle().enumerate());
            while let (false, Some((i, size))) = (rest.is_empty(), sizes.next()) {
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                let ext = if i % 2 == 1 { ";ext=\"q\"" } else { "" };
                out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
                rest = tail;
            }
            out.extend_from_slice(b"0\r\nX-Trailer: done\r\n\r\n");
        }
    }
    (headers, head_end)
}

fn cut(len: usize, sizes: &[usize]) -> Vec<(usize, usize)> {
    let mut at = 0;
    sizes
        .iter()
        .cycle()
        .map_while(|size| {
            let piece = (at < len).then(|| (at, (at + size).min(len)));
            at = piece.map_or(at, |p| p.1);
            piece
        })
        .collect()
}

struct Streams {
    reqs: Vec<u8>,
    head_ends: Vec<usize>,
    resps: Vec<u8>,
    resp_starts: Vec<usize>,
}

/// Feeds both streams in pieces, never sending response bytes before their request's head.
fn feed(
    c: &mut Conversation,
    s: &Streams,
    cuts: (&[usize], &[usize]),
    picks: &[bool],
) -> Result<(), HttpError> {
    let (rq, rs) = (cut(s.reqs.len(), cuts.0), cut(s.resps.len(), cuts.1));
    let (mut i, mut j, mut fed, mut now) = (0, 0, 0, 0u64);
    loop {
        now += 1;
        let ready = rs.get(j).is_some_and(|&(_, end)| {
            fed >= s.head_ends[s.resp_starts.partition_point(|&start| start < end) - 1]
        });
        if ready && (i == rq.len() || picks[now as usize % picks.len()]) {
            c.on_response_bytes(&s.resps[rs[j].0..rs[j].1], now)?;
            j += 1;
        } else if let Some(&(a, b)) = rq.get(i) {
            c.on_request_bytes(&s.reqs[a..b], now)?;
            (fed, i) = (b, i + 1);
        } else {
            return Ok(());
        }
    }
}

fn fields(headers: &[Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                String::from_utf8_lossy(&h.value).into_owned(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn interleaved_streams_rebuild_the_exchanges(
        pairs in prop::collection::vec((request_msg(), response_msg()), 1..6),
        req_cuts in prop::collection::vec(1usize..64, 1..20),
        resp_cuts in prop::collection::vec(1usize..64, 1..20),
        picks in prop::collection::vec(any::<bool>(), 1..40),
    ) {
        let mut s = Streams { reqs: Vec::new(), head_ends: Vec::new(), resps: Vec::new(), resp_starts: Vec::new() };
        let mut sent = Vec::new();
        for (rq, rs) in &pairs {
            let (req_headers, head_end) = write(&mut s.reqs, rq, true, false);
            s.head_ends.push(head_end);
            let body = !(rq.start.starts_with("HEAD ") || rs.start.contains(" 204 ") || rs.start.contains(" 304 "));
            s.resp_starts.push(s.resps.len());
            sent.push((req_headers, write(&mut s.resps, rs, body, rs.interim).0, body));
        }
        let mut c = conv();
        prop_assert_eq!(feed(&mut c, &s, (&req_cuts, &resp_cuts), &picks), Ok(()));
        prop_assert_eq!(c.pending(), 0);
        c.on_close(u64::MAX);
        let got = c.take_exchanges();
        prop_assert_eq!(got.len(), pairs.len());
        for (ex, ((rq, rs), (req_headers, resp_headers, body))) in got.iter().zip(pairs.iter().zip(&sent)) {
            let r = &ex.request;
            prop_assert_eq!(format!("{} {} HTTP/1.1", r.method, r.target), rq.start.clone());
            prop_assert_eq!(&fields(&r.headers), req_headers);
            prop_assert_eq!(&r.body[..], &rq.body[..]);
            prop_assert_eq!(r.chunked, rq.chunks.is_some());
            prop_assert!(r.first_byte_ns <= r.last_byte_ns);
            let p = ex.response.as_ref().expect("response");
            prop_assert_eq!(format!("HTTP/1.1 {} {}", p.status, p.reason), rs.start.clone());
            prop_assert_eq!(&fields(&p.headers), resp_headers);
            prop_assert_eq!(&p.body[..], if *body { &rs.body[..] } else { &[][..] });
            prop_assert_eq!(p.trailers.len(), usize::from(*body && rs.chunks.is_some()));
        }
    }
}

#[test]
fn chunked_upload_split_at_capture_boundaries() {
    let body: Vec<u8> = (0..1_048_576usize).map(|i| (i * 31 % 251) as u8).collect();
    let mut req = b"PUT /upload/1048576/chunked HTTP/1.1\r\nHost: live.test\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(100_003) {
        req.extend(format!("{:x};ext=1\r\n", c.len()).into_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    for sizes in [
        vec![32741usize, 32741, 62491, 14875, 47616],
        vec![1, 2, 3, 4096, 65483],
        vec![7],
    ] {
        let mut c = Conversation::new(Limits::default());
        let mut off = 0;
        let mut i = 0;
        while off < req.len() {
            let n = sizes[i % sizes.len()].min(req.len() - off);
            c.on_request_bytes(&req[off..off + n], 1)
                .unwrap_or_else(|e| panic!("at {off}: {e}"));
            off += n;
            i += 1;
        }
        c.on_response_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2)
            .unwrap();
        let ex = c.take_exchanges();
        assert_eq!(ex[0].request.body.len(), body.len());
        assert!(ex[0].request.body[..] == body[..]);
    }
}
