//! A GatewayPolicy a route rule names (validated by
//! `GatewayPolicySpec::validate`) to its wire form in the rule's filters:
//! durations become milliseconds, key hashes 32 bytes, names enums, and
//! every default the CRD documents is filled in, so the gateway never
//! guesses one (an absent token header stays empty: it means
//! `Authorization: Bearer`).

use mycel_api::v1;
use mycel_crds::gateway_policy::{
    Aggregate, ApiKeys, Cors, JwtAuth, OnRedisFailure, RateLimit, RateLimitKey, RateLimitScope,
};

use super::policy::ms;
use crate::routes::model::GatewayPolicy;

/// How often the JWK set is read again when the policy does not say.
const DEFAULT_JWKS_REFRESH_MS: u64 = 5 * 60 * 1000;
/// Leeway for `exp` and `nbf` when the policy does not say.
const DEFAULT_CLOCK_SKEW_MS: u64 = 30 * 1000;
/// Algorithms a token may be signed with when the policy does not say.
const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256", "EdDSA"];

pub fn gateway_policy(p: &GatewayPolicy) -> v1::GatewayPolicy {
    v1::GatewayPolicy {
        name: p.name.clone(),
        jwt: p.spec.jwt.as_ref().map(jwt),
        api_keys: p.spec.api_keys.as_ref().map(api_keys),
        rate_limit: p.spec.rate_limit.as_ref().map(rate_limit),
        cors: p.spec.cors.as_ref().map(cors),
        max_request_body_bytes: p.spec.max_request_body_bytes.unwrap_or(0),
        cache: p.spec.cache.as_ref().map(|_| v1::ResponseCache {}),
        aggregate: p
            .spec
            .aggregate
            .as_ref()
            .map(|a| aggregate(namespace_of(&p.name), a)),
    }
}

/// A part's deadline when the policy does not say.
const DEFAULT_PART_TIMEOUT_MS: u64 = 5_000;

/// `<namespace>` of a policy named `<namespace>/<name>`.
fn namespace_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(ns, _)| ns)
}

fn aggregate(namespace: &str, a: &Aggregate) -> v1::Aggregate {
    v1::Aggregate {
        parts: a
            .parts
            .iter()
            .map(|p| v1::AggregatePart {
                name: p.name.clone(),
                // A part calls a Service of the policy's own namespace.
                service: format!("{}.{namespace}", p.backend_ref.name),
                port: p.backend_ref.port.into(),
                path: p.path.clone(),
                timeout_ms: p.timeout.as_deref().map_or(DEFAULT_PART_TIMEOUT_MS, ms),
                required: p.required,
            })
            .collect(),
        max_part_bytes: a.max_part_bytes.unwrap_or(0),
    }
}

fn cors(c: &Cors) -> v1::Cors {
    v1::Cors {
        allow_origins: c.allow_origins.clone(),
        // Methods are case-sensitive tokens; the usual ones are uppercase
        // and browsers compare them so.
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        allow_credentials: c.allow_credentials,
        max_age_s: c.max_age.as_deref().map_or(0, |d| ms(d) / 1000),
    }
}

fn jwt(j: &JwtAuth) -> v1::JwtAuth {
    use v1::jwt_auth::Jwks;
    let jwks = match (&j.jwks.file, &j.jwks.url) {
        (Some(file), _) => Some(Jwks::JwksFile(file.clone())),
        (None, Some(url)) => Some(Jwks::JwksUrl(url.clone())),
        (None, None) => None,
    };
    let algorithms = if j.algorithms.is_empty() {
        DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect()
    } else {
        j.algorithms.clone()
    };
    v1::JwtAuth {
        issuer: j.issuer.clone(),
        audiences: j.audiences.clone(),
        jwks,
        jwks_refresh_ms: j
            .refresh_interval
            .as_deref()
            .map_or(DEFAULT_JWKS_REFRESH_MS, ms),
        algorithms,
        leeway_ms: Some(j.clock_skew.as_deref().map_or(DEFAULT_CLOCK_SKEW_MS, ms)),
        required_claims: j
            .required_claims
            .iter()
            .map(|c| v1::RequiredClaim {
                name: c.name.clone(),
                value: c.value.clone().unwrap_or_default(),
            })
            .collect(),
        forward_claims: j
            .forward_claims
            .iter()
            .map(|f| v1::ForwardClaim {
                claim: f.claim.clone(),
                header: f.header.clone(),
            })
            .collect(),
        token_header: j.token_header.clone().unwrap_or_default(),
        strip_token: !j.forward_token,
    }
}

