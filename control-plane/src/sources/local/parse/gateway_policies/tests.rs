use mycel_crds::gateway_policy::{RateLimitKey, RateLimitScope};

use crate::model::ServiceKey;
use crate::routes::model::{GatewayPolicy, RouteFilter};
use crate::sources::local::parse_mesh_config;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Documents 1-3: a Service, a Gateway and a route on the Gateway whose
/// rule and backend name GatewayPolicies of its namespace (declared after
/// it, in documents 4 and 5).
fn shop() -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: orders, namespace: shop}}
spec:
  selector: {{app: orders}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: shop-gateway, namespace: shop}}
spec:
  gatewayClassName: mycel
  listeners: [{{name: web, port: 8080, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: orders, namespace: shop}}
spec:
  parentRefs: [{{name: shop-gateway}}]
  rules:
    - filters: [{{type: ExtensionRef, extensionRef: {{group: mycel.io, kind: GatewayPolicy, name: orders-auth}}}}]
      backendRefs:
        - name: orders
          port: 80
          filters: [{{type: ExtensionRef, extensionRef: {{group: mycel.io, kind: GatewayPolicy, name: per-tenant}}}}]
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: orders-auth, namespace: shop}}
spec:
  jwt:
    issuer: https://auth.shop.example
    audiences: [shop-api]
    jwks: {{url: "http://auth.shop.svc:8080/.well-known/jwks.json"}}
    refreshInterval: 5m
    algorithms: [RS256, ES256]
    clockSkew: 30s
    requiredClaims: [{{name: scope, value: "orders:write"}}, {{name: email_verified}}]
    forwardClaims: [{{claim: sub, header: x-user-id}}]
    tokenHeader: x-jwt
    forwardToken: false
  apiKeys:
    forwardNameHeader: x-api-client
    keys: [{{name: partner-a, sha256: {HASH}}}]
  rateLimit: {{requests: 100, per: 1s, burst: 20, key: JWTSubject, scope: Global, onRedisFailure: Deny}}
---
apiVersion: mycel.io/v1alpha1
kind: GatewayPolicy
metadata: {{name: per-tenant, namespace: shop}}
spec:
  rateLimit: {{requests: 10, per: 1m, key: Header, header: x-tenant}}
