//! Precedence tables for [`super::select`]: each case names the backend of
//! the rule it expects, so a table reads as "this request goes there".

use http::{HeaderName, HeaderValue, Method, Request};

use super::*;
use crate::core::directory::routes::{
    Backend, GrpcMethodMatch, HeaderMatch, ListenerProtocol, PathMatch, Pattern, QueryMatch,
    StringMatch,
};

fn route(
    name: &str,
    kind: RouteKind,
    ports: &[u16],
    hostnames: &[&str],
    rules: Vec<RouteRule>,
) -> Route {
    Route {
        name: name.into(),
        kind,
        ports: ports.to_vec(),
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        listener: ListenerProtocol::Any,
        rules,
    }
}

fn http(name: &str, ports: &[u16], rules: Vec<RouteRule>) -> Route {
    route(name, RouteKind::Http, ports, &[], rules)
}

/// A rule sending to `backend`, which tables use as the rule's name.
fn rule(backend: &str, matches: Vec<RouteMatch>) -> RouteRule {
    RouteRule {
        matches,
        backends: vec![Backend {
            service_key: backend.into(),
            port: None,
            weight: 1,
            filters: vec![],
        }],
        ..RouteRule::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::PathPrefix(p.into())),
        ..RouteMatch::default()
    }
}

fn exact(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::Exact(p.into())),
        ..RouteMatch::default()
    }
}

fn regex(p: &str) -> RouteMatch {
    RouteMatch {
        path: Some(PathMatch::RegularExpression(Pattern::new(p).unwrap())),
        ..RouteMatch::default()
    }
}

fn header(name: &'static str, value: StringMatch) -> HeaderMatch {
    HeaderMatch {
        name: HeaderName::from_static(name),
        value,
    }
}

fn is(v: &str) -> StringMatch {
    StringMatch::Exact(v.into())
}

fn re(v: &str) -> StringMatch {
    StringMatch::RegularExpression(Pattern::new(v).unwrap())
}

fn grpc(service: Option<StringMatch>, method: Option<StringMatch>) -> RouteMatch {
    RouteMatch {
        grpc: Some(GrpcMethodMatch { service, method }),
        ..RouteMatch::default()
    }
}

fn request(method: &str, uri: &str, headers: &[(&str, &[u8])]) -> Request<()> {
    let mut req = Request::builder().method(method).uri(uri).body(()).unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    req
}

fn chosen<'a>(
    routes: &'a ServiceRoutes,
    port: u16,
    req: &Request<()>,
    host: Option<&str>,
) -> Option<&'a str> {
    select(routes, port, req, host, None).map(|s| s.rule.backends[0].service_key.as_str())
}

type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a [u8])],
    u16,
    Option<&'a str>,
);

