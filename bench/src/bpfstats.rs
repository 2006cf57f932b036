//! The kernel's own statistics of each eBPF program (`BPF_ENABLE_STATS`:
//! `run_cnt` and `run_time_ns`): how often each of the agent's programs ran
//! during a workload and what one run cost.

use std::{collections::BTreeMap, fmt::Write as _, os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result};
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

/// Keeps run-time statistics on while held (the kernel adds two clock reads
/// per run while they are on, so ratios are never measured with it).
pub struct Enabled(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<Enabled> {
    enable_stats(Stats::RunTime)
        .map(Enabled)
        .context("enabling BPF run-time statistics (needs CAP_SYS_ADMIN)")
}

/// One program's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub runs: u64,
    pub ns: u64,
}

/// Every loaded program by id: its name, type and counters.
pub type Snapshot = BTreeMap<u32, (String, String, Counters)>;

pub fn snapshot() -> Snapshot {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            (
                p.id(),
                (
                    p.name_as_str().unwrap_or("?").to_owned(),
                    format!("{:?}", p.program_type()),
                    Counters {
                        runs: p.run_count(),
                        ns: p.run_time().as_nanos() as u64,
                    },
                ),
            )
        })
        .collect()
}

/// One program's share of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub kind: String,
    pub runs: u64,
    pub ns: u64,
}

impl Row {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.ns as f64 / self.runs as f64
        }
    }
}

/// What the programs in `after` that were not loaded `before_agent` did
/// between `start` and `after`.
pub fn delta(before_agent: &Snapshot, start: &Snapshot, after: &Snapshot) -> Vec<Row> {
    let mut rows: Vec<Row> = after
        .iter()
        .filter(|(id, _)| !before_agent.contains_key(id))
        .map(|(id, (name, kind, c))| {
            let s = start.get(id).map(|(_, _, c)| *c).unwrap_or_default();
            Row {
                name: name.clone(),
                kind: kind.clone(),
                runs: c.runs.saturating_sub(s.runs),
                ns: c.ns.saturating_sub(s.ns),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.name.cmp(&b.name)));
    rows
}

/// The report's table: per program, runs, runs per second, ns per run and
/// the share of one CPU, with the total.
pub fn table(rows: &[Row], wall: Duration) -> String {
    let secs = wall.as_secs_f64().max(1e-9);
    let mut md = String::from(
        "| program | type | runs | runs/s | ns/run | CPU (% of one core) |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} |",
            r.name,
            r.kind,
            r.runs,
            r.runs as f64 / secs,
            r.ns_per_run(),
            r.ns as f64 / secs / 1e7
        );
    }
    let (runs, ns) = rows
        .iter()
        .fold((0, 0), |(r, n), row| (r + row.runs, n + row.ns));
    let _ = writeln!(
        md,
        "| all | | {runs} | {:.0} | {:.0} | {:.3} |",
        runs as f64 / secs,
        if runs == 0 {
            0.0
        } else {
            ns as f64 / runs as f64
        },
        ns as f64 / secs / 1e7
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agents_programs_and_only_the_workloads_runs_count() {
        let c = |runs, ns| Counters { runs, ns };
        let p = |name: &str, counters| (name.to_owned(), "TracePoint".to_owned(), counters);
        let before: Snapshot = [(1, p("other", c(5, 50)))].into();
        let start: Snapshot = [(1, p("other", c(9, 90))), (7, p("shadow_a", c(10, 1000)))].into();
        let after: Snapshot = [
            (1, p("other", c(99, 990))),
            (7, p("shadow_a", c(110, 6000))),
            (8, p("shadow_b", c(4, 4000))),
        ]
        .into();
        let rows = delta(&before, &start, &after);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].name.as_str(), rows[0].runs, rows[0].ns),
            ("shadow_a", 100, 5000)
        );
        assert_eq!(rows[0].ns_per_run(), 50.0);
        assert_eq!((rows[1].name.as_str(), rows[1].runs), ("shadow_b", 4));
        let t = table(&rows, Duration::from_secs(1));
        assert!(t.contains("| all | | 104 | 104 | 87 |"), "{t}");
    }
}
