//! Which route a gateway request takes. Pure and table-tested.

use crate::config::GatewayRoute;

/// True when `prefix` matches `path` on a segment boundary, as Gateway API
/// `PathPrefix` does: `/api` matches `/api` and `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The route for `host` (without port) and `path`: host must match exactly
/// (case-insensitive) or the route takes any host; the longest prefix wins,
/// and at equal length a route naming the host beats a catch-all.
pub fn select<'a>(routes: &'a [GatewayRoute], host: &str, path: &str) -> Option<&'a GatewayRoute> {
    routes
        .iter()
        .filter(|r| match &r.host {
            None => true,
            Some(h) => h.eq_ignore_ascii_case(host),
        })
        .filter(|r| prefix_matches(&r.prefix, path))
        .max_by_key(|r| (r.prefix.trim_end_matches('/').len(), r.host.is_some()))
}

/// `Host` without its port (`[v6]` kept bracketed).
pub fn host_only(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.split_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, service: &str) -> GatewayRoute {
        GatewayRoute {
            host: host.map(str::to_string),
            prefix: prefix.into(),
            service: service.into(),
            port: 80,
        }
    }

    #[test]
    fn selects() {
        let routes = vec![
            route(None, "/", "frontend.shop"),
            route(None, "/api", "api.shop"),
            route(None, "/api/reviews", "reviews.shop"),
            route(Some("admin.example.com"), "/", "admin.shop"),
            route(Some("shop.example.com"), "/api", "shop-api.shop"),
        ];
        let cases = [
            ("example.com", "/", Some("frontend.shop")),
            ("example.com", "/index.html", Some("frontend.shop")),
            ("example.com", "/api", Some("api.shop")),
            ("example.com", "/api/items", Some("api.shop")),
            ("example.com", "/apix", Some("frontend.shop")),
            ("example.com", "/api/reviews/1", Some("reviews.shop")),
            ("admin.example.com", "/api", Some("api.shop")),
            ("admin.example.com", "/x", Some("admin.shop")),
            ("ADMIN.example.com", "/x", Some("admin.shop")),
            ("shop.example.com", "/api/x", Some("shop-api.shop")),
            ("shop.example.com", "/api/reviews", Some("reviews.shop")),
        ];
        for (host, path, want) in cases {
            assert_eq!(
                select(&routes, host, path).map(|r| r.service.as_str()),
                want,
                "{host}{path}"
            );
        }
        let only_host = vec![route(Some("a.example.com"), "/", "a.shop")];
        assert!(select(&only_host, "b.example.com", "/").is_none());
        assert!(select(&[], "a", "/").is_none());
    }

    #[test]
    fn hosts_lose_their_port() {
        for (authority, want) in [
            ("example.com", "example.com"),
            ("example.com:8080", "example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(host_only(authority), want);
        }
    }
}
