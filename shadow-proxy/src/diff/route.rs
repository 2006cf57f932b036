//! Routes: a method plus a path template, with ids collapsed so statistics
//! group by endpoint (`GET /users/{id}`), overridable by configuration.

/// What a path segment looks like.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn is_id(s: &str) -> bool {
    (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
        || (s.len() >= 16 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Collapses ids and UUIDs; `templates` (e.g. `/v1/items/{sku}`) win when
/// they match segment by segment (`{...}` matches any segment).
pub fn route(method: &str, target: &str, templates: &[String]) -> String {
    let path = target.split('?').next().unwrap_or(target);
    let segs: Vec<&str> = path.split('/').collect();
    for t in templates {
        let ts: Vec<&str> = t.split('/').collect();
        if ts.len() == segs.len()
            && ts
                .iter()
                .zip(&segs)
                .all(|(a, b)| a == b || (a.starts_with('{') && a.ends_with('}')))
        {
            return format!("{method} {t}");
        }
    }
    let collapsed: Vec<&str> = segs
        .iter()
        .map(|s| {
            if is_uuid(s) {
                "{uuid}"
            } else if is_id(s) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("{method} {}", collapsed.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_uuids_collapse_and_templates_override() {
        assert_eq!(route("GET", "/users/42?x=1", &[]), "GET /users/{id}");
        assert_eq!(
            route("GET", "/o/123e4567-e89b-12d3-a456-426614174000/items", &[]),
            "GET /o/{uuid}/items"
        );
        assert_eq!(
            route("GET", "/blob/deadbeefdeadbeef", &[]),
            "GET /blob/{id}"
        );
        assert_eq!(
            route("GET", "/v1/items/ABC-9", &["/v1/items/{sku}".into()]),
            "GET /v1/items/{sku}"
        );
        assert_eq!(route("POST", "/health", &[]), "POST /health");
    }
}
