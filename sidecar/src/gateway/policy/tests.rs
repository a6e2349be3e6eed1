//! The guard over real keys and limiters: a JWKS file, ES256 tokens signed
//! here, API key digests, local and (Redis-less) global limits.

use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use mycel_test_support::jwt::{jwks, Signer};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::*;
use crate::core::directory::gateway_policy::{
    AllowOrigins, ApiKey, Cors, ForwardClaim, RequiredClaim,
};
use crate::core::http::Body;

const ISS: &str = "https://issuer.test";

fn claims(sub: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"iss": ISS, "aud": "shop", "sub": sub, "scope": "orders:read orders:write", "exp": now + 600})
}

fn write_jwks(path: &std::path::Path, keys: &[&Signer]) {
    std::fs::write(path, jwks(keys).to_string()).unwrap();
}

fn jwt_auth(jwks: &std::path::Path) -> JwtAuth {
    JwtAuth {
        issuer: ISS.into(),
        audiences: vec!["shop".into()],
        jwks: JwksLocation::File(jwks.to_path_buf()),
        refresh: Duration::from_secs(300),
        algorithms: vec!["ES256".into()],
        leeway: None,
        required_claims: vec![RequiredClaim {
            name: "scope".into(),
            value: Some("orders:write".into()),
        }],
        forward_claims: vec![ForwardClaim {
            claim: "sub".into(),
            header: http::HeaderName::from_static("x-user-id"),
        }],
        token_header: None,
        strip_token: true,
    }
}

fn limit(requests: u32, key: RateLimitKey) -> RateLimit {
    RateLimit {
        requests,
        per: Duration::from_secs(60),
        burst: None,
        key,
        global: false,
        fail_closed: false,
    }
}

fn tenant_limit(requests: u32) -> RateLimit {
    limit(
        requests,
        RateLimitKey::Header(http::HeaderName::from_static("x-tenant")),
    )
}

fn policy(
    jwt: Option<JwtAuth>,
    api_keys: Option<ApiKeyAuth>,
    rate_limit: Option<RateLimit>,
) -> Arc<GatewayPolicy> {
    Arc::new(GatewayPolicy {
        name: "shop/orders".into(),
        jwt,
        api_keys,
        rate_limit,
        cors: None,
        max_request_body_bytes: None,
        cache: false,
        aggregate: None,
    })
}

fn policies() -> (Policies, Registry) {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::new(&mut registry);
    let cache = Cache::new(crate::gateway::cache::CacheConfig::default()).unwrap();
    (Policies::new(metrics, None, cache, None), registry)
}

fn parts(headers: &[(&str, &str)]) -> Parts {
    let mut req = Request::get("http://shop.example/api/orders");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut parts = req.body(()).unwrap().into_parts().0;
    parts
        .extensions
        .insert(ClientAddr("198.18.0.7:40000".parse().unwrap()));
    parts
}

async fn admit(
    p: &Policies,
    policy: &Arc<GatewayPolicy>,
    parts: &mut Parts,
) -> Result<HeaderMap, http::Response<Body>> {
    match p.admit(policy, parts).await {
        Admission::Pass(passed) => Ok(passed.response_headers),
        Admission::Answer(r) => Err(r),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The decision counter lines of the registry.
fn decisions(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("mycel_gateway_policy_decisions_total"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test]
async fn a_token_is_verified_its_claims_required_and_its_subject_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = Signer::new("k1");
    write_jwks(&jwks, &[&key]);
    let (p, registry) = policies();
    let pol = policy(Some(jwt_auth(&jwks)), None, None);

    // No token: 401 with a Bearer challenge.
    let res = admit(&p, &pol, &mut parts(&[])).await.unwrap_err();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let challenge = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"mycel\""),
        "{challenge}"
    );

    // A valid token passes; the subject is forwarded in place of the
    // client's forged copy, and the token itself is stripped.
    let token = key.sign(&claims("alice"));
    let mut ok = parts(&[("authorization", &bearer(&token)), ("x-user-id", "admin")]);
    admit(&p, &pol, &mut ok).await.unwrap();
    assert_eq!(ok.headers["x-user-id"], "alice");
    assert!(ok.headers.get("authorization").is_none());

    // A token without the required scope word: 403.
    let mut c = claims("bob");
    c["scope"] = json!("orders:read");
    let token = key.sign(&c);
    let res = admit(&p, &pol, &mut parts(&[("authorization", &bearer(&token))]))
        .await
        .unwrap_err();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // Signed by another key under the same kid: 401.
    let token = Signer::new("k1").sign(&claims("alice"));
    let res = admit(&p, &pol, &mut parts(&[("authorization", &bearer(&token))]))
        .await
        .unwrap_err();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let counts = decisions(&registry);
    assert!(counts.contains("decision=\"allowed\"} 1"), "{counts}");
    assert!(
        counts.contains("decision=\"unauthenticated\"} 2"),
        "{counts}"
    );
    assert!(counts.contains("decision=\"forbidden\"} 1"), "{counts}");
}

