//! `shadowctl mirror status` and `shadowctl diff summary` as text.

use shadow_api::mirror::{DiffSummary, MirrorStatus, Verdict};

/// Regressions first (they are what a reader looks for), then a count of
/// healthy routes; `all` lists every route with its counts as well.
pub(crate) fn render_diff(all: &[DiffSummary], every_route: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in all {
        let _ = writeln!(out, "{}:", s.service);
        for (target, t) in &s.targets {
            let verdict = match &t.verdict {
                Verdict::Healthy { compared } => format!("healthy ({compared} compared)"),
                Verdict::Regressed { regressions } => {
                    format!("REGRESSED ({} fields)", regressions.len())
                }
                Verdict::Inconclusive { reason } => format!("inconclusive: {reason}"),
            };
            let _ = writeln!(out, "  {target}: {verdict}");
            let mut regressed_routes = std::collections::BTreeSet::new();
            if let Verdict::Regressed { regressions } = &t.verdict {
                for r in regressions {
                    regressed_routes.insert(r.route.as_str());
                    let _ = writeln!(
                        out,
                        "    {} {}: differs {:.2}% (noise {:.2}%), e.g. exchanges {:?}",
                        r.route,
                        r.path,
                        r.diff_rate * 100.0,
                        r.noise_rate * 100.0,
                        r.examples
                    );
                }
            }
            let healthy = t
                .routes
                .keys()
                .filter(|r| !regressed_routes.contains(r.as_str()))
                .count();
            let _ = writeln!(
                out,
                "    {healthy} of {} routes without regressions{}",
                t.routes.len(),
                if every_route || t.routes.is_empty() {
                    ""
                } else {
                    " (--all lists them)"
                }
            );
            if every_route {
                for (route, r) in &t.routes {
                    let _ = writeln!(
                        out,
                        "    {route}: {} compared, {} noise comparisons",
                        r.compared, r.noise_compared
                    );
                }
            }
        }
    }
    out
}

pub(crate) fn print_status(all: &[MirrorStatus]) {
    println!(
        "{:<12} {:>6} {:>8} {:<11} {:>10} {:>10} {:>9} {:>9} {:>9}  not replayed",
        "SERVICE",
        "PORT",
        "PERCENT",
        "OF",
        "PKTS SEEN",
        "SAMPLED",
        "REQUESTS",
        "REPLAYED",
        "COVERAGE"
    );
    for s in all {
        let reasons: Vec<String> = s
            .stats
            .not_replayed
            .iter()
            .chain(s.stats.flow_drops.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // Per request: the kernel captures more connections than asked.
        let of = if s.sample == "request" {
            format!("req ({}%)", s.capture_percent)
        } else if s.sample == "inline" {
            "req (inline)".into()
        } else {
            "connections".into()
        };
        // Under the CPU budget the kernel captures less than asked.
        let of = match s.budget {
            Some(b) if b.scale < 1.0 && s.sample != "inline" => {
                format!("{of}, {:.2}% captured", s.capture_percent)
            }
            _ => of,
        };
        println!(
            "{:<12} {:>6} {:>7}% {:<11} {:>10} {:>10} {:>9} {:>9} {:>9}  {}",
            s.service,
            s.port,
            s.percent,
            of,
            s.packets_seen,
            s.packets_sampled,
            s.stats.requests_parsed,
            s.stats.replayed,
            s.coverage
                .map_or("-".into(), |c| format!("{:.2}%", c * 100.0)),
            reasons.join(" ")
        );
        if let Some(i) = &s.inline {
            let alternate = match &i.alternate {
                Some(a) if i.alternate_percent > 0.0 => {
                    format!(", {}% of new requests to {a}", i.alternate_percent)
                }
                _ => String::new(),
            };
            println!(
                "{:<12} inline proxy {} -> {}{alternate}: {} requests, {} teed, {} upstream errors, {} in flight",
                "",
                i.listen,
                i.upstream,
                i.requests,
                i.teed,
                i.upstream_errors,
                i.in_flight + i.in_flight_alternate
            );
        }
    }
    // One budget for the whole agent.
    if let Some(b) = all.first().and_then(|s| s.budget) {
        println!(
            "CPU budget {} cores: {:.2} used, capture at {:.1}% of what was asked{}",
            b.cores,
            b.used,
            b.scale * 100.0,
            if b.training_held {
                ", forecast training held"
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shadow_api::mirror::{Regression, RouteStats, TargetDiff};

    use super::*;

    #[test]
    fn diff_summary_lists_regressions_first_then_counts_healthy_routes() {
        let routes: BTreeMap<String, RouteStats> = ["GET /a", "GET /b", "GET /c"]
            .into_iter()
            .map(|r| (r.to_owned(), RouteStats::default()))
            .collect();
        let regression = Regression {
            route: "GET /b".into(),
            path: "$.price".into(),
            diff_rate: 0.5,
            noise_rate: 0.0,
            examples: vec![7],
        };
        let summary = DiffSummary {
            service: "web".into(),
            targets: [(
                "http://shadow".to_owned(),
                TargetDiff {
                    verdict: Verdict::Regressed {
                        regressions: vec![regression],
                    },
                    routes,
                },
            )]
            .into(),
            marked_noise: Vec::new(),
        };
        let short = render_diff(std::slice::from_ref(&summary), false);
        let lines: Vec<&str> = short.lines().collect();
        assert!(lines[1].contains("REGRESSED (1 fields)"), "{short}");
        assert!(
            lines[2].contains("GET /b $.price: differs 50.00%"),
            "{short}"
        );
        assert!(
            lines[3].contains("2 of 3 routes without regressions (--all lists them)"),
            "{short}"
        );
        assert_eq!(lines.len(), 4, "no route list without --all: {short}");
        let all = render_diff(&[summary], true);
        for r in [
            "GET /a: 0 compared",
            "GET /b: 0 compared",
            "GET /c: 0 compared",
        ] {
            assert!(all.contains(r), "--all lists {r}: {all}");
        }
        assert!(
            all.find("$.price") < all.find("GET /a:"),
            "regressions first: {all}"
        );
    }
}