fn api_keys(a: &ApiKeys) -> v1::ApiKeyAuth {
    v1::ApiKeyAuth {
        header: a.header.clone(),
        keys: a
            .keys
            .iter()
            .map(|k| v1::ApiKey {
                name: k.name.clone(),
                // 64 lowercase hex digits, as validation checked.
                sha256: hex::decode(&k.sha256).unwrap_or_default(),
            })
            .collect(),
        forward_name_header: a.forward_name_header.clone().unwrap_or_default(),
    }
}

fn rate_limit(r: &RateLimit) -> v1::RateLimit {
    let key = match r.key {
        RateLimitKey::ClientIp => v1::RateLimitKey::ClientIp,
        RateLimitKey::Header => v1::RateLimitKey::Header,
        RateLimitKey::JwtSubject => v1::RateLimitKey::JwtSubject,
        RateLimitKey::ApiKey => v1::RateLimitKey::ApiKey,
    };
    let global = r.scope == RateLimitScope::Global;
    v1::RateLimit {
        requests: r.requests,
        per_ms: ms(&r.per),
        burst: r.burst.unwrap_or(r.requests),
        key: key as i32,
        header: r.header.clone().unwrap_or_default(),
        global,
        fail_closed: global && r.on_redis_failure == Some(OnRedisFailure::Deny),
    }
}

#[cfg(test)]
mod tests {
    use mycel_crds::GatewayPolicySpec;
    use serde_json::json;

    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn policy(spec: serde_json::Value) -> v1::GatewayPolicy {
        let spec: GatewayPolicySpec = serde_json::from_value(spec).unwrap();
        spec.validate().unwrap();
        gateway_policy(&GatewayPolicy {
            name: "shop/orders-auth".into(),
            spec,
        })
    }