#[tokio::test]
async fn an_api_key_admits_by_its_digest_and_the_key_never_reaches_the_backend() {
    let (p, _registry) = policies();
    let key_auth = ApiKeyAuth {
        header: http::HeaderName::from_static("x-api-key"),
        keys: vec![ApiKey {
            name: "partner-a".into(),
            sha256: Sha256::digest(b"s3cret-a").into(),
        }],
        forward_name_header: Some(http::HeaderName::from_static("x-api-client")),
    };
    let pol = policy(None, Some(key_auth), None);

    let mut ok = parts(&[("x-api-key", "s3cret-a"), ("x-api-client", "root")]);
    admit(&p, &pol, &mut ok).await.unwrap();
    assert!(ok.headers.get("x-api-key").is_none(), "the key is stripped");
    assert_eq!(ok.headers["x-api-client"], "partner-a");

    for headers in [vec![("x-api-key", "s3cret-b")], vec![]] {
        let res = admit(&p, &pol, &mut parts(&headers)).await.unwrap_err();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let challenge = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("header=\"x-api-key\""), "{challenge}");
    }
}

#[tokio::test]
async fn a_local_limit_counts_per_key_answers_429_with_headers_and_survives_an_equal_update() {
    let (p, registry) = policies();
    let pol = policy(None, None, Some(tenant_limit(3)));
    for i in 0..3 {
        let h = admit(&p, &pol, &mut parts(&[("x-tenant", "a")]))
            .await
            .unwrap();
        assert_eq!(h["ratelimit-remaining"], (2 - i).to_string().as_str());
        assert_eq!(h["ratelimit-limit"], "3");
    }
    // The same policy, received again in a new routes update: the bucket
    // is kept, so the fourth request is refused.
    let again = policy(None, None, Some(tenant_limit(3)));
    let res = admit(&p, &again, &mut parts(&[("x-tenant", "a")]))
        .await
        .unwrap_err();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    // Another tenant has its own bucket; no header shares the empty key's.
    admit(&p, &again, &mut parts(&[("x-tenant", "b")]))
        .await
        .unwrap();
    admit(&p, &again, &mut parts(&[])).await.unwrap();
    // A changed limit starts afresh.
    let raised = policy(None, None, Some(tenant_limit(10)));
    admit(&p, &raised, &mut parts(&[("x-tenant", "a")]))
        .await
        .unwrap();
    assert!(decisions(&registry).contains("decision=\"rate_limited\"} 1"));
}

#[tokio::test]
async fn a_global_limit_without_redis_answers_as_its_failure_mode_says() {
    let (p, registry) = policies();
    let mut closed = limit(100, RateLimitKey::ClientIp);
    closed.global = true;
    closed.fail_closed = true;
    let res = admit(
        &p,
        &policy(None, None, Some(closed.clone())),
        &mut parts(&[]),
    )
    .await
    .unwrap_err();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    closed.fail_closed = false;
    let h = admit(&p, &policy(None, None, Some(closed)), &mut parts(&[]))
        .await
        .unwrap();
    assert!(h.is_empty(), "nothing is known about the quota: {h:?}");
    let counts = decisions(&registry);
    assert!(counts.contains("limiter_failed_closed\"} 1"), "{counts}");
    assert!(counts.contains("limiter_failed_open\"} 1"), "{counts}");
}

#[tokio::test]
async fn a_policy_the_gateway_cannot_apply_refuses_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let mut auth = jwt_auth(&dir.path().join("jwks.json"));
    // HS256 next to public keys is the confusion attack: never applied.
    auth.algorithms = vec!["HS256".into()];
    let (p, registry) = policies();
    let res = admit(&p, &policy(Some(auth), None, None), &mut parts(&[]))
        .await
        .unwrap_err();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(decisions(&registry).contains("decision=\"invalid\"} 1"));
}

