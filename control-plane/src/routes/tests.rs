use mycel_crds::gateway_api::grpcroutes::GrpcRouteSpec;
use mycel_crds::gateway_api::httproutes::HttpRouteSpec;
use mycel_crds::traffic_policy::{Fault, FaultDelay};
use mycel_crds::GatewayPolicySpec;
use serde_json::{json, Value};

use super::model::*;
use super::*;

fn chaos() -> Fault {
    Fault {
        delay: Some(FaultDelay {
            fixed_delay: "1s".into(),
            percentage: 10,
        }),
        abort: None,
    }
}

fn policies(name: &str) -> PolicyFault {
    match name {
        "chaos" => PolicyFault::Fault(chaos()),
        "plain" => PolicyFault::NoFault,
        _ => PolicyFault::Missing,
    }
}

fn gateway_policies(name: &str) -> Option<GatewayPolicySpec> {
    (name == "orders-auth").then(|| {
        serde_json::from_value(json!({"rateLimit": {"requests": 10, "per": "1s"}})).unwrap()
    })
}

fn source() -> Source<'static> {
    Source {
        namespace: "shop",
        name: "reviews",
        policies: &policies,
        gateway_policies: &gateway_policies,
    }
}

fn http(spec: Value) -> Result<Converted, RouteError> {
    let spec: HttpRouteSpec = serde_json::from_value(spec).unwrap();
    http_route(&source(), &spec)
}

fn grpc(spec: Value) -> Result<Converted, RouteError> {
    let spec: GrpcRouteSpec = serde_json::from_value(spec).unwrap();
    grpc_route(&source(), &spec)
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

const PARENT: &str = r#"{"group": "", "kind": "Service", "name": "reviews", "port": 9080}"#;

/// A valid HTTPRoute whose first rule gets `rule`'s fields.
fn with_rule(rule: Value) -> Value {
    let parent: Value = serde_json::from_str(PARENT).unwrap();
    let mut r = json!({"backendRefs": [{"name": "reviews-v1", "port": 9080}]});
    if let (Some(r), Some(extra)) = (r.as_object_mut(), rule.as_object()) {
        r.extend(extra.clone());
    }
    json!({"parentRefs": [parent], "rules": [r]})
}

#[test]
fn a_weighted_split_with_a_header_match() {
    let c = http(json!({
        "parentRefs": [
            {"group": "", "kind": "Service", "name": "reviews", "port": 9080},
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ingress"},
        ],
        "hostnames": ["Reviews.Shop"],
        "rules": [
            {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "reviews-v2", "port": 9080}]},
            {"backendRefs": [
                {"name": "reviews-v1", "port": 9080, "weight": 90},
                {"name": "reviews-v2", "port": 9080, "weight": 10},
             ],
             "timeouts": {"request": "1m30s"}},
        ],
    }))
    .unwrap();
    assert_eq!(c.name, "shop/reviews");
    assert_eq!(c.parent_services(), [key("reviews.shop")].into());
    assert_eq!(c.hostnames, ["reviews.shop"]);
    let r = c.for_parent(&key("reviews.shop")).unwrap();
    assert_eq!(r.ports, [9080]);
    assert!(c.for_parent(&key("ingress.shop")).is_none());
    let canary = &r.rules[0].matches[0];
    assert_eq!(canary.path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(canary.headers[0].name, "x-canary");
    let split = &r.rules[1];
    assert_eq!(split.matches[0].path, Some(PathMatch::Prefix("/".into())));
    assert_eq!(
        split
            .backends
            .iter()
            .map(|b| (b.service.to_string(), b.weight))
            .collect::<Vec<_>>(),
        [
            ("reviews-v1.shop".into(), 90),
            ("reviews-v2.shop".into(), 10)
        ]
    );
    assert_eq!(split.timeout_ms, 90_000);
    assert_eq!(c.refs.len(), 3);
    assert_eq!(c.refs[1].field, "spec.rules[1].backendRefs[0]");
}

#[test]
fn ports_of_one_parent_merge_and_a_portless_ref_means_every_port() {
    let two = http(json!({"parentRefs": [
        {"group": "", "kind": "Service", "name": "reviews", "port": 90},
        {"group": "core", "kind": "Service", "name": "reviews", "port": 80},
    ]}))
    .unwrap();
    assert_eq!(
        two.for_parent(&key("reviews.shop")).unwrap().ports,
        [80, 90]
    );
    let all = http(json!({"parentRefs": [
        {"group": "", "kind": "Service", "name": "reviews", "port": 90},
        {"group": "", "kind": "Service", "name": "reviews"},
    ]}))
    .unwrap();
    assert!(all
        .for_parent(&key("reviews.shop"))
        .unwrap()
        .ports
        .is_empty());
    let other_ns = http(json!({"parentRefs": [
        {"group": "", "kind": "Service", "name": "web", "namespace": "front"},
    ]}))
    .unwrap();
    assert_eq!(other_ns.parent_services(), [key("web.front")].into());
}

