use serde_json::{json, Value};

use super::*;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn spec(v: Value) -> GatewayPolicySpec {
    serde_json::from_value(v).unwrap()
}

/// A valid policy with every section, changed by `edit`.
fn full() -> Value {
    json!({
        "jwt": {
            "issuer": "https://auth.shop.example",
            "audiences": ["shop-api"],
            "jwks": {"url": "http://auth.shop.svc:8080/.well-known/jwks.json"},
            "refreshInterval": "5m",
            "algorithms": ["RS256", "ES256"],
            "clockSkew": "30s",
            "requiredClaims": [{"name": "scope", "value": "orders:write"}, {"name": "email_verified"}],
            "forwardClaims": [{"claim": "sub", "header": "x-user-id"}],
            "tokenHeader": "x-jwt",
            "forwardToken": false,
        },
        "apiKeys": {
            "forwardNameHeader": "x-api-client",
            "keys": [{"name": "partner-a", "sha256": HASH}],
        },
        "rateLimit": {"requests": 100, "per": "1s", "burst": 20, "key": "Header", "header": "x-tenant",
                      "scope": "Global", "onRedisFailure": "Deny"},
        "cors": {"allowOrigins": ["https://shop.example", "http://localhost:8080"], "allowMethods": ["GET", "PUT"],
                 "allowHeaders": ["x-api-key"], "exposeHeaders": ["ratelimit-remaining"],
                 "allowCredentials": true, "maxAge": "10m"},
        "maxRequestBodyBytes": 1048576,
        "cache": {},
        "aggregate": {"parts": [
            {"name": "product", "backendRef": {"name": "catalog", "port": 80}, "path": "/products/{last}", "timeout": "2s"},
            {"name": "rating", "backendRef": {"name": "ratings", "port": 80}, "path": "/ratings/{last}", "required": false},
        ]},
    })
}

fn edited(path: &[&str], value: Value) -> GatewayPolicySpec {
    let mut v = full();
    let mut here = &mut v;
    for p in &path[..path.len() - 1] {
        here = &mut here[*p];
    }
    let last = path[path.len() - 1];
    if value.is_null() {
        here.as_object_mut().unwrap().remove(last);
    } else {
        here[last] = value;
    }
    spec(v)
}

#[test]
fn a_full_policy_is_valid() {
    assert_eq!(spec(full()).validate(), Ok(()));
    let file = edited(&["jwt", "jwks"], json!({"file": "/etc/mycel/jwks.json"}));
    assert_eq!(file.validate(), Ok(()));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let s = spec(json!({
        "jwt": {"issuer": "https://a", "jwks": {"file": "/j.json"}},
        "apiKeys": {"keys": [{"name": "a", "sha256": HASH}]},
        "rateLimit": {"requests": 5, "per": "1m"},
    }));
    s.validate().unwrap();
    assert!(s.jwt.unwrap().forward_token);
    assert_eq!(s.api_keys.unwrap().header, "x-api-key");
    let r = s.rate_limit.unwrap();
    assert_eq!(
        (r.key, r.scope, r.on_redis_failure, r.burst),
        (RateLimitKey::ClientIp, RateLimitScope::Local, None, None)
    );
}

#[test]
fn enums_read_as_written() {
    for (raw, key) in [
        ("ClientIP", RateLimitKey::ClientIp),
        ("Header", RateLimitKey::Header),
        ("JWTSubject", RateLimitKey::JwtSubject),
        ("APIKey", RateLimitKey::ApiKey),
    ] {
        assert_eq!(
            serde_json::from_value::<RateLimitKey>(json!(raw)).unwrap(),
            key
        );
    }
    assert!(serde_json::from_value::<RateLimitKey>(json!("ClientIp")).is_err());
}