fn shop_cors(credentials: bool) -> Cors {
    Cors {
        allow_origins: AllowOrigins::List(vec!["https://shop.example".into()]),
        allow_methods: vec![http::Method::GET, http::Method::PUT],
        allow_headers: vec![http::HeaderName::from_static("x-api-key")],
        expose_headers: vec![http::HeaderName::from_static("ratelimit-remaining")],
        allow_credentials: credentials,
        max_age: Some(Duration::from_secs(600)),
    }
}

fn with_cors(cors: Cors, api_keys: Option<ApiKeyAuth>) -> Arc<GatewayPolicy> {
    Arc::new(GatewayPolicy {
        cors: Some(cors),
        ..(*policy(None, api_keys, None)).clone()
    })
}

fn preflight(origin: &str, method: &str, headers: &str) -> Parts {
    let mut p = parts(&[
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", headers),
    ]);
    p.method = http::Method::OPTIONS;
    p
}

#[tokio::test]
async fn a_preflight_is_answered_by_the_gateway_before_any_credential_is_asked() {
    let (p, registry) = policies();
    let keys = ApiKeyAuth {
        header: http::HeaderName::from_static("x-api-key"),
        keys: vec![ApiKey {
            name: "web".into(),
            sha256: Sha256::digest(b"k").into(),
        }],
        forward_name_header: None,
    };
    let pol = with_cors(shop_cors(true), Some(keys));

    // Allowed: 204 with the origin echoed (credentials forbid "*").
    let res = admit(
        &p,
        &pol,
        &mut preflight("https://shop.example", "PUT", "x-api-key"),
    )
    .await
    .unwrap_err();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "x-api-key");
    assert_eq!(h["access-control-max-age"], "600");

    // Another origin, a method or a header not allowed: refused, and no
    // CORS header tells the browser otherwise.
    for (origin, method, headers) in [
        ("https://evil.example", "PUT", ""),
        ("https://shop.example", "DELETE", ""),
        ("https://shop.example", "GET", "x-admin"),
    ] {
        let res = admit(&p, &pol, &mut preflight(origin, method, headers))
            .await
            .unwrap_err();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{origin} {method} {headers}"
        );
        assert!(!res.headers().contains_key("access-control-allow-origin"));
    }

    // The actual request still needs its key; the refusal carries the
    // CORS headers so the script can read why.
    let mut actual = parts(&[("origin", "https://shop.example")]);
    let res = admit(&p, &pol, &mut actual).await.unwrap_err();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let mut actual = parts(&[("origin", "https://shop.example"), ("x-api-key", "k")]);
    let h = admit(&p, &pol, &mut actual).await.unwrap();
    assert_eq!(h["access-control-expose-headers"], "ratelimit-remaining");
    assert_eq!(h["vary"], "origin");
    // A disallowed origin's request goes on, unmarked.
    let mut other = parts(&[("origin", "https://evil.example"), ("x-api-key", "k")]);
    let h = admit(&p, &pol, &mut other).await.unwrap();
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    assert!(decisions(&registry).contains("decision=\"cors_preflight\"} 4"));
}

#[tokio::test]
async fn any_origin_without_credentials_is_a_star() {
    let (p, _registry) = policies();
    let mut cors = shop_cors(false);
    cors.allow_origins = AllowOrigins::Any;
    let pol = with_cors(cors, None);
    let h = admit(
        &p,
        &pol,
        &mut parts(&[("origin", "https://anyone.example")]),
    )
    .await
    .unwrap();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        !h.contains_key("vary"),
        "the answer is the same for every origin"
    );
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    let (p, _registry) = policies();
    let pol = Arc::new(GatewayPolicy {
        max_request_body_bytes: Some(1024),
        ..(*policy(None, None, None)).clone()
    });
    let res = admit(&p, &pol, &mut parts(&[("content-length", "1025")]))
        .await
        .unwrap_err();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.headers()["mycel-proxy-error"], "body-too-large");
    // Within the limit, or with no length stated: on, with the limit for
    // the streamed body.
    for headers in [vec![("content-length", "1024")], vec![]] {
        match p.admit(&pol, &mut parts(&headers)).await {
            Admission::Pass(passed) => assert_eq!(passed.max_body, Some(1024)),
            Admission::Answer(r) => panic!("{headers:?}: {}", r.status()),
        }
    }
}

