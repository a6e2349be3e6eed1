use mycel_crds::gateway_api::gateways::GatewaySpec;
use mycel_crds::gateway_api::httproutes::HttpRouteSpec;
use serde_json::{json, Value};

use super::*;
use crate::routes::{http_route, PolicyFault, Source};

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn gw(listeners: Value) -> Result<Gateway, RouteError> {
    let spec: GatewaySpec =
        serde_json::from_value(json!({"gatewayClassName": "mycel", "listeners": listeners}))
            .unwrap();
    gateway("shop", "web", &spec)
}

fn http_listener(name: &str, port: u16, hostname: Option<&str>) -> Value {
    let mut l = json!({"name": name, "port": port, "protocol": "HTTP"});
    if let Some(h) = hostname {
        l["hostname"] = json!(h);
    }
    l
}

fn parent(section: Option<&str>, port: Option<u16>) -> GatewayParent {
    GatewayParent {
        index: 0,
        gateway: key("web.shop"),
        section: section.map(str::to_string),
        port,
    }
}

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn hostname_intersection() {
    // (listener, route hostnames, expected; None = no intersection)
    type Case<'a> = (Option<&'a str>, &'a [&'a str], Option<&'a [&'a str]>);
    let cases: &[Case] = &[
        (None, &[], Some(&[])),
        (None, &["a.example.com"], Some(&["a.example.com"])),
        (Some("a.example.com"), &[], Some(&["a.example.com"])),
        (
            Some("a.example.com"),
            &["a.example.com"],
            Some(&["a.example.com"]),
        ),
        (Some("a.example.com"), &["b.example.com"], None),
        (
            Some("*.example.com"),
            &["a.example.com"],
            Some(&["a.example.com"]),
        ),
        (
            Some("*.example.com"),
            &["a.b.example.com"],
            Some(&["a.b.example.com"]),
        ),
        (Some("*.example.com"), &["example.com"], None),
        (
            Some("a.example.com"),
            &["*.example.com"],
            Some(&["a.example.com"]),
        ),
        (
            Some("*.example.com"),
            &["*.example.com"],
            Some(&["*.example.com"]),
        ),
        (
            Some("*.example.com"),
            &["*.a.example.com"],
            Some(&["*.a.example.com"]),
        ),
        (
            Some("*.a.example.com"),
            &["*.example.com"],
            Some(&["*.a.example.com"]),
        ),
        (Some("*.example.com"), &["*.other.org"], None),
        (
            Some("*.example.com"),
            &["a.example.com", "x.other.org", "b.example.com"],
            Some(&["a.example.com", "b.example.com"]),
        ),
        // Not a label boundary: "badexample.com" is not under example.com.
        (Some("*.example.com"), &["badexample.com"], None),
    ];
    for (listener, route, want) in cases {
        let got = intersect(*listener, &hosts(route));
        let want = want.map(hosts);
        assert_eq!(got, want, "listener {listener:?} route {route:?}");
    }
}

