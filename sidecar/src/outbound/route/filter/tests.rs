use http::{HeaderName, Request};

use super::*;
use crate::core::directory::routes::Header;

type Headers<'a> = &'a [(&'a str, &'a [u8])];

fn parts(uri: &str, headers: Headers) -> Parts {
    let mut req = Request::builder().uri(uri).body(()).unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    req.into_parts().0
}

fn h(name: &'static str, value: &'static str) -> Header {
    Header {
        name: HeaderName::from_static(name),
        value: HeaderValue::from_static(value),
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::PathPrefix(p.into())),
        ..RouteMatch::default()
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect()
}

fn modifier() -> HeaderModifier {
    HeaderModifier {
        set: vec![h("x-set", "new")],
        add: vec![h("x-add", "2")],
        remove: vec![HeaderName::from_static("x-gone")],
    }
}

#[test]
fn header_modifiers_set_add_and_remove() {
    let mut p = parts(
        "/",
        &[
            ("x-set", b"old1"),
            ("X-Set", b"old2"),
            ("x-add", b"1"),
            ("X-GONE", b"a"),
            ("x-gone", b"\xff"),
            ("x-kept", b"k"),
        ],
    );
    let filters = [Filter::RequestHeaderModifier(modifier())];
    let out = apply_request_filters(&filters, &mut p, &RouteMatch::ALL);
    assert_eq!(out, FilterOutcome::Continue);
    assert_eq!(values(&p.headers, "x-set"), [b"new"]);
    assert_eq!(values(&p.headers, "x-add"), [b"1", b"2"]);
    assert!(values(&p.headers, "x-gone").is_empty());
    assert_eq!(values(&p.headers, "x-kept"), [b"k"]);
    // Set and add also work on a header the request lacks.
    let mut p = parts("/", &[]);
    apply_request_filters(&filters, &mut p, &RouteMatch::ALL);
    assert_eq!(values(&p.headers, "x-set"), [b"new"]);
    assert_eq!(values(&p.headers, "x-add"), [b"2"]);
}

#[test]
fn request_and_response_modifiers_stay_on_their_side() {
    let filters = [
        Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![h("x-req", "1")],
            ..HeaderModifier::default()
        }),
        Filter::ResponseHeaderModifier(modifier()),
    ];
    let mut p = parts("/", &[]);
    apply_request_filters(&filters, &mut p, &RouteMatch::ALL);
    assert!(p.headers.get("x-set").is_none());
    assert!(p.headers.get("x-req").is_some());

    let mut res = HeaderMap::new();
    res.append("x-gone", HeaderValue::from_static("a"));
    res.append("x-add", HeaderValue::from_static("1"));
    apply_response_filters(&filters, &mut res);
    assert!(res.get("x-req").is_none());
    assert!(res.get("x-gone").is_none());
    assert_eq!(values(&res, "x-set"), [b"new"]);
    assert_eq!(values(&res, "x-add"), [b"1", b"2"]);
}

fn redirect_to(
    scheme: Option<&str>,
    hostname: Option<&str>,
    path: Option<PathModifier>,
    port: Option<u16>,
) -> Filter {
    Filter::RequestRedirect(Redirect {
        scheme: scheme.map(str::to_string),
        hostname: hostname.map(str::to_string),
        path,
        port,
        status_code: StatusCode::MOVED_PERMANENTLY,
    })
}

