//! `GET /v1/regress?y=METRIC&on=METRIC[&at=X,Y]` (control socket) and
//! `/api/v1/regress` (admin port): a resource-per-load line fitted on the
//! agent's history ([`shadow_forecast::regress`]), the what-if's input.
//!
//! Metric names may be short: `cpu` is `host.cpu_utilisation` when that is
//! the one history series it names (see [`resolve`]). Errors are
//! `{"error": ...}`: 400 for a missing or bad parameter, 404 for an
//! unknown or ambiguous metric (with what it could mean), 422 when the
//! history cannot support a line (too few pairs, a constant load).

use std::sync::Mutex;

use hyper::StatusCode;
use shadow_forecast::regress;

use super::{Answer, error, json, query_param};
use crate::host::history::History;

pub fn answer(history: &Mutex<History>, query: &str) -> Answer {
    let (Some(y), Some(on)) = (query_param(query, "y"), query_param(query, "on")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "regress needs ?y=METRIC&on=METRIC (e.g. y=cpu&on=web.rate)".into(),
        );
    };
    let at = match query_param(query, "at").map(|a| parse_at(&a)).transpose() {
        Ok(at) => at.unwrap_or_default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let history = history.lock().unwrap_or_else(|p| p.into_inner());
    let names: Vec<&str> = history.metrics().collect();
    let (y, on) = match (resolve(&y, &names), resolve(&on, &names)) {
        (Ok(y), Ok(on)) => (y, on),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::NOT_FOUND, e),
    };
    let samples = |m: &str| -> Vec<(u64, f64)> {
        history
            .get(m)
            .into_iter()
            .map(|p| (p.timestamp, p.value))
            .collect()
    };
    let (ys, xs) = (samples(&y), samples(&on));
    drop(history);
    match regress::fit(&y, &on, &ys, &xs, &at) {
        Ok(r) => json(StatusCode::OK, &r),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

fn parse_at(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("at: {v:?} is not a number (use at=100,250)"))
        })
        .collect()
}

type Matcher<'a> = dyn Fn(&str) -> bool + 'a;

/// A metric by its full name, or a short one: `host.NAME` or the one
/// series that starts with it, then the one series with a dotted part that
/// starts with it (`cpu` -> `host.cpu_utilisation`, `p99` ->
/// `web.p99_latency_ms` when only `web` is shadowed).
pub fn resolve(name: &str, metrics: &[&str]) -> Result<String, String> {
    if metrics.contains(&name) {
        return Ok(name.to_owned());
    }
    let host = format!("host.{name}");
    let tries: [Box<Matcher>; 3] = [
        Box::new(|m: &str| m == host),
        Box::new(|m: &str| m.starts_with(&host) || m.starts_with(name)),
        Box::new(|m: &str| m.split('.').any(|part| part.starts_with(name))),
    ];
    for matches in &tries {
        let found: Vec<&str> = metrics.iter().copied().filter(|m| matches(m)).collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok((*one).to_owned()),
            many => {
                let shown: Vec<&str> = many.iter().copied().take(8).collect();
                return Err(format!(
                    "{name:?} could be any of {} series ({}{}); give the full name",
                    many.len(),
                    shown.join(", "),
                    if many.len() > 8 { ", ..." } else { "" }
                ));
            }
        }
    }
    Err(format!(
        "no history series {name:?} (see `shadowctl history` for the names)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 5] = [
        "host.cpu_utilisation",
        "host.memory_utilisation",
        "cgroup.web.cpu_cores",
        "web.rate",
        "web[GET /a].rate",
    ];

    #[test]
    fn short_names_resolve_when_they_name_one_series() {
        assert_eq!(resolve("cpu", &NAMES).unwrap(), "host.cpu_utilisation");
        assert_eq!(resolve("web.rate", &NAMES).unwrap(), "web.rate");
        assert_eq!(
            resolve("memory", &NAMES).unwrap(),
            "host.memory_utilisation"
        );
        let e = resolve("rate", &NAMES).unwrap_err();
        assert!(e.contains("any of 2 series"), "{e}");
        let e = resolve("disk", &NAMES).unwrap_err();
        assert!(e.contains("no history series \"disk\""), "{e}");
    }

    #[test]
    fn regress_answers_from_the_history() {
        let h = Mutex::new(History::new("h", 1000, 10));
        for i in 0..100u64 {
            let rate = (i % 20) as f64 * 10.0;
            h.lock().unwrap().push(i * 1000, "web.rate", rate);
            h.lock()
                .unwrap()
                .push(i * 1000, "host.cpu_utilisation", 4.0 + 0.1 * rate);
        }
        let a = answer(&h, "y=cpu&on=web.rate&at=400");
        assert_eq!(a.status(), StatusCode::OK);
        let a = answer(&h, "y=cpu&on=web.rate&at=four");
        assert_eq!(a.status(), StatusCode::BAD_REQUEST);
        let a = answer(&h, "y=cpu");
        assert_eq!(a.status(), StatusCode::BAD_REQUEST);
        let a = answer(&h, "y=disk&on=web.rate");
        assert_eq!(a.status(), StatusCode::NOT_FOUND);
    }
}