#[test]
fn listeners_are_read_and_unsupported_ones_refused_alone() {
    let g = gw(json!([
        http_listener("http", 80, Some("*.Example.com")),
        {"name": "https", "port": 443, "protocol": "HTTPS"},
        {"name": "sel", "port": 81, "protocol": "HTTP",
         "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"a": "b"}}}}},
        {"name": "kinds", "port": 82, "protocol": "HTTP",
         "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}, {"kind": "GRPCRoute"}]}},
        {"name": "none", "port": 83, "protocol": "HTTP",
         "allowedRoutes": {"kinds": [{"kind": "TLSRoute"}]}},
    ]))
    .unwrap();
    assert!(g.programmed());
    let l = &g.listeners;
    assert_eq!(l[0].hostname.as_deref(), Some("*.example.com"));
    assert_eq!(l[0].kinds, [RouteKind::Http, RouteKind::Grpc]);
    assert!(l[0].served());
    assert_eq!(
        l[1].refused.as_ref().unwrap().reason,
        "InvalidCertificateRef",
        "HTTPS without tls"
    );
    assert_eq!(l[2].refused.as_ref().unwrap().reason, "UnsupportedValue");
    assert!(l[2].refused.as_ref().unwrap().message.contains("Selector"));
    assert!(l[3].served());
    assert_eq!(l[3].kinds, [RouteKind::Grpc]);
    assert_eq!(l[3].invalid_kinds, ["gateway.networking.k8s.io/TCPRoute"]);
    assert_eq!(l[4].refused.as_ref().unwrap().reason, "InvalidRouteKinds");

    let only_tls = gw(json!([{"name": "tls", "port": 443, "protocol": "TLS"}])).unwrap();
    assert!(!only_tls.programmed());
}

#[test]
fn invalid_gateways() {
    let cases = [
        (json!([]), "spec.listeners"),
        (
            json!([http_listener("a", 80, None), http_listener("a", 81, None)]),
            "spec.listeners[1].name",
        ),
        (
            json!([http_listener("a", 0, None)]),
            "spec.listeners[0].port",
        ),
        (
            json!([http_listener("a", 80, Some("10.0.0.1"))]),
            "spec.listeners[0].hostname",
        ),
    ];
    for (listeners, field) in cases {
        assert_eq!(gw(listeners).unwrap_err().field, field);
    }
    let spec: GatewaySpec = serde_json::from_value(
        json!({"gatewayClassName": "mycel", "listeners": [http_listener("a", 80, None)]}),
    )
    .unwrap();
    assert_eq!(
        gateway("shop", "a.b", &spec).unwrap_err().field,
        "metadata.name"
    );
}

#[test]
fn listener_matching_by_section_and_port() {
    let g = gw(json!([
        http_listener("a", 80, None),
        http_listener("b", 8080, Some("b.example.com")),
        {"name": "tls", "port": 443, "protocol": "HTTPS"},
    ]))
    .unwrap();
    let attach_ = |p: GatewayParent| attach(&g, &p, RouteKind::Http, "shop", &[]);
    assert_eq!(attach_(parent(None, None)).unwrap().listeners, [0, 1]);
    // A listener with no hostname takes any host, so the route does.
    assert!(attach_(parent(None, None)).unwrap().hostnames.is_empty());
    let b = attach_(parent(Some("b"), None)).unwrap();
    assert_eq!(
        (b.listeners, b.hostnames),
        (vec![1], hosts(&["b.example.com"]))
    );
    assert_eq!(attach_(parent(None, Some(8080))).unwrap().listeners, [1]);
    assert_eq!(attach_(parent(Some("a"), Some(80))).unwrap().listeners, [0]);
    for p in [
        parent(Some("c"), None),
        parent(None, Some(81)),
        parent(Some("a"), Some(8080)),
        parent(Some("tls"), None),
    ] {
        let e = attach_(p.clone()).unwrap_err();
        assert_eq!(e.reason, AttachReason::NoMatchingParent, "{p:?}: {e}");
    }
}

#[test]
fn allowed_routes() {
    let g = gw(json!([
        http_listener("same", 80, None),
        {"name": "all", "port": 81, "protocol": "HTTP",
         "allowedRoutes": {"namespaces": {"from": "All"}}},
        {"name": "grpc", "port": 82, "protocol": "HTTP",
         "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}},
    ]))
    .unwrap();
    let at = |section: &str, kind: RouteKind, ns: &str| {
        attach(&g, &parent(Some(section), None), kind, ns, &[]).map(|a| a.listeners)
    };
    assert_eq!(at("same", RouteKind::Http, "shop").unwrap(), [0]);
    assert_eq!(
        at("same", RouteKind::Http, "other").unwrap_err().reason,
        AttachReason::NotAllowedByListeners
    );
    assert_eq!(at("all", RouteKind::Http, "other").unwrap(), [1]);
    assert_eq!(at("grpc", RouteKind::Grpc, "shop").unwrap(), [2]);
    assert_eq!(
        at("grpc", RouteKind::Http, "shop").unwrap_err().reason,
        AttachReason::NotAllowedByListeners
    );
    // Without a section, a route from another namespace reaches only the
    // listener that takes all namespaces.
    let a = attach(&g, &parent(None, None), RouteKind::Http, "other", &[]).unwrap();
    assert_eq!(a.listeners, [1]);
}

#[test]
fn hostnames_decide_attachment() {
    let g = gw(json!([
        http_listener("a", 80, Some("*.example.com")),
        http_listener("b", 81, Some("shop.example.org")),
    ]))
    .unwrap();
    let a = attach(
        &g,
        &parent(None, None),
        RouteKind::Http,
        "shop",
        &hosts(&["api.example.com", "shop.example.org", "x.test"]),
    )
    .unwrap();
    assert_eq!(a.listeners, [0, 1]);
    assert_eq!(a.hostnames, hosts(&["api.example.com", "shop.example.org"]));
    let e = attach(
        &g,
        &parent(None, None),
        RouteKind::Http,
        "shop",
        &hosts(&["x.test"]),
    )
    .unwrap_err();
    assert_eq!(e.reason, AttachReason::NoMatchingListenerHostname);
    assert_eq!(e.reason.as_str(), "NoMatchingListenerHostname");
}

#[test]
fn a_route_on_a_gateway_has_no_ports_and_the_union_of_hostnames() {
    let lookup = |_: &str| PolicyFault::Missing;
    let source = Source {
        namespace: "shop",
        name: "web",
        policies: &lookup,
        gateway_policies: &|_| None,
    };
    let spec: HttpRouteSpec = serde_json::from_value(json!({
        "parentRefs": [
            {"name": "web", "sectionName": "a"},
            {"group": "", "kind": "Service", "name": "frontend", "port": 80},
            {"kind": "Gateway", "name": "web", "namespace": "shop", "port": 81},
            {"group": "example.com", "kind": "Gateway", "name": "theirs"},
        ],
        "rules": [{"backendRefs": [{"name": "frontend", "port": 80}]}],
    }))
    .unwrap();
    let c = http_route(&source, &spec).unwrap();
    assert_eq!(c.parents.len(), 1, "the Service parent");
    assert_eq!(
        c.gateways,
        [
            GatewayParent {
                index: 0,
                gateway: key("web.shop"),
                section: Some("a".into()),
                port: None
            },
            GatewayParent {
                index: 2,
                gateway: key("web.shop"),
                section: None,
                port: Some(81)
            },
        ],
        "another group's Gateway is not ours"
    );
    let plain = |listeners: Vec<usize>, names: &[&str]| Attachment {
        listeners,
        hostnames: hosts(names),
        sides: [(ListenerSide::Any, hosts(names))].into(),
    };
    let one = plain(vec![0], &["b.example.com"]);
    let two = plain(vec![1], &["a.example.com", "b.example.com"]);
    let r = gateway_route(&c, &[&one, &two]);
    assert_eq!(r.len(), 1, "HTTP listeners only: one route, both sockets");
    assert!(r[0].ports.is_empty());
    assert_eq!(r[0].hostnames, hosts(&["a.example.com", "b.example.com"]));
    assert_eq!(r[0].listener, ListenerSide::Any);
    let anyhost = plain(vec![2], &[]);
    assert!(gateway_route(&c, &[&one, &anyhost])[0].hostnames.is_empty());
}

/// An HTTPRoute of namespace shop whose one parent is Gateway `web`.
fn route_with_hosts(hostnames: &[&str]) -> Converted {
    let lookup = |_: &str| PolicyFault::Missing;
    let source = Source {
        namespace: "shop",
        name: "api",
        policies: &lookup,
        gateway_policies: &|_| None,
    };
    let spec: HttpRouteSpec = serde_json::from_value(json!({
        "parentRefs": [{"name": "web"}],
        "hostnames": hostnames,
        "rules": [{"backendRefs": [{"name": "api", "port": 80}]}],
    }))
    .unwrap();
    http_route(&source, &spec).unwrap()
}

fn https_listener(name: &str, hostname: Option<&str>, secrets: &[&str]) -> Value {
    let refs: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
    let mut l = json!({"name": name, "port": 443, "protocol": "HTTPS",
        "tls": {"mode": "Terminate", "certificateRefs": refs}});
    if let Some(h) = hostname {
        l["hostname"] = json!(h);
    }
    l
}

#[test]
fn an_https_listener_names_its_secrets_and_its_routes_are_served_only_over_tls() {
    let g = gw(json!([
        http_listener("web", 80, Some("*.shop.example")),
        https_listener(
            "secure",
            Some("api.shop.example"),
            &["api-cert", "api-cert", "old-cert"]
        ),
    ]))
    .unwrap();
    let secure = &g.listeners[1];
    assert!(secure.served() && secure.https, "{secure:?}");
    assert_eq!(
        secure
            .certificates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["shop/api-cert", "shop/old-cert"],
        "in order, each Secret once"
    );
    assert!(!g.listeners[0].https && g.listeners[0].certificates.is_empty());

    // A route on both listeners of a Gateway with HTTPS: once per socket,
    // each with its listeners' names.
    let c = route_with_hosts(&[]);
    let a = attach(&g, &parent(None, None), RouteKind::Http, "shop", &[]).unwrap();
    assert_eq!(
        a.sides,
        [
            (ListenerSide::Http, hosts(&["*.shop.example"])),
            (ListenerSide::Https, hosts(&["api.shop.example"])),
        ]
        .into()
    );
    let both = gateway_route(&c, &[&a]);
    assert_eq!(
        both.iter()
            .map(|r| (r.listener, r.hostnames.clone()))
            .collect::<Vec<_>>(),
        [
            (ListenerSide::Http, hosts(&["*.shop.example"])),
            (ListenerSide::Https, hosts(&["api.shop.example"])),
        ]
    );

    // The usual redirect: a route of the HTTP listener only answers in
    // plaintext, so on the TLS socket it never shadows the HTTPS
    // listener's route (which would redirect to itself forever).
    let a = attach(&g, &parent(Some("web"), None), RouteKind::Http, "shop", &[]).unwrap();
    let plain = gateway_route(&c, &[&a]);
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].listener, ListenerSide::Http);

    // A Gateway without HTTPS listeners: its routes on both sockets (a
    // gateway's --tls-cert files front them).
    let plain_gw = gw(json!([http_listener("web", 80, None)])).unwrap();
    let a = attach(&plain_gw, &parent(None, None), RouteKind::Http, "shop", &[]).unwrap();
    let any = gateway_route(&c, &[&a]);
    assert_eq!(any.len(), 1);
    assert_eq!(any[0].listener, ListenerSide::Any);

    // HTTP and HTTPS listeners of the same names: one route for both.
    let same = gw(json!([
        http_listener("web", 80, Some("api.shop.example")),
        https_listener("secure", Some("api.shop.example"), &["api-cert"]),
    ]))
    .unwrap();
    let a = attach(&same, &parent(None, None), RouteKind::Http, "shop", &[]).unwrap();
    let one = gateway_route(&c, &[&a]);
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].listener, one[0].hostnames.clone()),
        (ListenerSide::Any, hosts(&["api.shop.example"]))
    );

    // Attached only to the HTTPS listener: never served in plaintext.
    let a = attach(
        &g,
        &parent(Some("secure"), None),
        RouteKind::Http,
        "shop",
        &[],
    )
    .unwrap();
    let only = gateway_route(&c, &[&a]);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].listener, ListenerSide::Https);
    assert_eq!(only[0].hostnames, hosts(&["api.shop.example"]));
}