#[test]
fn redirect_locations() {
    use PathModifier::*;
    const SHOP: &[(&str, &[u8])] = &[("host", b"shop.example.com")];
    const SHOP_8080: &[(&str, &[u8])] = &[("host", b"shop.example.com:8080")];
    let full = |p: &str| Some(ReplaceFullPath(p.into()));
    let cases: Vec<(Filter, &str, Headers, RouteMatch, &str)> = vec![
        // Only the scheme: the rest from the request, query kept.
        (
            redirect_to(Some("https"), None, None, None),
            "/a?x=1",
            SHOP,
            RouteMatch::ALL,
            "https://shop.example.com/a?x=1",
        ),
        // A scheme set brings its well-known port, which is left out.
        (
            redirect_to(Some("https"), None, None, None),
            "/a",
            SHOP_8080,
            RouteMatch::ALL,
            "https://shop.example.com/a",
        ),
        (
            redirect_to(Some("http"), None, None, None),
            "/a",
            SHOP_8080,
            RouteMatch::ALL,
            "http://shop.example.com/a",
        ),
        // No scheme: the port the client addressed stays.
        (
            redirect_to(None, Some("new.example.com"), None, None),
            "/a",
            SHOP_8080,
            RouteMatch::ALL,
            "http://new.example.com:8080/a",
        ),
        (
            redirect_to(None, Some("new.example.com"), None, None),
            "/a",
            SHOP,
            RouteMatch::ALL,
            "http://new.example.com/a",
        ),
        // A port set is shown unless it is the scheme's default.
        (
            redirect_to(Some("https"), None, None, Some(8443)),
            "/a",
            SHOP,
            RouteMatch::ALL,
            "https://shop.example.com:8443/a",
        ),
        (
            redirect_to(Some("https"), None, None, Some(443)),
            "/a",
            SHOP_8080,
            RouteMatch::ALL,
            "https://shop.example.com/a",
        ),
        (
            redirect_to(None, None, None, Some(80)),
            "/a",
            SHOP_8080,
            RouteMatch::ALL,
            "http://shop.example.com/a",
        ),
        (
            redirect_to(None, None, None, Some(9000)),
            "/a",
            SHOP,
            RouteMatch::ALL,
            "http://shop.example.com:9000/a",
        ),
        // Paths.
        (
            redirect_to(None, None, full("/new"), None),
            "/a/b?x=1",
            SHOP,
            RouteMatch::ALL,
            "http://shop.example.com/new?x=1",
        ),
        (
            redirect_to(None, None, Some(ReplacePrefixMatch("/v2".into())), None),
            "/api/items?x=1",
            SHOP,
            prefix("/api"),
            "http://shop.example.com/v2/items?x=1",
        ),
        (
            redirect_to(None, None, Some(ReplacePrefixMatch("/".into())), None),
            "/api",
            SHOP,
            prefix("/api"),
            "http://shop.example.com/",
        ),
        (
            redirect_to(None, None, Some(ReplacePrefixMatch("/v2".into())), None),
            "/a",
            SHOP,
            RouteMatch::ALL,
            "http://shop.example.com/v2/a",
        ),
        // The request's own scheme and authority (absolute form, HTTP/2).
        (
            redirect_to(None, None, full("/b"), None),
            "https://shop.example.com:8443/a",
            &[],
            RouteMatch::ALL,
            "https://shop.example.com:8443/b",
        ),
        (
            redirect_to(Some("http"), None, None, None),
            "https://shop.example.com/a",
            &[],
            RouteMatch::ALL,
            "http://shop.example.com/a",
        ),
        // IPv6 literals keep their brackets.
        (
            redirect_to(None, None, full("/b"), None),
            "/a",
            &[("host", b"[::1]:8080")],
            RouteMatch::ALL,
            "http://[::1]:8080/b",
        ),
        (
            redirect_to(Some("https"), None, None, None),
            "/a",
            &[("host", b"[::1]")],
            RouteMatch::ALL,
            "https://[::1]/a",
        ),
        // No host known: a relative reference.
        (
            redirect_to(Some("https"), None, full("/b"), None),
            "/a",
            &[],
            RouteMatch::ALL,
            "/b",
        ),
        (
            redirect_to(None, None, None, None),
            "/a",
            &[("host", b"\xff")],
            RouteMatch::ALL,
            "/a",
        ),
        // `*` has no path to keep.
        (
            redirect_to(None, Some("h.example.com"), None, None),
            "*",
            &[],
            RouteMatch::ALL,
            "http://h.example.com/",
        ),
    ];
    for (filter, uri, headers, matched, want) in cases {
        let mut p = parts(uri, headers);
        let out = apply_request_filters(std::slice::from_ref(&filter), &mut p, &matched);
        let FilterOutcome::Redirect(r) = out else {
            panic!("{filter:?} {uri}: no redirect");
        };
        assert_eq!(r.location, want, "{filter:?} {uri} {headers:?}");
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    }
}

#[test]
fn redirect_status_and_short_circuit() {
    for status in [301, 302, 303, 307, 308] {
        let filters = [
            Filter::RequestRedirect(Redirect {
                scheme: None,
                hostname: None,
                path: None,
                port: None,
                status_code: StatusCode::from_u16(status).unwrap(),
            }),
            Filter::RequestHeaderModifier(modifier()),
        ];
        let mut p = parts("/a", &[("host", b"h")]);
        let out = apply_request_filters(&filters, &mut p, &RouteMatch::ALL);
        assert_eq!(
            out,
            FilterOutcome::Redirect(RedirectResponse {
                status: StatusCode::from_u16(status).unwrap(),
                location: HeaderValue::from_static("http://h/a"),
            })
        );
        // Filters after the redirect do not run.
        assert!(p.headers.get("x-set").is_none());
    }
}

