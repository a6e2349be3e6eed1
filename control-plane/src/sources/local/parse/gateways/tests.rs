use crate::model::ServiceKey;
use crate::sources::local::parse_mesh_config;

const SHOP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: frontend, namespace: shop}
spec:
  selector: {app: frontend}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: shop}
spec:
  gatewayClassName: mycel
  listeners:
    - {name: web, port: 8080, protocol: HTTP, hostname: "*.shop.example"}
"#;

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn route(parents: &str, hostnames: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shop, namespace: shop}}\nspec:\n  parentRefs: {parents}\n  hostnames: {hostnames}\n  rules: [{{backendRefs: [{{name: frontend, port: 80}}]}}]\n"
    )
}

fn parse(extra: &str) -> Result<crate::sources::local::MeshConfig, String> {
    parse_mesh_config(&format!("{SHOP}---\n{extra}")).map_err(|e| e.to_string())
}

#[test]
fn a_gateway_without_routes_exists_with_none() {
    let config = parse_mesh_config(SHOP).unwrap();
    assert_eq!(config.gateways.len(), 1);
    assert!(config.gateways[&key("shop-gateway.shop")].is_empty());
}

#[test]
fn a_route_on_a_gateway_and_a_service_attaches_to_both() {
    let config = parse(&route(
        "[{name: shop-gateway}, {group: \"\", kind: Service, name: frontend, port: 80}]",
        "[www.shop.example, other.example]",
    ))
    .unwrap();
    assert_eq!(config.route_count(), 1, "one object on two parents");
    let on_gw = &config.gateways[&key("shop-gateway.shop")];
    assert_eq!(on_gw.len(), 1);
    assert_eq!(on_gw[0].name, "shop/shop");
    assert!(on_gw[0].ports.is_empty());
    assert_eq!(
        on_gw[0].hostnames,
        ["www.shop.example"],
        "cut to the listener's"
    );
    let on_svc = &config.routes[&key("frontend.shop")];
    assert_eq!(on_svc[0].ports, [80]);
    assert_eq!(
        on_svc[0].hostnames,
        ["www.shop.example", "other.example"],
        "a mesh route keeps its own"
    );
}

#[test]
fn refusals_name_document_and_field() {
    let gateway = |listener: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g2, namespace: shop}}\nspec:\n  gatewayClassName: mycel\n  listeners: [{listener}]\n"
        )
    };
    let cases = [
        (
            route("[{name: nope}]", "[]"),
            "document 3: spec.parentRefs[0].name: no Gateway nope.shop in this file",
        ),
        (
            route("[{name: shop-gateway, namespace: other}]", "[]"),
            "document 3: spec.parentRefs[0].name: no Gateway shop-gateway.other in this file",
        ),
        (
            route("[{name: shop-gateway}]", "[www.example.org]"),
            "document 3: spec.parentRefs[0]: no hostname of the route matches a listener of Gateway shop-gateway.shop it selects (NoMatchingListenerHostname)",
        ),
        (
            route("[{name: shop-gateway, sectionName: tls}]", "[]"),
            "document 3: spec.parentRefs[0]: Gateway shop-gateway.shop has no listener named \"tls\" (NoMatchingParent)",
        ),
        (
            route("[{name: shop-gateway, port: 80}]", "[]"),
            "document 3: spec.parentRefs[0]: Gateway shop-gateway.shop has no listener on port 80 (NoMatchingParent)",
        ),
        (
            gateway("{name: s, port: 443, protocol: HTTPS}"),
            "document 3: spec.listeners[0]: an HTTPS listener needs tls.certificateRefs",
        ),
        (
            gateway("{name: s, port: 443, protocol: TLS}"),
            "document 3: spec.listeners[0]: protocol TLS is not served",
        ),
        (
            gateway("{name: s, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}"),
            "document 3: spec.listeners[0]: allowedRoutes.namespaces.from: Selector is not supported yet",
        ),
        (
            gateway("{name: s, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: HTTPRoute}]}}"),
            "document 3: spec.listeners[0].allowedRoutes.kinds: gateway.networking.k8s.io/TCPRoute is not a route kind",
        ),
        (
            gateway("{name: s, port: 80, protocol: HTTP, hostnme: a.example}"),
            "document 3: spec.listeners[0].hostnme: unknown field (not part of a gateway.networking.k8s.io/v1 Gateway)",
        ),
        (
            gateway("{name: s, port: 80, protocol: HTTP}").replace("name: g2", "name: shop-gateway"),
            "document 3: Gateway shop-gateway.shop is already declared in document 2",
        ),
        (
            gateway("{name: s, port: 80, protocol: HTTP}").replace("gateway.networking.k8s.io/v1\n", "gateway.networking.k8s.io/v1beta1\n"),
            "document 3: apiVersion: must be gateway.networking.k8s.io/v1 for kind Gateway",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: mycel}\nspec: {controllerName: mycel.io/gateway-controller}\n".to_string(),
            "document 3: unsupported kind \"GatewayClass\"",
        ),
    ];
    for (text, want) in cases {
        let got = parse(&text).unwrap_err();
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}

#[test]
fn any_class_name_is_served_in_local_mode() {
    let config =
        parse_mesh_config(&SHOP.replace("gatewayClassName: mycel", "gatewayClassName: other"))
            .unwrap();
    assert_eq!(config.gateways.len(), 1);
}