    #[test]
    fn every_field_reaches_the_wire() {
        let p = policy(json!({
            "jwt": {
                "issuer": "https://auth.shop.example",
                "audiences": ["shop-api"],
                "jwks": {"url": "http://auth.shop.svc:8080/.well-known/jwks.json"},
                "refreshInterval": "1m30s",
                "algorithms": ["PS256"],
                "clockSkew": "0s",
                "requiredClaims": [{"name": "scope", "value": "orders:write"}, {"name": "email_verified"}],
                "forwardClaims": [{"claim": "sub", "header": "x-user-id"}],
                "tokenHeader": "x-jwt",
                "forwardToken": false,
            },
            "apiKeys": {
                "header": "x-key",
                "forwardNameHeader": "x-api-client",
                "keys": [{"name": "partner-a", "sha256": HASH}],
            },
            "rateLimit": {"requests": 100, "per": "250ms", "burst": 20, "key": "Header", "header": "x-tenant",
                          "scope": "Global", "onRedisFailure": "Deny"},
            "cors": {"allowOrigins": ["https://shop.example"], "allowMethods": ["PUT"], "allowHeaders": ["x-key"],
                     "exposeHeaders": ["ratelimit-remaining"], "allowCredentials": true, "maxAge": "10m"},
            "maxRequestBodyBytes": 4096,
            "cache": {},
            "aggregate": {"parts": [
                {"name": "product", "backendRef": {"name": "catalog", "port": 80}, "path": "/products/{last}", "timeout": "2s"},
                {"name": "rating", "backendRef": {"name": "ratings", "port": 8080}, "path": "/r?id={last}", "required": false},
            ], "maxPartBytes": 4096},
        }));
        assert_eq!(p.cache, Some(v1::ResponseCache {}));
        let a = p.aggregate.clone().unwrap();
        assert_eq!(a.max_part_bytes, 4096);
        assert_eq!(
            a.parts,
            [
                v1::AggregatePart {
                    name: "product".into(),
                    service: "catalog.shop".into(),
                    port: 80,
                    path: "/products/{last}".into(),
                    timeout_ms: 2_000,
                    required: true,
                },
                v1::AggregatePart {
                    name: "rating".into(),
                    service: "ratings.shop".into(),
                    port: 8080,
                    path: "/r?id={last}".into(),
                    timeout_ms: 5_000,
                    required: false,
                },
            ]
        );
        assert_eq!(
            p.cors,
            Some(v1::Cors {
                allow_origins: vec!["https://shop.example".into()],
                allow_methods: vec!["PUT".into()],
                allow_headers: vec!["x-key".into()],
                expose_headers: vec!["ratelimit-remaining".into()],
                allow_credentials: true,
                max_age_s: 600,
            })
        );
        assert_eq!(p.max_request_body_bytes, 4096);
        assert_eq!(p.name, "shop/orders-auth");
        let j = p.jwt.unwrap();
        assert_eq!(j.issuer, "https://auth.shop.example");
        assert_eq!(j.audiences, ["shop-api"]);
        assert_eq!(
            j.jwks,
            Some(v1::jwt_auth::Jwks::JwksUrl(
                "http://auth.shop.svc:8080/.well-known/jwks.json".into()
            ))
        );
        assert_eq!(j.jwks_refresh_ms, 90_000);
        assert_eq!(j.algorithms, ["PS256"]);
        // An explicit 0s stays 0 (unset would mean 30 s).
        assert_eq!(j.leeway_ms, Some(0));
        assert_eq!(
            j.required_claims,
            [
                v1::RequiredClaim {
                    name: "scope".into(),
                    value: "orders:write".into()
                },
                v1::RequiredClaim {
                    name: "email_verified".into(),
                    value: String::new()
                },
            ]
        );
        assert_eq!(
            j.forward_claims,
            [v1::ForwardClaim {
                claim: "sub".into(),
                header: "x-user-id".into()
            }]
        );
        assert_eq!((j.token_header.as_str(), j.strip_token), ("x-jwt", true));
        let a = p.api_keys.unwrap();
        assert_eq!(
            (a.header.as_str(), a.forward_name_header.as_str()),
            ("x-key", "x-api-client")
        );
        assert_eq!(a.keys[0].name, "partner-a");
        assert_eq!(a.keys[0].sha256.len(), 32);
        assert_eq!(hex::encode(&a.keys[0].sha256), HASH);
        let r = p.rate_limit.unwrap();
        assert_eq!(
            r,
            v1::RateLimit {
                requests: 100,
                per_ms: 250,
                burst: 20,
                key: v1::RateLimitKey::Header as i32,
                header: "x-tenant".into(),
                global: true,
                fail_closed: true,
            }
        );
    }

    #[test]
    fn defaults_are_filled_in() {
        let p = policy(json!({
            "jwt": {"issuer": "i", "jwks": {"file": "/etc/mycel/jwks.json"}},
            "apiKeys": {"keys": [{"name": "a", "sha256": HASH}]},
            "rateLimit": {"requests": 5, "per": "1m", "key": "APIKey"},
        }));
        let j = p.jwt.unwrap();
        assert_eq!(
            j.jwks,
            Some(v1::jwt_auth::Jwks::JwksFile("/etc/mycel/jwks.json".into()))
        );
        assert_eq!(j.jwks_refresh_ms, 300_000);
        assert_eq!(j.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!(j.leeway_ms, Some(30_000));
        // Authorization: Bearer, and the token goes on.
        assert_eq!((j.token_header.as_str(), j.strip_token), ("", false));
        let a = p.api_keys.unwrap();
        assert_eq!(
            (a.header.as_str(), a.forward_name_header.as_str()),
            ("x-api-key", "")
        );
        let r = p.rate_limit.unwrap();
        assert_eq!(
            (r.per_ms, r.burst, r.key, r.global, r.fail_closed),
            (60_000, 5, v1::RateLimitKey::ApiKey as i32, false, false)
        );
        let client_ip = policy(json!({"rateLimit": {"requests": 1, "per": "1s"}}));
        assert!(client_ip.jwt.is_none() && client_ip.api_keys.is_none());
        assert_eq!(
            client_ip.rate_limit.unwrap().key,
            v1::RateLimitKey::ClientIp as i32
        );
    }
}