#[test]
fn prefix_replacement_follows_the_spec_table() {
    let cases = [
        ("/foo/bar", "/foo", "/xyz", Some("/xyz/bar")),
        ("/foo/bar", "/foo", "/xyz/", Some("/xyz/bar")),
        ("/foo/bar", "/foo/", "/xyz", Some("/xyz/bar")),
        ("/foo/bar", "/foo/", "/xyz/", Some("/xyz/bar")),
        ("/foo", "/foo", "/xyz", Some("/xyz")),
        ("/foo/", "/foo", "/xyz", Some("/xyz/")),
        ("/foo/bar", "/foo", "", Some("/bar")),
        ("/foo/", "/foo", "", Some("/")),
        ("/foo", "/foo", "", Some("/")),
        ("/foo/", "/foo", "/", Some("/")),
        ("/foo", "/foo", "/", Some("/")),
        ("/api", "/api", "/", Some("/")),
        ("/api/", "/api", "/v2", Some("/v2/")),
        ("/api/", "/api", "/v2/", Some("/v2/")),
        ("/api/x", "/", "/v2", Some("/v2/api/x")),
        ("/api//x", "/api", "/v2", Some("/v2//x")),
        ("", "/", "/v2", Some("/v2")),
        ("/apix", "/api", "/v2", None),
        ("/", "/api", "/v2", None),
        ("*", "/api", "/v2", None),
    ];
    for (path, prefix, replacement, want) in cases {
        assert_eq!(
            replace_prefix(path, prefix, replacement).as_deref(),
            want,
            "{path} {prefix} {replacement}"
        );
    }
}

fn rewrite_to(hostname: Option<&str>, path: Option<PathModifier>) -> [Filter; 1] {
    [Filter::UrlRewrite(UrlRewrite {
        hostname: hostname.map(str::to_string),
        path,
    })]
}

#[test]
fn url_rewrites() {
    use PathModifier::*;
    // (filter, request URI, match, URI after, Host after)
    let cases: Vec<([Filter; 1], &str, RouteMatch, &str, &str)> = vec![
        (
            rewrite_to(Some("internal.shop"), None),
            "/a?x=1",
            RouteMatch::ALL,
            "/a?x=1",
            "internal.shop",
        ),
        (
            rewrite_to(Some("internal.shop"), None),
            "http://shop.example.com:8080/a",
            RouteMatch::ALL,
            "http://internal.shop/a",
            "internal.shop",
        ),
        (
            rewrite_to(None, Some(ReplaceFullPath("/b".into()))),
            "/a/c?x=1",
            RouteMatch::ALL,
            "/b?x=1",
            "shop",
        ),
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/v2".into()))),
            "/api/items?x=1",
            prefix("/api"),
            "/v2/items?x=1",
            "shop",
        ),
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/".into()))),
            "/api",
            prefix("/api"),
            "/",
            "shop",
        ),
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/v2".into()))),
            "/api/",
            prefix("/api/"),
            "/v2/",
            "shop",
        ),
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/v2".into()))),
            "/x",
            RouteMatch::ALL,
            "/v2/x",
            "shop",
        ),
        // Without a prefix match there is nothing to replace.
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/v2".into()))),
            "/api",
            RouteMatch {
                path: Some(PathMatch::Exact("/api".into())),
                ..RouteMatch::default()
            },
            "/api",
            "shop",
        ),
        // A match that does not fit the path (a caller's mistake) leaves it.
        (
            rewrite_to(None, Some(ReplacePrefixMatch("/v2".into()))),
            "/other",
            prefix("/api"),
            "/other",
            "shop",
        ),
        (
            rewrite_to(None, Some(ReplaceFullPath("/b".into()))),
            "*",
            RouteMatch::ALL,
            "/b",
            "shop",
        ),
    ];
    for (filters, uri, matched, want_uri, want_host) in cases {
        let mut p = parts(uri, &[("host", b"shop")]);
        let out = apply_request_filters(&filters, &mut p, &matched);
        assert_eq!(out, FilterOutcome::Continue);
        assert_eq!(p.uri, want_uri, "{filters:?} {uri}");
        assert_eq!(p.headers[header::HOST], want_host, "{filters:?} {uri}");
    }
}

#[test]
fn filters_apply_in_order() {
    let filters = [
        Filter::UrlRewrite(UrlRewrite {
            hostname: Some("internal.shop".into()),
            path: None,
        }),
        Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![h("host", "last.shop")],
            ..HeaderModifier::default()
        }),
        Filter::RequestMirror(crate::core::directory::routes::Mirror {
            service_key: "copy.shop".into(),
            port: None,
            percent: 100,
        }),
    ];
    let mut p = parts("/", &[("host", b"shop")]);
    assert_eq!(
        apply_request_filters(&filters, &mut p, &RouteMatch::ALL),
        FilterOutcome::Continue
    );
    assert_eq!(p.headers[header::HOST], "last.shop");
}