/// The backend's answer to a cached rule's request, through the hook the
/// guard gave.
async fn backend_answer(
    passed: Passed,
    cache_control: &str,
    expected: &'static str,
) -> http::Response<Body> {
    let mut res = http::Response::new(crate::core::http::boxed(http_body_util::Full::new(
        bytes::Bytes::from_static(expected.as_bytes()),
    )));
    res.headers_mut()
        .insert("cache-control", cache_control.parse().unwrap());
    let res = (passed.respond.expect("a hook for a cacheable request"))(res);
    // The copy is stored once the body has been read to its end.
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        &bytes[..],
        expected.as_bytes(),
        "the client gets the body whole"
    );
    http::Response::from_parts(
        parts,
        crate::core::http::boxed(http_body_util::Full::new(bytes)),
    )
}

#[tokio::test]
async fn a_cached_rule_answers_a_second_request_from_the_cache_after_its_checks() {
    let (p, registry) = policies();
    let pol = Arc::new(GatewayPolicy {
        cache: true,
        ..(*policy(None, None, Some(tenant_limit(3)))).clone()
    });
    let passed = match p.admit(&pol, &mut parts(&[("x-tenant", "a")])).await {
        Admission::Pass(passed) => passed,
        Admission::Answer(r) => panic!("{}", r.status()),
    };
    let res = backend_answer(passed, "max-age=60", "catalog v1").await;
    assert_eq!(res.headers()["mycel-cache"], "miss");

    // Answered by the gateway: the stored response, with this request's
    // rate-limit state, and counted against the limit like any other.
    let hit = admit(&p, &pol, &mut parts(&[("x-tenant", "a")]))
        .await
        .unwrap_err();
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(hit.headers()["mycel-cache"], "hit");
    assert_eq!(hit.headers()["ratelimit-remaining"], "1");
    let bytes = http_body_util::BodyExt::collect(hit.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&bytes[..], b"catalog v1");
    admit(&p, &pol, &mut parts(&[("x-tenant", "a")]))
        .await
        .unwrap_err();
    // Past the limit, no cached answer: 429.
    let refused = admit(&p, &pol, &mut parts(&[("x-tenant", "a")]))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"mycel_gateway_cache_lookups_total{policy="shop/orders",result="hit"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_authenticated_callers_response_is_shared_only_when_it_says_public() {
    let (p, _registry) = policies();
    let keys = ApiKeyAuth {
        header: http::HeaderName::from_static("x-api-key"),
        keys: vec![
            ApiKey {
                name: "a".into(),
                sha256: Sha256::digest(b"key-a").into(),
            },
            ApiKey {
                name: "b".into(),
                sha256: Sha256::digest(b"key-b").into(),
            },
        ],
        forward_name_header: None,
    };
    let pol = Arc::new(GatewayPolicy {
        cache: true,
        ..(*policy(None, Some(keys), None)).clone()
    });
    // The key is stripped before the request goes on, yet the cache still
    // treats the request as authorized: a max-age answer for caller a is
    // not served to caller b.
    for (key, cache_control, want_second) in [
        ("key-a", "max-age=60", "miss"),
        ("key-a", "public, max-age=60", "hit"),
    ] {
        let mut first = parts(&[("x-api-key", key)]);
        first.uri = format!("http://shop.example/api/orders?cc={}", cache_control.len())
            .parse()
            .unwrap();
        let passed = match p.admit(&pol, &mut first).await {
            Admission::Pass(passed) => passed,
            Admission::Answer(r) => panic!("{}", r.status()),
        };
        backend_answer(passed, cache_control, "alice's orders").await;
        let mut second = parts(&[("x-api-key", "key-b")]);
        second.uri = first.uri.clone();
        let got = match p.admit(&pol, &mut second).await {
            Admission::Pass(passed) => {
                backend_answer(passed, cache_control, "alice's orders").await
            }
            Admission::Answer(r) => r,
        };
        assert_eq!(got.headers()["mycel-cache"], want_second, "{cache_control}");
    }
}

/// Routes of one HTTPRoute whose rules name `policies`.
fn routes_naming(policies: &[&Arc<GatewayPolicy>]) -> Arc<ServiceRoutes> {
    let rules = policies
        .iter()
        .map(|p| crate::core::directory::routes::RouteRule {
            filters: vec![Filter::GatewayPolicy(Arc::clone(p))],
            ..Default::default()
        })
        .collect();
    Arc::new(ServiceRoutes {
        routes: vec![crate::core::directory::routes::Route {
            name: "shop/api".into(),
            kind: crate::core::directory::routes::RouteKind::Http,
            ports: vec![],
            hostnames: vec![],
            listener: Default::default(),
            rules,
        }],
    })
}