#[test]
fn an_https_listener_without_usable_certificate_refs_is_not_served_and_says_why() {
    let cases = [
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS"}),
            "InvalidCertificateRef",
            "needs tls.certificateRefs",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": []}}),
            "InvalidCertificateRef",
            "at least one",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS",
                "tls": {"mode": "Passthrough", "certificateRefs": [{"name": "c"}]}}),
            "UnsupportedValue",
            "Passthrough",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "c", "kind": "ConfigMap"}]}}),
            "InvalidCertificateRef",
            "only core Secrets",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "c", "namespace": "other"}]}}),
            "RefNotPermitted",
            "ReferenceGrant",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "HTTPS",
                "tls": {"certificateRefs": [{"name": "Bad_Name"}]}}),
            "InvalidCertificateRef",
            "not a valid Secret name",
        ),
        (
            json!({"name": "s", "port": 443, "protocol": "TLS",
                "tls": {"mode": "Passthrough"}}),
            "UnsupportedProtocol",
            "TLS passthrough",
        ),
    ];
    for (listener, reason, words) in cases {
        let g = gw(json!([http_listener("web", 80, None), listener.clone()])).unwrap();
        let refused = g.listeners[1]
            .refused
            .as_ref()
            .unwrap_or_else(|| panic!("{listener}"));
        assert_eq!(refused.reason, reason, "{listener}");
        assert!(
            refused.message.contains(words),
            "{listener}: {}",
            refused.message
        );
        assert!(g.listeners[0].served(), "the other listener still is");
    }
}