fn check(routes: &ServiceRoutes, host: Option<&str>, cases: &[Case<'_>]) {
    for (method, uri, headers, port, want) in cases {
        let req = request(method, uri, headers);
        assert_eq!(
            chosen(routes, *port, &req, host),
            *want,
            "{method} {uri} {headers:?} port {port} host {host:?}"
        );
    }
}

/// A Service's HTTPRoutes (GAMMA): one route with a rule per kind of
/// match, one bound to port 8080 only, one that ties with the first.
fn gamma() -> ServiceRoutes {
    let canary = header("x-canary", is("true"));
    ServiceRoutes {
        routes: vec![
            http(
                "shop/a",
                &[],
                vec![
                    rule("root", vec![prefix("/")]),
                    rule("api", vec![prefix("/api/")]),
                    rule("api-v2", vec![prefix("/api/v2")]),
                    rule("login", vec![exact("/api/login")]),
                    rule("item-re", vec![regex("/api/v[0-9]+/items/[0-9]+")]),
                    rule(
                        "api-post",
                        vec![RouteMatch {
                            method: Some(Method::POST),
                            ..prefix("/api")
                        }],
                    ),
                    rule(
                        "canary",
                        vec![RouteMatch {
                            headers: vec![canary.clone()],
                            ..prefix("/api")
                        }],
                    ),
                    rule(
                        "canary-user",
                        vec![RouteMatch {
                            headers: vec![canary.clone(), header("x-user", re("u[0-9]+"))],
                            ..prefix("/api")
                        }],
                    ),
                    rule(
                        "debug",
                        vec![RouteMatch {
                            query: vec![QueryMatch {
                                name: "debug".into(),
                                value: is("1"),
                            }],
                            ..prefix("/api")
                        }],
                    ),
                    rule("health", vec![exact("/health"), prefix("/status")]),
                    // Ties with "api" in the same route: the first rule wins.
                    rule("api-again", vec![prefix("/api")]),
                ],
            ),
            http(
                "shop/b",
                &[8080],
                vec![rule("admin-8080", vec![prefix("/admin")])],
            ),
            // Ties with "api" of an older route: never chosen.
            http("shop/c", &[80], vec![rule("c-api", vec![prefix("/api")])]),
        ],
    }
}

#[test]
fn http_precedence() {
    const NO: &[(&str, &[u8])] = &[];
    check(
        &gamma(),
        None,
        &[
            ("GET", "/", NO, 80, Some("root")),
            ("GET", "/apix", NO, 80, Some("root")),
            ("GET", "/api", NO, 80, Some("api")),
            ("GET", "/api/", NO, 80, Some("api")),
            ("GET", "/api/x", NO, 80, Some("api")),
            // A longer prefix beats a method or header match.
            ("GET", "/api/v2/x", NO, 80, Some("api-v2")),
            (
                "POST",
                "/api/v2/x",
                &[("x-canary", b"true")],
                80,
                Some("api-v2"),
            ),
            ("GET", "/api/v2x", NO, 80, Some("api")),
            // Exact beats every prefix.
            (
                "POST",
                "/api/login",
                &[("x-canary", b"true")],
                80,
                Some("login"),
            ),
            ("GET", "/api/login/x", NO, 80, Some("api")),
            // A regular expression ranks above every prefix, below Exact.
            ("GET", "/api/v3/items/7", NO, 80, Some("item-re")),
            ("GET", "/api/v2/items/7", NO, 80, Some("item-re")),
            ("GET", "/api/v3/items/x", NO, 80, Some("api")),
            // Method beats headers; more headers beat fewer; headers beat
            // query parameters.
            ("POST", "/api/x", NO, 80, Some("api-post")),
            (
                "POST",
                "/api/x",
                &[("x-canary", b"true")],
                80,
                Some("api-post"),
            ),
            (
                "GET",
                "/api/x",
                &[("x-canary", b"true")],
                80,
                Some("canary"),
            ),
            (
                "GET",
                "/api/x",
                &[("X-Canary", b"true")],
                80,
                Some("canary"),
            ),
            ("GET", "/api/x", &[("x-canary", b"TRUE")], 80, Some("api")),
            (
                "GET",
                "/api/x",
                &[("x-canary", b"true"), ("x-user", b"u42")],
                80,
                Some("canary-user"),
            ),
            (
                "GET",
                "/api/x",
                &[("x-canary", b"true"), ("x-user", b"bob")],
                80,
                Some("canary"),
            ),
            (
                "GET",
                "/api/x",
                &[("x-canary", b"true"), ("x-user", b"u42x")],
                80,
                Some("canary"),
            ),
            (
                "GET",
                "/api/x",
                &[("x-canary", b"true"), ("x-user", b"\xffu1")],
                80,
                Some("canary"),
            ),
            ("GET", "/api/x?debug=1", NO, 80, Some("debug")),
            ("GET", "/api/x?a=b&debug=1", NO, 80, Some("debug")),
            (
                "GET",
                "/api/x?debug=1",
                &[("x-canary", b"true")],
                80,
                Some("canary"),
            ),
            ("GET", "/api/x?debug=2", NO, 80, Some("api")),
            ("GET", "/api/x?debug", NO, 80, Some("api")),
            // Any match of a rule selects it.
            ("GET", "/health", NO, 80, Some("health")),
            ("GET", "/status/db", NO, 80, Some("health")),
            ("GET", "/healthz", NO, 80, Some("root")),
            // GAMMA: a route bound to one port of the Service.
            ("GET", "/admin", NO, 8080, Some("admin-8080")),
            ("GET", "/admin", NO, 80, Some("root")),
            ("GET", "/api", NO, 9090, Some("api")),
            // Odd targets route nowhere or by `/`, without panicking.
            ("OPTIONS", "*", NO, 80, None),
            ("CONNECT", "shop:443", NO, 80, Some("root")),
            ("GET", "http://shop/api/x", NO, 80, Some("api")),
        ],
    );
}

#[test]
fn ties_go_to_the_older_route() {
    let mut routes = gamma();
    routes.routes.rotate_right(1);
    let req = request("GET", "/api", &[]);
    assert_eq!(chosen(&routes, 80, &req, None), Some("c-api"));
    // Not on its port, the younger route is out of the running.
    assert_eq!(chosen(&routes, 8080, &req, None), Some("api"));
}

#[test]
fn a_regex_path_wins_where_no_prefix_matches() {
    let routes = ServiceRoutes {
        routes: vec![http(
            "shop/re",
            &[],
            vec![
                rule("items", vec![prefix("/items")]),
                rule("re", vec![regex("/v[0-9]+/.*")]),
            ],
        )],
    };
    const NO: &[(&str, &[u8])] = &[];
    check(
        &routes,
        None,
        &[
            ("GET", "/v2/x", NO, 80, Some("re")),
            ("GET", "/v2", NO, 80, None),
            ("GET", "/x/v2/x", NO, 80, None),
            ("GET", "/items/1", NO, 80, Some("items")),
        ],
    );
}

#[test]
fn gateway_hostnames_rank_before_matches() {
    let routes = ServiceRoutes {
        routes: vec![
            route(
                "gw/wild",
                RouteKind::Http,
                &[],
                &["*.example.com"],
                vec![rule("wild", vec![prefix("/")])],
            ),
            route(
                "gw/shop",
                RouteKind::Http,
                &[],
                &["shop.example.com"],
                vec![rule("shop", vec![prefix("/")])],
            ),
            route(
                "gw/any",
                RouteKind::Http,
                &[],
                &[],
                vec![rule("any-v1", vec![prefix("/api/v1")])],
            ),
        ],
    };
    let cases = [
        (Some("shop.example.com"), "/api/v1", Some("shop")),
        (Some("SHOP.example.com"), "/", Some("shop")),
        (Some("a.example.com"), "/api/v1", Some("wild")),
        (Some("example.com"), "/api/v1", Some("any-v1")),
        (Some("other.org"), "/", None),
        // GAMMA passes no host: hostnames are not checked, paths decide.
        (None, "/api/v1", Some("any-v1")),
        (None, "/", Some("wild")),
    ];
    for (host, path, want) in cases {
        let req = request("GET", path, &[]);
        assert_eq!(chosen(&routes, 443, &req, host), want, "{host:?} {path}");
    }
}

#[test]
fn a_gateway_route_serves_only_the_sockets_of_its_listeners() {
    let on = |name: &str, listener, host: &str| Route {
        listener,
        ..route(
            name,
            RouteKind::Http,
            &[],
            &[host],
            vec![rule(name, vec![prefix("/")])],
        )
    };
    let routes = ServiceRoutes {
        routes: vec![
            on("tls-only", ListenerProtocol::Https, "secure.test"),
            on("plain-only", ListenerProtocol::Http, "plain.test"),
            on("both", ListenerProtocol::Any, "both.test"),
            // The same host on both protocols with different rules comes
            // as two routes, one per protocol.
            on("split-tls", ListenerProtocol::Https, "split.test"),
            on("split-plain", ListenerProtocol::Http, "split.test"),
        ],
    };
    let req = request("GET", "/a", &[]);
    let pick =
        |host, socket| select(&routes, 0, &req, Some(host), socket).map(|s| s.route.name.as_str());
    let (tls, plain) = (Some(GatewaySocket::Tls), Some(GatewaySocket::Plaintext));
    assert_eq!(pick("secure.test", tls), Some("tls-only"));
    assert_eq!(
        pick("secure.test", plain),
        None,
        "an HTTPS route on plaintext"
    );
    assert_eq!(pick("plain.test", plain), Some("plain-only"));
    assert_eq!(pick("plain.test", tls), None, "an HTTP route on TLS");
    assert_eq!(pick("both.test", tls), Some("both"));
    assert_eq!(pick("both.test", plain), Some("both"));
    assert_eq!(pick("split.test", tls), Some("split-tls"));
    assert_eq!(pick("split.test", plain), Some("split-plain"));
    // A Service parent has no sockets: every route is a candidate.
    assert_eq!(pick("secure.test", None), Some("tls-only"));
}

fn grpc_routes() -> ServiceRoutes {
    let svc = || Some(is("pkg.Svc"));
    ServiceRoutes {
        routes: vec![
            route(
                "shop/grpc",
                RouteKind::Grpc,
                &[],
                &[],
                vec![
                    rule("svc", vec![grpc(svc(), None)]),
                    rule("svc-get", vec![grpc(svc(), Some(is("Get")))]),
                    rule("any-get", vec![grpc(None, Some(is("Get")))]),
                    rule("pkg-re", vec![grpc(Some(re("pkg\\..*")), None)]),
                    rule(
                        "svc-tenant",
                        vec![RouteMatch {
                            headers: vec![header("x-tenant", is("a"))],
                            ..grpc(svc(), None)
                        }],
                    ),
                    rule("grpc-all", vec![]),
                ],
            ),
            http(
                "shop/http",
                &[],
                vec![
                    rule("http-svc", vec![prefix("/pkg.Svc")]),
                    rule("http-root", vec![prefix("/")]),
                ],
            ),
        ],
    }
}

#[test]
fn grpc_precedence() {
    const GRPC: &[(&str, &[u8])] = &[("content-type", b"application/grpc")];
    const PROTO: &[(&str, &[u8])] = &[("content-type", b"application/grpc+proto")];
    const TENANT: &[(&str, &[u8])] = &[("content-type", b"application/grpc"), ("x-tenant", b"a")];
    const PLAIN: &[(&str, &[u8])] = &[("content-type", b"application/json")];
    check(
        &grpc_routes(),
        None,
        &[
            // Exact service and method > exact service > exact method >
            // a pattern > everything.
            ("POST", "/pkg.Svc/Get", GRPC, 80, Some("svc-get")),
            ("POST", "/pkg.Svc/List", PROTO, 80, Some("svc")),
            ("POST", "/other.Svc/Get", GRPC, 80, Some("any-get")),
            ("POST", "/pkg.Other/List", GRPC, 80, Some("pkg-re")),
            ("POST", "/pkgXOther/List", GRPC, 80, Some("grpc-all")),
            ("POST", "/x.Y/Z", GRPC, 80, Some("grpc-all")),
            // Header matches break the tie between equal method matches.
            ("POST", "/pkg.Svc/List", TENANT, 80, Some("svc-tenant")),
            ("POST", "/pkg.Svc/Get", TENANT, 80, Some("svc-get")),
            // Not a gRPC method path: only the match-all rule holds.
            ("POST", "/pkg.Svc", GRPC, 80, Some("grpc-all")),
            ("POST", "/pkg.Svc/Get/x", GRPC, 80, Some("grpc-all")),
            // Not gRPC: HTTPRoutes only.
            ("POST", "/pkg.Svc/Get", PLAIN, 80, Some("http-svc")),
            ("GET", "/", &[], 80, Some("http-root")),
        ],
    );
}

#[test]
fn grpc_requests_fall_back_to_http_routes() {
    let mut routes = grpc_routes();
    // Without the match-all rule no GRPCRoute takes a foreign method.
    routes.routes[0].rules.pop();
    let req = request("POST", "/x.Y/Z", &[("content-type", b"application/grpc")]);
    assert_eq!(chosen(&routes, 80, &req, None), Some("http-root"));
    let req = request(
        "POST",
        "/pkg.Svc/Z",
        &[("content-type", b"application/grpc")],
    );
    assert_eq!(chosen(&routes, 80, &req, None), Some("svc"));
}

#[test]
fn the_selection_names_its_rule_and_match() {
    let routes = gamma();
    let req = request("GET", "/status/x", &[]);
    let s = select(&routes, 80, &req, None, None).unwrap();
    assert_eq!(s.route.name, "shop/a");
    assert_eq!(s.rule_index, 9);
    assert_eq!(s.matched, &prefix("/status"));

    let routes = grpc_routes();
    let req = request("POST", "/x.Y/Z", &[("content-type", b"application/grpc")]);
    let s = select(&routes, 80, &req, None, None).unwrap();
    assert_eq!(s.matched, &RouteMatch::ALL);
}

#[test]
fn only_the_first_entry_of_a_name_counts() {
    let routes = ServiceRoutes {
        routes: vec![http(
            "shop/dup",
            &[],
            vec![rule(
                "dup",
                vec![RouteMatch {
                    headers: vec![header("x-a", is("1")), header("x-a", is("2"))],
                    query: vec![
                        QueryMatch {
                            name: "q".into(),
                            value: is("1"),
                        },
                        QueryMatch {
                            name: "q".into(),
                            value: is("2"),
                        },
                    ],
                    ..RouteMatch::default()
                }],
            )],
        )],
    };
    let req = request("GET", "/?q=1", &[("x-a", b"1")]);
    assert_eq!(chosen(&routes, 80, &req, None), Some("dup"));
}

#[test]
fn no_routes_no_selection() {
    let req = request("GET", "/", &[]);
    assert_eq!(chosen(&ServiceRoutes::default(), 80, &req, None), None);
    let empty_rules = ServiceRoutes {
        routes: vec![http("shop/empty", &[], vec![])],
    };
    assert_eq!(chosen(&empty_rules, 80, &req, None), None);
}