#[test]
fn filters_and_matches_convert() {
    let c = http(with_rule(json!({
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST",
                     "queryParams": [{"name": "v", "type": "RegularExpression", "value": "[0-9]+"}]}],
        "filters": [
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "X-A", "value": "1"}], "remove": ["x-b"]}},
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80},
                                                        "fraction": {"numerator": 1, "denominator": 4}}},
            {"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "TrafficPolicy", "name": "chaos"}},
        ],
    })))
    .unwrap();
    let rule = &c.rules[0];
    assert_eq!(rule.matches[0].method.as_deref(), Some("POST"));
    assert_eq!(
        rule.matches[0].query[0].value,
        StringMatch::Regex("[0-9]+".into())
    );
    assert_eq!(
        rule.filters,
        [
            RouteFilter::RequestHeaderModifier(HeaderModifier {
                set: vec![("x-a".into(), "1".into())],
                add: vec![],
                remove: vec!["x-b".into()],
            }),
            RouteFilter::UrlRewrite(UrlRewrite {
                hostname: None,
                path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            }),
            RouteFilter::RequestMirror(RequestMirror {
                service: key("shadow.shop"),
                port: 80,
                percent: 25,
            }),
            RouteFilter::Fault {
                policy: "shop/chaos".into(),
                fault: chaos(),
            },
        ]
    );
    assert_eq!(
        c.refs[0].field,
        "spec.rules[0].filters[2].requestMirror.backendRef"
    );
}

#[test]
fn a_redirect_defaults_to_302_and_weights_to_1() {
    let c = http(with_rule(json!({
        "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "port": 8443}}],
        "backendRefs": [{"name": "a", "port": 80}, {"name": "b", "port": 80, "weight": 0}],
    })))
    .unwrap();
    let rule = &c.rules[0];
    assert_eq!(
        rule.filters[0],
        RouteFilter::RequestRedirect(RequestRedirect {
            scheme: Some("https".into()),
            hostname: None,
            path: None,
            port: Some(8443),
            status_code: 302,
        })
    );
    assert_eq!(rule.backends[0].weight, 1);
    assert_eq!(rule.backends[1].weight, 0);
}