#[test]
fn invalid_specs_name_the_field() {
    let only_rate = |rate: Value| spec(json!({"rateLimit": rate}));
    let cases = [
        (spec(json!({})), "spec", "at least one of"),
        (
            edited(&["jwt", "issuer"], json!("")),
            "spec.jwt.issuer",
            "1-1024",
        ),
        (
            edited(&["jwt", "audiences"], json!(["a", ""])),
            "spec.jwt.audiences[1]",
            "1-1024",
        ),
        (
            edited(&["jwt", "jwks"], json!({})),
            "spec.jwt.jwks",
            "exactly one of file or url",
        ),
        (
            edited(&["jwt", "jwks"], json!({"file": "/a", "url": "http://b"})),
            "spec.jwt.jwks",
            "exactly one",
        ),
        (
            edited(&["jwt", "jwks"], json!({"file": "jwks.json"})),
            "spec.jwt.jwks.file",
            "absolute path",
        ),
        (
            edited(
                &["jwt", "jwks"],
                json!({"url": "https://auth.example/jwks"}),
            ),
            "spec.jwt.jwks.url",
            "https:// is not supported yet",
        ),
        (
            edited(&["jwt", "jwks"], json!({"url": "http:///jwks"})),
            "spec.jwt.jwks.url",
            "with a host",
        ),
        (
            edited(&["jwt", "refreshInterval"], json!("500ms")),
            "spec.jwt.refreshInterval",
            "1s-24h",
        ),
        (
            edited(&["jwt", "refreshInterval"], json!("2d")),
            "spec.jwt.refreshInterval",
            "not a duration",
        ),
        (
            edited(&["jwt", "algorithms"], json!(["RS256", "HS256"])),
            "spec.jwt.algorithms",
            "\"HS256\" is refused: HMAC algorithms would need the shared secret",
        ),
        (
            edited(&["jwt", "algorithms"], json!(["none"])),
            "spec.jwt.algorithms",
            "\"none\" is refused: it accepts unsigned tokens",
        ),
        (
            edited(&["jwt", "algorithms"], json!(["rs256"])),
            "spec.jwt.algorithms",
            "allowed: RS256",
        ),
        (
            edited(&["jwt", "algorithms"], json!(["ES256", "ES256"])),
            "spec.jwt.algorithms[1]",
            "listed twice",
        ),
        (
            edited(&["jwt", "clockSkew"], json!("6m")),
            "spec.jwt.clockSkew",
            "0s-5m",
        ),
        (
            edited(&["jwt", "requiredClaims"], json!([{"name": ""}])),
            "spec.jwt.requiredClaims[0].name",
            "1-256",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "X-User"}]),
            ),
            "spec.jwt.forwardClaims[0].header",
            "not a lowercase HTTP header name",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": ":path"}]),
            ),
            "spec.jwt.forwardClaims[0].header",
            "not a lowercase HTTP header name",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "authorization"}]),
            ),
            "spec.jwt.forwardClaims[0].header",
            "owns",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "x-forwarded-user"}]),
            ),
            "spec.jwt.forwardClaims[0].header",
            "owns",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "mycel-user"}]),
            ),
            "spec.jwt.forwardClaims[0].header",
            "owns",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "x-u"}, {"claim": "email", "header": "x-u"}]),
            ),
            "spec.jwt.forwardClaims[1]",
            "forwarded twice",
        ),
        (
            edited(
                &["jwt", "forwardClaims"],
                json!([{"claim": "sub", "header": "x-jwt"}]),
            ),
            "spec.jwt.forwardClaims",
            "is the token header",
        ),
        (
            edited(&["jwt", "tokenHeader"], json!("X-JWT")),
            "spec.jwt.tokenHeader",
            "not a lowercase",
        ),
        (
            edited(&["apiKeys", "header"], json!("x api key")),
            "spec.apiKeys.header",
            "not a lowercase",
        ),
        (
            edited(&["apiKeys", "forwardNameHeader"], json!("cookie")),
            "spec.apiKeys.forwardNameHeader",
            "owns",
        ),
        (
            edited(&["apiKeys", "forwardNameHeader"], json!("x-user-id")),
            "spec.apiKeys.forwardNameHeader",
            "also a header of jwt.forwardClaims",
        ),
        (
            edited(&["apiKeys", "keys"], json!([])),
            "spec.apiKeys.keys",
            "1 to 1000",
        ),
        (
            edited(
                &["apiKeys", "keys"],
                json!([{"name": "-a", "sha256": HASH}]),
            ),
            "spec.apiKeys.keys[0].name",
            "not a key name",
        ),
        (
            edited(
                &["apiKeys", "keys"],
                json!([{"name": "a", "sha256": HASH.to_uppercase()}]),
            ),
            "spec.apiKeys.keys[0].sha256",
            "64 lowercase hex",
        ),
        (
            edited(
                &["apiKeys", "keys"],
                json!([{"name": "a", "sha256": &HASH[..63]}]),
            ),
            "spec.apiKeys.keys[0].sha256",
            "64 lowercase hex",
        ),
        (
            edited(
                &["apiKeys", "keys"],
                json!([{"name": "a", "sha256": HASH}, {"name": "a", "sha256": HASH}]),
            ),
            "spec.apiKeys.keys[1]",
            "used twice",
        ),
        (
            edited(&["rateLimit", "requests"], json!(0)),
            "spec.rateLimit.requests",
            "out of range (1-1000000)",
        ),
        (
            edited(&["rateLimit", "requests"], json!(1_000_001)),
            "spec.rateLimit.requests",
            "out of range",
        ),
        (
            edited(&["rateLimit", "per"], json!("0s")),
            "spec.rateLimit.per",
            "1ms-24h",
        ),
        (
            edited(&["rateLimit", "per"], json!("25h")),
            "spec.rateLimit.per",
            "1ms-24h",
        ),
        (
            edited(&["rateLimit", "burst"], json!(0)),
            "spec.rateLimit.burst",
            "out of range",
        ),
        (
            edited(&["rateLimit", "header"], Value::Null),
            "spec.rateLimit.header",
            "required by key Header",
        ),
        (
            only_rate(json!({"requests": 1, "per": "1s", "header": "x-tenant"})),
            "spec.rateLimit.header",
            "allowed only with it",
        ),
        (
            edited(&["rateLimit", "header"], json!("X-Tenant")),
            "spec.rateLimit.header",
            "not a lowercase",
        ),
        (
            only_rate(json!({"requests": 1, "per": "1s", "onRedisFailure": "Allow"})),
            "spec.rateLimit.onRedisFailure",
            "scope Global only",
        ),
        (
            only_rate(json!({"requests": 1, "per": "1s", "key": "JWTSubject"})),
            "spec.rateLimit.key",
            "JWTSubject needs jwt",
        ),
        (
            only_rate(json!({"requests": 1, "per": "1s", "key": "APIKey"})),
            "spec.rateLimit.key",
            "APIKey needs apiKeys",
        ),
        (
            edited(&["cors", "allowOrigins"], json!([])),
            "spec.cors.allowOrigins",
            "at least one origin",
        ),
        (
            edited(
                &["cors", "allowOrigins"],
                json!(["https://shop.example/app"]),
            ),
            "spec.cors.allowOrigins[0]",
            "not a lowercase origin",
        ),
        (
            edited(&["cors", "allowOrigins"], json!(["https://Shop.example"])),
            "spec.cors.allowOrigins[0]",
            "not a lowercase origin",
        ),
        (
            edited(
                &["cors", "allowOrigins"],
                json!(["*", "https://shop.example"]),
            ),
            "spec.cors.allowOrigins",
            "stands alone",
        ),
        (
            edited(&["cors", "allowOrigins"], json!(["*"])),
            "spec.cors.allowCredentials",
            "refuse credentials",
        ),
        (
            edited(&["cors", "allowMethods"], json!(["GE T"])),
            "spec.cors.allowMethods[0]",
            "not an HTTP method",
        ),
        (
            edited(&["cors", "exposeHeaders"], json!(["X-Total"])),
            "spec.cors.exposeHeaders[0]",
            "not a lowercase",
        ),
        (
            edited(&["cors", "maxAge"], json!("25h")),
            "spec.cors.maxAge",
            "0s-24h",
        ),
        (
            edited(&["aggregate", "parts"], json!([])),
            "spec.aggregate.parts",
            "1 to 16",
        ),
        (
            edited(
                &["aggregate", "parts"],
                json!([{"name": "Product", "backendRef": {"name": "catalog", "port": 80}, "path": "/p"}]),
            ),
            "spec.aggregate.parts[0].name",
            "not a part name",
        ),
        (
            edited(
                &["aggregate", "parts"],
                json!([{"name": "a", "backendRef": {"name": "catalog", "port": 80}, "path": "/p"},
                       {"name": "a", "backendRef": {"name": "catalog", "port": 80}, "path": "/q"}]),
            ),
            "spec.aggregate.parts",
            "unique",
        ),
        (
            edited(
                &["aggregate", "parts"],
                json!([{"name": "a", "backendRef": {"name": "catalog", "port": 80}, "path": "p"}]),
            ),
            "spec.aggregate.parts[0].path",
            "does not start with '/'",
        ),
        (
            edited(
                &["aggregate", "parts"],
                json!([{"name": "a", "backendRef": {"name": "catalog", "port": 80}, "path": "/p", "timeout": "2m"}]),
            ),
            "spec.aggregate.parts[0].timeout",
            "1ms-60s",
        ),
        (
            edited(&["maxRequestBodyBytes"], json!(0)),
            "spec.maxRequestBodyBytes",
            "out of range",
        ),
    ];
    for (s, field, words) in cases {
        let err = s.validate().unwrap_err();
        assert_eq!(err.field, field, "{s:?}: {err}");
        assert!(err.to_string().contains(words), "{field}: {err}");
    }
}

#[test]
fn the_schema_holds_what_the_types_cannot() {
    // Rules the API server applies; `validate` repeats each of them.
    let crd = serde_json::to_string(&<GatewayPolicy as kube::CustomResourceExt>::crd()).unwrap();
    for rule in [
        "has(self.jwt) || has(self.apiKeys) || has(self.rateLimit) || has(self.cors) || has(self.maxRequestBodyBytes) || has(self.cache) || has(self.aggregate)",
        "\"x-kubernetes-list-map-keys\":[\"name\"]",
        "!self.allowOrigins.exists(o, o == '*') || size(self.allowOrigins) == 1",
        "!self.allowCredentials || !self.allowOrigins.exists(o, o == '*')",
        "has(self.file) != has(self.url)",
        "(self.key == 'Header') == has(self.header)",
        "!has(self.onRedisFailure) || self.scope == 'Global'",
        "self.rateLimit.key != 'JWTSubject'",
        "self.rateLimit.key != 'APIKey'",
        "self.startsWith('x-forwarded-')",
        "^http://",
    ] {
        assert!(crd.contains(rule), "{rule}");
    }
}
