//! Routes: a method plus a path template, with ids collapsed so statistics
//! group by endpoint (`GET /users/{id}`), overridable by configuration.
//! [`RouteSet`] caps how many distinct routes one service keeps: paths are
//! chosen by whoever sends traffic, so the rest share [`OVERFLOW_ROUTE`].

use std::collections::BTreeSet;

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
    let collapsed: Vec<String> = segs.iter().map(|s| collapse(s)).collect();
    format!("{method} {}", collapsed.join("/"))
}

/// `42` -> `{id}`; a file name keeps its extension: `455.jpg` -> `{id}.jpg`.
fn collapse(seg: &str) -> String {
    let id = |s: &str| {
        if is_uuid(s) {
            Some("{uuid}")
        } else if is_id(s) {
            Some("{id}")
        } else {
            None
        }
    };
    if let Some(t) = id(seg) {
        return t.to_owned();
    }
    match seg.split_once('.') {
        Some((stem, ext)) if !ext.is_empty() => match id(stem) {
            Some(t) => format!("{t}.{ext}"),
            None => seg.to_owned(),
        },
        _ => seg.to_owned(),
    }
}

/// The one route every route past a service's cap is counted under.
pub const OVERFLOW_ROUTE: &str = "{other}";

/// Distinct routes a service keeps unless `diff.max_routes` says otherwise.
pub const DEFAULT_MAX_ROUTES: usize = 256;

/// The routes one service has seen, up to a cap; first come, first kept.
#[derive(Debug)]
pub struct RouteSet {
    max: usize,
    known: BTreeSet<String>,
    /// Requests whose route fell into [`OVERFLOW_ROUTE`].
    pub overflowed: u64,
}

impl RouteSet {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            known: BTreeSet::new(),
            overflowed: 0,
        }
    }

    /// `route` if it is known or there is room for it, else [`OVERFLOW_ROUTE`]
    /// (counted in `shadow_diff_routes_overflowed_total`).
    pub fn bound(&mut self, service: &str, route: String) -> String {
        if self.known.contains(&route) {
            return route;
        }
        if self.known.len() < self.max {
            self.known.insert(route.clone());
            return route;
        }
        self.overflowed += 1;
        metrics::counter!(
            crate::metrics::names::DIFF_ROUTES_OVERFLOWED,
            "service" => service.to_owned()
        )
        .increment(1);
        OVERFLOW_ROUTE.to_owned()
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
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

    #[test]
    fn numeric_file_names_collapse_and_keep_their_extension() {
        assert_eq!(
            route("GET", "/images/photos/455.jpg", &[]),
            "GET /images/photos/{id}.jpg"
        );
        assert_eq!(
            route("GET", "/images/photos/456.jpg?w=100", &[]),
            "GET /images/photos/{id}.jpg"
        );
        assert_eq!(
            route(
                "GET",
                "/dl/123e4567-e89b-12d3-a456-426614174000.tar.gz",
                &[]
            ),
            "GET /dl/{uuid}.tar.gz"
        );
        assert_eq!(route("GET", "/static/app.js", &[]), "GET /static/app.js");
        assert_eq!(route("GET", "/v1.2/x", &[]), "GET /v1.2/x");
        assert_eq!(route("GET", "/files/7.", &[]), "GET /files/7.");
    }

    #[test]
    fn routes_past_the_cap_share_one_overflow_route_and_are_counted() {
        let mut set = RouteSet::new(3);
        let mut seen = BTreeSet::new();
        for n in 0..100 {
            // Paths that do not collapse, as a scanner sends them.
            let r = route("GET", &format!("/wp-admin/x{n}.php"), &[]);
            seen.insert(set.bound("web", r));
        }
        assert_eq!(set.len(), 3);
        assert_eq!(set.overflowed, 97);
        assert_eq!(seen.len(), 4, "three routes plus the overflow: {seen:?}");
        assert!(seen.contains(OVERFLOW_ROUTE));
        // Known routes keep their name after the cap is reached.
        assert_eq!(
            set.bound("web", "GET /wp-admin/x0.php".into()),
            "GET /wp-admin/x0.php"
        );
        assert_eq!(set.overflowed, 97);
    }
}
