#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::gateways::Gateway;
use super::grpcroutes::{GRPCRoute, GrpcRouteRulesMatchesMethodType};
use super::httproutes::{
    HTTPRoute, HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatchesHeadersType,
    HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType,
};

/// A GAMMA route: its parent is the Service `reviews`, so it routes the
/// mesh's calls to that Service.
const HTTP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - name: canary
    matches:
    - path:
        type: PathPrefix
        value: /api/v2
      headers:
      - name: x-canary
        value: "true"
      - type: RegularExpression
        name: user-agent
        value: ".*Mobile.*"
      queryParams:
      - name: debug
        value: "1"
      method: GET
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-route
          value: canary
        add:
        - name: x-trace
          value: "on"
        remove: ["x-internal"]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add:
        - name: x-served-by
          value: reviews
    - type: URLRewrite
      urlRewrite:
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /api
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: reviews-shadow
          port: 9080
        fraction:
          numerator: 5
          denominator: 100
    backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      port: 9080
      weight: 10
    timeouts:
      request: 10s
      backendRequest: 2s
  - matches:
    - path:
        type: Exact
        value: /old
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: reviews.example.com
        path:
          type: ReplaceFullPath
          replaceFullPath: /new
        statusCode: 301
"#;

/// A GAMMA gRPC route by method.
const GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: catalog
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: catalog
    port: 50051
  rules:
  - matches:
    - method:
        type: Exact
        service: shop.Catalog
        method: GetItem
      headers:
      - name: x-tenant
        value: acme
    - method:
        type: RegularExpression
        service: "shop\\.Catalog"
        method: "List.*"
    backendRefs:
    - name: catalog-v2
      port: 50051
      weight: 1
"#;

/// An ingress Gateway with an HTTPS listener.
const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: shop
spec:
  gatewayClassName: mycel
  listeners:
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.example.com"
    tls:
      mode: Terminate
      certificateRefs:
      - name: example-com
    allowedRoutes:
      namespaces:
        from: Same
"#;

/// Parses `yaml` into `T` and checks that serializing it gives back every
/// field (serde would otherwise drop a field the types lack unnoticed).
fn parse<T: DeserializeOwned + Serialize>(yaml: &str) -> T {
    let object: T = serde_saphyr::from_str(yaml).unwrap();
    let value: Value = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(serde_json::to_value(&object).unwrap(), value);
    object
}