#[test]
fn invalid_http_routes_name_the_field() {
    let big = "\\w{1000}{1000}";
    let cases: Vec<(Value, &str, Reason)> = vec![
        (
            json!({"parentRefs": [{"kind": "Service", "name": "reviews"}]}),
            "spec.parentRefs[0].group: a Service parent needs group \"\"",
            Reason::Invalid,
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "sectionName": "http"}]}),
            "spec.parentRefs[0].sectionName: a Service parent takes no sectionName",
            Reason::Unsupported,
        ),
        (
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 0}]}),
            "spec.parentRefs[0].port: 0 is not a port number",
            Reason::Invalid,
        ),
        (
            json!({"hostnames": ["a_b"]}),
            "spec.hostnames[0]: \"a_b\" is not a valid hostname",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"backendRefs": [{"name": "a", "port": 80}, {"name": "b", "port": 80, "weight": -1}]})),
            "spec.rules[0].backendRefs[1].weight: -1 is not 0-1000000",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"backendRefs": [{"name": "a"}]})),
            "spec.rules[0].backendRefs[0].port: is required for a Service",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"backendRefs": [{"name": "a", "port": 80, "namespace": "other"}]})),
            "spec.rules[0].backendRefs[0].namespace: \"other\" is not the route's namespace \"shop\"; a reference to another namespace needs a ReferenceGrant",
            Reason::RefNotPermitted,
        ),
        (
            with_rule(json!({"backendRefs": [{"name": "a", "port": 80, "kind": "Bucket", "group": "storage.example"}]})),
            "spec.rules[0].backendRefs[0].kind: storage.example/Bucket is not supported",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"matches": [{"path": {"type": "RegularExpression", "value": big}}]})),
            "spec.rules[0].matches[0].path.value: regular expression",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"matches": [{"path": {"type": "RegularExpression", "value": "(a)\\1"}}]})),
            "spec.rules[0].matches[0].path.value: \"(a)\\\\1\" is not a valid RE2",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"matches": [{"path": {"type": "Exact", "value": "api"}}]})),
            "spec.rules[0].matches[0].path.value: \"api\" must start with '/'",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"matches": [{"headers": [{"name": "bad name", "value": "x"}]}]})),
            "spec.rules[0].matches[0].headers[0].name: \"bad name\" is not a valid HTTP header name",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"matches": [{"headers": [{"name": "a", "value": "x"}, {"name": "A", "value": "y"}]}]})),
            "spec.rules[0].matches[0].headers[1].name: header \"a\" is matched twice",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"matches": [{"queryParams": [{"name": "q", "type": "RegularExpression", "value": "["}]}]})),
            "spec.rules[0].matches[0].queryParams[0].value",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [
                {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}},
                {"type": "URLRewrite", "urlRewrite": {"hostname": "x.example"}}]})),
            "spec.rules[0].filters: RequestRedirect and URLRewrite cannot be used together",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": 305}}]})),
            "spec.rules[0].filters[0].requestRedirect.statusCode: 305 is not one of",
            Reason::Invalid,
        ),
        (
            with_rule(json!({
                "matches": [{"path": {"type": "Exact", "value": "/a"}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}]})),
            "spec.rules[0].filters[0].requestRedirect.path.type: ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "x-a", "value": "1"}], "remove": ["X-A"]}}]})),
            "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: header \"x-a\" appears more than once",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                "add": [{"name": "x-a", "value": "a\u{7f}b"}]}}]})),
            "spec.rules[0].filters[0].responseHeaderModifier.add[0].value: ",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestHeaderModifier"}]})),
            "spec.rules[0].filters[0].requestHeaderModifier: must be set when type is RequestHeaderModifier",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "CORS", "cors": {"allowOrigins": ["https://a.example"]}}]})),
            "spec.rules[0].filters[0].type: CORS filters are not supported",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Auth", "name": "x"}}]})),
            "spec.rules[0].filters[0].extensionRef: extension example.com/Auth is not supported",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "TrafficPolicy", "name": "nope"}}]})),
            "spec.rules[0].filters[0].extensionRef.name: no TrafficPolicy \"nope\" in namespace \"shop\"",
            Reason::RefNotFound,
        ),
        (
            with_rule(json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": "nope"}}]})),
            "spec.rules[0].filters[0].extensionRef.name: no GatewayPolicy \"nope\" in namespace \"shop\"",
            Reason::RefNotFound,
        ),
        (
            with_rule(json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "GatewayPolicy", "name": "orders-auth"}}]})),
            "spec.rules[0].filters[0].extensionRef: extension example.com/GatewayPolicy is not supported (Mycel reads group mycel.io, kind TrafficPolicy: the fault section of that policy, or kind GatewayPolicy)",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "TrafficPolicy", "name": "plain"}}]})),
            "spec.rules[0].filters[0].extensionRef.name: TrafficPolicy \"plain\" has no fault section",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 80}, "percent": 101}}]})),
            "spec.rules[0].filters[0].requestMirror.percent: 101 is not 0-100",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s", "port": 80}, "fraction": {"numerator": 1, "denominator": 1000}}}]})),
            "spec.rules[0].filters[0].requestMirror.fraction: 1/1000 is not a whole percent",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s"}}}]})),
            "spec.rules[0].filters[0].requestMirror.backendRef.port: is required",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"backendRefs": [{"name": "a", "port": 80, "filters": [{"type": "CORS"}]}]})),
            "spec.rules[0].backendRefs[0].filters[0].type: CORS filters are not supported",
            Reason::Unsupported,
        ),
        (
            with_rule(json!({"timeouts": {"request": "10"}})),
            "spec.rules[0].timeouts.request: \"10\" is not a duration",
            Reason::Invalid,
        ),
        (
            with_rule(json!({"timeouts": {"request": "10s", "backendRequest": "1s"}})),
            "spec.rules[0].timeouts.backendRequest: not supported",
            Reason::Unsupported,
        ),
    ];
    for (spec, want, reason) in cases {
        let e = http(spec).unwrap_err();
        assert!(e.to_string().starts_with(want), "want {want:?}, got {e}");
        assert_eq!(e.reason, reason, "{e}");
    }
}

