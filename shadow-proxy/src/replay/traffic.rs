//! Application-level series from the captured live exchanges: per service
//! and per route group, the live request rate (scaled up by the sampling
//! rate), p50 and p99 live latency, the error rate (5xx answers and
//! exchanges whose connection ended before the answer did), and request
//! and response bytes per second.
//!
//! The replayer [`observe`](Traffic::observe)s every captured exchange of a
//! known service, replayed or not; the poller [`drain`](Traffic::drain)s
//! one interval's worth into the history, where they are forecast like any
//! other metric (`web.p99_latency_ms`). Memory is bounded: at most
//! [`MAX_ROUTES`] route groups per service (the rest count under
//! `other`), and at most [`LATENCIES`] latencies per group per interval
//! (a uniform reservoir past that).

use std::{collections::BTreeMap, sync::Mutex};

use crate::{http::conversation::Exchange, metrics::names};

/// Route groups kept per service; later ones are counted as `other`.
pub const MAX_ROUTES: usize = 16;
/// Latencies kept per group per interval for the quantiles.
pub const LATENCIES: usize = 2048;
/// The group past [`MAX_ROUTES`].
pub const OTHER_ROUTE: &str = "other";

/// What one series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppField {
    /// Live requests per second, scaled by the sampling rate.
    Rate,
    P50LatencyMs,
    P99LatencyMs,
    /// Share of requests answered 5xx or cut by a reset, 0..1.
    ErrorRate,
    RequestBytesPerSecond,
    ResponseBytesPerSecond,
}

impl AppField {
    pub const ALL: [AppField; 6] = [
        Self::Rate,
        Self::P50LatencyMs,
        Self::P99LatencyMs,
        Self::ErrorRate,
        Self::RequestBytesPerSecond,
        Self::ResponseBytesPerSecond,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::P50LatencyMs => "p50_latency_ms",
            Self::P99LatencyMs => "p99_latency_ms",
            Self::ErrorRate => "error_rate",
            Self::RequestBytesPerSecond => "request_bytes_per_second",
            Self::ResponseBytesPerSecond => "response_bytes_per_second",
        }
    }
}

impl AppField {
    /// The Prometheus gauge, labelled `service` (and `route`).
    pub fn gauge(self) -> &'static str {
        match self {
            Self::Rate => names::APP_RATE,
            Self::P50LatencyMs => names::APP_LATENCY_P50,
            Self::P99LatencyMs => names::APP_LATENCY_P99,
            Self::ErrorRate => names::APP_ERROR_RATE,
            Self::RequestBytesPerSecond => names::APP_REQUEST_BYTES,
            Self::ResponseBytesPerSecond => names::APP_RESPONSE_BYTES,
        }
    }
}

/// An application series: `web.rate` for a service, `web[GET /api/:id].rate`
/// for one of its route groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSeries {
    pub service: String,
    pub route: Option<String>,
    pub field: AppField,
}

impl AppSeries {
    pub fn key(&self) -> String {
        match &self.route {
            None => format!("{}.{}", self.service, self.field.name()),
            Some(r) => format!("{}[{r}].{}", self.service, self.field.name()),
        }
    }
}

