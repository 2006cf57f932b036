//! Request-level sampling inside sampled connections (`sample =
//! "request"`): the kernel captures connections at a higher rate than asked
//! (all of them, unless the CPU budget lowers it) and this keeps each
//! captured request at `asked / captured`, so a few keep-alive or pooled
//! connections still mirror the share of requests asked, not the share of
//! connections.
//!
//! The keep decision is systematic with a random phase: every `1/q`
//! requests exactly one is kept, at a random place in its stretch. Over `n`
//! requests `n * q` are kept, give or take one, and no periodic pattern in
//! the traffic (a client cycling through ten routes) is aliased into
//! always keeping the same route.

use shadow_common::capture::SAMPLE_SCALE;

/// What the kernel captures for a service asked to mirror `asked`
/// (hundredths of a percent): per connection, the asked rate; per request,
/// every connection (the budget may lower it later).
pub fn capture_rate(asked: u32, per_request: bool) -> u32 {
    if per_request && asked > 0 {
        SAMPLE_SCALE
    } else {
        asked
    }
}

/// One service's request sampler.
#[derive(Debug)]
pub struct RequestSampler {
    /// Requests' worth of keep probability accumulated since the last keep.
    credit: f64,
    /// The credit at which the next request is kept, in (0, 1].
    at: f64,
    rng: u64,
}

impl RequestSampler {
    pub fn new(seed: u64) -> Self {
        let mut s = Self {
            credit: 0.0,
            at: 1.0,
            rng: seed,
        };
        s.at = s.draw();
        s
    }

    /// A uniform draw in (0, 1].
    fn draw(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Whether to keep the next request of a service asked at `asked` and
    /// captured at `captured` (both hundredths of a percent).
    pub fn keep(&mut self, asked: u32, captured: u32) -> bool {
        if captured == 0 || asked >= captured {
            return captured > 0;
        }
        self.credit += f64::from(asked) / f64::from(captured);
        if self.credit >= self.at {
            self.credit -= 1.0;
            self.at = self.draw();
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_asked_share_within_one_request_and_does_not_alias_a_cycle() {
        for (asked, seed) in [(1000, 1), (250, 7), (3333, 42)] {
            let mut s = RequestSampler::new(seed);
            let n = 10_000;
            let mut kept_route = [0u32; 10];
            let mut kept = 0;
            for i in 0..n {
                if s.keep(asked, SAMPLE_SCALE) {
                    kept += 1;
                    kept_route[i % 10] += 1;
                }
            }
            let want = f64::from(asked) / f64::from(SAMPLE_SCALE) * n as f64;
            assert!((f64::from(kept) - want).abs() <= 1.0, "{kept} vs {want}");
            // A client cycling through ten routes: at 10 % every route is
            // still kept, not one route every time.
            if asked == 1000 {
                assert!(kept_route.iter().all(|&k| k > 50), "{kept_route:?}");
            }
        }
    }

    #[test]
    fn per_connection_or_nothing_captured_keeps_all_it_sees() {
        let mut s = RequestSampler::new(3);
        assert!((0..100).all(|_| s.keep(1000, 1000)));
        assert!((0..100).all(|_| !s.keep(1000, 0)));
        assert_eq!(capture_rate(1000, true), SAMPLE_SCALE);
        assert_eq!(capture_rate(0, true), 0);
        assert_eq!(capture_rate(1000, false), 1000);
    }
}
