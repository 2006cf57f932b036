//! Diff engine benchmark: pairs compared per second on one core for 1 KB,
//! 16 KB and 1 MB JSON bodies, and recall / false-positive rate on a
//! labelled set of generated pairs with planted regressions and realistic
//! noise (timestamps, UUIDs, arrays in random order, numeric jitter within
//! tolerance), all through the engine the agent runs.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::{Value, json};
use shadow_proxy::diff::{
    self, DiffOptions, Side,
    noise::{Engine, Thresholds},
    route,
};

/// A small deterministic generator (xorshift) so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
    fn ts(&mut self) -> String {
        format!(
            "2026-11-24T{:02}:{:02}:{:02}.{:06}Z",
            self.below(24),
            self.below(60),
            self.below(60),
            self.below(1_000_000)
        )
    }
}

/// A response body: `items` is keyed by `sku` and may come in any order.
fn body(rng: &mut Rng, user: u64, items: usize, change: Option<&str>) -> Value {
    let mut list: Vec<Value> = (0..items)
        .map(|i| {
            // Jitter below the 0.1 % tolerance.
            let jitter = 1.0 + (rng.below(100) as f64 - 50.0) / 1e6;
            json!({"sku": format!("sku-{i}"), "price": (10.0 + i as f64) * jitter, "qty": i % 5})
        })
        .collect();
    for i in (1..list.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        list.swap(i, j);
    }
    let mut v = json!({
        "ts": rng.ts(),
        "request_id": rng.uuid(),
        "user": user,
        "currency": "EUR",
        "items": list,
    });
    match change {
        Some("currency") => v["currency"] = json!("USD"),
        Some("qty") => {
            if let Some(first) = v["items"].as_array_mut().and_then(|a| a.first_mut()) {
                first["qty"] = json!(99);
            }
        }
        Some("missing") => {
            v.as_object_mut().map(|o| o.remove("user"));
        }
        _ => {}
    }
    v
}

fn options() -> DiffOptions {
    let mut o = DiffOptions::default();
    o.json.number_tolerance = 0.001;
    o.json.array_keys.insert("$.items".into(), "sku".into());
    o
}

fn side(bytes: &[u8]) -> Side<'_> {
    Side {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes,
        latency_ms: 5.0,
    }
}

fn throughput(items: usize) -> (usize, f64) {
    let mut rng = Rng(7);
    let a = serde_json::to_vec(&body(&mut rng, 1, items, None)).unwrap_or_default();
    let b = serde_json::to_vec(&body(&mut rng, 1, items, Some("qty"))).unwrap_or_default();
    let o = options();
    let (la, lb) = (side(&a), side(&b));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(diff::compare(&la, &lb, &o));
        n += 1;
    }
    (a.len(), n as f64 / start.elapsed().as_secs_f64())
}

/// Routes, and which of them carry a planted regression (and in which
/// share of their requests).
const ROUTES: [(&str, Option<(&str, u64)>); 10] = [
    ("/cart/", Some(("qty", 30))),
    ("/users/", None),
    ("/orders/", Some(("currency", 5))),
    ("/items/", None),
    ("/search/", None),
    ("/profile/", Some(("missing", 100))),
    ("/stock/", None),
    ("/price/", None),
    ("/ship/", None),
    ("/pay/", None),
];

pub fn run(pairs: u64, report: &Path) -> Result<()> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Diff engine: throughput, recall and false positives\n"
    );
    let _ = writeln!(
        md,
        "Command: `cargo xtask bench` (or `shadow-bench diff --pairs {pairs}`). One core, release build.\n"
    );
    let _ = writeln!(md, "| JSON body | bytes | pairs/s/core |");
    let _ = writeln!(md, "|---|---|---|");
    for (label, items) in [("1 KB", 20usize), ("16 KB", 330), ("1 MB", 21_000)] {
        let (bytes, rate) = throughput(items);
        println!("{label}: {bytes} bytes, {rate:.0} pairs/s");
        let _ = writeln!(md, "| {label} | {bytes} | {rate:.0} |");
    }

    // Labelled set: each pair is (route, id, planted change or not).
    let mut rng = Rng(42);
    let o = options();
    let mut engine = Engine::new(Thresholds::default());
    let mut labelled: Vec<(String, u64, bool, Vec<diff::FieldDiff>)> = Vec::new();
    for id in 0..pairs {
        let (prefix, planted) = ROUTES[(id % ROUTES.len() as u64) as usize];
        let user = rng.below(1_000_000);
        let target = format!("{prefix}{user}");
        let r = route::route("GET", &target, &[]);
        let change = planted.and_then(|(field, pct)| (rng.below(100) < pct).then_some(field));
        let live = serde_json::to_vec(&body(&mut rng, user, 8, None))?;
        let shadow = serde_json::to_vec(&body(&mut rng, user, 8, change))?;
        let diffs = diff::compare(&side(&live), &side(&shadow), &o);
        engine.record(&r, id, &diffs);
        // 5 % of requests go to the shadow twice: noise only.
        if id % 20 == 0 {
            let again = serde_json::to_vec(&body(&mut rng, user, 8, change))?;
            engine.record_noise(&r, &diff::compare(&side(&shadow), &side(&again), &o));
        }
        labelled.push((r, id, change.is_some(), diffs));
    }
    let regressions = engine.regressions();
    let flagged_fields: BTreeMap<(String, String), ()> = regressions
        .iter()
        .map(|r| ((r.route.clone(), r.path.clone()), ()))
        .collect();
    let (mut tp, mut fneg, mut fp) = (0u64, 0u64, 0u64);
    for (r, _, planted, diffs) in &labelled {
        let flagged = diffs
            .iter()
            .any(|d| flagged_fields.contains_key(&(r.clone(), diff::json::generic_path(&d.path))));
        match (planted, flagged) {
            (true, true) => tp += 1,
            (true, false) => fneg += 1,
            (false, true) => fp += 1,
            (false, false) => {}
        }
    }
    let recall = tp as f64 / (tp + fneg).max(1) as f64;
    let fp_rate = fp as f64 / pairs as f64;
    println!("reported: {regressions:#?}");
    println!(
        "recall {:.4}%, false positives {:.4}% of requests",
        recall * 100.0,
        fp_rate * 100.0
    );
    let _ = writeln!(
        md,
        "\n{pairs} labelled pairs over {} routes; {} planted (3 routes: a changed quantity in 30 %, \
         a changed currency in 5 %, a missing field in 100 % of their requests); noise: RFC 3339 \
         times, UUIDs, arrays in random order (compared by `sku`), prices jittered within the \
         0.1 % tolerance; 5 % of requests also compared shadow vs shadow.\n",
        ROUTES.len(),
        tp + fneg
    );
    let _ = writeln!(md, "| figure | value | goal |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(md, "| recall | {:.4} % | ≥ 99 % |", recall * 100.0);
    let _ = writeln!(
        md,
        "| false positives | {:.4} % of requests | ≤ 0.1 % |",
        fp_rate * 100.0
    );
    let _ = writeln!(md, "\nReported fields:\n");
    for r in &regressions {
        let _ = writeln!(
            md,
            "- `{}` `{}`: differs in {:.2} % (noise {:.2} %)",
            r.route,
            r.path,
            r.diff_rate * 100.0,
            r.noise_rate * 100.0
        );
    }
    print!("\n{md}");
    if let Some(parent) = report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(report, md)?;
    Ok(())
}