#[tokio::test]
async fn a_policy_no_route_names_any_more_loses_its_state_and_its_key_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = Signer::new("k1");
    write_jwks(&jwks, &[&key]);
    let (p, _registry) = policies();
    let mut with_jwt = policy(Some(jwt_auth(&jwks)), None, None);
    Arc::make_mut(&mut with_jwt).name = "shop/orders".into();
    let mut limited = policy(None, None, Some(tenant_limit(1)));
    Arc::make_mut(&mut limited).name = "shop/catalog".into();

    let both = routes_naming(&[&with_jwt, &limited]);
    p.follow(&both);
    let token = key.sign(&claims("alice"));
    admit(
        &p,
        &with_jwt,
        &mut parts(&[("authorization", &bearer(&token))]),
    )
    .await
    .unwrap();
    let tenant = [("x-tenant", "t1")];
    admit(&p, &limited, &mut parts(&tenant)).await.unwrap();
    assert_eq!(
        admit(&p, &limited, &mut parts(&tenant))
            .await
            .unwrap_err()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(p.active_names(), ["shop/catalog", "shop/orders"]);
    let key_set = {
        let sets = p.key_sets.lock().unwrap();
        sets.values().next().unwrap().clone()
    };
    assert!(key_set.upgrade().is_some());

    // The JWT policy's rule goes; the rate-limited one stays and keeps its
    // buckets (the same routes again change nothing).
    let one = routes_naming(&[&limited]);
    p.follow(&one);
    p.follow(&one);
    assert_eq!(p.active_names(), ["shop/catalog"]);
    // A refresh in progress holds the set until it is done.
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while key_set.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    gone.await
        .expect("the key set (and so its refresh loop) is gone");
    p.follow(&routes_naming(&[&limited]));
    assert!(p.key_sets.lock().unwrap().is_empty());
    assert_eq!(
        admit(&p, &limited, &mut parts(&tenant))
            .await
            .unwrap_err()
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a kept policy keeps its buckets"
    );
}

/// Answers every part `{}` and keeps the headers each was asked with.
#[derive(Default)]
struct RecordingFetch {
    asked: std::sync::Mutex<Vec<HeaderMap>>,
}

impl Fetch for RecordingFetch {
    fn get(
        &self,
        _part: &Part,
        _path_and_query: &str,
        headers: &HeaderMap,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<
                        http::Response<crate::core::http::Body>,
                        crate::gateway::aggregate::FetchError,
                    >,
                > + Send
                + '_,
        >,
    > {
        self.asked.lock().unwrap().push(headers.clone());
        Box::pin(async {
            let mut res = http::Response::new(crate::core::http::boxed(http_body_util::Full::new(
                bytes::Bytes::from_static(b"{}"),
            )));
            res.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            Ok(res)
        })
    }
}

#[tokio::test]
async fn aggregation_parts_get_the_identity_the_gateway_proved_never_the_clients_copy() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let key = Signer::new("k1");
    write_jwks(&jwks, &[&key]);
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::new(&mut registry);
    let cache = Cache::new(crate::gateway::cache::CacheConfig::default()).unwrap();
    let fetch = Arc::new(RecordingFetch::default());
    let p = Policies::new(metrics, None, cache, Some(fetch.clone()));
    let mut pol = policy(Some(jwt_auth(&jwks)), None, None);
    Arc::make_mut(&mut pol).aggregate = Some(crate::core::directory::gateway_policy::Aggregate {
        parts: vec![crate::core::directory::gateway_policy::AggregatePart {
            name: "orders".into(),
            service_key: "orders.shop".into(),
            port: 80,
            path: "/orders".into(),
            timeout: Duration::from_secs(1),
            required: true,
        }],
        max_part_bytes: 1024,
    });
    let token = key.sign(&claims("alice"));
    let res = admit(
        &p,
        &pol,
        &mut parts(&[
            ("authorization", &bearer(&token)),
            ("x-user-id", "mallory"),
            ("cookie", "session=1"),
        ]),
    )
    .await
    .unwrap_err();
    assert_eq!(res.status(), StatusCode::OK, "the aggregation answered");
    let asked = fetch.asked.lock().unwrap();
    assert_eq!(asked.len(), 1);
    let h = &asked[0];
    assert_eq!(
        h.get_all("x-user-id").iter().collect::<Vec<_>>(),
        ["alice"],
        "the token's subject, and never the client's own copy"
    );
    assert!(
        !h.contains_key("authorization") && !h.contains_key("cookie"),
        "{h:?}"
    );
}