#[test]
fn http_route_reads_gamma_matches_filters_and_weights() {
    let route: HTTPRoute = parse(HTTP_ROUTE);
    assert_eq!(route.metadata.namespace.as_deref(), Some("shop"));
    let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
    assert_eq!(parent.group.as_deref(), Some(""));
    assert_eq!(parent.kind.as_deref(), Some("Service"));
    assert_eq!(parent.name, "reviews");
    assert_eq!(parent.port, Some(9080));

    let rules = route.spec.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 2);
    let canary = &rules[0];
    assert_eq!(canary.name.as_deref(), Some("canary"));
    let m = &canary.matches.as_ref().unwrap()[0];
    let path = m.path.as_ref().unwrap();
    assert_eq!(path.r#type, Some(HttpRouteRulesMatchesPathType::PathPrefix));
    assert_eq!(path.value.as_deref(), Some("/api/v2"));
    let headers = m.headers.as_ref().unwrap();
    assert_eq!(
        (headers[0].name.as_str(), headers[0].value.as_str()),
        ("x-canary", "true")
    );
    assert_eq!(headers[0].r#type, None);
    assert_eq!(
        headers[1].r#type,
        Some(HttpRouteRulesMatchesHeadersType::RegularExpression)
    );
    let query = &m.query_params.as_ref().unwrap()[0];
    assert_eq!((query.name.as_str(), query.value.as_str()), ("debug", "1"));
    assert_eq!(query.r#type, None::<HttpRouteRulesMatchesQueryParamsType>);
    assert_eq!(m.method, Some(HttpRouteRulesMatchesMethod::Get));

    let filters = canary.filters.as_ref().unwrap();
    let types: Vec<_> = filters.iter().map(|f| f.r#type.clone()).collect();
    assert_eq!(
        types,
        [
            HttpRouteRulesFiltersType::RequestHeaderModifier,
            HttpRouteRulesFiltersType::ResponseHeaderModifier,
            HttpRouteRulesFiltersType::UrlRewrite,
            HttpRouteRulesFiltersType::RequestMirror,
        ]
    );
    let request = filters[0].request_header_modifier.as_ref().unwrap();
    assert_eq!(request.set.as_ref().unwrap()[0].name, "x-route");
    assert_eq!(request.set.as_ref().unwrap()[0].value, "canary");
    assert_eq!(request.add.as_ref().unwrap()[0].name, "x-trace");
    assert_eq!(
        request.remove.as_deref(),
        Some(&["x-internal".to_string()][..])
    );
    let response = filters[1].response_header_modifier.as_ref().unwrap();
    assert_eq!(response.add.as_ref().unwrap()[0].value, "reviews");
    let rewrite = filters[2]
        .url_rewrite
        .as_ref()
        .unwrap()
        .path
        .as_ref()
        .unwrap();
    assert_eq!(
        rewrite.r#type,
        HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch
    );
    assert_eq!(rewrite.replace_prefix_match.as_deref(), Some("/api"));
    let mirror = filters[3].request_mirror.as_ref().unwrap();
    assert_eq!(mirror.backend_ref.name, "reviews-shadow");
    let fraction = mirror.fraction.as_ref().unwrap();
    assert_eq!((fraction.numerator, fraction.denominator), (5, Some(100)));

    let backends: Vec<_> = canary
        .backend_refs
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| (b.name.as_str(), b.port, b.weight))
        .collect();
    assert_eq!(
        backends,
        [
            ("reviews-v1", Some(9080), Some(90)),
            ("reviews-v2", Some(9080), Some(10))
        ]
    );
    let timeouts = canary.timeouts.as_ref().unwrap();
    assert_eq!(timeouts.request.as_deref(), Some("10s"));
    assert_eq!(timeouts.backend_request.as_deref(), Some("2s"));

    let redirect = rules[1].filters.as_ref().unwrap()[0]
        .request_redirect
        .as_ref()
        .unwrap();
    assert_eq!(
        redirect.scheme,
        Some(HttpRouteRulesFiltersRequestRedirectScheme::Https)
    );
    assert_eq!(redirect.hostname.as_deref(), Some("reviews.example.com"));
    assert_eq!(
        redirect.path.as_ref().unwrap().replace_full_path.as_deref(),
        Some("/new")
    );
    assert_eq!(redirect.status_code, Some(301));
}

#[test]
fn grpc_route_reads_method_matches() {
    let route: GRPCRoute = parse(GRPC_ROUTE);
    let parent = &route.spec.parent_refs.as_ref().unwrap()[0];
    assert_eq!(
        (parent.kind.as_deref(), parent.name.as_str()),
        (Some("Service"), "catalog")
    );
    let rule = &route.spec.rules.as_ref().unwrap()[0];
    let matches = rule.matches.as_ref().unwrap();
    let exact = matches[0].method.as_ref().unwrap();
    assert_eq!(exact.r#type, Some(GrpcRouteRulesMatchesMethodType::Exact));
    assert_eq!(exact.service.as_deref(), Some("shop.Catalog"));
    assert_eq!(exact.method.as_deref(), Some("GetItem"));
    assert_eq!(matches[0].headers.as_ref().unwrap()[0].value, "acme");
    let regex = matches[1].method.as_ref().unwrap();
    assert_eq!(
        regex.r#type,
        Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
    );
    assert_eq!(regex.service.as_deref(), Some("shop\\.Catalog"));
    let backend = &rule.backend_refs.as_ref().unwrap()[0];
    assert_eq!(
        (backend.name.as_str(), backend.port, backend.weight),
        ("catalog-v2", Some(50051), Some(1))
    );
}

#[test]
fn gateway_reads_its_listeners() {
    let gateway: Gateway = parse(GATEWAY);
    assert_eq!(gateway.spec.gateway_class_name, "mycel");
    let listener = &gateway.spec.listeners[0];
    assert_eq!((listener.name.as_str(), listener.port), ("https", 443));
    assert_eq!(listener.hostname.as_deref(), Some("*.example.com"));
    let tls = listener.tls.as_ref().unwrap();
    assert_eq!(
        tls.certificate_refs.as_ref().unwrap()[0].name,
        "example-com"
    );
}

/// The types address the resources the upstream CRDs define, which the
/// chart ships.
#[test]
fn types_name_the_upstream_resources() {
    assert_eq!(HTTPRoute::api_version(&()), "gateway.networking.k8s.io/v1");
    assert_eq!(HTTPRoute::kind(&()), "HTTPRoute");
    assert_eq!(HTTPRoute::plural(&()), "httproutes");
    assert_eq!(GRPCRoute::kind(&()), "GRPCRoute");
    assert_eq!(GRPCRoute::plural(&()), "grpcroutes");
    assert_eq!(Gateway::kind(&()), "Gateway");
    assert_eq!(Gateway::group(&()), super::GROUP);
    assert_eq!(Gateway::version(&()), super::VERSION);
}
