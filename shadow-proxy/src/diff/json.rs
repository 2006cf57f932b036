//! Structural JSON comparison, field by field, with paths like
//! `$.items[3].price`. Arrays compare by position, or by a key field the
//! user names for that array's path; numbers compare within a tolerance.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DiffKind, FieldDiff};

/// How JSON bodies compare.
#[derive(Debug, Clone, Default)]
pub struct JsonOptions {
    /// Relative tolerance for numbers (0.0: exact).
    pub number_tolerance: f64,
    /// Array path (as reported, with `[*]` for indices) -> key field.
    pub array_keys: BTreeMap<String, String>,
}

/// `$.a[3].b` -> `$.a[*].b`: the form rules and statistics use.
pub fn generic_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn numbers_equal(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol * a.abs().max(b.abs())
}

/// Appends the differences between `live` and `shadow` under `path`.
pub fn diff(
    path: &str,
    live: &Value,
    shadow: &Value,
    opts: &JsonOptions,
    out: &mut Vec<FieldDiff>,
) {
    // Equal subtrees are the common case: skip them before building paths.
    if live == shadow {
        return;
    }
    match (live, shadow) {
        (Value::Object(l), Value::Object(s)) => {
            for (k, lv) in l {
                let p = format!("{path}.{k}");
                match s.get(k) {
                    Some(sv) => diff(&p, lv, sv, opts, out),
                    None => out.push(FieldDiff::new(p, DiffKind::Missing, Some(lv), None)),
                }
            }
            for (k, sv) in s {
                if !l.contains_key(k) {
                    out.push(FieldDiff::new(
                        format!("{path}.{k}"),
                        DiffKind::Extra,
                        None,
                        Some(sv),
                    ));
                }
            }
        }
        (Value::Array(l), Value::Array(s)) => {
            if let Some(key) = opts.array_keys.get(&generic_path(path)) {
                diff_keyed(path, l, s, key, opts, out);
            } else {
                for i in 0..l.len().max(s.len()) {
                    let p = format!("{path}[{i}]");
                    match (l.get(i), s.get(i)) {
                        (Some(a), Some(b)) => diff(&p, a, b, opts, out),
                        (Some(a), None) => {
                            out.push(FieldDiff::new(p, DiffKind::Missing, Some(a), None))
                        }
                        (None, Some(b)) => {
                            out.push(FieldDiff::new(p, DiffKind::Extra, None, Some(b)))
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            if a != b && !numbers_equal(x, y, opts.number_tolerance) {
                out.push(FieldDiff::new(
                    path.to_owned(),
                    DiffKind::Changed,
                    Some(live),
                    Some(shadow),
                ));
            }
        }
        (a, b) if type_name(a) != type_name(b) => {
            out.push(FieldDiff::new(
                path.to_owned(),
                DiffKind::TypeChanged,
                Some(a),
                Some(b),
            ));
        }
        (a, b) => {
            if a != b {
                out.push(FieldDiff::new(
                    path.to_owned(),
                    DiffKind::Changed,
                    Some(a),
                    Some(b),
                ));
            }
        }
    }
}

/// Arrays of objects matched by `key` rather than position.
fn diff_keyed(
    path: &str,
    l: &[Value],
    s: &[Value],
    key: &str,
    opts: &JsonOptions,
    out: &mut Vec<FieldDiff>,
) {
    let id = |v: &Value| v.get(key).map(ToString::to_string);
    let index: BTreeMap<String, &Value> = s.iter().filter_map(|v| Some((id(v)?, v))).collect();
    let mut seen = std::collections::BTreeSet::new();
    for (i, lv) in l.iter().enumerate() {
        let Some(k) = id(lv) else {
            // No key: fall back to position for this element.
            if let Some(sv) = s.get(i) {
                diff(&format!("{path}[{i}]"), lv, sv, opts, out);
            }
            continue;
        };
        let p = format!("{path}[{key}={k}]");
        match index.get(&k) {
            Some(sv) => {
                seen.insert(k);
                diff(&p, lv, sv, opts, out);
            }
            None => out.push(FieldDiff::new(p, DiffKind::Missing, Some(lv), None)),
        }
    }
    for sv in s {
        if let Some(k) = id(sv)
            && !seen.contains(&k)
        {
            out.push(FieldDiff::new(
                format!("{path}[{key}={k}]"),
                DiffKind::Extra,
                None,
                Some(sv),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(a: Value, b: Value, opts: &JsonOptions) -> Vec<(String, DiffKind)> {
        let mut out = Vec::new();
        diff("$", &a, &b, opts, &mut out);
        out.into_iter().map(|d| (d.path, d.kind)).collect()
    }

    #[test]
    fn paths_kinds_and_tolerance() {
        let live = json!({"items": [{"price": 10.0, "n": "a"}, {"price": 5}], "gone": 1, "t": "x"});
        let shadow =
            json!({"items": [{"price": 10.05, "n": "a"}, {"price": 6}], "new": true, "t": 3});
        let got = run(live.clone(), shadow.clone(), &JsonOptions::default());
        assert_eq!(
            got,
            vec![
                ("$.gone".into(), DiffKind::Missing),
                ("$.items[0].price".into(), DiffKind::Changed),
                ("$.items[1].price".into(), DiffKind::Changed),
                ("$.t".into(), DiffKind::TypeChanged),
                ("$.new".into(), DiffKind::Extra),
            ]
        );
        let tolerant = JsonOptions {
            number_tolerance: 0.01,
            ..JsonOptions::default()
        };
        assert!(
            !run(live, shadow, &tolerant)
                .iter()
                .any(|(p, _)| p == "$.items[0].price")
        );
    }

    #[test]
    fn arrays_by_key_ignore_order() {
        let live = json!({"users": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]});
        let shadow = json!({"users": [{"id": 2, "v": "b"}, {"id": 1, "v": "A"}]});
        let mut opts = JsonOptions::default();
        assert_eq!(
            run(live.clone(), shadow.clone(), &opts).len(),
            4,
            "by position everything differs"
        );
        opts.array_keys.insert("$.users".into(), "id".into());
        assert_eq!(
            run(live, shadow, &opts),
            vec![("$.users[id=1].v".into(), DiffKind::Changed)]
        );
    }

    #[test]
    fn generic_paths() {
        assert_eq!(generic_path("$.a[3].b[10]"), "$.a[*].b[*]");
        assert_eq!(generic_path("$.u[id=7].v"), "$.u[*].v");
    }
}
