//! Message heads: parsing start lines and fields with httparse, and deciding
//! how the body that follows is framed (RFC 9112 §6.3).

use bytes::Bytes;
use httparse::Status;

use super::body::Framing;
use super::{Direction, Header, HttpError, Limits, Request, Response};

pub(super) fn owned_headers(fields: &[httparse::Header<'_>]) -> Vec<Header> {
    fields
        .iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: Bytes::copy_from_slice(h.value),
        })
        .collect()
}

pub(super) fn head_error(e: httparse::Error, direction: Direction, limits: &Limits) -> HttpError {
    let detail = e.to_string();
    match (e, direction) {
        (httparse::Error::TooManyHeaders, _) => HttpError::TooManyHeaders {
            direction,
            limit: limits.max_headers,
        },
        (_, Direction::Request) => HttpError::MalformedRequest { detail },
        (_, Direction::Response) => HttpError::MalformedResponse { detail },
    }
}

pub(super) type HeadParser<M> = fn(&[u8], &Limits) -> Result<Option<(usize, M)>, HttpError>;

pub(super) fn parse_request_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, Request)>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf) {
        Ok(Status::Complete(n)) => Ok(Some((
            n,
            Request {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                version: req.version.unwrap_or_default(),
                headers: owned_headers(req.headers),
                ..Request::default()
            },
        ))),
        Ok(Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, Direction::Request, limits)),
    }
}

pub(super) fn parse_response_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, Response)>, HttpError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut res = httparse::Response::new(&mut slots);
    match res.parse(buf) {
        Ok(Status::Complete(n)) => Ok(Some((
            n,
            Response {
                status: res.code.unwrap_or_default(),
                reason: res.reason.unwrap_or_default().to_owned(),
                version: res.version.unwrap_or_default(),
                headers: owned_headers(res.headers),
                ..Response::default()
            },
        ))),
        Ok(Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, Direction::Response, limits)),
    }
}

/// Transfer-Encoding as it matters for framing.
enum Coding {
    Absent,
    /// `chunked` is the final coding and appears once.
    Chunked,
    Other(String),
}

fn transfer_coding(headers: &[Header]) -> Coding {
    let fields: Vec<_> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .collect();
    if fields.is_empty() {
        return Coding::Absent;
    }
    let joined = fields.join(", ");
    let chunked: Vec<bool> = joined
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.eq_ignore_ascii_case("chunked"))
        .collect();
    if chunked.last() == Some(&true) && chunked.iter().filter(|&&c| c).count() == 1 {
        return Coding::Chunked;
    }
    Coding::Other(joined)
}

/// The declared Content-Length; repeated identical values ("5, 5") are accepted as RFC 9110 §8.6
/// allows, anything else ambiguous is an error because guessing enables request smuggling.
fn content_length(
    headers: &[Header],
    direction: Direction,
    limits: &Limits,
) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for field in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for part in field.value.split(|b| *b == b',') {
            let n =
                parse_decimal(part.trim_ascii()).ok_or_else(|| HttpError::BadContentLength {
                    direction,
                    value: String::from_utf8_lossy(&field.value).into_owned(),
                })?;
            match found {
                Some(first) if first != n => {
                    return Err(HttpError::ConflictingContentLength {
                        direction,
                        first,
                        second: n,
                    });
                }
                _ => found = Some(n),
            }
        }
    }
    if found.is_some_and(|n| n > limits.max_body as u64) {
        return Err(HttpError::BodyTooLarge {
            direction,
            limit: limits.max_body,
        });
    }
    Ok(found)
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let digit = char::from(d).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// RFC 9112 §6.3 for requests: chunked wins over Content-Length, otherwise no body.
pub(super) fn request_framing(head: &Request, limits: &Limits) -> Result<Framing, HttpError> {
    let headers = &head.headers;
    match transfer_coding(headers) {
        // HTTP/1.0 has no chunked coding; RFC 9112 §6.1 calls such framing faulty.
        Coding::Chunked if head.version == 0 => Err(HttpError::UnsupportedTransferEncoding {
            value: "chunked (HTTP/1.0)".to_owned(),
        }),
        Coding::Chunked => Ok(Framing::ChunkSize),
        Coding::Other(value) => Err(HttpError::UnsupportedTransferEncoding { value }),
        Coding::Absent => Ok(Framing::Length(
            content_length(headers, Direction::Request, limits)?.unwrap_or(0),
        )),
    }
}

/// RFC 9112 §6.3 for responses; `None` marks an interim 1xx response that carries no body.
pub(super) fn response_framing(
    head: &Response,
    method: &str,
    limits: &Limits,
) -> Result<Option<Framing>, HttpError> {
    let status = head.status;
    if status == 101 || (method == "CONNECT" && (200..300).contains(&status)) {
        return Err(HttpError::Upgrade { status });
    }
    if (100..200).contains(&status) {
        return Ok(None);
    }
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(Some(Framing::Length(0)));
    }
    match transfer_coding(&head.headers) {
        Coding::Chunked => Ok(Some(Framing::ChunkSize)),
        // Without a final chunked coding only the close can delimit a response.
        Coding::Other(_) => Ok(Some(Framing::UntilClose)),
        Coding::Absent => Ok(Some(
            content_length(&head.headers, Direction::Response, limits)?
                .map_or(Framing::UntilClose, Framing::Length),
        )),
    }
}
