//! Whether a route match holds for a request, and how it ranks against the
//! others that hold.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method, Request};

use crate::core::directory::routes::{
    GrpcMethodMatch, PathMatch, RouteKind, RouteMatch, StringMatch,
};

/// What matching reads of a request, taken apart once.
pub(super) struct RequestView<'r> {
    path: &'r str,
    query: Option<&'r str>,
    method: &'r Method,
    headers: &'r HeaderMap,
    /// Service and method of a `/<service>/<method>` path.
    grpc: Option<(&'r str, &'r str)>,
}

impl<'r> RequestView<'r> {
    pub(super) fn of<B>(req: &'r Request<B>) -> Self {
        let path = req.uri().path();
        RequestView {
            path,
            query: req.uri().query(),
            method: req.method(),
            headers: req.headers(),
            grpc: grpc_method(path),
        }
    }

    /// True when every condition of `m` holds.
    pub(super) fn satisfies(&self, m: &RouteMatch) -> bool {
        let path = match &m.path {
            None => true,
            Some(PathMatch::Exact(p)) => self.path == p,
            Some(PathMatch::PathPrefix(p)) => prefix_matches(p, self.path),
            Some(PathMatch::RegularExpression(re)) => re.matches(self.path),
        };
        path && m.method.as_ref().is_none_or(|want| want == self.method)
            && first_of_each(&m.headers, |h| &h.name).all(|h| {
                header_value(self.headers, &h.name).is_some_and(|v| value_matches(&h.value, &v))
            })
            && first_of_each(&m.query, |q| &q.name).all(|q| {
                query_value(self.query, &q.name).is_some_and(|v| value_matches(&q.value, &v))
            })
            && m.grpc.as_ref().is_none_or(|g| self.grpc_satisfies(g))
    }

    fn grpc_satisfies(&self, g: &GrpcMethodMatch) -> bool {
        let Some((service, method)) = self.grpc else {
            return false;
        };
        g.service
            .as_ref()
            .is_none_or(|s| value_matches(s, service.as_bytes()))
            && g.method
                .as_ref()
                .is_none_or(|m| value_matches(m, method.as_bytes()))
    }
}

/// `/pkg.Service/Method` split in two; None for any other path.
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Gateway API `PathPrefix`: element by element, a trailing `/` of the
/// prefix ignored. `/api` and `/api/` both match `/api`, `/api/` and
/// `/api/x`, never `/apix`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix.trim_end_matches('/')) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The length a prefix ranks by: the ignored trailing `/` does not count,
/// and `/` itself is one character (as the default match is).
fn prefix_len(prefix: &str) -> usize {
    prefix.trim_end_matches('/').len().max(1)
}

/// Entries whose name appeared before are skipped: the spec says only the
/// first entry of a name is considered.
fn first_of_each<T, K: PartialEq + ?Sized>(
    items: &[T],
    name: impl Fn(&T) -> &K + Copy,
) -> impl Iterator<Item = &T> {
    items
        .iter()
        .enumerate()
        .filter(move |(i, item)| !items[..*i].iter().any(|before| name(before) == name(item)))
        .map(|(_, item)| item)
}

/// The header's value as one: several field lines of the same name are
/// joined with `,`, which RFC 9110 (5.3) makes equivalent. None when absent.
fn header_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut rest = values.peekable();
    if rest.peek().is_none() {
        return Some(Cow::Borrowed(first.as_bytes()));
    }
    let mut joined = first.as_bytes().to_vec();
    for v in rest {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    Some(Cow::Owned(joined))
}

/// The value of the first query parameter named `name`, both decoded as a
/// form does (`%XX` and `+` for a space), which is how the apps behind the
/// mesh read them. A parameter without `=` has an empty value.
fn query_value(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(n) == name.as_bytes()).then(|| form_decode(v))
    })
}

/// Decodes `%XX` and `+`; a `%` not followed by two hex digits stays as
/// it is rather than failing the whole request.
fn form_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Exact compares bytes; a regular expression never matches a value that
/// is not UTF-8 (header values may be any bytes).
fn value_matches(m: &StringMatch, value: &[u8]) -> bool {
    match m {
        StringMatch::Exact(want) => want.as_bytes() == value,
        StringMatch::RegularExpression(re) => {
            std::str::from_utf8(value).is_ok_and(|v| re.matches(v))
        }
    }
}

/// Hostname precedence of a route, compared before its matches: the
/// characters of the exact hostname that matched, then of any hostname
/// that matched (a wildcard). A route without hostnames, or a request
/// without a host (GAMMA), ranks (0, 0).
pub(super) type HostRank = (usize, usize);

/// How a route's hostnames rank for `host`; None when none matches.
pub(super) fn host_rank(hostnames: &[String], host: Option<&str>) -> Option<HostRank> {
    let Some(host) = host else {
        return Some((0, 0));
    };
    if hostnames.is_empty() {
        return Some((0, 0));
    }
    let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
    hostnames
        .iter()
        .filter_map(|name| match name.strip_prefix('*') {
            // `*.example.com` covers `a.example.com` and `a.b.example.com`,
            // not `example.com` itself.
            Some(suffix) => (host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes()))
            .then_some((0, name.len())),
            None => host
                .eq_ignore_ascii_case(name.as_bytes())
                .then_some((name.len(), name.len())),
        })
        .max()
}

