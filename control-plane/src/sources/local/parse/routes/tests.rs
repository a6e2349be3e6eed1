use crate::model::ServiceKey;
use crate::routes::model::{PathMatch, RouteFilter, RouteKind, StringMatch};
use crate::sources::local::parse_mesh_config;

const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: shop}
spec:
  selector: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v2, namespace: shop}
spec:
  selector: {app: reviews, version: v2}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycel.io/v1alpha1
kind: TrafficPolicy
metadata: {name: chaos, namespace: shop}
spec:
  targetRef: {kind: Service, name: reviews-v2}
  fault: {abort: {httpStatus: 503, percentage: 5}}
"#;

const SPLIT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
    - matches: [{headers: [{name: x-canary, value: "yes"}]}]
      backendRefs: [{name: reviews-v2, port: 9080}]
    - backendRefs:
        - {name: reviews-v1, port: 9080, weight: 90}
        - {name: reviews-v2, port: 9080, weight: 10}
"#;

fn with(route: &str) -> String {
    format!("{SHOP}---\n{route}")
}

fn err(route: &str) -> String {
    parse_mesh_config(&with(route)).unwrap_err().to_string()
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

#[test]
fn a_split_with_a_header_match_attaches_to_its_parent() {
    let config = parse_mesh_config(&with(SPLIT)).unwrap();
    assert_eq!(config.route_count(), 1);
    assert_eq!(config.routes.len(), 1);
    let routes = &config.routes[&key("reviews.shop")];
    let r = &routes[0];
    assert_eq!(
        (r.name.as_str(), r.kind, r.ports.as_slice()),
        ("shop/reviews", RouteKind::Http, &[9080][..])
    );
    assert_eq!(
        r.rules[0].matches[0].headers[0].value,
        StringMatch::Exact("yes".into())
    );
    let weights: Vec<u32> = r.rules[1].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [90, 10]);
}

#[test]
fn routes_keep_file_order_and_grpc_routes_read_policies_declared_later() {
    let grpc = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: reviews-grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
    - matches: [{method: {service: shop.v1.Reviews}}]
      filters: [{type: ExtensionRef, extensionRef: {group: mycel.io, kind: TrafficPolicy, name: late}}]
      backendRefs: [{name: reviews-v2, port: 9080}]
---
apiVersion: mycel.io/v1alpha1
kind: TrafficPolicy
metadata: {name: late, namespace: shop}
spec:
  targetRef: {kind: Service, name: reviews-v1}
  fault: {delay: {fixedDelay: 1s, percentage: 50}}
"#;
    let config = parse_mesh_config(&format!("{}---\n{grpc}", with(SPLIT))).unwrap();
    let routes = &config.routes[&key("reviews.shop")];
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop/reviews", "shop/reviews-grpc"]);
    let g = &routes[1];
    assert_eq!(g.kind, RouteKind::Grpc);
    assert!(g.ports.is_empty());
    assert!(
        matches!(&g.rules[0].filters[0], RouteFilter::Fault { policy, fault } if policy == "shop/late" && fault.delay.is_some())
    );
    // The HTTP default match is explicit.
    assert_eq!(
        routes[0].rules[1].matches[0].path,
        Some(PathMatch::Prefix("/".into()))
    );
}

#[test]
fn invalid_routes_name_document_and_field() {
    let route = |rule: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n  rules: [{rule}]\n"
        )
    };
    let big = "\\\\w{1000}{1000}";
    let cases = [
        (
            route("{backendRefs: [{name: reviews-v3, port: 9080}]}"),
            "document 5: spec.rules[0].backendRefs[0].name: no Service reviews-v3.shop in this file",
        ),
        (
            route("{backendRefs: [{name: reviews-v1, port: 80}]}"),
            "document 5: spec.rules[0].backendRefs[0].port: service reviews-v1.shop has no port 80 (it has 9080)",
        ),
        (
            route(&format!("{{matches: [{{path: {{type: RegularExpression, value: \"{big}\"}}}}]}}")),
            "document 5: spec.rules[0].matches[0].path.value: regular expression",
        ),
        (
            route("{filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}, {type: URLRewrite, urlRewrite: {hostname: x.example}}]}"),
            "document 5: spec.rules[0].filters: RequestRedirect and URLRewrite cannot be used together",
        ),
        (
            route("{filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: RateLimit, name: x}}]}"),
            "document 5: spec.rules[0].filters[0].extensionRef: extension example.com/RateLimit is not supported",
        ),
        (
            route("{filters: [{type: Teleport}]}"),
            "document 5: spec.rules[0].filters[0].type: unknown variant `Teleport`",
        ),
        (
            route("{filters: [{type: ExtensionRef, extensionRef: {group: mycel.io, kind: TrafficPolicy, name: nope}}]}"),
            "document 5: spec.rules[0].filters[0].extensionRef.name: no TrafficPolicy \"nope\" in namespace \"shop\"",
        ),
        (
            route("{backendRefs: [{name: reviews-v1, port: 9080, wieght: 3}]}"),
            "document 5: spec.rules[0].backendRefs[0].wieght: unknown field (not part of a gateway.networking.k8s.io/v1 HTTPRoute)",
        ),
        (
            route("{}").replace("name: reviews}", "name: nope}"),
            "document 5: spec.parentRefs[0].name: no Service nope.shop in this file",
        ),
        (
            route("{}").replace("name: reviews}", "name: reviews, port: 80}"),
            "document 5: spec.parentRefs[0].port: service reviews.shop has no port 80",
        ),
        (
            route("{}").replace("gateway.networking.k8s.io/v1\n", "gateway.networking.k8s.io/v1beta1\n"),
            "document 5: apiVersion: must be gateway.networking.k8s.io/v1 for kind HTTPRoute",
        ),
        (
            format!("{}---\n{}", route("{}"), route("{}")),
            "document 6: HTTPRoute shop/r is already declared in document 5",
        ),
    ];
    for (text, want) in cases {
        let got = err(&text);
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}
