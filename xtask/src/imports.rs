//! The agent's import rule, checked in `cargo xtask test` (and alone with
//! `cargo xtask check-imports`): inside `shadow-proxy/src`, a box may use
//! boxes of its own tier or below, never above, and no two boxes may
//! depend on each other in a cycle.
//!
//! A box is the first path component under `src/` (`capture/pipeline.rs`
//! belongs to `capture`). References are read from the source text:
//! `crate::box`, `use crate::{box, ...}` groups and `super::` chains that
//! climb to the crate root. Comments are ignored, and so is test code (a
//! file named `tests.rs`, or everything from a `#[cfg(test)]` line on),
//! since tests may build fixtures with higher boxes the way dev-dependencies
//! do. `lib.rs` and `bin/` wire everything and are not checked.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Tiers, lowest first. A box may import its own tier and the ones before.
pub const ORDER: &[&[&str]] = &[
    &["util", "metrics"],
    &["kernel", "host", "http"],
    &["capture"],
    &["diff"],
    &["replay"],
    &["forecast"],
    &["provision"],
    &["failover"],
    &["api"],
    &["config"],
    &["agent"],
];

fn tier(name: &str) -> Option<usize> {
    ORDER.iter().position(|t| t.contains(&name))
}

/// One reference from a file to another box.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub file: String,
    pub line: usize,
}

/// Checks the crate under `src`; the error lists every violation.
pub fn check(src: &Path) -> Result<usize> {
    let mut edges = Vec::new();
    for file in rust_files(src)? {
        let rel = file.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "lib.rs" || parts[0] == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        edges.extend(references(&parts, &text));
    }
    let problems = violations(&edges);
    if !problems.is_empty() {
        bail!(
            "the import rule is broken ({} problems; order: {}):\n  {}",
            problems.len(),
            order_line(),
            problems.join("\n  ")
        );
    }
    Ok(edges.len())
}

/// `util, metrics -> kernel, host, http -> ...`
pub fn order_line() -> String {
    ORDER
        .iter()
        .map(|t| t.join(", "))
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The module path of a file: `capture/reassembly/mod.rs` -> [capture, reassembly].
fn module_path(parts: &[String]) -> Vec<String> {
    let mut m: Vec<String> = parts.to_vec();
    let last = m.pop().unwrap_or_default();
    if last != "mod.rs" {
        m.push(last.trim_end_matches(".rs").to_owned());
    }
    m
}

/// Every reference from this file to another box, outside comments and tests.
pub fn references(parts: &[String], text: &str) -> Vec<Edge> {
    let me = module_path(parts);
    let from = me[0].clone();
    let file = parts.join("/");
    if parts.last().is_some_and(|p| p == "tests.rs") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        for to in boxes_named(code, &me) {
            if to != from {
                out.push(Edge {
                    from: from.clone(),
                    to,
                    file: file.clone(),
                    line: i + 1,
                });
            }
        }
    }
    // A `use crate::{` group spans lines: its top-level names are boxes.
    out.extend(groups(text, &me, &from, &file));
    out.sort();
    out.dedup();
    out
}

/// Boxes named on one line by `crate::x` or a `super::` chain that
/// reaches the crate root.
fn boxes_named(code: &str, me: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        let after = &rest[at + "crate::".len()..];
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            let name = ident(after);
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().last();
        let mut after = &rest[at..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            rest = &rest[at + "super::".len()..];
            continue;
        }
        let mut ups = 0;
        while let Some(r) = after.strip_prefix("super::") {
            ups += 1;
            after = r;
        }
        if ups >= me.len() {
            let name = ident(after);
            if !name.is_empty() {
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Top-level names of `use crate::{ ... };` groups.
fn groups(text: &str, me: &[String], from: &str, file: &str) -> Vec<Edge> {
    let code: String = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .map(|l| l.find("//").map_or(l, |at| &l[..at]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(found) = code[search..].find("use crate::{") {
        let start = search + found + "use crate::{".len();
        let line = code[..start].matches('\n').count() + 1;
        let mut depth = 1;
        let mut name = String::new();
        let mut at_top_name = true;
        let mut end = start;
        for (i, c) in code[start..].char_indices() {
            end = start + i;
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => at_top_name = true,
                c if depth == 1 && at_top_name && (c.is_alphanumeric() || c == '_') => {
                    name.push(c);
                    continue;
                }
                _ => {}
            }
            if !name.is_empty() {
                if name != "self" && name != from {
                    out.push(Edge {
                        from: from.to_owned(),
                        to: std::mem::take(&mut name),
                        file: file.to_owned(),
                        line,
                    });
                }
                name.clear();
                at_top_name = false;
            }
        }
        if !name.is_empty() && name != from {
            out.push(Edge {
                from: from.to_owned(),
                to: name,
                file: file.to_owned(),
                line,
            });
        }
        search = end.max(start);
    }
    let _ = me;
    out
}

/// Imports against the order, unknown boxes, and cycles between boxes.
pub fn violations(edges: &[Edge]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        match (tier(&e.from), tier(&e.to)) {
            (None, _) => problems.push(format!(
                "{}:{}: box `{}` is not in the order (add it to xtask/src/imports.rs ORDER)",
                e.file, e.line, e.from
            )),
            (_, None) => problems.push(format!(
                "{}:{}: `{}` uses `crate::{}`, which is not a box in the order",
                e.file, e.line, e.from, e.to
            )),
            (Some(a), Some(b)) if b > a => problems.push(format!(
                "{}:{}: `{}` imports `{}`, which sits above it",
                e.file, e.line, e.from, e.to
            )),
            _ => {}
        }
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    problems.extend(cycles(&graph));
    problems
}

/// Each cycle once, as `a -> b -> a`.
fn cycles(graph: &BTreeMap<&str, BTreeSet<&str>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for &start in graph.keys() {
        let mut stack = vec![(start, vec![start])];
        while let Some((node, path)) = stack.pop() {
            for &next in graph.get(node).into_iter().flatten() {
                if next == start {
                    // Rotate so the smallest name leads: one report per cycle.
                    let min = path
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map_or(0, |(i, _)| i);
                    let mut cyc: Vec<&str> =
                        path[min..].iter().chain(&path[..min]).copied().collect();
                    cyc.push(cyc[0]);
                    found.insert(cyc.join(" -> "));
                } else if !path.contains(&next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|c| format!("import cycle: {c}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> Vec<String> {
        p.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn finds_paths_groups_and_super_chains_but_not_comments_or_tests() {
        let text = "//! see crate::agent\nuse crate::{\n    kernel::View,\n    metrics::{self, names},\n};\nuse super::super::http::X;\nfn f() { crate::util::unix_ms(); }\n// crate::api\n#[cfg(test)]\nmod tests { use crate::config::Config; }\n";
        let got: Vec<String> = references(&parts("capture/pipeline.rs"), text)
            .into_iter()
            .map(|e| e.to)
            .collect();
        assert_eq!(got, ["http", "kernel", "metrics", "util"]);
    }

    #[test]
    fn an_upward_import_and_a_cycle_are_reported() {
        let edge = |from: &str, to: &str| Edge {
            from: from.into(),
            to: to.into(),
            file: format!("{from}/mod.rs"),
            line: 1,
        };
        let problems = violations(&[
            edge("diff", "agent"),
            edge("kernel", "host"),
            edge("host", "kernel"),
        ]);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`diff` imports `agent`, which sits above it")),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"import cycle: host -> kernel -> host".to_owned()),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(violations(&[edge("agent", "diff"), edge("diff", "util")]).is_empty());
    }
}