#[test]
fn a_gateway_policy_is_copied_in_and_keeps_the_route_off_service_parents() {
    let extension = json!({"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "GatewayPolicy", "name": "orders-auth"}});
    let c = http(json!({
        "parentRefs": [
            {"name": "ingress"},
            {"group": "", "kind": "Service", "name": "reviews", "port": 9080},
        ],
        "rules": [
            {"backendRefs": [{"name": "reviews-v1", "port": 9080}]},
            {"backendRefs": [{"name": "reviews-v2", "port": 9080, "filters": [extension]}]},
        ],
    }))
    .unwrap();
    let RouteFilter::GatewayPolicy(p) = &c.rules[1].backends[0].filters[0] else {
        panic!("{:?}", c.rules[1]);
    };
    assert_eq!(p.name, "shop/orders-auth");
    assert_eq!(p.spec, gateway_policies("orders-auth").unwrap());
    assert_eq!(
        c.gateway_only.as_deref(),
        Some("spec.rules[1].backendRefs[0].filters[0].extensionRef")
    );
    // The Gateway parent takes it; the Service parent does not.
    assert_eq!(c.gateways.len(), 1);
    assert_eq!(c.parent_services(), [key("reviews.shop")].into());
    assert!(c.for_parent(&key("reviews.shop")).is_none());
    let why = c.mesh_refusal().unwrap();
    assert!(
        why.starts_with("spec.rules[1].backendRefs[0].filters[0].extensionRef names a GatewayPolicy, which only a gateway enforces"),
        "{why}"
    );

    // A GRPCRoute rule reads it the same way.
    let g = grpc(json!({
        "parentRefs": [{"name": "ingress"}],
        "rules": [{"filters": [extension], "backendRefs": [{"name": "reviews-v1", "port": 9090}]}],
    }))
    .unwrap();
    assert!(
        matches!(&g.rules[0].filters[0], RouteFilter::GatewayPolicy(p) if p.name == "shop/orders-auth")
    );
    assert_eq!(
        g.gateway_only.as_deref(),
        Some("spec.rules[0].filters[0].extensionRef")
    );
    // Without one, nothing is refused.
    let plain = http(with_rule(json!({}))).unwrap();
    assert_eq!(
        (plain.gateway_only.clone(), plain.mesh_refusal()),
        (None, None)
    );
}

#[test]
fn grpc_routes() {
    let parent: Value = serde_json::from_str(PARENT).unwrap();
    let c = grpc(json!({
        "parentRefs": [parent],
        "rules": [
            {"matches": [{"method": {"service": "shop.v1.Reviews", "method": "Get"},
                          "headers": [{"name": "x-user", "type": "RegularExpression", "value": "a.*"}]}],
             "filters": [{"type": "ExtensionRef", "extensionRef": {"group": "mycel.io", "kind": "TrafficPolicy", "name": "chaos"}}],
             "backendRefs": [{"name": "reviews-v2", "port": 9090, "weight": 5}]},
            {"backendRefs": [{"name": "reviews-v1", "port": 9090}]},
        ],
    }))
    .unwrap();
    assert_eq!(c.kind, RouteKind::Grpc);
    let first = &c.rules[0];
    assert_eq!(
        first.matches[0].grpc,
        Some(GrpcMethodMatch {
            service: Some(StringMatch::Exact("shop.v1.Reviews".into())),
            method: Some(StringMatch::Exact("Get".into())),
        })
    );
    assert_eq!(first.matches[0].path, None);
    assert_eq!(first.backends[0].weight, 5);
    assert!(matches!(first.filters[0], RouteFilter::Fault { .. }));
    assert_eq!(c.rules[1].matches, [RouteMatch::default()]);

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"rules": [{"matches": [{"method": {"type": "Exact"}}]}]}),
            "spec.rules[0].matches[0].method: one of service and method must be set",
        ),
        (
            json!({"rules": [{"matches": [{"method": {"service": "a b"}}]}]}),
            "spec.rules[0].matches[0].method.service: \"a b\" is not a gRPC service name",
        ),
        (
            json!({"rules": [{"matches": [{"method": {"type": "RegularExpression", "method": "("}}]}]}),
            "spec.rules[0].matches[0].method.method: \"(\" is not a valid RE2",
        ),
        (
            json!({"rules": [{"backendRefs": [{"name": "a", "port": 80, "weight": 2000000}]}]}),
            "spec.rules[0].backendRefs[0].weight: 2000000 is not 0-1000000",
        ),
        (
            json!({"rules": [{"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "a", "port": 80, "namespace": "x"}}}]}]}),
            "spec.rules[0].filters[0].requestMirror.backendRef.namespace",
        ),
    ];
    for (spec, want) in cases {
        let e = grpc(spec).unwrap_err().to_string();
        assert!(e.starts_with(want), "want {want:?}, got {e}");
    }
}