/// The precedence of a match that holds; the greater wins.
///
/// HTTPRoute, in the spec's order: an `Exact` path, then a `PathPrefix` by
/// its length; then a method match; then more header matches; then more
/// query matches. The spec leaves the place of a `RegularExpression` path
/// to implementations: here it ranks below `Exact` and above every prefix
/// (a longer pattern first), as the more specific intent. Below the
/// prefixes, a rule without matches (prefix `/`) would shadow every
/// pattern of its route.
///
/// GRPCRoute, in the spec's order: the characters of an exact service
/// match, then of an exact method match, then the number of regular
/// expression parts (the spec counts characters, which say nothing about
/// what a pattern matches, so a pattern ranks below any exact name); then
/// more header matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    host: HostRank,
    by_kind: [usize; 5],
}

impl Rank {
    pub(super) fn of(host: HostRank, kind: RouteKind, m: &RouteMatch) -> Rank {
        let headers = first_of_each(&m.headers, |h| &h.name).count();
        let by_kind = match kind {
            RouteKind::Http => {
                let (class, len) = match &m.path {
                    Some(PathMatch::Exact(p)) => (3, p.len()),
                    Some(PathMatch::RegularExpression(p)) => (2, p.as_str().len()),
                    Some(PathMatch::PathPrefix(p)) => (1, prefix_len(p)),
                    None => (1, 1),
                };
                let query = first_of_each(&m.query, |q| q.name.as_str()).count();
                [class, len, usize::from(m.method.is_some()), headers, query]
            }
            RouteKind::Grpc => {
                let g = m.grpc.as_ref();
                let exact = |s: Option<&StringMatch>| match s {
                    Some(StringMatch::Exact(name)) => name.len(),
                    _ => 0,
                };
                let regexes = g.map_or(0, |g| {
                    [&g.service, &g.method]
                        .into_iter()
                        .filter(|s| matches!(s, Some(StringMatch::RegularExpression(_))))
                        .count()
                });
                [
                    exact(g.and_then(|g| g.service.as_ref())),
                    exact(g.and_then(|g| g.method.as_ref())),
                    regexes,
                    headers,
                    0,
                ]
            }
        };
        Rank { host, by_kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_elements() {
        let cases = [
            ("/api", "/api", true),
            ("/api", "/api/", true),
            ("/api", "/api/x", true),
            ("/api/", "/api", true),
            ("/api/", "/api/x", true),
            ("/api", "/apix", false),
            ("/api", "/ap", false),
            ("/api", "/", false),
            ("/", "/", true),
            ("/", "/anything", true),
            ("/", "", true),
            ("/", "*", false),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
        ];
        for (prefix, path, want) in cases {
            assert_eq!(prefix_matches(prefix, path), want, "{prefix} {path}");
        }
    }

    #[test]
    fn grpc_paths() {
        assert_eq!(grpc_method("/pkg.Svc/Get"), Some(("pkg.Svc", "Get")));
        for bad in [
            "/pkg.Svc",
            "/pkg.Svc/",
            "//Get",
            "/a/b/c",
            "",
            "*",
            "pkg.Svc/Get",
        ] {
            assert_eq!(grpc_method(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_values_are_form_decoded() {
        let q = Some("a=1&b=x%20y&c=p+q&a=2&flag&%62ad=%zz&e=%4");
        assert_eq!(query_value(q, "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(query_value(q, "b").as_deref(), Some(&b"x y"[..]));
        assert_eq!(query_value(q, "c").as_deref(), Some(&b"p q"[..]));
        assert_eq!(query_value(q, "flag").as_deref(), Some(&b""[..]));
        assert_eq!(query_value(q, "bad").as_deref(), Some(&b"%zz"[..]));
        assert_eq!(query_value(q, "e").as_deref(), Some(&b"%4"[..]));
        assert_eq!(query_value(q, "A"), None);
        assert_eq!(query_value(None, "a"), None);
    }

    #[test]
    fn several_header_lines_are_one_value() {
        let mut h = HeaderMap::new();
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let name = HeaderName::from_static("x-a");
        assert_eq!(header_value(&h, &name).as_deref(), Some(&b"1,2"[..]));
        assert_eq!(header_value(&h, &HeaderName::from_static("x-b")), None);
    }

    #[test]
    fn hostnames() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: [(&[&str], Option<&str>, Option<HostRank>); 10] = [
            (&[], Some("a.example.com"), Some((0, 0))),
            (&["a.example.com"], None, Some((0, 0))),
            (&["a.example.com"], Some("a.example.com"), Some((13, 13))),
            (&["a.example.com"], Some("A.Example.COM."), Some((13, 13))),
            (&["a.example.com"], Some("b.example.com"), None),
            (&["*.example.com"], Some("a.example.com"), Some((0, 13))),
            (&["*.example.com"], Some("a.b.example.com"), Some((0, 13))),
            (&["*.example.com"], Some("example.com"), None),
            (
                &["*.example.com", "a.example.com"],
                Some("a.example.com"),
                Some((13, 13)),
            ),
            // Not ASCII: compared as bytes, never sliced inside a character.
            (&["*.example.com"], Some("é.example.co"), None),
        ];
        for (hostnames, host, want) in cases {
            assert_eq!(
                host_rank(&names(hostnames), host),
                want,
                "{hostnames:?} {host:?}"
            );
        }
    }
}