"#
    )
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn policy_of(f: &RouteFilter) -> &GatewayPolicy {
    match f {
        RouteFilter::GatewayPolicy(p) => p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_gateway_route_carries_the_policies_it_names() {
    let config = parse_mesh_config(&shop()).unwrap();
    assert!(config.routes.is_empty(), "no Service parent");
    let routes = &config.gateways[&key("shop-gateway.shop")];
    let rule = &routes[0].rules[0];
    let auth = policy_of(&rule.filters[0]);
    assert_eq!(auth.name, "shop/orders-auth");
    let jwt = auth.spec.jwt.as_ref().unwrap();
    assert_eq!(jwt.issuer, "https://auth.shop.example");
    assert!(!jwt.forward_token);
    let keys = auth.spec.api_keys.as_ref().unwrap();
    assert_eq!(keys.header, "x-api-key", "the default");
    assert_eq!(keys.keys[0].sha256, HASH);
    let rate = auth.spec.rate_limit.as_ref().unwrap();
    assert_eq!(
        (rate.key, rate.scope),
        (RateLimitKey::JwtSubject, RateLimitScope::Global)
    );
    let tenant = policy_of(&rule.backends[0].filters[0]);
    assert_eq!(tenant.name, "shop/per-tenant");
    assert_eq!(
        tenant.spec.rate_limit.as_ref().unwrap().header.as_deref(),
        Some("x-tenant")
    );
}

#[test]
fn bad_policies_and_references_name_document_and_field() {
    let shop = shop();
    // Replaces the first occurrence of `from` in the file.
    let edit = |from: &str, to: &str| {
        assert!(shop.contains(from), "{from}");
        shop.replacen(from, to, 1)
    };
    let policy = |name: &str, spec: &str| {
        format!(
            "{shop}---\napiVersion: mycel.io/v1alpha1\nkind: GatewayPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n"
        )
    };
    let cases = [
        (
            edit("    issuer: https://auth.shop.example\n", ""),
            "document 4: spec.jwt: missing field `issuer`",
        ),
        (
            edit("    tokenHeader: x-jwt", "    tokenHedaer: x-jwt"),
            "document 4: spec.jwt.tokenHedaer: unknown field (not part of a mycel.io/v1alpha1 GatewayPolicy)",
        ),
        (
            edit("algorithms: [RS256, ES256]", "algorithms: [RS256, HS256]"),
            "document 4: spec.jwt.algorithms: \"HS256\" is refused: HMAC algorithms would need the shared secret",
        ),
        (
            edit("algorithms: [RS256, ES256]", "algorithms: [none]"),
            "document 4: spec.jwt.algorithms: \"none\" is refused: it accepts unsigned tokens",
        ),
        (
            edit("url: \"http://auth", "url: \"https://auth"),
            "document 4: spec.jwt.jwks.url: \"https://auth.shop.svc:8080/.well-known/jwks.json\" must be an http:// URL with a host: https:// is not supported yet",
        ),
        (
            edit(
                "jwks: {url: \"http://auth.shop.svc:8080/.well-known/jwks.json\"}",
                "jwks: {file: jwks.json}",
            ),
            "document 4: spec.jwt.jwks.file: \"jwks.json\" is not an absolute path",
        ),
        (
            edit("header: x-user-id", "header: x-forwarded-user"),
            "document 4: spec.jwt.forwardClaims[0].header: \"x-forwarded-user\" is a header the gateway or the mesh owns",
        ),
        (
            edit("refreshInterval: 5m", "refreshInterval: 48h"),
            "document 4: spec.jwt.refreshInterval: \"48h\" is out of range (1s-24h)",
        ),
        (
            edit(&format!("sha256: {HASH}"), "sha256: abc"),
            "document 4: spec.apiKeys.keys[0].sha256: is not a SHA-256 in 64 lowercase hex digits",
        ),
        (
            edit(
                &format!("keys: [{{name: partner-a, sha256: {HASH}}}]"),
                &format!("keys: [{{name: a, sha256: {HASH}}}, {{name: a, sha256: {HASH}}}]"),
            ),
            "document 4: spec.apiKeys.keys[1]: key name \"a\" is used twice",
        ),
        (
            edit("scope: Global, onRedisFailure: Deny", "onRedisFailure: Deny"),
            "document 4: spec.rateLimit.onRedisFailure: onRedisFailure applies to scope Global only",
        ),
        (
            edit("key: Header, header: x-tenant", "key: Header"),
            "document 5: spec.rateLimit.header: header is required by key Header",
        ),
        (
            edit("per: 1m", "per: 1d"),
            "document 5: spec.rateLimit.per: \"1d\" is not a duration",
        ),
        (
            edit("key: Header, header: x-tenant", "key: APIKey"),
            "document 5: spec.rateLimit.key: rateLimit key APIKey needs apiKeys",
        ),
        (
            policy("empty", "{}"),
            "document 6: spec: a GatewayPolicy needs at least one of jwt, apiKeys, rateLimit, cors, maxRequestBodyBytes, cache or aggregate",
        ),
        (
            policy("per-tenant", "{rateLimit: {requests: 1, per: 1s}}"),
            "document 6: metadata.name: GatewayPolicy shop/per-tenant is already declared in document 5",
        ),
        (
            edit(
                "kind: GatewayPolicy\nmetadata: {name: orders-auth",
                "kind: GatewayPolicy\nmetadata: {name: other",
            ),
            "document 3: spec.rules[0].filters[0].extensionRef.name: no GatewayPolicy \"orders-auth\" in namespace \"shop\"",
        ),
        (
            edit(
                "metadata: {name: per-tenant, namespace: shop}",
                "metadata: {name: per-tenant, namespace: other}",
            ),
            "document 3: spec.rules[0].backendRefs[0].filters[0].extensionRef.name: no GatewayPolicy \"per-tenant\" in namespace \"shop\"",
        ),
        (
            edit(
                "parentRefs: [{name: shop-gateway}]",
                "parentRefs: [{name: shop-gateway}, {group: \"\", kind: Service, name: orders, port: 80}]",
            ),
            "document 3: spec.parentRefs[1]: spec.rules[0].filters[0].extensionRef names a GatewayPolicy, which only a gateway enforces (a Service's sidecars would let the requests through unchecked)",
        ),
        (
            edit("apiVersion: mycel.io/v1alpha1\nkind: GatewayPolicy", "apiVersion: mycel.io/v1\nkind: GatewayPolicy"),
            "document 4: apiVersion: must be mycel.io/v1alpha1 for kind GatewayPolicy, found \"mycel.io/v1\"",
        ),
    ];
    for (text, want) in cases {
        let got = parse_mesh_config(&text).unwrap_err().to_string();
        assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
    }
}