impl AppSeries {
    pub fn publish(&self, value: f64) {
        let name = self.field.gauge();
        match &self.route {
            None => metrics::gauge!(name, "service" => self.service.clone()).set(value),
            Some(r) => {
                metrics::gauge!(name, "service" => self.service.clone(), "route" => r.clone())
                    .set(value)
            }
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    requests: u64,
    errors: u64,
    request_bytes: u64,
    response_bytes: u64,
    latencies_ms: Vec<f64>,
    /// Latencies offered this interval (the reservoir's denominator).
    offered: u64,
}

impl Group {
    fn add(&mut self, ex: &Exchange, seed: u64) {
        self.requests += 1;
        self.request_bytes += ex.request.body.len() as u64;
        match &ex.response {
            Some(r) => {
                self.response_bytes += r.body.len() as u64;
                if r.status >= 500 {
                    self.errors += 1;
                }
                let ms = r.last_byte_ns.saturating_sub(ex.request.last_byte_ns) as f64 / 1e6;
                self.offered += 1;
                if self.latencies_ms.len() < LATENCIES {
                    self.latencies_ms.push(ms);
                } else {
                    // Algorithm R: keep each of the `offered` with equal chance.
                    let j = (splitmix(seed) % self.offered) as usize;
                    if j < LATENCIES {
                        self.latencies_ms[j] = ms;
                    }
                }
            }
            // The connection ended before live answered: a reset or a cut.
            None => self.errors += 1,
        }
    }

    /// The interval's values; latencies only when there were answers.
    fn values(&mut self, seconds: f64, scale: f64) -> Vec<(AppField, f64)> {
        let per_second = |n: u64| n as f64 * scale / seconds;
        let mut out = vec![
            (AppField::Rate, per_second(self.requests)),
            (
                AppField::RequestBytesPerSecond,
                per_second(self.request_bytes),
            ),
            (
                AppField::ResponseBytesPerSecond,
                per_second(self.response_bytes),
            ),
        ];
        if self.requests > 0 {
            out.push((
                AppField::ErrorRate,
                self.errors as f64 / self.requests as f64,
            ));
        }
        if !self.latencies_ms.is_empty() {
            self.latencies_ms.sort_by(f64::total_cmp);
            out.push((
                AppField::P50LatencyMs,
                nearest_rank(&self.latencies_ms, 0.5),
            ));
            out.push((
                AppField::P99LatencyMs,
                nearest_rank(&self.latencies_ms, 0.99),
            ));
        }
        // Start the next interval from zero, keeping the latency buffer.
        let mut buffer = std::mem::take(&mut self.latencies_ms);
        buffer.clear();
        *self = Group {
            latencies_ms: buffer,
            ..Group::default()
        };
        out
    }
}

/// The nearest-rank quantile of sorted data.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Default)]
struct Service {
    total: Group,
    routes: BTreeMap<String, Group>,
    /// The sampling rate of the newest exchange, in hundredths of a percent.
    per_ten_thousand: u32,
}

/// The accumulator the replayer fills and the poller drains.
#[derive(Debug, Default)]
pub struct Traffic {
    services: Mutex<BTreeMap<String, Service>>,
}

impl Traffic {
    /// Starts every service at zero, so an idle one reads `rate 0`, not
    /// missing.
    pub fn new<'a>(services: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let map = services
            .into_iter()
            .map(|(name, per_ten_thousand)| {
                (
                    name.to_owned(),
                    Service {
                        per_ten_thousand,
                        ..Service::default()
                    },
                )
            })
            .collect();
        Self {
            services: Mutex::new(map),
        }
    }

    /// Counts one captured exchange of `service` under `route`, captured at
    /// `per_ten_thousand` hundredths of a percent of connections.
    pub fn observe(
        &self,
        service: &str,
        route: &str,
        per_ten_thousand: u32,
        id: u64,
        ex: &Exchange,
    ) {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let svc = map.entry(service.to_owned()).or_default();
        svc.per_ten_thousand = per_ten_thousand;
        svc.total.add(ex, id);
        let full = svc.routes.len() >= MAX_ROUTES && !svc.routes.contains_key(route);
        let key = if full { OTHER_ROUTE } else { route };
        svc.routes
            .entry(key.to_owned())
            .or_default()
            .add(ex, id ^ 0x5eed);
    }

    /// A new sampling rate for `service`: it scales this interval's rate
    /// from now on (the interval it changed in is scaled by the new one).
    pub fn set_sampling(&self, service: &str, per_ten_thousand: u32) {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(service.to_owned()).or_default().per_ten_thousand = per_ten_thousand;
    }

    /// One interval of `seconds`: every series' value, and the counts reset.
    /// A rate is scaled by the sampling rate (at 10 % a captured request
    /// stands for ten); at 0 % nothing is captured, so no rate is claimed.
    pub fn drain(&self, seconds: f64) -> Vec<(AppSeries, f64)> {
        let mut out = Vec::new();
        if seconds <= 0.0 {
            return out;
        }
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        for (name, svc) in map.iter_mut() {
            if svc.per_ten_thousand == 0 {
                continue;
            }
            let scale = 10_000.0 / f64::from(svc.per_ten_thousand);
            let groups = std::iter::once((None, &mut svc.total))
                .chain(svc.routes.iter_mut().map(|(r, g)| (Some(r.clone()), g)));
            for (route, group) in groups {
                for (field, v) in group.values(seconds, scale) {
                    let series = AppSeries {
                        service: name.clone(),
                        route: route.clone(),
                        field,
                    };
                    out.push((series, v));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::conversation::{Request, Response};

    fn exchange(status: Option<u16>, latency_ms: u64, body: usize) -> Exchange {
        Exchange {
            request: Request {
                method: "GET".into(),
                target: "/".into(),
                body: vec![0; body].into(),
                last_byte_ns: 1_000_000_000,
                ..Request::default()
            },
            response: status.map(|status| Response {
                status,
                body: vec![0; 2 * body].into(),
                last_byte_ns: 1_000_000_000 + latency_ms * 1_000_000,
                ..Response::default()
            }),
        }
    }

    fn get(out: &[(AppSeries, f64)], key: &str) -> Option<f64> {
        out.iter().find(|(s, _)| s.key() == key).map(|p| p.1)
    }

    #[test]
    fn one_interval_scaled_by_the_sampling_rate() {
        let t = Traffic::new([("web", 1_000), ("idle", 10_000), ("off", 0)]);
        // 100 requests at 10 %: latencies 1..=100 ms, 3 are 503 and 2 were cut.
        for i in 1..=100u64 {
            let status = match i {
                1..=3 => Some(503),
                4..=5 => None,
                _ => Some(200),
            };
            let route = if i % 2 == 0 { "GET /a" } else { "GET /b" };
            t.observe("web", route, 1_000, i, &exchange(status, i, 10));
        }
        let out = t.drain(10.0);
        // 100 captured at 10 % over 10 s: 100 requests a second.
        assert_eq!(get(&out, "web.rate"), Some(100.0));
        assert_eq!(get(&out, "web.error_rate"), Some(0.05));
        assert_eq!(get(&out, "web.p50_latency_ms"), Some(51.0), "{out:?}");
        assert_eq!(get(&out, "web.p99_latency_ms"), Some(100.0));
        assert_eq!(get(&out, "web.request_bytes_per_second"), Some(1_000.0));
        assert_eq!(get(&out, "web[GET /a].rate"), Some(50.0));
        // An idle service reads zero, not missing; one at 0 % claims nothing.
        assert_eq!(get(&out, "idle.rate"), Some(0.0));
        assert_eq!(get(&out, "idle.p99_latency_ms"), None);
        assert!(out.iter().all(|(s, _)| s.service != "off"));
        // The next interval starts from zero.
        let again = t.drain(10.0);
        assert_eq!(get(&again, "web.rate"), Some(0.0));
        assert_eq!(get(&again, "web.p50_latency_ms"), None);
    }

    #[test]
    fn routes_and_latencies_are_bounded() {
        let t = Traffic::new([("web", 10_000)]);
        for i in 0..(MAX_ROUTES as u64 + 5) {
            t.observe(
                "web",
                &format!("GET /r{i}"),
                10_000,
                i,
                &exchange(Some(200), 1, 0),
            );
        }
        for i in 0..(3 * LATENCIES as u64) {
            t.observe(
                "web",
                "GET /r0",
                10_000,
                i,
                &exchange(Some(200), i % 1000, 0),
            );
        }
        let out = t.drain(1.0);
        let routes: Vec<_> = out
            .iter()
            .filter(|(s, _)| s.route.is_some() && s.field == AppField::Rate)
            .collect();
        assert_eq!(routes.len(), MAX_ROUTES + 1, "16 routes and other");
        assert_eq!(get(&out, "web[other].rate"), Some(5.0));
        // The reservoir's p50 of a uniform 0..1000 ms is near 500.
        let p50 = get(&out, "web[GET /r0].p50_latency_ms").unwrap();
        assert!((400.0..600.0).contains(&p50), "{p50}");
    }
}
