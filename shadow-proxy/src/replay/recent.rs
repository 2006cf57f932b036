//! The last requests seen live, per service port, kept to warm a shadow's
//! caches before a cutover (a failover profile's built-in `warm` step
//! replays them). Only GET and HEAD are kept: replaying them changes
//! nothing. The buffer is bounded by count; what falls off is the oldest.

use std::collections::{HashMap, VecDeque};

use crate::http::conversation::Header;

/// Requests kept per service port.
pub const PER_PORT: usize = 4096;

/// One request as seen live.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentRequest {
    /// Unix milliseconds it was seen.
    pub at_ms: u64,
    pub method: String,
    pub target: String,
    pub headers: Vec<Header>,
}

#[derive(Debug, Default)]
pub struct Recent {
    by_port: HashMap<u16, VecDeque<RecentRequest>>,
}

impl Recent {
    /// Keeps `method target` with its headers if it is a GET or a HEAD.
    pub fn push(&mut self, port: u16, at_ms: u64, method: &str, target: &str, headers: &[Header]) {
        if !(method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD")) {
            return;
        }
        let q = self.by_port.entry(port).or_default();
        if q.len() == PER_PORT {
            q.pop_front();
        }
        q.push_back(RecentRequest {
            at_ms,
            method: method.to_owned(),
            target: target.to_owned(),
            headers: headers.to_vec(),
        });
    }

    /// The requests to `port` seen at or after `since_ms`, oldest first.
    pub fn since(&self, port: u16, since_ms: u64) -> Vec<RecentRequest> {
        self.by_port
            .get(&port)
            .map(|q| q.iter().filter(|r| r.at_ms >= since_ms).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn keeps_only_gets_and_heads_the_newest_per_port() {
        let mut r = Recent::default();
        let h = [Header {
            name: "Host".into(),
            value: Bytes::from_static(b"web"),
        }];
        r.push(80, 1, "POST", "/write", &h);
        for i in 0..PER_PORT as u64 + 10 {
            r.push(80, i, "GET", &format!("/r/{i}"), &h);
        }
        r.push(81, 5, "HEAD", "/other", &[]);
        let all = r.since(80, 0);
        assert_eq!(all.len(), PER_PORT);
        assert_eq!(all[0].target, "/r/10", "the oldest fell off");
        assert!(all.iter().all(|q| q.method == "GET"));
        assert_eq!(r.since(80, PER_PORT as u64 + 8).len(), 2);
        assert_eq!(r.since(81, 0)[0].target, "/other");
        assert!(r.since(82, 0).is_empty());
    }
}
