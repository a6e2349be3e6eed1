//! Which route a gateway request takes, and the path it is matched and
//! forwarded with. Pure and table-tested.

use serde::Serialize;

/// A gateway route, from `--route [HOST]/PREFIX=svc.ns:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayRoute {
    /// Matched against the request's host (without port); `None` = any host.
    pub host: Option<String>,
    /// Path prefix, always starting with `/`.
    pub prefix: String,
    /// Service key, `<name>.<namespace>`.
    pub service: String,
    pub port: u16,
}

/// A path the gateway refuses to route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded slash or backslash (%2F, %5C) or a backslash")]
    EncodedSeparator,
    #[error("path climbs above the root with '..'")]
    AboveRoot,
}

/// True for a segment that means `.` or `..`, literally or percent-encoded
/// (`%2e`, `.%2E`, ...).
fn dot_segment(segment: &str) -> Option<usize> {
    let mut rest = segment;
    let mut dots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("%2e") {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
    }
    (1..=2).contains(&dots).then_some(dots)
}

/// The path the gateway matches routes against and sends on: dot-segments
/// (`.`, `..`, also percent-encoded) resolved as RFC 3986 §5.2.4 does, so
/// `/public/../admin` is `/admin` before any route sees it. Encoded slashes
/// and backslashes are refused rather than guessed at: an app may decode
/// them into separators after the gateway chose a route. Other
/// percent-encodings are data and stay as they are.
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match dot_segment(segment) {
            Some(1) => {
                if i == last {
                    out.push("");
                }
            }
            Some(_) => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                if i == last {
                    out.push("");
                }
            }
            None => out.push(segment),
        }
    }
    Ok(format!("/{}", out.join("/")))
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
        // Segment-wise, as Gateway API `PathPrefix`; paths here are
        // normalized, so they start with `/`.
        .filter(|r| crate::outbound::route::prefix_matches(&r.prefix, path))
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
    fn paths_are_normalized_before_matching() {
        use PathError::*;
        let cases: [(&str, Result<&str, PathError>); 22] = [
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/../b", Ok("/b")),
            ("/public/../admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/%2E./b", Ok("/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/a/%2e/b", Ok("/a/b")),
            ("/a/...", Ok("/a/...")),
            ("/a/..b", Ok("/a/..b")),
            ("/a/%20/b", Ok("/a/%20/b")),
            ("/a//b", Ok("/a//b")),
            ("/..", Err(AboveRoot)),
            ("/%2e%2e/etc", Err(AboveRoot)),
            ("/a/../../b", Err(AboveRoot)),
            ("/a%2fb", Err(EncodedSeparator)),
            ("/a%5C..%5Cb", Err(EncodedSeparator)),
            ("a/b", Err(NotAbsolute)),
        ];
        for (path, want) in cases {
            assert_eq!(normalize_path(path), want.map(str::to_string), "{path}");
        }
        // A normalized path cannot escape the route it matches.
        let routes = vec![
            route(None, "/public", "public.shop"),
            route(None, "/admin", "admin.shop"),
        ];
        let path = normalize_path("/public/%2e%2e/admin/x").unwrap();
        assert_eq!(
            select(&routes, "h", &path).map(|r| r.service.as_str()),
            Some("admin.shop")
        );
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
