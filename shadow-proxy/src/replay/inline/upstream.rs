//! Where the inline proxy sends a live request: its upstream, or, while a
//! failover moves the service, an alternate for a share of new requests
//! (the cross-host cutover switch, `failover::switch::InlineSwitch`).
//!
//! The choice is per request and exact: over `n` requests at share `s`,
//! `floor(n * s)` go to the alternate. Requests in flight finish where they
//! went, so a change drains: nothing is cut, the old side only stops
//! getting new requests.

use std::{
    net::SocketAddr,
    sync::{
        RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
};

use shadow_common::capture::SAMPLE_SCALE;

/// Which side a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Alternate,
}

/// The upstream choice of one proxied service.
#[derive(Debug)]
pub struct Upstream {
    pub primary: SocketAddr,
    alternate: RwLock<Option<SocketAddr>>,
    /// Hundredths of a percent of new requests to the alternate.
    share: AtomicU32,
    picked: AtomicU64,
    in_flight: [AtomicU64; 2],
}

impl Upstream {
    pub fn new(primary: SocketAddr) -> Self {
        Self {
            primary,
            alternate: RwLock::new(None),
            share: AtomicU32::new(0),
            picked: AtomicU64::new(0),
            in_flight: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Where the next request goes.
    pub fn pick(&self) -> (SocketAddr, Side) {
        let share = u64::from(self.share.load(Ordering::Relaxed));
        if share == 0 {
            return (self.primary, Side::Primary);
        }
        let n = self.picked.fetch_add(1, Ordering::Relaxed);
        let scale = u64::from(SAMPLE_SCALE);
        // The n-th request goes to the alternate when the running count
        // of its share steps up: exact to one request, evenly spread.
        let to_alternate = share >= scale || (n + 1) * share / scale > n * share / scale;
        match *self.alternate.read().unwrap_or_else(|p| p.into_inner()) {
            Some(a) if to_alternate => (a, Side::Alternate),
            _ => (self.primary, Side::Primary),
        }
    }

    /// `share` (hundredths of a percent, 10000 = all) of new requests to
    /// `alternate`.
    pub fn steer(&self, alternate: SocketAddr, share: u32) {
        *self.alternate.write().unwrap_or_else(|p| p.into_inner()) = Some(alternate);
        self.share.store(share.min(SAMPLE_SCALE), Ordering::Relaxed);
    }

    /// Every new request back to the primary.
    pub fn release(&self) {
        self.share.store(0, Ordering::Relaxed);
    }

    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    pub fn alternate(&self) -> Option<SocketAddr> {
        *self.alternate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests in flight on `side` (counted from the request to the
    /// response head).
    pub fn in_flight(&self, side: Side) -> u64 {
        self.in_flight[side as usize].load(Ordering::Relaxed)
    }

    /// Counts a request in flight on `side` until the guard drops.
    pub fn enter(&self, side: Side) -> InFlight<'_> {
        self.in_flight[side as usize].fetch_add(1, Ordering::Relaxed);
        InFlight { up: self, side }
    }
}

/// A request in flight on one side.
pub struct InFlight<'a> {
    up: &'a Upstream,
    side: Side,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.up.in_flight[self.side as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_exact_and_release_sends_everything_back() {
        let up = Upstream::new("127.0.0.1:1".parse().unwrap());
        let alt: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!((0..100).all(|_| up.pick().1 == Side::Primary));
        up.steer(alt, 1000);
        let to_alt = (0..1000)
            .filter(|_| up.pick() == (alt, Side::Alternate))
            .count();
        assert_eq!(to_alt, 100, "10 % of 1000 requests, exactly");
        up.steer(alt, SAMPLE_SCALE);
        assert!((0..100).all(|_| up.pick().1 == Side::Alternate));
        up.release();
        assert_eq!(up.share(), 0);
        assert!((0..100).all(|_| up.pick().1 == Side::Primary));
        let g = up.enter(Side::Alternate);
        assert_eq!(up.in_flight(Side::Alternate), 1);
        drop(g);
        assert_eq!(up.in_flight(Side::Alternate), 0);
    }
}
